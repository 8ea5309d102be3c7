"""Latent formats of the text-to-video VAEs SimpleGVR works in: the one home of the latent contract.

A ComfyUI LATENT holds `[B, C, T, H, W]` in *raw* VAE scale. The model works on normalised latents:
`normalise` maps raw -> model space, `denormalise` maps back (ComfyUI's `process_in` /
`process_out`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Wan 2.1 VAE per-channel statistics (wan/modules/vae.py; identical in ComfyUI and diffusers).
_WAN21_MEAN = (
    -0.7571,
    -0.7089,
    -0.9113,
    0.1075,
    -0.1745,
    0.9653,
    -0.1517,
    1.5508,
    0.4134,
    -0.0715,
    0.5517,
    -0.3632,
    -0.1922,
    -0.9497,
    0.2503,
    -0.2921,
)
_WAN21_STD = (
    2.8184,
    1.4541,
    2.3275,
    2.6558,
    1.2196,
    1.7708,
    2.6052,
    2.0743,
    3.2687,
    2.1526,
    2.8652,
    1.5579,
    1.6382,
    1.1253,
    2.8251,
    1.9160,
)

# Wan 2.2 (TI2V 5B) VAE per-channel statistics (wan/modules/vae2_2.py).
_WAN22_MEAN = (
    -0.2289,
    -0.0052,
    -0.1323,
    -0.2339,
    -0.2799,
    0.0174,
    0.1838,
    0.1557,
    -0.1382,
    0.0542,
    0.2813,
    0.0891,
    0.1570,
    -0.0098,
    0.0375,
    -0.1825,
    -0.2246,
    -0.1207,
    -0.0698,
    0.5109,
    0.2665,
    -0.2108,
    -0.2158,
    0.2502,
    -0.2055,
    -0.0322,
    0.1109,
    0.1567,
    -0.0729,
    0.0899,
    -0.2799,
    -0.1230,
    -0.0313,
    -0.1649,
    0.0117,
    0.0723,
    -0.2839,
    -0.2083,
    -0.0520,
    0.3748,
    0.0152,
    0.1957,
    0.1433,
    -0.2944,
    0.3573,
    -0.0548,
    -0.1681,
    -0.0667,
)
_WAN22_STD = (
    0.4765,
    1.0364,
    0.4514,
    1.1677,
    0.5313,
    0.4990,
    0.4818,
    0.5013,
    0.8158,
    1.0344,
    0.5894,
    1.0901,
    0.6885,
    0.6165,
    0.8454,
    0.4978,
    0.5759,
    0.3523,
    0.7135,
    0.6804,
    0.5833,
    1.4146,
    0.8986,
    0.5659,
    0.7069,
    0.5338,
    0.4889,
    0.4917,
    0.4069,
    0.4999,
    0.6866,
    0.4093,
    0.5709,
    0.6065,
    0.6415,
    0.4944,
    0.5726,
    1.2042,
    0.5458,
    1.6887,
    0.3971,
    1.0600,
    0.3943,
    0.5537,
    0.5444,
    0.4089,
    0.7468,
    0.7744,
)


@dataclass(frozen=True)
class LatentFormat:
    """A VAE latent space: channel count, compression and the raw <-> model-space normalisation."""

    name: str
    channels: int
    spatial_ratio: int
    temporal_ratio: int = 4
    mean: tuple[float, ...] | None = None  # per-channel (Wan); None for scalar-scaled formats
    std: tuple[float, ...] | None = None
    scale: float = 1.0  # scalar scale (CogVideoX); model = raw * scale
    # the VAE whose raw latents these are ("Wan 2.1", "Wan 2.2", "CogVideoX"): one raw space per VAE
    family: str = ""
    # scalar formats: the typical std of the VAE's raw latents (None: 1/scale)
    raw_std: float | None = None

    # --- geometry -------------------------------------------------------------------------
    def latent_frames(self, frames: int) -> int:
        """Pixel frames -> latent frames (causal: the first frame alone, then groups of 4)."""
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        return 1 + (frames - 1) // self.temporal_ratio

    def pixel_frames(self, latent_frames: int) -> int:
        """Latent frames -> the pixel frames the VAE decodes them to: 1 + 4(T_lat - 1)."""
        if latent_frames < 1:
            raise ValueError(f"latent frames must be >= 1, got {latent_frames}")
        return 1 + self.temporal_ratio * (latent_frames - 1)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Pixel (H, W) -> the nearest latent grid (H/r, W/r), halves rounded up (1080 px on a /16
        grid: 68 = 1088 px), at least 1."""
        if height < 1 or width < 1:
            raise ValueError(f"pixel size must be positive, got {height}x{width} (HxW)")
        r = self.spatial_ratio
        return max(1, (2 * int(height) + r) // (2 * r)), max(1, (2 * int(width) + r) // (2 * r))

    # --- normalisation --------------------------------------------------------------------
    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.channels) + (1,) * (x.ndim - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw VAE scale [B,C,...] -> model space (ComfyUI `process_in`)."""
        self.check_channels(x, "latent")
        if self.mean is not None:
            mean, std = self._stats(x)
            return (x - mean) / std
        return x * self.scale

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Model space [B,C,...] -> raw VAE scale (ComfyUI `process_out`)."""
        self.check_channels(x, "latent")
        if self.mean is not None:
            mean, std = self._stats(x)
            return x * std + mean
        return x / self.scale

    def raw_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std a raw latent of this VAE has (float64, [C])."""
        if self.mean is not None:
            return torch.tensor(self.mean, dtype=torch.float64), torch.tensor(
                self.std, dtype=torch.float64
            )
        std = self.raw_std if self.raw_std is not None else 1.0 / self.scale
        return torch.zeros(self.channels, dtype=torch.float64), torch.full(
            (self.channels,), std, dtype=torch.float64
        )

    def model_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the same latent in model space (after `normalise`)."""
        if self.mean is not None:
            return torch.zeros(self.channels, dtype=torch.float64), torch.ones(
                self.channels, dtype=torch.float64
            )
        mean, std = self.raw_stats()
        return mean * self.scale, std * self.scale

    def describe(self) -> str:
        """'wan21 (Wan 2.1 VAE: 16 channels, /8)' for messages."""
        return (
            f"'{self.name}' ({self.family} VAE: {self.channels} channels, "
            f"/{self.spatial_ratio} spatial)"
        )

    def check_channels(self, x: torch.Tensor, what: str = "latent") -> None:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"{what} has shape {tuple(x.shape)}: expected {self.channels} channels in dim 1 "
                f"for latent format '{self.name}'"
            )


# CogVideoX 2b and 5b (and 1.5) share one VAE (THUDM/CogVideoX-*/vae differ only in
# `scaling_factor`), so their raw latents are one space; only the scale the T2V model works in
# differs. The maintainers chose 1/1.15258426 as the VAE latents' std ("scale_factor ... is 1/std";
# the 5b's 0.7 was then picked empirically: zai-org/CogVideo#190).
_COGVIDEOX_RAW_STD = 1.0 / 1.15258426

WAN21 = LatentFormat("wan21", 16, 8, 4, _WAN21_MEAN, _WAN21_STD, family="Wan 2.1")
WAN22 = LatentFormat("wan22", 48, 16, 4, _WAN22_MEAN, _WAN22_STD, family="Wan 2.2")
COGVIDEOX_2B = LatentFormat(
    "cogvideox_2b", 16, 8, 4, scale=1.15258426, family="CogVideoX", raw_std=_COGVIDEOX_RAW_STD
)
# also CogVideoX 1.5
COGVIDEOX_5B = LatentFormat(
    "cogvideox_5b", 16, 8, 4, scale=0.7, family="CogVideoX", raw_std=_COGVIDEOX_RAW_STD
)

FORMATS: dict[str, LatentFormat] = {f.name: f for f in (WAN21, WAN22, COGVIDEOX_2B, COGVIDEOX_5B)}


def get_format(name: str | LatentFormat) -> LatentFormat:
    """Look a format up by name ('wan21', 'wan22', 'cogvideox_2b', 'cogvideox_5b')."""
    if isinstance(name, LatentFormat):
        return name
    key = str(name).lower().replace("-", "_").replace(".", "")
    aliases = {
        "wan2_1": "wan21",
        "wan2_2": "wan22",
        "cogvideox": "cogvideox_2b",
        "cogvideox_15": "cogvideox_5b",
        "cogvideox1_5": "cogvideox_5b",
    }
    key = aliases.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown latent format {name!r}: expected one of {sorted(FORMATS)}")
    return FORMATS[key]


def formats_for_channels(channels: int) -> list[LatentFormat]:
    """All known formats with this channel count; ValueError when there is none."""
    found = [f for f in FORMATS.values() if f.channels == channels]
    if not found:
        known = sorted({f.channels for f in FORMATS.values()})
        raise ValueError(f"no known latent format has {channels} channels: expected one of {known}")
    return found


def to_bcthw(x: torch.Tensor, channels: int, what: str = "latent") -> tuple[torch.Tensor, str]:
    """Return `x` as [B,C,T,H,W] and the layout it came in ('BCTHW' or 'BTCHW').

    ComfyUI core uses [B,C,T,H,W]; some wrapper packs (CogVideoX) hand [B,T,C,H,W]. When both dims
    match the channel count the standard ComfyUI layout wins.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}: expected a 5-D video latent [B,C,T,H,W] "
            f"(a 4-D tensor is an image latent)"
        )
    if x.shape[1] == channels:
        return x, "BCTHW"
    if x.shape[2] == channels:
        return x.permute(0, 2, 1, 3, 4), "BTCHW"
    raise ValueError(
        f"{what} has shape {tuple(x.shape)}: expected {channels} channels in dim 1 ([B,C,T,H,W]) "
        f"or dim 2 ([B,T,C,H,W])"
    )


def from_bcthw(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Inverse of `to_bcthw`: put a [B,C,T,H,W] tensor back into `layout`."""
    if layout == "BCTHW":
        return x
    if layout == "BTCHW":
        return x.permute(0, 2, 1, 3, 4)
    raise ValueError(f"unknown layout {layout!r}: expected 'BCTHW' or 'BTCHW'")


# --- raw or normalised? ---------------------------------------------------------------------------
LATENT_SCALES = ("raw", "normalised")


def _stats_of(x: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    v = x.detach().to("cpu", torch.float64).transpose(0, 1).reshape(channels, -1)
    return v.mean(1), v.std(1, unbiased=False).clamp_min(1e-3)


def _distance(m: torch.Tensor, s: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> float:
    return float((((m - mean) / std) ** 2 + torch.log(s / std) ** 2).mean())


def latent_scale_distances(x: torch.Tensor, fmt: str | LatentFormat) -> dict[str, float]:
    """How far the per-channel statistics of `x` [B,C,T,H,W] lie from a raw and from a normalised
    latent.

    Each distance is the mean over channels of z_mean^2 + log(std_ratio)^2 against the statistics
    that scale implies (`raw_stats` / `model_stats`): raw Wan latents have per-channel means/stds
    near the VAE's `mean`/`std`, normalised ones near 0/1; raw CogVideoX latents have mean 0 and the
    VAE's std (1/1.1526), scaled ones that times the model's scale (2b: 1, 5b: 0.61).
    """
    fmt = get_format(fmt)
    x, _ = to_bcthw(x, fmt.channels, "latent")
    if not x.is_floating_point() or x.numel() == 0:
        raise ValueError(
            f"latent of shape {tuple(x.shape)} and dtype {x.dtype}: expected a non-empty "
            f"floating-point tensor"
        )
    m, s = _stats_of(x, fmt.channels)
    return {
        "raw": _distance(m, s, *fmt.raw_stats()),
        "normalised": _distance(m, s, *fmt.model_stats()),
    }


def other_family_distances(x: torch.Tensor, fmt: str | LatentFormat) -> dict[str, float]:
    """Distance of `x` (as `latent_scale_distances`) to a raw latent of every *other* VAE with fmt's
    channel count, keyed by family ({'CogVideoX': ...} for a Wan 2.1 format). Normalised latents of
    all these look alike (mean 0, std ~1), so only raw ones - what core samplers hand on - can tell
    the VAE."""
    fmt = get_format(fmt)
    x, _ = to_bcthw(x, fmt.channels, "latent")
    m, s = _stats_of(x, fmt.channels)
    out = {}
    for g in FORMATS.values():
        if g.channels == fmt.channels and g.family != fmt.family and g.family not in out:
            out[g.family] = _distance(m, s, *g.raw_stats())
    return out


def detect_latent_scale(x: torch.Tensor, fmt: str | LatentFormat) -> str:
    """'raw' (ComfyUI core samplers, VAE Encode) or 'normalised' (wrapper packs that hand
    model-space latents), whichever the per-channel statistics of `x` are closer to; ties go to
    'raw'."""
    d = latent_scale_distances(x, fmt)
    return "raw" if d["raw"] <= d["normalised"] else "normalised"


# --- reading a video latent: the one validation of an incoming latent (CLI, nodes, training) ------
MAX_ABS_LATENT = 1e4  # VAE latents live within a few tens of 0; far larger values are not a latent


@dataclass
class VideoLatent:
    """A validated video latent: raw VAE scale, [B,C,T,H,W], float32 on the CPU, and how it came
    in."""

    raw: torch.Tensor
    layout: str  # 'BCTHW' (ComfyUI core) or 'BTCHW' (some wrapper packs)
    scale: str  # 'raw' or 'normalised': how the incoming values were scaled
    note: str = ""  # what was detected, for the log


def _channel_hint(channels: int) -> str:
    try:
        names = [f.name for f in formats_for_channels(channels)]
    except ValueError:
        return ""
    return f" (a {' / '.join(names)} latent?)"


def _refuse_other_family(
    x: torch.Tensor, fmt: LatentFormat, own: dict[str, float], what: str, shape
) -> None:
    """latent_scale=auto: a latent whose statistics fit a raw latent of another VAE with the same
    channel count (a CogVideoX latent into a Wan 2.1 checkpoint, or the reverse) better than either
    scale of `fmt` is refused, naming both. Only 'auto' decides from statistics; an explicit
    latent_scale is the user's word for it."""
    others = other_family_distances(x, fmt)
    if not others:
        return
    family, d_other = min(others.items(), key=lambda kv: kv[1])
    if d_other >= min(own.values()):
        return
    names = " / ".join(f"'{g.name}'" for g in FORMATS.values() if g.family == family)
    raise ValueError(
        f"{what} of shape {shape} looks like a raw {family} latent (distance of its channel "
        f"statistics {d_other:.3f}; to a raw '{fmt.name}' latent {own['raw']:.3f}, to a "
        f"normalised one {own['normalised']:.3f}), but the SimpleGVR model works in "
        f"{fmt.describe()} latents: use a checkpoint trained for {names} latents, or set "
        f"latent_scale to 'raw' or 'normalised' if this is a {fmt.family} latent after all"
    )


def read_latent(
    x, fmt: str | LatentFormat, latent_scale: str = "raw", what: str = "latent"
) -> VideoLatent:
    """Validate a video latent for a model working in `fmt` and return it in raw scale as
    [B,C,T,H,W].

    latent_scale: 'raw' (ComfyUI core samplers, VAE Encode, SaveLatent files), 'normalised' (model
    space, as some wrapper packs hand it) or 'auto' (decided from the channel statistics; the note
    says how). Every refusal is a ValueError naming `what`, its shape and what was expected.
    """
    fmt = get_format(fmt)
    if latent_scale not in ("auto", *LATENT_SCALES):
        raise ValueError(
            f"latent_scale {latent_scale!r}: expected one of {['auto', *LATENT_SCALES]}"
        )
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    if x.ndim == 4:
        raise ValueError(
            f"{what} has shape {shape}: that is an image latent [B,C,H,W]; SimpleGVR upscales "
            f"video latents [B,C,T,H,W] from a video model ({fmt.name}: {fmt.channels} channels)"
        )
    if x.ndim != 5:
        raise ValueError(f"{what} has shape {shape}: expected a 5-D video latent [B,C,T,H,W]")
    if fmt.channels not in (shape[1], shape[2]):
        raise ValueError(
            f"{what} has {shape[1]} channels{_channel_hint(shape[1])}, shape {shape}, but the "
            f"SimpleGVR model works in '{fmt.name}' latents with {fmt.channels} channels: use a "
            f"checkpoint trained for this latent format"
        )
    x, layout = to_bcthw(x, fmt.channels, what)
    if not x.is_floating_point():
        raise ValueError(f"{what} has dtype {x.dtype}: expected a floating-point latent")
    if min(x.shape) < 1:
        raise ValueError(
            f"{what} has shape {shape}: it is empty (0 batch, frames, rows or columns)"
        )
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} of shape {shape} contains NaN or Inf")
    peak = float(x.abs().max())
    if peak > MAX_ABS_LATENT:
        raise ValueError(
            f"{what} of shape {shape} has values up to {peak:.3g}: a VAE latent stays within "
            f"+-{MAX_ABS_LATENT:g}, so this is not one (wrong file, or a broken sampler upstream)"
        )
    note = f"layout {layout}" + (
        " (wrapper layout [B,T,C,H,W], converted)" if layout == "BTCHW" else ""
    )
    scale = latent_scale
    if latent_scale == "auto" and float(x.amax() - x.amin()) == 0.0:
        raise ValueError(
            f"{what} of shape {shape} has the same value ({float(x.flatten()[0]):g}) everywhere "
            f"(an empty latent?): it holds no video, and its scale cannot be told from it; give "
            f"the latent a sampler made, or set latent_scale to 'raw' or 'normalised'"
        )
    if latent_scale == "auto":
        d = latent_scale_distances(x, fmt)
        scale = "raw" if d["raw"] <= d["normalised"] else "normalised"
        _refuse_other_family(x, fmt, d, what, shape)
        note += (
            f"; latent_scale=auto chose '{scale}' (distance of the channel statistics to a raw "
            f"{fmt.name} latent {d['raw']:.3f}, to a normalised one {d['normalised']:.3f})"
        )
    else:
        note += f"; latent_scale '{scale}' as set"
    raw = fmt.denormalise(x) if scale == "normalised" else x
    return VideoLatent(raw=raw, layout=layout, scale=scale, note=note)
