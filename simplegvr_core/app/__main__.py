"""`python -m simplegvr_core.app ...` is the `simplegvr` command."""

import sys

from . import main

sys.exit(main())
