"""From a raw-scale LR latent of a T2V sampler to a raw-scale HR latent, in two calls every host makes.

    raw LR latent --read_latent--> --normalise, noise s, upsampler--> Condition c      `build_condition`
    Condition c --plan, flow sampling against c--> x0 --denormalise--> raw HR latent    `sample`

`upscale` is the two in a row. The nodes (Latent Upsampler = build_condition, Sampler = sample), the CLI
and training's validation make exactly these calls, so they validate the same way and give the same
numbers for the same seed.

Long videos: the condition is built in temporal chunks with enough causal context to be exact, and
the DiT runs on the windows of a `SamplingPlan`: the whole clip (`temporal_units`, `sparse_local`) or
overlapping temporal windows blended linearly at every step (`full`, default window = the checkpoint's
trained length), optionally also spatial tiles. The plan's `memory` estimate is derived from the same
windows, so the estimate and what runs cannot drift apart; `memory_budget` refuses a run whose estimate
does not fit, before anything large is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import colour, seeding
from .config import check_attention
from .latent_formats import LatentFormat, VideoLatent, from_bcthw, get_format, read_latent
from .memory import GiB, available_memory, check_memory, format_bytes  # noqa: F401 - GiB: hosts size budgets in it
from .model import SimpleGVR
from .models.upsampler import resize_frames
from .sampling import MAX_SHIFT, MAX_STEPS, SAMPLERS, add_condition_noise, cfg_velocity, flow_sigmas, get_sampler

UPSAMPLER_CONTEXT = 16  # causal receptive field of the learned upsampler, in latent frames (4 blocks x 2 convs x 2)
MAX_CFG = 100.0
AUTO_STEPS = "auto"  # steps from the checkpoint's sampling recipe (model.sampling)
MAX_LATENT_SIDE = 4096  # latent pixels: 32768 px for Wan 2.1; anything larger is a typo, not a video


@dataclass
class Condition:
    """The upsampled, noise-augmented condition c (model space, float32 on the CPU) and how it was made."""

    c: torch.Tensor  # [B, C, T, H2, W2], normalised
    noise_level: float
    layout: str  # layout of the LR latent it came from ('BCTHW' or 'BTCHW')
    lr_shape: tuple[int, ...]
    # per-channel (mean, std) [B, C] of the clean LR latent upsampled bilinearly (normalised, before the condition
    # noise): the colours `sample(colour_fix="latent AdaIN")` restores
    reference: tuple[torch.Tensor, torch.Tensor] | None = None
    chunk_frames: int | None = None  # latent frames per upsampler chunk it was built with (None: the whole clip)


# --- sizes and scalar arguments ------------------------------------------------------------------
def _finite(name: str, value, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number") from None
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise ValueError(f"{name}={value!r}: expected a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return v


RESIZE_MODES = ("short edge", "long edge", "width and height", "scale")  # how a host may give the target size
DEFAULT_RESIZE_BY, DEFAULT_EDGE = "short edge", 1080  # the nodes' default: 1080p, the input's aspect ratio kept
DEFAULT_SCALE = 2.25  # 480p -> 1080p, the core's and the CLI's default when no size is given
ASPECT_TOLERANCE = 0.01  # an explicit size that changes the aspect ratio by more than this (plus rounding) warns


def _pixels(name: str, v, limit: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
        raise ValueError(f"{name}={v!r}: expected a whole number of pixels in [1, {limit}]")
    return v


def target_size(model: SimpleGVR, lr_hw: tuple[int, int], width: int | None = None, height: int | None = None,
                scale: float | None = None, *, short_edge: int | None = None, long_edge: int | None = None) -> tuple[int, int]:
    """HR latent (H, W) for an LR latent of `lr_hw`, from exactly one of: `short_edge` or `long_edge` (pixels of that
    side of the output, the other side following the input's aspect ratio), `width` and `height` (pixels, as given:
    see `aspect_warning`), or `scale` (default 2.25, 480p -> 1080p). Rounded to the latent grid."""
    fmt = model.latent_format
    given = [name for name, v in (("width/height", width if width is not None else height), ("scale", scale),
                                  ("short_edge", short_edge), ("long_edge", long_edge)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one of width/height, scale, short_edge or long_edge, not {' and '.join(given)}")
    if (width is None) != (height is None):
        raise ValueError(f"give both width and height in pixels, got width={width} height={height}")
    h, w = (int(v) for v in lr_hw)
    r = fmt.spatial_ratio
    limit = MAX_LATENT_SIDE * r
    if width is not None:
        width, height = _pixels("width", width, limit), _pixels("height", height, limit)
        size = fmt.latent_size(height, width)
    elif short_edge is not None or long_edge is not None:
        name, edge = ("short_edge", short_edge) if short_edge is not None else ("long_edge", long_edge)
        edge = _pixels(name, edge, limit)
        side = min(h, w) if short_edge is not None else max(h, w)
        # each side * edge / (r * side), rounded in exact integers with halves up: an edge between two grid lines (1080
        # on Wan 2.2's /16 grid, 67.5 latent pixels) becomes 1088 whatever the float rounding, never 1072
        size = (max(1, (2 * h * edge + r * side) // (2 * r * side)), max(1, (2 * w * edge + r * side) // (2 * r * side)))
    else:
        scale = DEFAULT_SCALE if scale is None else _finite("scale", scale, 0.0, MAX_LATENT_SIDE, lo_open=True)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if max(size) > MAX_LATENT_SIDE:
        raise ValueError(f"target latent {size[0]}x{size[1]} ({size[1] * r}x{size[0] * r} px) is larger than "
                         f"{MAX_LATENT_SIDE} latent pixels on a side")
    if size[0] < h or size[1] < w:
        raise ValueError(f"target {size[1] * r}x{size[0] * r} px (latent {size[0]}x{size[1]}) is smaller than the input "
                         f"{w * r}x{h * r} px (latent {h}x{w}): SimpleGVR only upscales")
    return size


def aspect_warning(model: SimpleGVR, lr_hw: tuple[int, int], hr_hw: tuple[int, int]) -> str | None:
    """A user-facing warning when `hr_hw` stretches the picture of `lr_hw` (latent sizes) by more than the latent
    grid's rounding plus ASPECT_TOLERANCE; None when the aspect ratio is kept."""
    (h, w), (H, W) = lr_hw, hr_hw
    r = model.latent_format.spatial_ratio
    change = (W / H) / (w / h) - 1
    if abs(change) <= ASPECT_TOLERANCE + 0.5 / H + 0.5 / W:
        return None
    return (f"{W * r}x{H * r} px changes the aspect ratio of the {w * r}x{h * r} px input ({w / h:.3f} -> {W / H:.3f}: "
            f"{abs(change):.1%} {'wider' if change > 0 else 'narrower'}), so the video is stretched; use resize_by "
            f"'short edge' or 'long edge' to keep the aspect ratio")


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
    if context.shape[0] not in (1, batch) or context.shape[1] < 1:
        raise ValueError(f"{what} has shape {tuple(context.shape)}: expected batch 1 or {batch} and at least one token")
    if not torch.isfinite(context).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return pad_text(context.expand(batch, -1, -1).float(), n)


def pad_text(context: torch.Tensor, text_len: int) -> torch.Tensor:
    """[B, L, D] -> [B, text_len, D]: zero-padded after the last token, or cut after text_len tokens."""
    if context.shape[1] >= text_len:
        return context[:, :text_len]
    return torch.nn.functional.pad(context, (0, 0, 0, text_len - context.shape[1]))


# --- memory -----------------------------------------------------------------------------------------
def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def weights_memory(model: SimpleGVR, dtype: torch.dtype | None = None) -> int:
    """Bytes of the model's weights in `dtype` (default: their own): what stays resident while it runs."""
    if dtype is None:
        return int(sum(p.numel() * p.element_size() for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()) * _element_size(dtype))


# Activation bytes, calibrated against peak memory measured on the CPU (benchmarks/pipeline_memory.py, with glibc
# returning freed blocks at once). The learned upsampler holds ~8 tensors of its widest activation (hidden channels x
# the time-expanded frames x the target size) at its peak.
UPSAMPLER_TENSORS = 8


def upsampler_memory(model: SimpleGVR, lr_shape, size: tuple[int, int], chunk_frames: int | None = 8,
                     dtype: torch.dtype | None = None) -> int:
    """Bytes of build_condition beyond the weights: the condition (float32, its chunks and their concatenation) plus
    the learned upsampler's activations on the largest chunk - `chunk_frames` latent frames with their causal context
    of UPSAMPLER_CONTEXT frames, expanded in time (1 + 4(T - 1) frames), at the target size."""
    b, c, t, _, _ = (int(v) for v in lr_shape)
    up = model.config.upsampler
    cond = b * c * t * size[0] * size[1] * 4
    if up.mode == "interp":
        return 3 * cond
    e = _element_size(dtype or next(model.upsampler.parameters()).dtype)
    frames = min(t, (chunk_frames or t) + UPSAMPLER_CONTEXT)
    if up.mode == "learned":
        frames = 1 + up.temporal_factor * (frames - 1)
    return int(2 * cond + b * frames * size[0] * size[1] * up.hidden * UPSAMPLER_TENSORS * e)


def dit_token_bytes(model: SimpleGVR, dtype: torch.dtype, mode: str) -> int:
    """Activation bytes per token of one DiT forward (batch 1) at its peak: the larger of the self-attention phase
    (~8 dtype-sized and ~2.5 float32 tensors of `dim` per token: x, q, k, v with their norms, RoPE and contiguous
    copies; sparse_local adds its blocked, padded and gathered queries, keys and values, ~8 more) and the FFN phase (~4 dtype-sized
    and 1 float32 tensor of `dim`, plus the two `ffn_dim`-wide hidden tensors). Calibrated on measured CPU peaks."""
    dit = model.config.dit
    e = _element_size(dtype)
    attn = (8 * e + 10 + (8 * e if mode == "sparse_local" else 0)) * dit.dim
    ffn = (4 * e + 4) * dit.dim + 2 * dit.ffn_dim * e
    return int(max(attn, ffn))


@dataclass(frozen=True)
class SamplingPlan:
    """Where the DiT runs at every step: temporal windows x spatial tiles of the condition, blended linearly."""

    shape: tuple[int, int, int, int, int]  # the condition [B, C, T, H, W]
    mode: str  # attention mode
    t_windows: tuple[tuple[int, int], ...]
    h_windows: tuple[tuple[int, int], ...]
    w_windows: tuple[tuple[int, int], ...]
    overlaps: tuple[int, int, int]

    @property
    def window_shape(self) -> tuple[int, int, int]:
        """(T, H, W) of the largest DiT call."""
        return (max(e - s for s, e in self.t_windows), max(e - s for s, e in self.h_windows),
                max(e - s for s, e in self.w_windows))

    @property
    def calls_per_step(self) -> int:
        return len(self.t_windows) * len(self.h_windows) * len(self.w_windows)

    @property
    def chunk_frames(self) -> int | None:
        """The temporal window in latent frames (None: the whole clip)."""
        return None if len(self.t_windows) == 1 else self.window_shape[0]

    @property
    def tile_size(self) -> tuple[int, int] | None:
        """The spatial tile (H, W) in latent pixels (None: no tiles)."""
        return None if len(self.h_windows) == len(self.w_windows) == 1 else self.window_shape[1:]

    def memory(self, model: SimpleGVR, *, cfg: float, dtype: torch.dtype | None = None) -> int:
        """Bytes sampling needs beyond the weights: the float32 latents (x, c, the velocity, the blend buffers, the
        output: 6 of the condition's size) plus the activations of the largest DiT call, its tokens times
        `dit_token_bytes`, twice with CFG (the positive and negative passes run as one batch). Under sequence
        parallelism (parallel.py) a process holds 1/N of the tokens' activations, plus the full token sequence after
        the patch embedding."""
        dit = model.config.dit
        dtype = dtype or next(model.dit.parameters()).dtype
        b, c, t, h, w = self.shape
        latents = 6 * b * c * t * h * w * 4
        wt, wh, ww = self.window_shape
        pt, ph, pw = dit.patch_size
        tokens = math.ceil(wt / pt) * math.ceil(wh / ph) * math.ceil(ww / pw)
        per_token = dit_token_bytes(model, dtype, self.mode)
        batch = b * (2 if cfg != 1.0 else 1)
        sp = getattr(model.dit, "sequence_parallel", None)
        if sp is None or sp.world == 1:
            return int(latents + batch * tokens * per_token)
        local = math.ceil(tokens / sp.world)
        return int(latents + batch * (local * per_token + tokens * dit.dim * _element_size(dtype)))

    def describe(self) -> str:
        """One line for logs and the node: what runs at every step."""
        t, h, w = self.window_shape
        T = self.shape[2]
        when = "the whole clip" if len(self.t_windows) == 1 else f"{len(self.t_windows)} windows of {t} latent frames"
        tiles = "" if self.tile_size is None else f", {len(self.h_windows)}x{len(self.w_windows)} tiles of {h}x{w} latent px"
        return f"{self.mode} on {when} ({T} latent frames){tiles}: {self.calls_per_step} DiT call(s) per step"


def windows(length: int, size: int | None, overlap: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) windows of `size` covering `length`; the last one is aligned to the end."""
    if size is None or size >= length:
        return [(0, length)]
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"window size {size} and overlap {overlap}: expected size >= 1 and 0 <= overlap < size")
    stride = size - overlap
    starts = list(range(0, length - size, stride)) + [length - size]
    return [(s, s + size) for s in sorted(set(starts))]


def plan_sampling(model: SimpleGVR, shape, *, attention: str | None = None, chunk_frames: int | str | None = "auto",
                  chunk_overlap: int = 1, tile_size: tuple[int, int] | None = None, tile_overlap: int = 8) -> SamplingPlan:
    """The window plan for a condition of `shape` [B, C, T, H, W].

    chunk_frames: temporal DiT window in latent frames ("auto": the checkpoint's trained length for `full`, the
    whole clip for `temporal_units`/`sparse_local`; None: the whole clip). tile_size: optional spatial tiles
    (latent H, W) with `tile_overlap` latent pixels of linear blending."""
    mode = attention or model.dit.attention_mode
    check_attention(mode, **model.dit.attention_options)
    b, c, T, H, W = (int(v) for v in shape)
    if chunk_frames == "auto":
        chunk_frames = model.config.train_latent_frames if mode == "full" else None
    if chunk_frames is not None and (isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1):
        raise ValueError(f"chunk_frames={chunk_frames!r}: expected 'auto', None or a number of latent frames >= 1")
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        raise ValueError(f"chunk_overlap={chunk_overlap!r}: expected an int >= 0")
    if tile_size is not None:
        if len(tile_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in tile_size):
            raise ValueError(f"tile_size must be (H, W) in latent pixels, got {tile_size}")
        if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be an int >= 0, got {tile_overlap!r}")
    th, tw = (min(tile_size[0], H), min(tile_size[1], W)) if tile_size is not None else (H, W)
    ov = (max(0, min(chunk_overlap, (chunk_frames or T) - 1)), max(0, min(tile_overlap, th - 1)),
          max(0, min(tile_overlap, tw - 1)))
    return SamplingPlan((b, c, T, H, W), mode, tuple(windows(T, chunk_frames, ov[0])), tuple(windows(H, th, ov[1])),
                        tuple(windows(W, tw, ov[2])), ov)


# --- the auto memory mode ---------------------------------------------------------------------------
def _tile(length: int, parts: int, overlap: int, multiple: int) -> int:
    """The tile length that cuts `length` into `parts` tiles overlapping by `overlap`, rounded up to `multiple`."""
    size = math.ceil((length + (parts - 1) * overlap) / parts)
    return min(length, multiple * math.ceil(size / multiple))


def auto_candidates(model: SimpleGVR, shape, *, attention: str | None = None, chunk_overlap: int = 1,
                    tile_overlap: int = 8):
    """The plans `auto_plan` tries, from the one that changes the result least to the one that needs least memory:
    1. the attention mode's own plan (the whole clip; `full`: windows of the trained length), 2. shorter temporal
    windows down to the trained length (never below it: that is the clip length the checkpoint knows), 3. spatial
    tiles on windows of the trained length (1x2, 2x2, 2x3, 3x3, ... tiles), 4. shorter windows on the smallest tiles."""
    mode = attention or model.dit.attention_mode
    T, H, W = (int(v) for v in shape[2:])
    floor = min(T, model.config.train_latent_frames)
    _, ph, pw = model.config.dit.patch_size
    kw = dict(attention=mode, chunk_overlap=chunk_overlap, tile_overlap=tile_overlap)
    yield plan_sampling(model, shape, chunk_frames="auto", **kw)
    start = model.config.train_latent_frames if mode == "full" else T
    for frames in range(min(start, T) - 1, floor - 1, -1):
        yield plan_sampling(model, shape, chunk_frames=frames, **kw)
    grids, last = [], None
    for n in range(1, 65):
        grids += [(n, n + 1), (n + 1, n + 1)] if W >= H else [(n + 1, n), (n + 1, n + 1)]
    for gh, gw in grids:
        tile = (_tile(H, gh, tile_overlap, ph), _tile(W, gw, tile_overlap, pw))
        if tile[0] <= 2 * tile_overlap and tile[1] <= 2 * tile_overlap:
            break
        last = tile
        yield plan_sampling(model, shape, chunk_frames=floor, tile_size=tile, **kw)
    for frames in range(floor - 1, 0, -1):
        yield plan_sampling(model, shape, chunk_frames=frames, tile_size=last,
                            **{**kw, "chunk_overlap": min(chunk_overlap, frames - 1)})


def auto_plan(model: SimpleGVR, shape, budget: int, *, cfg: float, dtype: torch.dtype | None = None,
              attention: str | None = None, chunk_overlap: int = 1, tile_overlap: int = 8) -> SamplingPlan:
    """The first of `auto_candidates` whose `SamplingPlan.memory` fits `budget` bytes (the memory the run may use
    beyond the resident weights). The plan that is chosen is the plan that runs (`sample(..., plan=...)`), so the
    estimate and the execution cannot drift; when the whole clip fits, the result is the unchunked one exactly.
    ValueError (with the smallest estimate) when nothing fits."""
    budget = int(budget)
    best = None
    for plan in auto_candidates(model, shape, attention=attention, chunk_overlap=chunk_overlap, tile_overlap=tile_overlap):
        need = plan.memory(model, cfg=cfg, dtype=dtype)
        if need <= budget:
            return plan
        if best is None or need < best[0]:
            best = (need, plan)
    raise ValueError(f"sampling a latent of {tuple(int(v) for v in shape)} needs at least {format_bytes(best[0])} "
                     f"({best[1].describe()}) but {format_bytes(budget)} is free: use a smaller size, cfg 1 "
                     "(one pass per step), or free memory")


def auto_condition_chunk(model: SimpleGVR, lr_shape, size: tuple[int, int], budget: int,
                         dtype: torch.dtype | None = None) -> int:
    """The largest chunk of latent frames whose `upsampler_memory` fits `budget` bytes (the upsampler is causal, so
    the result does not depend on the chunk); ValueError when even one frame does not fit."""
    t = int(lr_shape[2])
    for frames in range(t, 0, -1):
        if upsampler_memory(model, lr_shape, size, frames, dtype) <= budget:
            return frames
    need = upsampler_memory(model, lr_shape, size, 1, dtype)
    raise ValueError(f"the condition for {tuple(int(v) for v in lr_shape)} -> latent {size[0]}x{size[1]} needs at least "
                     f"{format_bytes(need)} (chunks of 1 latent frame) but {format_bytes(budget)} is free: "
                     "use a smaller size or free memory")


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


def _lr(model: SimpleGVR, lr_latent, latent_format, latent_scale: str) -> VideoLatent:
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"model must be a SimpleGVR, got {type(model).__name__}")
    fmt = model.latent_format
    if latent_format is not None and get_format(latent_format).name != fmt.name:
        raise ValueError(f"latent format '{get_format(latent_format).name}' does not match the checkpoint's "
                         f"latent format '{fmt.name}'")
    if isinstance(lr_latent, VideoLatent):
        return lr_latent
    return read_latent(lr_latent, fmt, latent_scale, "LR latent")


@torch.no_grad()
def build_condition(model: SimpleGVR, lr_latent: torch.Tensor | VideoLatent, *, width: int | None = None,
                    height: int | None = None, scale: float | None = None, short_edge: int | None = None,
                    long_edge: int | None = None, noise_level: float = 0.4, seed: int = 0,
                    chunk_frames: int | str | None = 8, latent_format: str | LatentFormat | None = None,
                    latent_scale: str = "raw", memory_budget=None) -> Condition:
    """Read, normalise, noise-augment (seeded) and upsample an LR latent into the condition c.

    lr_latent: a raw tensor [B,C,T,H,W] / [B,T,C,H,W] (read with `latent_scale`) or a `VideoLatent` that
    `latent_formats.read_latent` already validated. The size arguments are `target_size`'s. The learned upsampler
    is causal with a receptive field of UPSAMPLER_CONTEXT latent frames, so it runs on chunks of `chunk_frames` with
    that much past context and gives exactly the whole-clip result while its memory stays bounded by the chunk;
    chunk_frames="auto" takes the largest chunk whose estimate fits `memory_budget` (bytes; None or "auto": what
    the device has available now).
    """
    lr = _lr(model, lr_latent, latent_format, latent_scale)
    noise_level = _finite("noise_level", noise_level, 0.0, 1.0)
    seed = seeding.check_seed(seed)
    x = lr.raw
    size = target_size(model, tuple(x.shape[3:]), width, height, scale, short_edge=short_edge, long_edge=long_edge)
    device, dtype = _model_device_dtype(model)
    what = f"the condition for {tuple(x.shape)} -> latent {size[0]}x{size[1]}"
    if chunk_frames == "auto":
        budget = available_memory(device) if memory_budget in (None, "auto") else int(memory_budget)
        chunk_frames = auto_condition_chunk(model, x.shape, size, budget, dtype)
    elif chunk_frames is not None and (isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1):
        raise ValueError(f"chunk_frames={chunk_frames!r}: expected 'auto', None or a number of latent frames >= 1")
    check_memory(upsampler_memory(model, x.shape, size, chunk_frames, dtype), memory_budget, what, device)
    c0 = model.latent_format.normalise(x.float())
    T = c0.shape[2]
    step = T if not chunk_frames else int(chunk_frames)
    reference = colour.channel_stats(c0, step, transform=lambda part: resize_frames(part, size))
    cs = add_condition_noise(c0, noise_level, generator=seeding.torch_generator(seed, seeding.CONDITION_NOISE))
    parts = []
    for s in range(0, T, step):
        e = min(T, s + step)
        lo = max(0, s - UPSAMPLER_CONTEXT)
        out = model.upsampler(cs[:, :, lo:e].to(device, dtype), size=size)
        parts.append(out[:, :, s - lo:].float().cpu())
    c = torch.cat(parts, dim=2)
    return Condition(c=c, noise_level=noise_level, layout=lr.layout, lr_shape=tuple(x.shape), reference=reference,
                     chunk_frames=None if step >= T else step)


# --- sampling ------------------------------------------------------------------------------------
def _non_finite_cause(model: SimpleGVR, condition: Condition, cfg: float) -> str:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            return f"the model's weights contain NaN or Inf ({name})"
    dtype = next(model.parameters()).dtype
    if dtype == torch.float16:
        return "fp16 overflow in the DiT: use bf16 or fp32"
    if cfg > 30:
        return f"cfg={cfg:g} is very large: use 1-10"
    if not torch.isfinite(condition.c).all():
        return "the condition contains NaN or Inf"
    return "unknown: check the input latent and the checkpoint"


def sampling_sigmas(model: SimpleGVR, steps: int | str = AUTO_STEPS, shift: float = 5.0) -> torch.Tensor:
    """The steps+1 sigmas of a run. steps "auto": the checkpoint's recipe (`model.sampling`: its steps and its shift
    or explicit timesteps; `shift` is not used) - 50 steps at shift 5 for a teacher. An int: `steps` Euler steps of
    the flow schedule with `shift` (checked in both cases)."""
    shift = _finite("shift", shift, 0.0, MAX_SHIFT, lo_open=True)
    if steps == AUTO_STEPS:
        return model.sampling.sigmas()
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps={steps!r}: expected an int in [1, {MAX_STEPS}] or 'auto'")
    return flow_sigmas(steps, shift)


@torch.no_grad()
def sample(model: SimpleGVR, condition: Condition, *, context=None, negative_context=None, steps: int | str = AUTO_STEPS,
           cfg: float = 5.0, shift: float = 5.0, seed: int = 0, sampler: str = "euler", attention: str | None = None,
           chunk_frames: int | str | None = "auto", chunk_overlap: int = 1, tile_size: tuple[int, int] | None = None,
           tile_overlap: int = 8, plan: SamplingPlan | str | None = None, colour_fix: str = "none",
           callback: Callable | None = None, progress: bool = False, memory_budget=None) -> torch.Tensor:
    """Flow sampling of the HR latent against `condition`; returns it in raw scale and the LR latent's layout.

    context / negative_context: umt5 features [B, L, text_dim] (None = the null prompt the model was trained
    with 10% of the time). steps and shift: `sampling_sigmas` ("auto": the checkpoint's recommended recipe).
    cfg = 1 runs one DiT forward per step. Where the DiT runs: `plan` (a SamplingPlan from
    `plan_sampling` / `auto_plan`), or "auto" (`auto_plan` for `memory_budget` bytes; None or "auto": what the
    device has available now), or None (`plan_sampling` with the window arguments). colour_fix: "none" or
    "latent AdaIN" (`colour.adain` to the condition's reference statistics). callback(dict) runs after every step;
    an exception raised there stops sampling and propagates. The state of the ODE is kept in float32 whatever the
    model's dtype. A result with NaN or Inf is an error.
    """
    if not isinstance(model, SimpleGVR):
        raise ValueError(f"model must be a SimpleGVR, got {type(model).__name__}")
    if not isinstance(condition, Condition):
        raise ValueError(f"condition must be a Condition from build_condition, got {type(condition).__name__}")
    sigmas = sampling_sigmas(model, steps, shift)
    cfg = _finite("cfg", cfg, 0.0, MAX_CFG, lo_open=True)
    seed = seeding.check_seed(seed)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}: expected one of {SAMPLERS}")
    if colour_fix not in colour.COLOUR_FIXES:
        raise ValueError(f"colour_fix {colour_fix!r}: expected one of {list(colour.COLOUR_FIXES)}")
    if colour_fix != "none" and condition.reference is None:
        raise ValueError("colour_fix needs the condition's reference statistics: build the condition with build_condition")
    shape = tuple(condition.c.shape)
    device, dtype = _model_device_dtype(model)
    if plan == "auto":
        budget = available_memory(device) if memory_budget in (None, "auto") else int(memory_budget)
        plan = auto_plan(model, shape, budget, cfg=cfg, dtype=dtype, attention=attention,
                         chunk_overlap=chunk_overlap, tile_overlap=tile_overlap)
    elif plan is None:
        plan = plan_sampling(model, shape, attention=attention, chunk_frames=chunk_frames, chunk_overlap=chunk_overlap,
                             tile_size=tile_size, tile_overlap=tile_overlap)
    elif not isinstance(plan, SamplingPlan) or plan.shape != shape:
        raise ValueError(f"plan must be 'auto', None or a SamplingPlan for the condition's shape {shape}, got "
                         f"{getattr(plan, 'shape', plan)!r}")
    batch = condition.c.shape[0]
    ctx = prepare_context(model, context, batch)
    neg = prepare_context(model, negative_context, batch, "negative_context") if cfg != 1.0 else None
    check_memory(plan.memory(model, cfg=cfg, dtype=dtype), memory_budget,
                 f"sampling a latent of {tuple(condition.c.shape)} (DiT window {plan.window_shape})", device)

    cond = condition.c.to(device, torch.float32)
    ctx, neg = ctx.to(device, dtype), (neg.to(device, dtype) if neg is not None else None)

    def model_fn(x, sigma):
        def window_fn(xw, cw):
            return cfg_velocity(model.velocity, cw, ctx, neg, cfg, condition.noise_level, attention=plan.mode)(xw, sigma)

        return blended(window_fn, x, cond, plan.t_windows, plan.h_windows, plan.w_windows, plan.overlaps)

    x = torch.randn(cond.shape, generator=seeding.torch_generator(seed, seeding.SAMPLING_NOISE)).to(device)
    sigmas = sigmas.to(device)
    x0 = get_sampler(sampler)(model_fn, x, sigmas, callback=callback, disable=not progress).float()
    if colour_fix == "latent AdaIN":
        x0 = colour.adain(x0, *condition.reference)
    out = model.latent_format.denormalise(x0)
    if not torch.isfinite(out).all():
        raise ValueError(f"sampling produced NaN or Inf in the HR latent (likely cause: "
                         f"{_non_finite_cause(model, condition, cfg)}); nothing was returned")
    return from_bcthw(out, condition.layout)


def upscale(model: SimpleGVR, lr_latent: torch.Tensor | VideoLatent, *, width: int | None = None,
            height: int | None = None, scale: float | None = None, short_edge: int | None = None,
            long_edge: int | None = None, noise_level: float = 0.4, seed: int = 0, latent_format=None,
            latent_scale: str = "raw", condition_chunk_frames: int | str | None = 8, memory_budget=None,
            **sample_kwargs) -> torch.Tensor:
    """`build_condition` then `sample` with the same seed: a raw LR latent ([B,C,T,H,W] or [B,T,C,H,W]) to a raw
    HR latent in the same layout. `sample_kwargs` are `sample`'s (context, steps, cfg, shift, attention, plan, ...);
    condition_chunk_frames is build_condition's chunk_frames ("auto" with plan="auto" plans both for the budget)."""
    condition = build_condition(model, lr_latent, width=width, height=height, scale=scale, short_edge=short_edge,
                                long_edge=long_edge, noise_level=noise_level, seed=seed, latent_format=latent_format,
                                latent_scale=latent_scale, chunk_frames=condition_chunk_frames,
                                memory_budget=memory_budget)
    return sample(model, condition, seed=seed, memory_budget=memory_budget, **sample_kwargs)
