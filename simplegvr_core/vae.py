"""Video VAE access for training data and the demo: diffusers' `AutoencoderKLWan`.

`encode` returns *raw* latents (diffusers' Wan VAE does not normalise; the latent format does that),
`decode` returns frames. Frames are uint8 [B, T, H, W, 3]; the VAE sees [-1, 1] in [B, 3, T, H, W].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

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


class _Posterior:
    """The part of diffusers' DiagonalGaussianDistribution the project uses (deterministic codecs: std 0)."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def mode(self):
        return self.mean


class PatchPCAVideoVAE(nn.Module):
    """A linear video codec with Wan 2.1's latent contract, fitted (PCA) to the demo world's clips.

    Contract: 16 channels, /8 space, causal /4 time - latent frame 0 holds frame 0 alone, latent frame i
    holds frames 4i-3..4i - and raw latents with Wan 2.1's per-channel mean and std, so the `wan21` latent
    format applies unchanged. Each latent pixel is the projection of one 8x8x3 patch of a group of 4 frames
    (frame 0 repeated to fill its group) on the 16 leading principal components of such patches; decoding
    is the transpose. Fitting is closed-form (an SVD), so the demo rebuilds it in seconds on a CPU, where a
    convolutional VAE would need hours.
    """

    def __init__(self, z_dim: int = 16, patch: int = 8, group: int = 4):
        super().__init__()
        self.z_dim, self.patch, self.group = z_dim, patch, group
        d = group * patch * patch * 3
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.zeros(z_dim, d))  # orthonormal rows
        self.register_buffer("scale", torch.ones(z_dim))  # raw latent = scale * projection + shift
        self.register_buffer("shift", torch.zeros(z_dim))

    def config(self) -> dict:
        return {"arch": "patch_pca", "z_dim": self.z_dim, "patch": self.patch, "group": self.group}

    def _pack(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """[B,3,T,H,W] -> patch vectors [B, T', H/p, W/p, group*p*p*3]."""
        b, c, t, h, w = x.shape
        r, p = self.group, self.patch
        if h % p or w % p:
            raise ValueError(f"frames of {h}x{w} pixels: expected multiples of {p}")
        t = 1 + (t - 1) // r * r  # frames past the last whole group are dropped, as Wan's VAE does
        x = torch.cat([x[:, :, :1]] * (r - 1) + [x[:, :, :t]], dim=2)  # frame 0 fills its group
        tl = x.shape[2] // r
        g = x.reshape(b, c, tl, r, h // p, p, w // p, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
        return g.reshape(b, tl, h // p, w // p, r * p * p * c), (b, tl, h // p, w // p)

    def fit(self, vectors: torch.Tensor, max_vectors: int = 200_000) -> None:
        """Principal components of patch vectors [N, group*p*p*3] (from `_pack`); raw latent stats -> Wan 2.1's."""
        from .latent_formats import WAN21

        v = vectors.reshape(-1, self.mean.shape[0]).double()
        if v.shape[0] > max_vectors:
            v = v[torch.randperm(v.shape[0], generator=torch.Generator().manual_seed(0))[:max_vectors]]
        mean = v.mean(0)
        _, _, vt = torch.linalg.svd(v - mean, full_matrices=False)
        comps = vt[: self.z_dim]
        proj = (v - mean) @ comps.T
        scale = torch.tensor(WAN21.std, dtype=torch.float64) / proj.std(0).clamp_min(1e-6)
        self.mean.copy_(mean.float())
        self.components.copy_(comps.float())
        self.scale.copy_(scale.float())
        self.shift.copy_((torch.tensor(WAN21.mean, dtype=torch.float64) - scale * proj.mean(0)).float())

    def encode(self, x: torch.Tensor) -> _Posterior:
        """[B, 3, T, H, W] in [-1, 1] -> [B, 16, 1 + (T-1)//4, H/8, W/8] raw latent."""
        g, (b, tl, hh, ww) = self._pack(x)
        z = (g - self.mean) @ self.components.T * self.scale + self.shift  # [B, T', h, w, 16]
        return _Posterior(z.permute(0, 4, 1, 2, 3).contiguous())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, 16, T', h, w] raw latent -> [B, 3, 1 + 4(T'-1), 8h, 8w] (unclamped)."""
        b, c, tl, hh, ww = z.shape
        if c != self.z_dim:
            raise ValueError(f"latent has {c} channels: expected {self.z_dim}")
        r, p = self.group, self.patch
        q = (z.permute(0, 2, 3, 4, 1) - self.shift) / self.scale
        g = q @ self.components + self.mean  # [B, T', h, w, r*p*p*3]
        x = g.reshape(b, tl, hh, ww, r, p, p, 3).permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, 3, tl * r, hh * p, ww * p)
        return x[:, :, r - 1:]  # latent frame 0 -> one frame (its group's last slot)


def _diffusers_wan_vae():
    try:
        from diffusers import AutoencoderKLWan
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError("the Wan video VAE needs `diffusers` (pip install 'simplegvr[train]')") from e
    return AutoencoderKLWan


class VideoVAE:
    """A Wan-compatible video VAE on a device."""

    def __init__(self, vae, device="cpu", dtype=torch.float32):
        first = next(iter(vae.state_dict().values()), None)
        if first is not None and first.dtype != dtype:
            vae = vae.to(dtype=dtype)
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, kind: str, path: str | os.PathLike | None = None, device="cpu", dtype=torch.float32, seed: int = 0):
        """kind 'wan21': a diffusers folder with vae/ (from `simplegvr download-wan`) or a vae folder itself;
        kind 'tiny': a small random `AutoencoderKLWan` (seeded) with the same latent contract;
        kind 'file': a safetensors file with the VAE's config in its metadata (the demo's fitted codec)."""
        if kind == "tiny":
            AutoencoderKLWan = _diffusers_wan_vae()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(AutoencoderKLWan(**TINY_WAN_VAE), device, dtype)
        if kind == "file":
            import json

            from .checkpoint import read_safetensors

            tensors, meta = read_safetensors(path)
            cfg = json.loads(meta.get("vae_config", "null")) or TINY_WAN_VAE
            if cfg.get("arch") == "patch_pca":
                vae = PatchPCAVideoVAE(cfg["z_dim"], cfg["patch"], cfg["group"])
            else:
                vae = _diffusers_wan_vae()(**cfg)
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
            return cls(_diffusers_wan_vae().from_pretrained(sub, torch_dtype=dtype, use_safetensors=True), device, dtype)
        raise ValueError(f"VAE kind {kind!r}: expected 'wan21', 'tiny' or 'file'")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> raw latent [B, 16, 1 + (T-1)//4, H/8, W/8] (the posterior mode)."""
        x = frames_to_vae(frames).to(self.device, self.dtype)
        if isinstance(self.vae, PatchPCAVideoVAE):
            return self.vae.encode(x).mode().float()
        return self.vae.encode(x).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent [B, 16, T', h, w] -> uint8 frames [B, 1 + 4(T'-1), 8h, 8w, 3]."""
        if isinstance(self.vae, PatchPCAVideoVAE):
            x = self.vae.decode(latent.to(self.device, self.dtype))
        else:
            x = self.vae.decode(latent.to(self.device, self.dtype)).sample
        return vae_to_frames(x.float().cpu())
