"""Where the DiT runs and what it costs: the window plan of a sampling run beside its memory
estimate.

A `SamplingPlan` lists the temporal windows and spatial tiles the DiT runs on at every step (blended
linearly, `SamplingPlan.run`); `SamplingPlan.memory` is derived from those same windows, so the
estimate and what runs cannot drift apart. `plan_sampling` makes the plan for given window settings,
`auto_plan` the first plan that fits a memory budget (the whole clip when it fits);
`upsampler_memory` / `auto_condition_chunk` do the same for the condition. Every estimate is
calibrated against measured CPU peaks (benchmarks/pipeline_memory.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import CAUSAL_MODE, check_attention
from .memory import GiB, format_bytes  # noqa: F401 - GiB: hosts size budgets in it
from .model import SimpleGVR

# causal receptive field of the learned upsampler, in latent frames (4 blocks x 2 convs x 2)
UPSAMPLER_CONTEXT = 16


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def weights_memory(model: SimpleGVR, dtype: torch.dtype | None = None) -> int:
    """Bytes of the model's weights in `dtype` (default: their own): what stays resident while it
    runs."""
    if dtype is None:
        return int(sum(p.numel() * p.element_size() for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()) * _element_size(dtype))


# Activation bytes, calibrated against peak memory measured on the CPU
# (benchmarks/pipeline_memory.py, with glibc returning freed blocks at once). The learned upsampler
# holds ~8 tensors of its widest activation (hidden channels x the time-expanded frames x the target
# size) at its peak.
UPSAMPLER_TENSORS = 8


def upsampler_memory(
    model: SimpleGVR,
    lr_shape,
    size: tuple[int, int],
    chunk_frames: int | None = 8,
    dtype: torch.dtype | None = None,
) -> int:
    """Bytes of build_condition beyond the weights: the condition (float32, its chunks and their
    concatenation) plus the learned upsampler's activations on the largest chunk - `chunk_frames`
    latent frames with their causal context of UPSAMPLER_CONTEXT frames, expanded in time (1 + 4(T -
    1) frames), at the target size."""
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
    """Activation bytes per token of one DiT forward (batch 1) at its peak: the larger of the
    self-attention phase (~8 dtype-sized and ~2.5 float32 tensors of `dim` per token: x, q, k, v
    with their norms, RoPE and contiguous copies; sparse_local and block_sparse_causal add their
    blocked, padded and gathered queries, keys and values, ~8 more) and the FFN phase (~4
    dtype-sized and 1 float32 tensor of `dim`, plus the two `ffn_dim`-wide hidden tensors).
    Calibrated on measured CPU peaks."""
    dit = model.config.dit
    e = _element_size(dtype)
    blocked = mode in ("sparse_local", CAUSAL_MODE)
    attn = (8 * e + 10 + (8 * e if blocked else 0)) * dit.dim
    ffn = (4 * e + 4) * dit.dim + 2 * dit.ffn_dim * e
    return int(max(attn, ffn))


def causal_gather_bytes(model: SimpleGVR) -> int:
    """The working buffer of the block-sparse kernel the model will use: the sdpa kernel (the CPU's,
    and a GPU's without flex_attention) gathers each chunk's selected K/V and scores within
    `block_sparse.SDPA_CHUNK_BYTES` (measured: most of a small model's streaming peak,
    benchmarks/streaming_memory.py); compiled flex gathers nothing (0)."""
    from .models.attention import resolve_kernel
    from .models.block_sparse import SDPA_CHUNK_BYTES

    device = next(model.dit.parameters()).device
    return SDPA_CHUNK_BYTES if resolve_kernel(model.dit.attention_kernel, device) == "sdpa" else 0


def causal_cache_bytes(model: SimpleGVR, shape, dtype: torch.dtype) -> int:
    """Bytes of a block_sparse_causal DiT's K/V caches for a condition of `shape` [B, C, T, H, W]
    (batch 1 of them): every layer keeps K and V of `causal_kv_blocks` temporal blocks, zero-padded
    to whole blocks, `dim` wide."""
    dit = model.config.dit
    _, _, _, h, w = (int(v) for v in shape)
    _, ph, pw = dit.patch_size
    bt, bh, bw = dit.causal_block
    tokens = (
        dit.causal_kv_blocks
        * bt
        * math.ceil(math.ceil(h / ph) / bh)
        * bh
        * math.ceil(math.ceil(w / pw) / bw)
        * bw
    )
    return int(dit.num_layers * 2 * tokens * dit.dim * _element_size(dtype))


@dataclass(frozen=True)
class SamplingPlan:
    """Where the DiT runs at every step: temporal windows x spatial tiles of the condition, blended
    linearly."""

    shape: tuple[int, int, int, int, int]  # the condition [B, C, T, H, W]
    mode: str  # attention mode
    t_windows: tuple[tuple[int, int], ...]
    h_windows: tuple[tuple[int, int], ...]
    w_windows: tuple[tuple[int, int], ...]
    overlaps: tuple[int, int, int]

    @property
    def window_shape(self) -> tuple[int, int, int]:
        """(T, H, W) of the largest DiT call."""
        return (
            max(e - s for s, e in self.t_windows),
            max(e - s for s, e in self.h_windows),
            max(e - s for s, e in self.w_windows),
        )

    @property
    def calls_per_step(self) -> int:
        return len(self.t_windows) * len(self.h_windows) * len(self.w_windows)

    @property
    def causal(self) -> bool:
        """Streaming (block_sparse_causal): the windows are groups run one after another, each
        seeing the K/V of the groups before it, not blended; a group takes all its steps before the
        next starts."""
        return self.mode == CAUSAL_MODE

    @property
    def chunk_frames(self) -> int | None:
        """The temporal window in latent frames (None: the whole clip)."""
        return None if len(self.t_windows) == 1 else self.window_shape[0]

    @property
    def tile_size(self) -> tuple[int, int] | None:
        """The spatial tile (H, W) in latent pixels (None: no tiles)."""
        return None if len(self.h_windows) == len(self.w_windows) == 1 else self.window_shape[1:]

    def memory(self, model: SimpleGVR, *, guidance: float, dtype: torch.dtype | None = None) -> int:
        """Bytes sampling needs beyond the weights: the float32 latents (x, c, the velocity, the
        blend buffers, the output: 6 of the condition's size) plus the activations of the largest
        DiT call, its tokens times `dit_token_bytes`, twice with CFG (the positive and negative
        passes run as one batch). Under sequence parallelism (parallel.py) a process holds 1/N of
        the tokens' activations, plus the full token sequence after the patch embedding."""
        dit = model.config.dit
        dtype = dtype or next(model.dit.parameters()).dtype
        b, c, t, h, w = self.shape
        latents = 6 * b * c * t * h * w * 4
        wt, wh, ww = self.window_shape
        pt, ph, pw = dit.patch_size
        tokens = math.ceil(wt / pt) * math.ceil(wh / ph) * math.ceil(ww / pw)
        per_token = dit_token_bytes(model, dtype, self.mode)
        batch = b * (2 if guidance != 1.0 else 1)
        sp = getattr(model.dit, "sequence_parallel", None)
        # + every layer's K/V cache of the groups before (one cache per sampler call of a group)
        if self.causal:
            return int(
                latents
                + batch * (tokens * per_token + causal_cache_bytes(model, self.shape, dtype))
                + causal_gather_bytes(model)
            )
        if sp is None or sp.world == 1:
            return int(latents + batch * tokens * per_token)
        local = math.ceil(tokens / sp.world)
        return int(latents + batch * (local * per_token + tokens * dit.dim * _element_size(dtype)))

    def run(self, fn: Callable, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """fn(x_window, cond_window) over every window of the plan, blended linearly (`blended`)."""
        return blended(fn, x, cond, self.t_windows, self.h_windows, self.w_windows, self.overlaps)

    def describe(self) -> str:
        """One line for logs and the node: what runs at every step."""
        t, h, w = self.window_shape
        T = self.shape[2]
        if self.causal:
            return (
                f"{self.mode}: {len(self.t_windows)} group(s) of up to {t} latent frames ({T} "
                f"latent frames), one after another, each with the K/V cache of the groups before"
            )
        when = (
            "the whole clip"
            if len(self.t_windows) == 1
            else f"{len(self.t_windows)} windows of {t} latent frames"
        )
        tiles = (
            ""
            if self.tile_size is None
            else f", {len(self.h_windows)}x{len(self.w_windows)} tiles of {h}x{w} latent px"
        )
        return (
            f"{self.mode} on {when} ({T} latent frames){tiles}: {self.calls_per_step} DiT "
            f"call(s) per step"
        )


def windows(length: int, size: int | None, overlap: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) windows of `size` covering `length`; the last one is aligned to the
    end."""
    if size is None or size >= length:
        return [(0, length)]
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(
            f"window size {size} and overlap {overlap}: expected size >= 1 and 0 <= overlap < size"
        )
    stride = size - overlap
    starts = list(range(0, length - size, stride)) + [length - size]
    return [(s, s + size) for s in sorted(set(starts))]


def plan_sampling(
    model: SimpleGVR,
    shape,
    *,
    attention: str | None = None,
    chunk_frames: int | str | None = "auto",
    chunk_overlap: int = 1,
    tile_size: tuple[int, int] | None = None,
    tile_overlap: int = 8,
) -> SamplingPlan:
    """The window plan for a condition of `shape` [B, C, T, H, W].

    chunk_frames: temporal DiT window in latent frames ("auto": the checkpoint's trained length for
    `full`, the whole clip for `temporal_units`/`sparse_local`; None: the whole clip). tile_size:
    optional spatial tiles (latent H, W) with `tile_overlap` latent pixels of linear blending."""
    mode = attention or model.dit.attention_mode
    check_attention(mode, **model.dit.attention_options)
    b, c, T, H, W = (int(v) for v in shape)
    # the checkpoint's streaming groups, one after another: no windows of another size
    if mode == CAUSAL_MODE:
        if chunk_frames not in ("auto", None) or tile_size is not None:
            raise ValueError(
                f"the {CAUSAL_MODE!r} attention mode runs the clip in the checkpoint's groups of "
                f"{model.config.dit.causal_group_frames} latent frames, whole frames: "
                f"chunk_frames and tile_size do not apply"
            )
        g = model.config.dit.causal_group_frames
        groups = tuple((s, min(T, s + g)) for s in range(0, T, g))
        return SamplingPlan((b, c, T, H, W), mode, groups, ((0, H),), ((0, W),), (0, 0, 0))
    if chunk_frames == "auto":
        chunk_frames = model.config.train_latent_frames if mode == "full" else None
    if chunk_frames is not None and (
        isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1
    ):
        raise ValueError(
            f"chunk_frames={chunk_frames!r}: expected 'auto', None or a number of "
            f"latent frames >= 1"
        )
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        raise ValueError(f"chunk_overlap={chunk_overlap!r}: expected an int >= 0")
    if tile_size is not None:
        if len(tile_size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in tile_size
        ):
            raise ValueError(f"tile_size must be (H, W) in latent pixels, got {tile_size}")
        if isinstance(tile_overlap, bool) or not isinstance(tile_overlap, int) or tile_overlap < 0:
            raise ValueError(f"tile_overlap must be an int >= 0, got {tile_overlap!r}")
    th, tw = (min(tile_size[0], H), min(tile_size[1], W)) if tile_size is not None else (H, W)
    ov = (
        max(0, min(chunk_overlap, (chunk_frames or T) - 1)),
        max(0, min(tile_overlap, th - 1)),
        max(0, min(tile_overlap, tw - 1)),
    )
    return SamplingPlan(
        (b, c, T, H, W),
        mode,
        tuple(windows(T, chunk_frames, ov[0])),
        tuple(windows(H, th, ov[1])),
        tuple(windows(W, tw, ov[2])),
        ov,
    )


# --- the auto memory mode -------------------------------------------------------------------------
def _tile(length: int, parts: int, overlap: int, multiple: int) -> int:
    """The tile length that cuts `length` into `parts` tiles overlapping by `overlap`, rounded up to
    `multiple`."""
    size = math.ceil((length + (parts - 1) * overlap) / parts)
    return min(length, multiple * math.ceil(size / multiple))


def auto_candidates(
    model: SimpleGVR,
    shape,
    *,
    attention: str | None = None,
    chunk_overlap: int = 1,
    tile_overlap: int = 8,
):
    """The plans `auto_plan` tries, from the one that changes the result least to the one that needs
    least memory:
    1. the attention mode's own plan (the whole clip; `full`: windows of the trained length), 2.
       shorter temporal
    windows down to the trained length (never below it: that is the clip length the checkpoint
    knows), 3. spatial tiles on windows of the trained length (1x2, 2x2, 2x3, 3x3, ... tiles), 4.
    shorter windows on the smallest tiles."""
    mode = attention or model.dit.attention_mode
    # its groups are the checkpoint's; memory does not grow with the clip's length
    if mode == CAUSAL_MODE:
        yield plan_sampling(model, shape, attention=mode)
        return
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
        yield plan_sampling(
            model,
            shape,
            chunk_frames=frames,
            tile_size=last,
            **{**kw, "chunk_overlap": min(chunk_overlap, frames - 1)},
        )


def auto_plan(
    model: SimpleGVR,
    shape,
    budget: int,
    *,
    guidance: float,
    dtype: torch.dtype | None = None,
    attention: str | None = None,
    chunk_overlap: int = 1,
    tile_overlap: int = 8,
) -> SamplingPlan:
    """The first of `auto_candidates` whose `SamplingPlan.memory` fits `budget` bytes (the memory
    the run may use beyond the resident weights). The plan that is chosen is the plan that runs
    (`sample(model, condition, plan)`), so the estimate and the execution cannot drift; when the
    whole clip fits, the result is the unchunked one exactly. ValueError (with the smallest
    estimate) when nothing fits."""
    return fit_plan(
        model,
        shape,
        budget,
        guidance=guidance,
        dtype=dtype,
        attention=attention,
        chunk_overlap=chunk_overlap,
        tile_overlap=tile_overlap,
    )[0]


def fit_plan(
    model: SimpleGVR,
    shape,
    budget: int,
    *,
    guidance: float,
    dtype: torch.dtype | None = None,
    attention: str | None = None,
    chunk_overlap: int = 1,
    tile_overlap: int = 8,
) -> tuple[SamplingPlan, int]:
    """`auto_plan`'s plan with its estimate (bytes), computed once in the search."""
    budget = int(budget)
    best = None
    for plan in auto_candidates(
        model, shape, attention=attention, chunk_overlap=chunk_overlap, tile_overlap=tile_overlap
    ):
        need = plan.memory(model, guidance=guidance, dtype=dtype)
        if need <= budget:
            return plan, need
        if best is None or need < best[0]:
            best = (need, plan)
    raise ValueError(
        f"sampling a latent of {tuple(int(v) for v in shape)} needs at least "
        f"{format_bytes(best[0])} ({best[1].describe()}) but {format_bytes(budget)} is free: use "
        f"a smaller size, cfg 1 (one pass per step), or free memory"
    )


def auto_condition_chunk(
    model: SimpleGVR, lr_shape, size: tuple[int, int], budget: int, dtype: torch.dtype | None = None
) -> int:
    """The largest chunk of latent frames whose `upsampler_memory` fits `budget` bytes (the
    upsampler is causal, so the result does not depend on the chunk); ValueError when even one frame
    does not fit."""
    return fit_condition_chunk(model, lr_shape, size, budget, dtype)[0]


def fit_condition_chunk(
    model: SimpleGVR, lr_shape, size: tuple[int, int], budget: int, dtype: torch.dtype | None = None
) -> tuple[int, int]:
    """`auto_condition_chunk`'s chunk with its estimate (bytes), computed once in the search."""
    t = int(lr_shape[2])
    for frames in range(t, 0, -1):
        need = upsampler_memory(model, lr_shape, size, frames, dtype)
        if need <= budget:
            return frames, need
    need = upsampler_memory(model, lr_shape, size, 1, dtype)
    raise ValueError(
        f"the condition for {tuple(int(v) for v in lr_shape)} -> latent {size[0]}x{size[1]} needs "
        f"at least {format_bytes(need)} (chunks of 1 latent frame) but {format_bytes(budget)} is "
        f"free: use a smaller size or free memory"
    )


def _ramp(n: int, start: int, end: int, length: int, overlap: int, device) -> torch.Tensor:
    """Blend weights of one window: linear ramps over `overlap` at inner edges, flat at the clip's
    edges."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        r = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (overlap + 1)
        if start > 0:
            w = torch.minimum(w, r)
        if end < length:
            w = torch.minimum(w, r.flip(0))
    return w


def blended(
    fn: Callable, x: torch.Tensor, cond: torch.Tensor, t_win, h_win, w_win, overlaps
) -> torch.Tensor:
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
