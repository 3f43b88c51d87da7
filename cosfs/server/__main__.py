"""``python -m cosfs.server``: the same as ``cosfs-server``."""

import sys

from .cli import main

sys.exit(main())
