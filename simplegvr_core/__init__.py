"""SimpleGVR core: latent-cascaded video super-resolution in pure PyTorch (no ComfyUI imports).

The library: what the ComfyUI nodes, the `simplegvr` command (`app/`), the demo (`demo/`) and the
lab (`training/`) import. It imports none of them and knows no repository path.

    foundations     latent_formats sampling seeding files memory console colour metrics procedural
    networks        config model models/ (dit, attention, upsampler)
    weights         checkpoint (our file) weights (Wan / CogVideoX weights in)
    the two calls   plan (where the DiT runs and what it costs) pipeline (build_condition, sample,
        upscale)
    around them     parallel degrade/ vae text timesteps latent_io bench
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import DiTConfig, SimpleGVRConfig, UpsamplerConfig, get_config
from .latent_formats import LatentFormat, get_format
from .model import SimpleGVR
from .models.tiny_decoder import TinyDecoder, TinyDecoderStream
from .pipeline import build_condition, sample, upscale
from .weights import import_wan, load_tiny_decoder

__version__ = "0.1.0"

__all__ = [
    "SimpleGVR",
    "SimpleGVRConfig",
    "DiTConfig",
    "UpsamplerConfig",
    "LatentFormat",
    "build_condition",
    "get_config",
    "get_format",
    "import_wan",
    "load_checkpoint",
    "sample",
    "save_checkpoint",
    "upscale",
    "__version__",
    "TinyDecoder",
    "TinyDecoderStream",
    "load_tiny_decoder",
]
