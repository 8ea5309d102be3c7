"""Video VAE access for training data and the demo: each T2V family's own VAE through diffusers.

    kind        VAE                                                     latents
    wan21       diffusers `AutoencoderKLWan` (Wan 2.1)                 16 ch, /8, causal /4 time
    wan22       diffusers `AutoencoderKLWan`, Wan 2.2 configuration    48 ch, /16 (2x2 patchify + /8), causal /4
    cogvideox   diffusers `AutoencoderKLCogVideoX` (2b and 5b share it)  16 ch, /8, causal /4
    tiny, tiny_wan22, tiny_cogvideox: small random versions of the three (seeded) with the same latent contract, for
    tests and smoke runs; file: a safetensors file with the VAE's config in its metadata (the demo's fitted codec).

`encode` returns *raw* latents (the posterior mode; these VAEs do not normalise, the latent format does that),
`decode` returns frames. Frames are uint8 [B, T, H, W, 3]; the VAE sees [-1, 1] in [B, 3, T, H, W].
CogVideoX's VAE decodes an odd number of latent frames T to 1 + 4(T-1) frames but an even number to 4T (it decodes
latent frames in pairs): use 8N+1 pixel frames (49, CogVideoX's own length) for clips that round-trip exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

# Compact configs for tests and the CPU smoke runs, each with its family's latent contract.
TINY_WAN_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])
# Wan 2.2's VAE as diffusers configures it (scripts/convert_wan_to_diffusers.py: residual blocks, 2x2 patchify of 3 -> 12
# channels, 48 latent channels, /16), narrow. Wan 2.2's own: base_dim 160, decoder_base_dim 256, num_res_blocks 2.
TINY_WAN22_VAE = dict(base_dim=8, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                      temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                      patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4)
# CogVideoX's VAE (4 down/up blocks, 16 latent channels, /8, /4 time), narrow. CogVideoX's own: (128, 256, 256, 512),
# 3 layers per block, 32 groups.
TINY_COGVIDEOX_VAE = dict(block_out_channels=(8, 16, 16, 32), latent_channels=16, layers_per_block=1, norm_num_groups=4,
                          temporal_compression_ratio=4)


@dataclass(frozen=True)
class VAEKind:
    family: str  # the latent family (latent_formats.LatentFormat.family) its latents are in
    cls: str  # diffusers class
    tiny: dict | None = None  # a random tiny version (seeded) instead of loading weights
    channels: int = 16
    spatial: int = 8
    download: str = ""  # the command that makes its folder


VAE_KINDS = {
    "wan21": VAEKind("Wan 2.1", "AutoencoderKLWan", None, 16, 8, "simplegvr download-wan --out {path}"),
    "wan22": VAEKind("Wan 2.2", "AutoencoderKLWan", None, 48, 16, "simplegvr download-wan --model wan2.2-ti2v-5b --out {path}"),
    "cogvideox": VAEKind("CogVideoX", "AutoencoderKLCogVideoX", None, 16, 8, "simplegvr download-cogvideox --out {path}"),
    "tiny": VAEKind("Wan 2.1", "AutoencoderKLWan", TINY_WAN_VAE, 16, 8),
    "tiny_wan22": VAEKind("Wan 2.2", "AutoencoderKLWan", TINY_WAN22_VAE, 48, 16),
    "tiny_cogvideox": VAEKind("CogVideoX", "AutoencoderKLCogVideoX", TINY_COGVIDEOX_VAE, 16, 8),
}
VAE_CHOICES = (*VAE_KINDS, "file")


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


def _diffusers_class(name: str):
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError("the video VAEs need `diffusers` (pip install 'simplegvr[train]')") from e
    return getattr(diffusers, name)


def _diffusers_wan_vae():
    return _diffusers_class("AutoencoderKLWan")


def _latent_shape(cls: str, config) -> tuple[int, int]:
    """(channels, spatial ratio) a diffusers VAE config gives."""
    if cls == "AutoencoderKLCogVideoX":
        return int(config.get("latent_channels", 16)), 2 ** (len(config.get("block_out_channels", (0,) * 4)) - 1)
    return int(config.get("z_dim", 16)), 8 * int(config.get("patch_size") or 1)


class VideoVAE:
    """A T2V family's video VAE on a device; `family`, `channels` and `spatial_ratio` say which latents it makes."""

    def __init__(self, vae, device="cpu", dtype=torch.float32, family: str = "Wan 2.1"):
        first = next(iter(vae.state_dict().values()), None)
        if first is not None and first.dtype != dtype:
            vae = vae.to(dtype=dtype)
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.device, self.dtype, self.family = device, dtype, family
        if isinstance(vae, PatchPCAVideoVAE):
            self.channels, self.spatial_ratio = vae.z_dim, vae.patch
        else:
            self.channels, self.spatial_ratio = _latent_shape(type(vae).__name__, vae.config)

    @classmethod
    def load(cls, kind: str, path: str | os.PathLike | None = None, device="cpu", dtype=torch.float32, seed: int = 0):
        """kind 'wan21' / 'wan22' / 'cogvideox': a diffusers folder with vae/ (from `simplegvr download-wan` or
        `download-cogvideox`) or a vae folder itself; 'tiny' / 'tiny_wan22' / 'tiny_cogvideox': a small random VAE
        (seeded) with that family's latent contract; 'file': a safetensors file with the VAE's config in its metadata
        (the demo's fitted codec)."""
        if kind == "file":
            return cls._load_file(path, device, dtype)
        if kind not in VAE_KINDS:
            raise ValueError(f"VAE kind {kind!r}: expected one of {list(VAE_CHOICES)}")
        k = VAE_KINDS[kind]
        vae_cls = _diffusers_class(k.cls)
        if k.tiny is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cls(vae_cls(**k.tiny), device, dtype, k.family)
        p = Path(path or "")
        sub = p / "vae" if (p / "vae").is_dir() else p
        if not (sub / "config.json").is_file():
            raise ValueError(f"no {k.family} VAE at {str(p)!r}: expected a diffusers folder with vae/config.json "
                             f"(run `{k.download.format(path=p)}`)")
        import json

        config = json.loads((sub / "config.json").read_text())
        found_cls = config.get("_class_name", k.cls)
        channels, spatial = _latent_shape(found_cls, config)
        if found_cls != k.cls or (channels, spatial) != (k.channels, k.spatial):
            raise ValueError(f"{str(sub)!r} holds a {found_cls} with {channels}-channel latents at /{spatial}, but "
                             f"vae.kind={kind!r} is the {k.family} VAE ({k.cls}, {k.channels} channels, /{k.spatial}): "
                             f"set vae.kind to the VAE of the T2V model whose latents you train on")
        return cls(vae_cls.from_pretrained(sub, torch_dtype=dtype, use_safetensors=True), device, dtype, k.family)

    @classmethod
    def _load_file(cls, path, device, dtype):
        import json

        from .checkpoint import read_safetensors

        tensors, meta = read_safetensors(path)
        cfg = json.loads(meta.get("vae_config", "null")) or TINY_WAN_VAE
        if cfg.get("arch") == "patch_pca":
            vae = PatchPCAVideoVAE(cfg["z_dim"], cfg["patch"], cfg["group"])
        else:
            vae = _diffusers_class(meta.get("vae_class", "AutoencoderKLWan"))(**cfg)
        missing, unexpected = vae.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(f"{str(path)!r} does not match the VAE config: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return cls(vae, device, dtype, meta.get("vae_family", "Wan 2.1"))

    def check_format(self, fmt) -> None:
        """ValueError unless this VAE makes latents of `fmt` (a LatentFormat): same family, channels and ratio."""
        if (self.family, self.channels, self.spatial_ratio) != (fmt.family, fmt.channels, fmt.spatial_ratio):
            raise ValueError(f"the {self.family} VAE makes {self.channels}-channel latents at /{self.spatial_ratio}, but the "
                             f"model works in {fmt.describe()} latents: set vae.kind to that family's VAE "
                             f"({', '.join(k for k, v in VAE_KINDS.items() if v.family == fmt.family)})")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> raw latent [B, C, 1 + (T-1)//4, H/r, W/r] (the posterior mode)."""
        r = self.spatial_ratio
        if frames.ndim == 5 and (frames.shape[2] % r or frames.shape[3] % r):
            raise ValueError(f"frames of {frames.shape[3]}x{frames.shape[2]} px: the {self.family} VAE needs multiples "
                             f"of {r}")
        x = frames_to_vae(frames).to(self.device, self.dtype)
        if isinstance(self.vae, PatchPCAVideoVAE):
            return self.vae.encode(x).mode().float()
        return self.vae.encode(x).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent [B, C, T', h, w] -> uint8 frames [B, 1 + 4(T'-1), r*h, r*w, 3] (CogVideoX, even T': 4T')."""
        if isinstance(self.vae, PatchPCAVideoVAE):
            x = self.vae.decode(latent.to(self.device, self.dtype))
        else:
            x = self.vae.decode(latent.to(self.device, self.dtype)).sample
        return vae_to_frames(x.float().cpu())
