"""Video VAE access for training data and the demo: each T2V family's own VAE through diffusers.

    kind        VAE                                                     latents
    wan21       diffusers `AutoencoderKLWan` (Wan 2.1)                 16 ch, /8, causal /4 time
    wan22       diffusers `AutoencoderKLWan`, Wan 2.2 configuration    48 ch, /16 (2x2 patchify +
        /8), causal /4
    cogvideox   diffusers `AutoencoderKLCogVideoX` (2b and 5b share it)  16 ch, /8, causal /4
    tiny, tiny_wan22, tiny_cogvideox: small random versions of the three (seeded) with the same
        latent contract, for
    tests and smoke runs; file: a safetensors file with the VAE's config in its metadata (the demo's
        fitted codec).

`encode` returns *raw* latents (the posterior mode; these VAEs do not normalise, the latent format
does that), `decode` returns frames. Frames are uint8 [B, T, H, W, 3]; the VAE sees [-1, 1] in [B,
3, T, H, W]. CogVideoX's VAE decodes an odd number of latent frames T to 1 + 4(T-1) frames but an
even number to 4T (it decodes latent frames in pairs): use 8N+1 pixel frames (49, CogVideoX's own
length) for clips that round-trip exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

# Compact configs for tests and the CPU smoke runs, each with its family's latent contract.
TINY_WAN_VAE = dict(
    base_dim=8,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
)
# Wan 2.2's VAE as diffusers configures it (scripts/convert_wan_to_diffusers.py: residual blocks,
# 2x2 patchify of 3 -> 12 channels, 48 latent channels, /16), narrow. Wan 2.2's own: base_dim 160,
# decoder_base_dim 256, num_res_blocks 2.
TINY_WAN22_VAE = dict(
    base_dim=8,
    decoder_base_dim=16,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
)
# CogVideoX's VAE (4 down/up blocks, 16 latent channels, /8, /4 time), narrow. CogVideoX's own:
# (128, 256, 256, 512), 3 layers per block, 32 groups.
TINY_COGVIDEOX_VAE = dict(
    block_out_channels=(8, 16, 16, 32),
    latent_channels=16,
    layers_per_block=1,
    norm_num_groups=4,
    temporal_compression_ratio=4,
)


@dataclass(frozen=True)
class VAEKind:
    family: str  # the latent family (latent_formats.LatentFormat.family) its latents are in
    cls: str  # diffusers class
    tiny: dict | None = None  # a random tiny version (seeded) instead of loading weights
    channels: int = 16
    spatial: int = 8
    download: str = ""  # the command that makes its folder


VAE_KINDS = {
    "wan21": VAEKind(
        "Wan 2.1", "AutoencoderKLWan", None, 16, 8, "simplegvr download-wan --out {path}"
    ),
    "wan22": VAEKind(
        "Wan 2.2",
        "AutoencoderKLWan",
        None,
        48,
        16,
        "simplegvr download-wan --model wan2.2-ti2v-5b --out {path}",
    ),
    "cogvideox": VAEKind(
        "CogVideoX",
        "AutoencoderKLCogVideoX",
        None,
        16,
        8,
        "simplegvr download-cogvideox --out {path}",
    ),
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
    """The part of diffusers' DiagonalGaussianDistribution the project uses (deterministic codecs:
    std 0)."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def mode(self):
        return self.mean


class LappedVideoCodec(nn.Module):
    """A linear video codec with Wan 2.1's latent contract and overlapping support, fitted to the
    demo world's clips.

    Contract: 16 channels, /8 space, causal /4 time - latent frame 0 holds frame 0 alone, latent
    frame i holds frames 4i-3..4i - and raw latents with Wan 2.1's per-channel mean and std, so the
    `wan21` latent format applies unchanged. Each latent pixel is a linear function of a `kernel` x
    `kernel` pixel window of its group of 4 frames (frame 0 repeated to fill its group), windows at
    a stride of 8, and decoding is the transposed map: every decoded pixel blends (kernel/8)^2
    neighbouring latent pixels (a lapped transform), so the output has no seams at the 8-pixel grid,
    unlike a patch codec. Computed as pixel-unshuffle into 8x8 blocks then a small convolution over
    the block grid (the same map as a strided Conv3d with that kernel, much faster on a CPU).
    Linear, so fitting it (`training/train_vae.py`) takes minutes on a CPU.
    """

    def __init__(
        self, z_dim: int = 16, kernel: int = 16, stride: int = 8, group: int = 4, freqs: int = 8
    ):
        super().__init__()
        if kernel < stride or kernel % stride or (kernel // stride) % 2:
            raise ValueError(
                f"codec kernel {kernel}: expected an even multiple of the stride {stride} "
                f"(e.g. 16, 32)"
            )
        if not 1 <= freqs <= kernel:
            raise ValueError(
                f"codec freqs {freqs}: expected 1..{kernel} (cosines per side of the "
                f"decoder's basis)"
            )
        self.z_dim, self.kernel, self.stride, self.group, self.freqs = (
            z_dim,
            kernel,
            stride,
            group,
            freqs,
        )
        n = kernel // stride  # blocks per window side
        self.pad = (kernel - stride) // 2
        block = 3 * group * stride * stride
        self.enc = nn.Conv3d(block, z_dim, (1, n, n))
        self.dec = nn.ConvTranspose3d(z_dim, block, (1, n, n))
        # The decoder's basis functions are smooth by construction: each is a sine window (zero at
        # the window's edges) times a sum of the `freqs` lowest cosines per side of the window. A
        # free basis converges to a patch codec in disguise - each latent pixel owning the 8x8 block
        # at its window's centre, with seams at the 8-pixel grid between owners; sums of smooth
        # functions have no seams.
        y = torch.arange(kernel, dtype=torch.float64) + 0.5
        cos = torch.cos(
            torch.arange(freqs, dtype=torch.float64)[:, None] * y[None] * math.pi / kernel
        )
        cos = cos / cos.norm(dim=1, keepdim=True)  # orthonormal rows: [freqs, kernel]
        win = torch.sin(y * math.pi / kernel)
        # [kernel, kernel]
        self.register_buffer("synthesis", (win[:, None] * (cos.T @ cos)).float(), persistent=False)
        # raw latent = scale * code + shift (Wan 2.1 statistics)
        self.register_buffer("scale", torch.ones(z_dim))
        self.register_buffer("shift", torch.zeros(z_dim))

    def config(self) -> dict:
        return {
            "arch": "lapped",
            "z_dim": self.z_dim,
            "kernel": self.kernel,
            "stride": self.stride,
            "group": self.group,
            "freqs": self.freqs,
        }

    def decoder_weight(self) -> torch.Tensor:
        """`dec.weight` projected onto the smooth basis (window x low cosines), in the
        ConvTranspose3d layout."""
        z, n, s, r = self.z_dim, self.kernel // self.stride, self.stride, self.group
        w = (
            self.dec.weight.view(z, 3, r, s, s, n, n)
            .permute(0, 1, 2, 5, 3, 6, 4)
            .reshape(z, 3, r, self.kernel, self.kernel)
        )
        w = torch.einsum("Yy,zcryx,Xx->zcrYX", self.synthesis, w, self.synthesis)
        return (
            w.reshape(z, 3, r, n, s, n, s)
            .permute(0, 1, 2, 4, 6, 3, 5)
            .reshape(self.dec.weight.shape)
        )

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, r*T', Hp, Wp] -> [B, 3*r*s*s, T', Hp/s, Wp/s] (time groups and s x s blocks into
        channels)."""
        b, c, t, h, w = x.shape
        r, s = self.group, self.stride
        x = x.reshape(b, c, t // r, r, h // s, s, w // s, s).permute(0, 1, 3, 5, 7, 2, 4, 6)
        return x.reshape(b, c * r * s * s, t // r, h // s, w // s)

    def _unblocks(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, hb, wb = y.shape
        r, s = self.group, self.stride
        y = y.reshape(b, 3, r, s, s, t, hb, wb).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return y.reshape(b, 3, t * r, hb * s, wb * s)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> the unscaled code [B, z, 1 + (T-1)//4, H/8, W/8]."""
        b, c, t, h, w = x.shape
        if c != 3 or h % self.stride or w % self.stride:
            raise ValueError(
                f"frames of shape {tuple(x.shape)}: expected [B, 3, T, H, W] with H, W multiples "
                f"of {self.stride}"
            )
        r, p = self.group, self.pad
        t = 1 + (t - 1) // r * r  # frames past the last whole group are dropped, as Wan's VAE does
        x = torch.cat([x[:, :, :1]] * (r - 1) + [x[:, :, :t]], dim=2)
        # zero border: window i covers pixels [8i - p, 8i - p + kernel)
        x = torch.nn.functional.pad(x, (p, p, p, p))
        return torch.nn.functional.conv3d(self._blocks(x), self.enc.weight, self.enc.bias)

    def reconstruct(self, code: torch.Tensor) -> torch.Tensor:
        """The unscaled code -> frames [B, 3, 1 + 4(T'-1), 8h, 8w] (unclamped)."""
        p = self.pad
        x = self._unblocks(
            torch.nn.functional.conv_transpose3d(code, self.decoder_weight(), self.dec.bias)
        )
        return x[:, :, self.group - 1 :, p : x.shape[3] - p, p : x.shape[4] - p]

    def encode(self, x: torch.Tensor) -> _Posterior:
        """[B, 3, T, H, W] in [-1, 1] -> raw latent [B, 16, 1 + (T-1)//4, H/8, W/8]."""
        shape = (1, -1, 1, 1, 1)
        return _Posterior(self.code(x) * self.scale.view(shape) + self.shift.view(shape))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """raw latent [B, 16, T', h, w] -> [B, 3, 1 + 4(T'-1), 8h, 8w] (unclamped)."""
        if z.ndim != 5 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"latent has shape {tuple(z.shape)}: expected [B, {self.z_dim}, T, h, w]"
            )
        shape = (1, -1, 1, 1, 1)
        return self.reconstruct((z - self.shift.view(shape)) / self.scale.view(shape))

    @torch.no_grad()
    def fit_statistics(self, codes: torch.Tensor) -> None:
        """Set scale and shift so that raw latents of these codes [z, N] (per channel, flattened)
        have Wan 2.1's per-channel mean and std."""
        from .latent_formats import WAN21

        if codes.ndim != 2 or codes.shape[0] != self.z_dim:
            raise ValueError(f"codes have shape {tuple(codes.shape)}: expected [{self.z_dim}, N]")
        c = codes.double()
        scale = torch.tensor(WAN21.std, dtype=torch.float64) / c.std(1).clamp_min(1e-6)
        self.scale.copy_(scale.float())
        self.shift.copy_(
            (torch.tensor(WAN21.mean, dtype=torch.float64) - scale * c.mean(1)).float()
        )


def _lapped_config(path, config: dict) -> dict:
    """The lapped codec's config from a file's metadata, checked before anything is built: Wan 2.1's
    contract (16 channels, /8, groups of 4 frames) and a kernel of at most 64 pixels."""
    want = {"z_dim": 16, "stride": 8, "group": 4}
    got = {k: config.get(k) for k in ("z_dim", "kernel", "stride", "group", "freqs")}
    got["freqs"] = 8 if got["freqs"] is None else got["freqs"]
    ok = all(type(v) is int for v in got.values()) and all(got[k] == v for k, v in want.items())
    if not ok or got["kernel"] not in (16, 32, 48, 64) or not 1 <= got["freqs"] <= got["kernel"]:
        raise ValueError(
            f"{str(path)!r} holds a lapped codec config {got}: expected z_dim 16, stride 8, group "
            f"4, kernel 16/32/48/64 and 1 <= freqs <= kernel"
        )
    return got


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
        return int(config.get("latent_channels", 16)), 2 ** (
            len(config.get("block_out_channels", (0,) * 4)) - 1
        )
    return int(config.get("z_dim", 16)), 8 * int(config.get("patch_size") or 1)


class VideoVAE:
    """A T2V family's video VAE on a device; `family`, `channels` and `spatial_ratio` say which
    latents it makes."""

    def __init__(self, vae, device="cpu", dtype=torch.float32, family: str = "Wan 2.1"):
        first = next(iter(vae.state_dict().values()), None)
        if first is not None and first.dtype != dtype:
            vae = vae.to(dtype=dtype)
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.device, self.dtype, self.family = device, dtype, family
        self.codec: str | None = None  # a file's `codec` metadata (the demo codec's: checkpoint.py)
        if isinstance(vae, LappedVideoCodec):
            self.channels, self.spatial_ratio = vae.z_dim, vae.stride
        else:
            self.channels, self.spatial_ratio = _latent_shape(type(vae).__name__, vae.config)

    @classmethod
    def load(
        cls,
        kind: str,
        path: str | os.PathLike | None = None,
        device="cpu",
        dtype=torch.float32,
        seed: int = 0,
    ):
        """kind 'wan21' / 'wan22' / 'cogvideox': a diffusers folder with vae/ (from `simplegvr
        download-wan` or `download-cogvideox`) or a vae folder itself; 'tiny' / 'tiny_wan22' /
        'tiny_cogvideox': a small random VAE (seeded) with that family's latent contract; 'file': a
        safetensors file with the VAE's config in its metadata (the demo's fitted codec)."""
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
            raise ValueError(
                f"no {k.family} VAE at {str(p)!r}: expected a diffusers folder with "
                f"vae/config.json (run `{k.download.format(path=p)}`)"
            )
        from .files import parse_json

        config = parse_json(
            (sub / "config.json").read_text(), f"VAE config {str(sub / 'config.json')!r}"
        )
        found_cls = config.get("_class_name", k.cls)
        channels, spatial = _latent_shape(found_cls, config)
        if found_cls != k.cls or (channels, spatial) != (k.channels, k.spatial):
            raise ValueError(
                f"{str(sub)!r} holds a {found_cls} with {channels}-channel latents at /{spatial}, "
                f"but vae.kind={kind!r} is the {k.family} VAE ({k.cls}, {k.channels} channels, "
                f"/{k.spatial}): set vae.kind to the VAE of the T2V model whose latents "
                f"you train on"
            )
        return cls(
            vae_cls.from_pretrained(sub, torch_dtype=dtype, use_safetensors=True),
            device,
            dtype,
            k.family,
        )

    @classmethod
    def _load_file(cls, path, device, dtype):
        from .files import parse_json
        from .weights import read_safetensors

        tensors, meta = read_safetensors(path)
        config = (
            parse_json(meta.get("vae_config", "null"), f"the vae_config of {str(path)!r}")
            or TINY_WAN_VAE
        )
        if config.get("arch") == "lapped":
            vae = LappedVideoCodec(**_lapped_config(path, config))
        else:
            vae = _diffusers_class(meta.get("vae_class", "AutoencoderKLWan"))(**config)
        missing, unexpected = vae.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{str(path)!r} does not match the VAE config: missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}"
            )
        out = cls(vae, device, dtype, meta.get("vae_family", "Wan 2.1"))
        out.codec = meta.get("codec") or None
        return out

    def check_format(self, fmt) -> None:
        """ValueError unless this VAE makes latents of `fmt` (a LatentFormat): same family, channels
        and ratio."""
        if (self.family, self.channels, self.spatial_ratio) != (
            fmt.family,
            fmt.channels,
            fmt.spatial_ratio,
        ):
            raise ValueError(
                f"the {self.family} VAE makes {self.channels}-channel latents at "
                f"/{self.spatial_ratio}, but the model works in {fmt.describe()} latents: set "
                f"vae.kind to that family's VAE "
                f"({', '.join(k for k, v in VAE_KINDS.items() if v.family == fmt.family)})"
            )

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> raw latent [B, C, 1 + (T-1)//4, H/r, W/r] (the posterior
        mode)."""
        r = self.spatial_ratio
        if frames.ndim == 5 and (frames.shape[2] % r or frames.shape[3] % r):
            raise ValueError(
                f"frames of {frames.shape[3]}x{frames.shape[2]} px: the {self.family} VAE needs "
                f"multiples of {r}"
            )
        x = frames_to_vae(frames).to(self.device, self.dtype)
        if isinstance(self.vae, LappedVideoCodec):
            return self.vae.encode(x).mode().float()
        return self.vae.encode(x).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """raw latent [B, C, T', h, w] -> uint8 frames [B, 1 + 4(T'-1), r*h, r*w, 3] (CogVideoX,
        even T': 4T')."""
        if isinstance(self.vae, LappedVideoCodec):
            x = self.vae.decode(latent.to(self.device, self.dtype))
        else:
            x = self.vae.decode(latent.to(self.device, self.dtype)).sample
        return vae_to_frames(x.float().cpu())
