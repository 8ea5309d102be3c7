"""SimpleGVR networks: the Wan-compatible DiT, the latent upsampler and the attention patterns."""

from .dit import SimpleGVRDiT
from .upsampler import LatentUpsampler

__all__ = ["SimpleGVRDiT", "LatentUpsampler"]
