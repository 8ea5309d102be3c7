"""Colour correction of an upscaled video against its low-resolution source: the one home of both
fixes.

A diffusion upscaler may drift in colour (a global tint, a brightness shift, washed-out saturation)
while it adds detail. Two standard fixes pull the colours back to the source and keep the new
detail:

- `adain` (latent, cheap, temporally stable): every output channel's clip-wide mean and std are set
  to a reference's (`channel_stats` of the upsampled LR latent). One affine map per channel for the
  whole clip, so it cannot flicker. The SimpleGVR Sampler's `colour_fix = latent AdaIN`.
- `wavelet_colour_fix` (pixels, as StableSR, SeedVR2 and FlashVSR do): an a-trous wavelet
  decomposition (`levels` 3x3 binomial blurs at dilations 1, 2, 4, ...) splits each frame into a
  high band (the sum of the details) and a low band (what is left); the result is the HR frame's
  high band plus the LR frame's low band (LR resized to the HR size first). The SimpleGVR Colour Fix
  node, after VAE Decode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_FIXES = ("none", "latent AdaIN")  # the Sampler's choices (latent space)
PIXEL_FIXES = ("wavelet", "AdaIN")  # the Colour Fix node's choices (pixels)
# StableSR's default: blurs at dilations 1..16, the low band holds structure above ~64 px
WAVELET_LEVELS = 5
EPS = 1e-6


# --- latent AdaIN ---------------------------------------------------------------------------------
def channel_stats(
    x: torch.Tensor, chunk_frames: int = 8, transform=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over (T, H, W) of [B, C, T, H, W], as float64 [B, C] each.

    Accumulated over chunks of `chunk_frames` frames (each optionally mapped by `transform`, e.g. a
    resize), so a large clip is never held twice."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or min(x.shape) < 1:
        raise ValueError(
            f"channel_stats: expected a non-empty [B, C, T, H, W] tensor, got "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    b, c = x.shape[:2]
    s = torch.zeros(b, c, dtype=torch.float64)
    s2 = torch.zeros(b, c, dtype=torch.float64)
    n = 0
    for t0 in range(0, x.shape[2], max(1, chunk_frames)):
        part = x[:, :, t0 : t0 + max(1, chunk_frames)]
        if transform is not None:
            part = transform(part)
        part = part.detach().to("cpu", torch.float64)
        s += part.sum((2, 3, 4))
        s2 += part.pow(2).sum((2, 3, 4))
        n += part[0, 0].numel()
    mean = s / n
    std = (s2 / n - mean.pow(2)).clamp_min(0).sqrt()
    return mean, std


def adain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """x [B, C, T, H, W] with each channel's clip-wide mean and std set to `mean`, `std` ([B, C] or
    [C]).

    A channel that is constant in x (std 0) gets the reference mean and keeps std 0."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        raise ValueError(
            f"adain: expected a [B, C, T, H, W] latent, got {tuple(getattr(x, 'shape', ()))}"
        )
    b, c = x.shape[:2]
    mean, std = (torch.as_tensor(v, dtype=torch.float64).reshape(-1, c) for v in (mean, std))
    if mean.shape[0] not in (1, b) or std.shape != mean.shape:
        raise ValueError(
            f"adain: reference stats of shape {tuple(mean.shape)} / {tuple(std.shape)} do not fit "
            f"a latent with batch {b} and {c} channels"
        )
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
        raise ValueError("adain: the reference mean/std must be finite and the std >= 0")
    m_x, s_x = channel_stats(x)
    scale = torch.where(s_x > EPS, std / s_x.clamp_min(EPS), torch.zeros_like(s_x))
    shift = mean - m_x * scale
    view = (b, c, 1, 1, 1)
    return (x.double() * scale.view(view).to(x.device) + shift.view(view).to(x.device)).to(x.dtype)


# --- wavelet colour fix (pixels) ------------------------------------------------------------------
def _check_frames(x, what: str) -> torch.Tensor:
    if (
        not isinstance(x, torch.Tensor)
        or x.ndim != 4
        or x.shape[-1] not in (1, 3, 4)
        or min(x.shape) < 1
    ):
        raise ValueError(
            f"{what} has shape {tuple(getattr(x, 'shape', ()))}: expected frames [N, H, W, "
            f"3] in [0, 1]"
        )
    if not x.is_floating_point():
        raise ValueError(f"{what} has dtype {x.dtype}: expected float frames in [0, 1]")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return x


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """3x3 binomial blur ([1,2,1]/4 both ways) at `dilation` of [N, C, H, W], edges replicated."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
    d = dilation
    return F.conv2d(F.pad(x, (d, d, d, d), mode="replicate"), k2, groups=x.shape[1], dilation=d)


def wavelet_bands(
    x: torch.Tensor, levels: int = WAVELET_LEVELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) bands of [N, C, H, W]: low = `levels` blurs at dilations 1, 2, 4, ..., high = x -
    low."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 12:
        raise ValueError(f"levels={levels!r}: expected an int in [1, 12]")
    low = x
    for i in range(levels):
        low = _blur(low, 2**i)
    return x - low, low


def wavelet_colour_fix(
    hr: torch.Tensor, lr: torch.Tensor, levels: int = WAVELET_LEVELS, chunk: int = 8
) -> torch.Tensor:
    """HR frames [N, H, W, C] with their low band replaced by the LR frames' (LR [N, h, w, C]
    resized to H x W, bicubic): the detail of `hr`, the colours of `lr`. Frames in [0, 1]; the
    result is clamped to [0, 1]."""
    hr, lr = _check_frames(hr, "HR frames"), _check_frames(lr, "LR reference frames")
    if lr.shape[0] != hr.shape[0] or lr.shape[-1] != hr.shape[-1]:
        raise ValueError(
            f"LR reference frames {tuple(lr.shape)} do not match the HR frames {tuple(hr.shape)}: "
            f"expected the same number of frames and channels (connect the frames the HR video "
            f"was upscaled from)"
        )
    out = torch.empty_like(hr, dtype=torch.float32)
    size = tuple(hr.shape[1:3])
    for s in range(0, hr.shape[0], max(1, chunk)):
        h = hr[s : s + chunk].float().permute(0, 3, 1, 2)
        ref = lr[s : s + chunk].float().permute(0, 3, 1, 2)
        if tuple(ref.shape[-2:]) != size:
            ref = F.interpolate(ref, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        high, _ = wavelet_bands(h, levels)
        _, low = wavelet_bands(ref, levels)
        out[s : s + chunk] = (high + low).clamp(0, 1).permute(0, 2, 3, 1)
    return out.to(hr.dtype)


def pixel_adain(hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """HR frames [N, H, W, C] with each colour channel's clip-wide mean and std set to the LR
    frames'."""
    hr, lr = _check_frames(hr, "HR frames"), _check_frames(lr, "LR reference frames")
    if lr.shape[-1] != hr.shape[-1]:
        raise ValueError(
            f"LR reference frames {tuple(lr.shape)} and HR frames {tuple(hr.shape)} have "
            f"different channels"
        )
    as_bcthw = lambda x: x.permute(3, 0, 1, 2)[None]  # noqa: E731  [1, C, N, H, W]
    mean, std = channel_stats(as_bcthw(lr))
    return adain(as_bcthw(hr.float()), mean, std)[0].permute(1, 2, 3, 0).clamp(0, 1).to(hr.dtype)


def colour_fix_frames(
    method: str, hr: torch.Tensor, lr: torch.Tensor, levels: int = WAVELET_LEVELS
) -> torch.Tensor:
    """The Colour Fix node's call: `method` in PIXEL_FIXES."""
    if method == "wavelet":
        return wavelet_colour_fix(hr, lr, levels)
    if method == "AdaIN":
        return pixel_adain(hr, lr)
    raise ValueError(f"colour fix {method!r}: expected one of {list(PIXEL_FIXES)}")
