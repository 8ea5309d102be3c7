"""`python -m simplegvr_core ...` is the `simplegvr` command (and `torchrun -m simplegvr_core
upscale ...`)."""

from .app import main
from .console import exit_process

exit_process(main())
