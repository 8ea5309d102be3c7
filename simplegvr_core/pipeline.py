"""`upscale(model, lr_latent, ...)`: a raw-scale LR latent from a T2V sampler -> a raw-scale HR latent.

    raw LR latent --normalise--> c0 --noise s, upsampler--> c (held fixed) --flow sampling--> x0 --denormalise--> raw HR

Long videos: the condition is built in temporal chunks with enough causal context to be exact, and
the DiT runs either on the whole clip (`temporal_units`, `sparse_local`) or on overlapping temporal
windows blended linearly at every step (`full`, default window = the checkpoint's trained length), so
the attention never grows past a window. Optional spatial tiles work the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import check_attention
from .latent_formats import LatentFormat, from_bcthw, get_format, to_bcthw
from .model import SimpleGVR
from .models.upsampler import add_condition_noise
from .sampling import cfg_velocity, flow_sigmas, get_sampler

UPSAMPLER_CONTEXT = 16  # causal receptive field of the learned upsampler, in latent frames (4 blocks x 2 convs x 2)
SAMPLING_SEED_OFFSET = 1_000_003  # sampling noise and condition noise come from different streams


@dataclass
class Condition:
    """The upsampled, noise-augmented condition c (model space) and how it was made."""

    c: torch.Tensor  # [B, C, T, H2, W2], normalised
    noise_level: float
    layout: str  # layout of the LR latent it came from ('BCTHW' or 'BTCHW')
    lr_shape: tuple[int, ...]


# --- validation ------------------------------------------------------------------------------------
def check_latent(model: SimpleGVR, lr_latent, latent_format: str | LatentFormat | None = None) -> tuple[torch.Tensor, str]:
    """Validate a raw LR latent against the model's latent format; return it as [B,C,T,H,W] and its layout."""
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"model must be a SimpleGVR, got {type(model).__name__}")
    fmt = model.latent_format
    if latent_format is not None and get_format(latent_format).name != fmt.name:
        raise ValueError(f"latent format '{get_format(latent_format).name}' does not match the checkpoint's "
                         f"latent format '{fmt.name}'")
    if not isinstance(lr_latent, torch.Tensor):
        raise ValueError(f"LR latent must be a torch.Tensor, got {type(lr_latent).__name__}")
    if lr_latent.ndim == 5 and fmt.channels not in (lr_latent.shape[1], lr_latent.shape[2]):
        raise ValueError(f"LR latent has shape {tuple(lr_latent.shape)} ({lr_latent.shape[1]} channels) but the "
                         f"checkpoint's latent format '{fmt.name}' has {fmt.channels} channels")
    x, layout = to_bcthw(lr_latent, fmt.channels, "LR latent")
    if x.shape[2] < 1:
        raise ValueError(f"LR latent has shape {tuple(lr_latent.shape)}: expected at least 1 latent frame")
    if not x.is_floating_point():
        raise ValueError(f"LR latent has dtype {x.dtype}: expected a floating-point tensor")
    if not torch.isfinite(x).all():
        raise ValueError(f"LR latent of shape {tuple(lr_latent.shape)} contains NaN or Inf")
    return x, layout


def target_size(model: SimpleGVR, lr_hw: tuple[int, int], width: int | None = None, height: int | None = None,
                scale: float | None = None) -> tuple[int, int]:
    """HR latent (H, W) from a pixel size (rounded to the latent grid) or a scale (default 2.25, 480p -> 1080p)."""
    fmt = model.latent_format
    if scale is not None and (width is not None or height is not None):
        raise ValueError("give either width/height or scale, not both")
    if (width is None) != (height is None):
        raise ValueError(f"give both width and height in pixels, got width={width} height={height}")
    h, w = lr_hw
    if width is not None:
        size = fmt.latent_size(int(height), int(width))
    else:
        scale = 2.25 if scale is None else float(scale)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size[0] < h or size[1] < w:
        r = fmt.spatial_ratio
        raise ValueError(f"target {size[1] * r}x{size[0] * r} px (latent {size[0]}x{size[1]}) is smaller than the input "
                         f"{w * r}x{h * r} px (latent {h}x{w}): SimpleGVR only upscales")
    return size


def prepare_context(model: SimpleGVR, context, batch: int, what: str = "context") -> torch.Tensor:
    """Text features [B, L, text_dim] zero-padded (or cut) to the model's text_len tokens (Wan: 512), as in
    training; None -> the null prompt (all zeros)."""
    dim, n = model.config.dit.text_dim, model.config.dit.text_len
    if context is None:
        return torch.zeros(batch, n, dim)
    if not isinstance(context, torch.Tensor):
        raise ValueError(f"{what} must be a tensor [B, L, {dim}], got {type(context).__name__}")
    if context.ndim == 2:
        context = context[None]
    if context.ndim != 3 or context.shape[-1] != dim:
        raise ValueError(f"{what} has shape {tuple(context.shape)}: expected [B, L, {dim}] text features "
                         f"(the model's text_dim is {dim})")
    if context.shape[0] not in (1, batch):
        raise ValueError(f"{what} has batch {context.shape[0]}: expected 1 or {batch}")
    if not torch.isfinite(context).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return pad_text(context.expand(batch, -1, -1).float(), n)


def pad_text(context: torch.Tensor, text_len: int) -> torch.Tensor:
    """[B, L, D] -> [B, text_len, D]: zero-padded after the last token, or cut after text_len tokens."""
    if context.shape[1] >= text_len:
        return context[:, :text_len]
    return torch.nn.functional.pad(context, (0, 0, 0, text_len - context.shape[1]))


# --- windows and blending ----------------------------------------------------------------------
def windows(length: int, size: int | None, overlap: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) windows of `size` covering `length`; the last one is aligned to the end."""
    if size is None or size >= length:
        return [(0, length)]
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"window size {size} and overlap {overlap}: expected size >= 1 and 0 <= overlap < size")
    stride = size - overlap
    starts = list(range(0, length - size, stride)) + [length - size]
    return [(s, s + size) for s in sorted(set(starts))]


def _ramp(n: int, start: int, end: int, length: int, overlap: int, device) -> torch.Tensor:
    """Blend weights of one window: linear ramps over `overlap` at inner edges, flat at the clip's edges."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        r = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (overlap + 1)
        if start > 0:
            w = torch.minimum(w, r)
        if end < length:
            w = torch.minimum(w, r.flip(0))
    return w


def blended(fn: Callable, x: torch.Tensor, cond: torch.Tensor, t_win, h_win, w_win, overlaps) -> torch.Tensor:
    """fn(x_window, cond_window) over all windows of [B,C,T,H,W], blended with linear ramps."""
    if len(t_win) == len(h_win) == len(w_win) == 1:
        return fn(x, cond)
    _, _, T, H, W = x.shape
    out = torch.zeros_like(x, dtype=torch.float32)
    norm = torch.zeros(1, 1, T, H, W, device=x.device)
    for ts, te in t_win:
        wt = _ramp(te - ts, ts, te, T, overlaps[0], x.device)
        for hs, he in h_win:
            wh = _ramp(he - hs, hs, he, H, overlaps[1], x.device)
            for ws, we in w_win:
                ww = _ramp(we - ws, ws, we, W, overlaps[2], x.device)
                wgt = wt.view(-1, 1, 1) * wh.view(1, -1, 1) * ww.view(1, 1, -1)
                sl = (slice(None), slice(None), slice(ts, te), slice(hs, he), slice(ws, we))
                out[sl] += fn(x[sl], cond[sl]).float() * wgt
                norm[sl] += wgt
    return (out / norm).to(x.dtype)


# --- condition ---------------------------------------------------------------------------------
def _model_device_dtype(model: SimpleGVR):
    p = next(model.dit.parameters())
    return p.device, p.dtype


@torch.no_grad()
def build_condition(model: SimpleGVR, lr_latent: torch.Tensor, *, latent_format=None, width=None, height=None,
                    scale=None, noise_level: float = 0.4, seed: int = 0, chunk_frames: int | None = 8) -> Condition:
    """Normalise, noise-augment (seeded) and upsample an LR latent into the condition c.

    The learned upsampler is causal with a receptive field of UPSAMPLER_CONTEXT latent frames, so it runs
    on chunks of `chunk_frames` with that much past context and gives exactly the whole-clip result
    while its memory stays bounded by the chunk.
    """
    x, layout = check_latent(model, lr_latent, latent_format)
    if not 0.0 <= float(noise_level) <= 1.0:
        raise ValueError(f"noise_level must lie in [0, 1], got {noise_level}")
    size = target_size(model, tuple(x.shape[3:]), width, height, scale)
    device, dtype = _model_device_dtype(model)
    c0 = model.latent_format.normalise(x.detach().float().cpu())
    gen = torch.Generator().manual_seed(int(seed))
    cs = add_condition_noise(c0, float(noise_level), gen)  # drawn on the CPU: same noise on every device
    T = cs.shape[2]
    step = T if not chunk_frames else max(1, int(chunk_frames))
    parts = []
    for s in range(0, T, step):
        e = min(T, s + step)
        lo = max(0, s - UPSAMPLER_CONTEXT)
        out = model.upsampler(cs[:, :, lo:e].to(device, dtype), size=size, noise_level=0.0)
        parts.append(out[:, :, s - lo:].float())
    c = torch.cat(parts, dim=2)
    return Condition(c=c, noise_level=float(noise_level), layout=layout, lr_shape=tuple(lr_latent.shape))


# --- the whole pipeline ------------------------------------------------------------------------
@torch.no_grad()
def upscale(model: SimpleGVR, lr_latent: torch.Tensor | None = None, *, latent_format=None, width: int | None = None,
            height: int | None = None, scale: float | None = None, context=None, negative_context=None, steps: int = 50,
            cfg: float = 5.0, shift: float = 5.0, noise_level: float = 0.4, seed: int = 0, attention: str | None = None,
            sampler: str = "euler", chunk_frames: int | str | None = "auto", chunk_overlap: int = 1,
            tile_size: tuple[int, int] | None = None, tile_overlap: int = 8, callback: Callable | None = None,
            condition: Condition | None = None, progress: bool = False) -> torch.Tensor:
    """Upscale a raw-scale LR latent ([B,C,T,H,W] or [B,T,C,H,W]) to a raw-scale HR latent in the same layout.

    context / negative_context: umt5 features [B, L, text_dim] (None = the null prompt the model was
    trained with 10% of the time). cfg = 1 runs one DiT forward per step. chunk_frames: temporal DiT
    window in latent frames ("auto": the checkpoint's trained length for `full`, the whole clip for
    `temporal_units`/`sparse_local`; None: the whole clip). tile_size: optional spatial DiT tiles
    (latent H, W) with `tile_overlap` latent pixels of linear blending. callback(dict) runs after every
    step; an exception raised there stops sampling and propagates.
    """
    if condition is None:
        if lr_latent is None:
            raise ValueError("give an LR latent or a prepared condition")
        x_lr, _ = check_latent(model, lr_latent, latent_format)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not cfg > 0:
        raise ValueError(f"cfg must be > 0, got {cfg}")
    get_sampler(sampler)
    mode = attention or model.dit.attention_mode
    check_attention(mode, **model.dit.attention_options)
    if condition is None:
        batch = x_lr.shape[0]
    else:
        if not isinstance(condition, Condition):
            raise ValueError(f"condition must be a Condition from build_condition, got {type(condition).__name__}")
        batch = condition.c.shape[0]
    ctx = prepare_context(model, context, batch)
    neg = prepare_context(model, negative_context, batch, "negative_context") if cfg != 1.0 else None
    if tile_size is not None:
        if len(tile_size) != 2 or min(tile_size) < 1:
            raise ValueError(f"tile_size must be (H, W) in latent pixels, got {tile_size}")
        if tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")

    if condition is None:
        condition = build_condition(model, lr_latent, latent_format=latent_format, width=width, height=height,
                                    scale=scale, noise_level=noise_level, seed=seed)
    device, dtype = _model_device_dtype(model)
    cond = condition.c.to(device, dtype)
    b, c, T, H, W = cond.shape
    if chunk_frames == "auto":
        chunk_frames = model.config.train_latent_frames if mode == "full" else None
    th, tw = (min(tile_size[0], H), min(tile_size[1], W)) if tile_size is not None else (H, W)
    ov = (min(chunk_overlap, (chunk_frames or T) - 1), min(tile_overlap, th - 1), min(tile_overlap, tw - 1))
    t_win, h_win, w_win = windows(T, chunk_frames, ov[0]), windows(H, th, ov[1]), windows(W, tw, ov[2])
    ctx, neg = ctx.to(device, dtype), (neg.to(device, dtype) if neg is not None else None)

    def model_fn(x, sigma):
        def window_fn(xw, cw):
            return cfg_velocity(model.dit, cw, ctx, neg, cfg, condition.noise_level, attention=mode)(xw, sigma)

        return blended(window_fn, x, cond, t_win, h_win, w_win, ov)

    gen = torch.Generator().manual_seed(int(seed) + SAMPLING_SEED_OFFSET)
    x = torch.randn(cond.shape, generator=gen).to(device, dtype)
    sigmas = flow_sigmas(steps, shift).to(device)
    x0 = get_sampler(sampler)(model_fn, x, sigmas, callback=callback, disable=not progress)
    out = model.latent_format.denormalise(x0.float())
    return from_bcthw(out, condition.layout)
