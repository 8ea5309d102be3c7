"""The core library, imported whichever way this pack was loaded.

ComfyUI's loader imports the pack directory as a package (`<pack>.nodes`), so the core is its
sibling `<pack>.simplegvr_core`; tests and scripts import `nodes` as a top-level package next to an
installed or importable `simplegvr_core`. The choice is made from `__package__`, never by trying one
import and falling back on any ImportError (that would hide a genuine import error of the core).
"""

if __package__ and "." in __package__:  # "<pack>.nodes": loaded by ComfyUI from custom_nodes/
    from ..simplegvr_core import (
        checkpoint,
        colour,
        degrade,
        files,
        latent_formats,
        pipeline,
        plan,
        sampling,
        seeding,
        weights,
    )
    from ..simplegvr_core.config import ATTENTION_MODES
    from ..simplegvr_core.degrade import classic, flow_guided
    from ..simplegvr_core.files import parse_json
    from ..simplegvr_core.memory import format_bytes
    from ..simplegvr_core.model import DTYPES, SimpleGVR
    from ..simplegvr_core.models.upsampler import resize_frames
else:  # "nodes": tests, scripts
    from simplegvr_core import (
        checkpoint,
        colour,
        degrade,
        files,
        latent_formats,
        pipeline,
        plan,
        sampling,
        seeding,
        weights,
    )
    from simplegvr_core.config import ATTENTION_MODES
    from simplegvr_core.degrade import classic, flow_guided
    from simplegvr_core.files import parse_json
    from simplegvr_core.memory import format_bytes
    from simplegvr_core.model import DTYPES, SimpleGVR
    from simplegvr_core.models.upsampler import resize_frames

__all__ = [
    "ATTENTION_MODES",
    "DTYPES",
    "SimpleGVR",
    "checkpoint",
    "classic",
    "colour",
    "degrade",
    "files",
    "flow_guided",
    "format_bytes",
    "latent_formats",
    "parse_json",
    "pipeline",
    "plan",
    "resize_frames",
    "sampling",
    "seeding",
    "weights",
]
