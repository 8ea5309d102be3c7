"""`SimpleGVR`: the DiT and the latent upsampler under one config and one latent format."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import SimpleGVRConfig, get_config
from .latent_formats import LatentFormat, get_format
from .models import LatentUpsampler, SimpleGVRDiT
from .sampling import TEACHER_RECIPE, SamplingRecipe


class SimpleGVR(nn.Module):
    """Latent-cascaded video super-resolution model: `m.upsampler` builds c, `m.dit` predicts v."""

    def __init__(self, config: SimpleGVRConfig):
        super().__init__()
        if not config.dit.conditioned:
            raise ValueError(
                f"SimpleGVR needs a conditioned DiT (in_dim = 2*out_dim = {2 * config.dit.out_dim}), "
                f"got in_dim={config.dit.in_dim}; build a plain T2V model with SimpleGVRDiT directly"
            )
        self.config = config
        self.dit = SimpleGVRDiT(config.dit)
        self.upsampler = LatentUpsampler(config.upsampler)
        # How this model is meant to be sampled ("auto" steps); a checkpoint's `sampling` metadata (load_checkpoint)
        self.sampling: SamplingRecipe = TEACHER_RECIPE

    @classmethod
    def from_config(cls, spec: str | dict | SimpleGVRConfig, device=None, dtype=None) -> SimpleGVR:
        """Build from a named config ('tiny', 'wan2.1-1.3b'), a dict or a config; `device='meta'` allocates nothing."""
        cfg = get_config(spec)
        if device is not None:
            with torch.device(device):
                model = cls(cfg)
        else:
            model = cls(cfg)
        if dtype is not None:
            model = model.to(dtype)
        return model

    def forward(self, z_t, c_s, t, context, noise_level, attention: str | None = None, return_condition: bool = False):
        """Training forward: upsample the noise-augmented LR latent c_s to z_t's size, then predict v (and return
        the condition c too with `return_condition`, for a loss on it).

        (Inference builds c once with `pipeline.build_condition` and calls `dit` at every step.)"""
        c = self.upsampler(c_s, size=tuple(z_t.shape[-2:]))
        v = self.dit(z_t, c, t, context, noise_level, attention=attention)
        return (v, c) if return_condition else v

    @property
    def latent_format(self) -> LatentFormat:
        return get_format(self.config.latent_format)

    def num_parameters(self) -> dict[str, int]:
        dit = sum(p.numel() for p in self.dit.parameters())
        up = sum(p.numel() for p in self.upsampler.parameters())
        return {"dit": dit, "upsampler": up, "total": dit + up}
