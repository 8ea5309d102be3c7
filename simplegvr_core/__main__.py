"""`python -m simplegvr_core ...` is the `simplegvr` command (and `torchrun -m simplegvr_core upscale ...`)."""

import sys

from .cli import main

sys.exit(main())
