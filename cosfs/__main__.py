import sys

from cosfs.cli import main

sys.exit(main())
