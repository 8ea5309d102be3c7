"""Video VAE access for training data and the demo: diffusers' `AutoencoderKLWan`.

`encode` returns *raw* latents (diffusers' Wan VAE does not normalise; the latent format does that),
`decode` returns frames. Frames are uint8 [B, T, H, W, 3]; the VAE sees [-1, 1] in [B, 3, T, H, W].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Compact config for tests and the CPU smoke run: Wan's latent contract (16 ch, /8 space, causal /4 time).
TINY_WAN_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])


def frames_to_vae(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1]."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames have shape {tuple(frames.shape)}: expected [B, T, H, W, 3]")
    return frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def vae_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float [B, 3, T, H, W] in [-1, 1] -> uint8 [B, T, H, W, 3]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


class VideoVAE:
    """A Wan-compatible video VAE on a device."""

    def __init__(self, vae, device="cpu", dtype=torch.float32):
        if next(vae.parameters()).dtype != dtype:
            vae = vae.to(dtype=dtype)
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, kind: str, path: str | os.PathLike | None = None, device="cpu", dtype=torch.float32, seed: int = 0):
        """kind 'wan21': a diffusers folder with vae/ (from `simplegvr download-wan`) or a vae folder itself;
        kind 'tiny': a small random `AutoencoderKLWan` (seeded) with the same latent contract;
        kind 'file': a safetensors state dict of the tiny config (the demo's trained VAE)."""
        try:
            from diffusers import AutoencoderKLWan
        except ImportError as e:  # pragma: no cover
            raise ValueError("the video VAE needs `diffusers` (pip install 'simplegvr[train]')") from e
        if kind == "tiny":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(AutoencoderKLWan(**TINY_WAN_VAE), device, dtype)
        if kind == "file":
            from .checkpoint import read_safetensors

            tensors, meta = read_safetensors(path)
            import json

            cfg = json.loads(meta.get("vae_config", "null")) or TINY_WAN_VAE
            vae = AutoencoderKLWan(**cfg)
            missing, unexpected = vae.load_state_dict(tensors, strict=False)
            if missing or unexpected:
                raise ValueError(f"{str(path)!r} does not match the VAE config: missing {missing[:3]}, unexpected {unexpected[:3]}")
            return cls(vae, device, dtype)
        if kind == "wan21":
            p = Path(path or "")
            sub = p / "vae" if (p / "vae").is_dir() else p
            if not (sub / "config.json").is_file():
                raise ValueError(f"no Wan VAE at {str(p)!r}: expected a diffusers folder with vae/config.json "
                                 f"(run `simplegvr download-wan --out {p}`)")
            return cls(AutoencoderKLWan.from_pretrained(sub, torch_dtype=dtype, use_safetensors=True), device, dtype)
        raise ValueError(f"VAE kind {kind!r}: expected 'wan21', 'tiny' or 'file'")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> raw latent [B, 16, 1 + (T-1)//4, H/8, W/8] (the posterior mode)."""
        x = frames_to_vae(frames).to(self.device, self.dtype)
        return self.vae.encode(x).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent [B, 16, T', h, w] -> uint8 frames [B, 1 + 4(T'-1), 8h, 8w, 3]."""
        x = self.vae.decode(latent.to(self.device, self.dtype)).sample
        return vae_to_frames(x.float().cpu())
