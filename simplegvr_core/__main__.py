"""`python -m simplegvr_core ...` is the `simplegvr` command (and `torchrun -m simplegvr_core
upscale ...`)."""

import sys

from .app import main

sys.exit(main())
