"""`SimpleGVR`: the DiT and the latent upsampler under one config and one latent format."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import CAUSAL_MODE, SimpleGVRConfig, get_config
from .latent_formats import LatentFormat, get_format
from .models import LatentUpsampler, SimpleGVRDiT
from .models.dit import CausalStream
from .sampling import TEACHER_RECIPE, SamplingRecipe

# the dtypes a model runs in, by name
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class SimpleGVR(nn.Module):
    """Latent-cascaded video super-resolution model: `m.upsampler` builds c, `m.dit` predicts v."""

    def __init__(self, config: SimpleGVRConfig):
        super().__init__()
        if not config.dit.conditioned:
            raise ValueError(
                f"SimpleGVR needs a conditioned DiT (in_dim = 2*out_dim = "
                f"{2 * config.dit.out_dim}), got in_dim={config.dit.in_dim}; build a plain T2V "
                f"model with SimpleGVRDiT directly"
            )
        self.config = config
        self.dit = SimpleGVRDiT(config.dit)
        self.upsampler = LatentUpsampler(config.upsampler)
        if config.prediction == "residual_x0":  # a fresh model estimates HR as the upsampler's c
            nn.init.zeros_(self.dit.head.head.weight)
            nn.init.zeros_(self.dit.head.head.bias)
        # How this model is meant to be sampled ("auto" steps); a checkpoint's `sampling` metadata
        # (load_checkpoint)
        self.sampling: SamplingRecipe = TEACHER_RECIPE

    @classmethod
    def from_config(cls, spec: str | dict | SimpleGVRConfig, device=None, dtype=None) -> SimpleGVR:
        """Build from a named config ('tiny', 'wan2.1-1.3b'), a dict or a config; `device='meta'`
        allocates nothing."""
        config = get_config(spec)
        if device is not None:
            with torch.device(device):
                model = cls(config)
        else:
            model = cls(config)
        if dtype is not None:
            model = model.to(dtype)
        return model

    def forward(
        self,
        z_t,
        c_s,
        t,
        context,
        noise_level,
        attention: str | None = None,
        return_condition: bool = False,
    ):
        """Training forward: upsample the noise-augmented LR latent c_s to z_t's size, then predict
        v (and return the condition c too with `return_condition`, for a loss on it). In the
        block_sparse_causal mode the clip runs as inference runs it: one causal call per group of
        `causal_group_frames` latent frames, each with the K/V of the groups before (gradients flow
        through them).

        (Inference builds c once with `pipeline.build_condition` and calls `velocity` at every
        step.)"""
        c = self.upsampler(c_s, size=tuple(z_t.shape[-2:]))
        if (attention or self.dit.attention_mode) != CAUSAL_MODE:
            v = self.velocity(z_t, c, t, context, noise_level, attention=attention)
        else:
            g, stream = self.config.dit.causal_group_frames, CausalStream(len(self.dit.blocks))
            v = torch.cat(
                [
                    self.velocity(
                        z_t[:, :, s : s + g],
                        c[:, :, s : s + g],
                        t,
                        context,
                        noise_level,
                        attention=attention,
                        stream=stream,
                    )
                    for s in range(0, z_t.shape[2], g)
                ],
                dim=2,
            )
        return (v, c) if return_condition else v

    def velocity(self, z_t, c, t, context, noise_level, attention: str | None = None, stream=None):
        """The flow velocity v = ε - x0 of the HR latent at z_t = (1-σ) x0 + σ ε, σ = t/1000,
        against the condition c (what every sampler and loss sees; the signature of `dit`).

        prediction "hr": the DiT's output. "residual": the DiT runs the flow of x0 - c instead - its
        input is z_t - (1-σ) c, its output that flow's velocity ε - (x0 - c) - so v = DiT - c. The
        upsampler's estimate c is the base the DiT adds to (a DiT that outputs ε leaves x0 = c), and
        the flow loss does not move c through the base (it is detached there; c still enters the DiT
        as its condition). "residual_x0": the same input, but the DiT's output D is the estimate of
        x0 - c, so x0 = c + D and v = (z_t - x0) / σ; a DiT that outputs 0 (a fresh one: its head
        starts at zero) leaves x0 = c at every σ, and at σ = 1 the flow loss is the x0 error (a
        one-step student regresses HR from c directly, with no noise to cancel)."""
        # a causal DiT's group state (models/dit.py)
        extra = {} if stream is None else {"stream": stream}
        if self.config.prediction == "hr":
            return self.dit(z_t, c, t, context, noise_level, attention=attention, **extra)
        base = c.detach().float()
        sigma = (torch.as_tensor(t, device=z_t.device).float() / 1000.0).reshape(
            -1, *[1] * (z_t.dim() - 1)
        )
        v = self.dit(
            (z_t.float() - (1.0 - sigma) * base).to(z_t.dtype),
            c,
            t,
            context,
            noise_level,
            attention=attention,
            **extra,
        )
        # x0 = c + DiT, and v = (z_t - x0) / σ (σ floored at 1e-3)
        if self.config.prediction == "residual_x0":
            return (z_t.float() - base - v.float()) / sigma.clamp_min(1e-3)
        return v.float() - base

    @property
    def latent_format(self) -> LatentFormat:
        return get_format(self.config.latent_format)

    @torch.no_grad()
    def scale_residual_(self, alpha: float) -> SimpleGVR:
        """Make a `residual_x0` model's estimate x0 = c + alpha * D, in place and exactly: the DiT's
        output D is its last linear layer's (then unpatchified), so that layer's weight and bias are
        scaled by alpha. (The one-step demo model's scale is chosen on the validation split:
        training/calibrate_residual.py.)"""
        import math

        if self.config.prediction != "residual_x0":
            raise ValueError(
                f"scale_residual_ needs prediction='residual_x0' (x0 = c + D), got "
                f"{self.config.prediction!r}"
            )
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not (math.isfinite(alpha) and alpha > 0)
        ):
            raise ValueError(f"residual scale {alpha!r}: expected a finite number > 0")
        self.dit.head.head.weight.mul_(alpha)
        self.dit.head.head.bias.mul_(alpha)
        return self

    def num_parameters(self) -> dict[str, int]:
        dit = sum(p.numel() for p in self.dit.parameters())
        up = sum(p.numel() for p in self.upsampler.parameters())
        return {"dit": dit, "upsampler": up, "total": dit + up}
