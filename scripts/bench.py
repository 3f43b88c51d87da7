"""Entry point of ``scripts/bench`` (see ``scripts/bench --help``)."""

import sys
from pathlib import Path

# The harness lives next to this file, outside the cosfs package on purpose.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
