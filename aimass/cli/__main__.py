"""`python -m aimass.cli`: the same as the `aimass` command."""
import sys

from aimass.cli import main

sys.exit(main())
