"""`python -m emu`: see emu.cli."""

import sys

from .cli import main

sys.exit(main())
