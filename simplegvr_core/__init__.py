"""SimpleGVR core: latent-cascaded video super-resolution in pure PyTorch (no ComfyUI imports)."""

from .checkpoint import import_wan, load_checkpoint, save_checkpoint
from .config import DiTConfig, SimpleGVRConfig, UpsamplerConfig, get_config
from .latent_formats import LatentFormat, get_format
from .model import SimpleGVR
from .models.tiny_decoder import TinyDecoder, TinyDecoderStream, load_tiny_decoder

__version__ = "0.1.0"

__all__ = [
    "SimpleGVR", "SimpleGVRConfig", "DiTConfig", "UpsamplerConfig", "LatentFormat",
    "get_config", "get_format", "import_wan", "load_checkpoint", "save_checkpoint", "__version__",
    "TinyDecoder", "TinyDecoderStream", "load_tiny_decoder",
]
