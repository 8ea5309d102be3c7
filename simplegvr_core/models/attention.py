"""Self-attention patterns of SimpleGVR (paper §4.4), on two kernels that give the same result.

Tokens arrive frame-major, as Wan flattens them: index = (f * H + h) * W + w on an (F, H, W) grid.
RoPE is applied globally before these functions, so windows need no position rework (a rotary
score depends only on relative offsets).

- `full`: every token attends to every token.
- `temporal_units`: the clip is cut along time into units of `unit` latent frames; attention stays
  inside a unit. Shifted layers move the cut by half a unit, non-cyclically, so the edge units are
  smaller (e.g. 20 frames, unit 5, shift 2 -> 2,5,5,5,3). As in Swin, a clip no longer than one unit
  is never cut.
- `sparse_local`: each frame is tiled into 2D blocks of (bh, bw) tokens; a query block attends to
  its own block plus the `topk` key blocks of the whole clip with the highest mean-query . mean-key
  score (MoBA-style; per head, future frames included).

Kernels for the two windowed modes (`ATTENTION_KERNELS`, chosen by `resolve_kernel`, the one home of
the rule):
- `sdpa`: gather the windows and call SDPA on each (full-size units batched as extra heads). The
  fallback.
- `flex`: one `flex_attention` call over the whole sequence with a `BlockMask` that lists, for every
  128-query tile, the key tiles it may see. Temporal units keep Wan's token order (a unit edge
  inside a tile makes that tile partial, resolved by the mask_mod); sparse_local lays tokens out
  block-major with every 2D block padded to whole 128-token tiles, so a selected block is a set of
  whole tiles and nothing is gathered.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
import torch.nn.functional as F

ATTENTION_KERNELS = ("auto", "sdpa", "flex")
KERNEL_ENV = "SIMPLEGVR_ATTENTION_KERNEL"  # forces a kernel where the caller leaves it at "auto"
FLEX_TILE = 128  # tokens per BlockMask tile (flex_attention's default sparse block size)


def flex_available() -> bool:
    """Whether this torch has `torch.nn.attention.flex_attention` (torch >= 2.5)."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def resolve_kernel(kernel: str | None, device) -> str:
    """'sdpa' or 'flex' for windowed attention on `device` - the one place the choice is made.

    An explicit 'sdpa' or 'flex' wins; 'auto' (or None) takes the environment variable
    SIMPLEGVR_ATTENTION_KERNEL when it is set, else flex on CUDA where flex_attention is importable
    (compiled: it visits only the selected tiles) and sdpa everywhere else. On the CPU eager
    flex_attention materialises the whole score matrix and is 5-6x slower than the gathered windows,
    and compiled still ~1.2-1.3x slower (BENCHMARKS.md, one-step throughput), so the CPU keeps
    sdpa."""
    if kernel is None or kernel == "auto":
        kernel = os.environ.get(KERNEL_ENV, "auto") or "auto"
        where = f"environment variable {KERNEL_ENV}"
    else:
        where = "attention kernel"
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"{where}={kernel!r}: expected one of {ATTENTION_KERNELS}")
    if kernel == "auto":
        return "flex" if torch.device(device).type == "cuda" and flex_available() else "sdpa"
    if kernel == "flex" and not flex_available():
        raise ValueError(
            f"{where}='flex' but torch {torch.__version__} has no flex_attention: use "
            f"'sdpa' or 'auto'"
        )
    return kernel


@functools.cache
def _flex_fn(device_type: str):
    """flex_attention itself on the CPU (eager: exact, dense), compiled once per process on a GPU
    (its fast path)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


def _block_mask(partial: torch.Tensor, full: torch.Tensor | None, mask_mod, seq_len: int):
    """A BlockMask from dense tile maps [B, H, nq, nk] (bool): `partial` tiles run `mask_mod`,
    `full` ones do not."""
    from torch.nn.attention.flex_attention import BlockMask

    def ordered(dense):
        dense = dense.to(torch.int32)
        return dense.sum(-1, dtype=torch.int32), torch.argsort(
            dense, dim=-1, descending=True, stable=True
        ).to(torch.int32)

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full) if full is not None else (None, None)
    return BlockMask.from_kv_blocks(
        kv_num,
        kv_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=FLEX_TILE,
        mask_mod=mask_mod,
        seq_lengths=(seq_len, seq_len),
    )


def _flex(q, k, v, block_mask) -> torch.Tensor:
    return _flex_fn(q.device.type)(q, k, v, block_mask=block_mask)


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v: [B, heads, L, d] -> [B, heads, L, d]."""
    return F.scaled_dot_product_attention(q, k, v)


def unit_bounds(frames: int, unit: int, shifted: bool) -> list[tuple[int, int]]:
    """Frame ranges [start, end) of the temporal units for a clip of `frames` latent frames."""
    if frames <= unit:
        return [(0, frames)]
    starts = [0]
    pos = unit // 2 if shifted and unit > 1 else unit
    while pos < frames:
        starts.append(pos)
        pos += unit
    return list(zip(starts, starts[1:] + [frames]))


def temporal_unit_attention(
    q, k, v, grid: tuple[int, int, int], unit: int, shifted: bool, kernel: str = "sdpa"
) -> torch.Tensor:
    """Attention restricted to temporal units of `unit` frames (shifted by unit//2 if `shifted`)."""
    bounds = unit_bounds(grid[0], unit, shifted)
    if len(bounds) == 1:
        return full_attention(q, k, v)
    if kernel == "flex":
        return _temporal_units_flex(q, k, v, grid, bounds)
    return _temporal_units_sdpa(q, k, v, grid, bounds, unit)


def _temporal_units_sdpa(q, k, v, grid, bounds, unit: int) -> torch.Tensor:
    hw = grid[1] * grid[2]
    out = torch.empty_like(q)
    b, nh, _, d = q.shape
    # Full-size units are contiguous in the frame-major sequence: batch them as extra heads.
    full = [(s, e) for s, e in bounds if e - s == unit]
    if full:
        s0, e0, n = full[0][0], full[-1][1], len(full)

        def batched(x):
            return x[:, :, s0 * hw : e0 * hw].reshape(b, nh * n, unit * hw, d)

        o = F.scaled_dot_product_attention(batched(q), batched(k), batched(v))
        out[:, :, s0 * hw : e0 * hw] = o.reshape(b, nh, n * unit * hw, d)
    for s, e in bounds:  # the smaller edge units
        if e - s != unit:
            sl = slice(s * hw, e * hw)
            out[:, :, sl] = F.scaled_dot_product_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl])
    return out


def unit_ids(grid, bounds, device) -> torch.Tensor:
    """The temporal unit of every token [F*H*W] (frame-major), from `unit_bounds`."""
    frames = torch.tensor([e - s for s, e in bounds], device=device)
    per_frame = torch.repeat_interleave(torch.arange(len(bounds), device=device), frames)
    return per_frame.repeat_interleave(grid[1] * grid[2])


def temporal_units_block_mask(grid, bounds, device):
    """The BlockMask of temporal units: a key tile is listed for a query tile when their unit ranges
    meet (units are contiguous, so a tile's units are [its first token's, its last token's]); it is
    full when both tiles are whole and lie inside the same single unit."""
    ids = unit_ids(grid, bounds, device)
    n = ids.numel()
    tiles = -(-n // FLEX_TILE)
    first = ids[::FLEX_TILE]
    last = ids[torch.clamp(torch.arange(1, tiles + 1, device=device) * FLEX_TILE, max=n) - 1]
    whole = torch.arange(1, tiles + 1, device=device) * FLEX_TILE <= n
    partial = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    single = (first == last) & whole
    full = single[:, None] & single[None, :] & (first[:, None] == first[None, :])
    padded = F.pad(ids, (0, tiles * FLEX_TILE - n), value=-1)  # a kernel may read a whole last tile

    def same_unit(b, h, q_idx, kv_idx):
        return padded[q_idx] == padded[kv_idx]

    return _block_mask((partial & ~full)[None, None], full[None, None], same_unit, n)


def _temporal_units_flex(q, k, v, grid, bounds) -> torch.Tensor:
    return _flex(q, k, v, temporal_units_block_mask(grid, bounds, q.device))


def _to_blocks(x: torch.Tensor, grid, block) -> torch.Tensor:
    """[B, nh, F*H*W, d] -> [B, nh, N, bh*bw, d] with the grid zero-padded to whole blocks."""
    b, nh, _, d = x.shape
    f, h, w = grid
    bh, bw = block
    ph, pw = -h % bh, -w % bw
    x = x.reshape(b, nh, f, h, w, d)
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    nH, nW = (h + ph) // bh, (w + pw) // bw
    x = x.reshape(b, nh, f, nH, bh, nW, bw, d).permute(0, 1, 2, 3, 5, 4, 6, 7)
    return x.reshape(b, nh, f * nH * nW, bh * bw, d)


def _from_blocks(x: torch.Tensor, grid, block) -> torch.Tensor:
    b, nh, _, _, d = x.shape
    f, h, w = grid
    bh, bw = block
    nH, nW = -(-h // bh), -(-w // bw)
    x = x.reshape(b, nh, f, nH, nW, bh, bw, d).permute(0, 1, 2, 3, 5, 4, 6, 7)
    x = x.reshape(b, nh, f, nH * bh, nW * bw, d)[:, :, :, :h, :w]
    return x.reshape(b, nh, f * h * w, d)


def sparse_local_attention(
    q, k, v, grid: tuple[int, int, int], block: tuple[int, int], topk: int, kernel: str = "sdpa"
) -> torch.Tensor:
    """Block-sparse attention: own 2D block + the `topk` best-scoring blocks of the clip."""
    qb, kb, vb = (_to_blocks(t, grid, block) for t in (q, k, v))  # [B, nh, N, S, d]
    # Which padded positions are real tokens: [N, S].
    valid = _to_blocks(torch.ones(1, 1, q.shape[2], 1, device=q.device, dtype=q.dtype), grid, block)
    valid = valid[0, 0, :, :, 0] > 0
    idx = selected_blocks(qb, kb, valid, topk)
    run = _sparse_flex if kernel == "flex" else _sparse_sdpa
    return _from_blocks(run(qb, kb, vb, valid, idx), grid, block)


def selected_blocks(qb, kb, valid, topk: int) -> torch.Tensor:
    """Key blocks of every query block [B, nh, N, 1+k]: its own, then the `topk` others of highest
    mean-query . mean-key score (k = min(topk, N-1))."""
    b, nh, n = qb.shape[:3]
    own = torch.arange(n, device=qb.device).view(1, 1, n, 1).expand(b, nh, n, 1)
    kk = min(topk, n - 1)
    if kk <= 0:
        return own
    count = valid.sum(-1).to(qb.dtype)[:, None]  # [N, 1]
    mean_q = qb.sum(3) / count  # padded positions are zero, so sums are over real tokens
    mean_k = kb.sum(3) / count
    score = mean_q @ mean_k.transpose(-1, -2)  # [B, nh, N, N]
    eye = torch.eye(n, dtype=torch.bool, device=qb.device)
    score = score.masked_fill(eye, float("-inf"))
    chosen = score.topk(kk, dim=-1).indices  # [B, nh, N, kk]
    return torch.cat([own, chosen], dim=-1)


def _sparse_sdpa(qb, kb, vb, valid, idx) -> torch.Tensor:
    """Gather the selected key blocks of every query block and run SDPA per block: [B, nh, N, S,
    d]."""
    b, nh, n, s, d = qb.shape
    m = idx.shape[-1]
    gather_idx = idx.reshape(b, nh, n * m, 1, 1).expand(b, nh, n * m, s, d)
    kg = torch.gather(kb, 2, gather_idx).reshape(b, nh * n, m * s, d)
    vg = torch.gather(vb, 2, gather_idx).reshape(b, nh * n, m * s, d)
    mask = valid[idx].reshape(b, nh * n, 1, m * s)  # keys that are real tokens
    o = F.scaled_dot_product_attention(qb.reshape(b, nh * n, s, d), kg, vg, attn_mask=mask)
    return o.reshape(b, nh, n, s, d)


def sparse_block_mask(idx: torch.Tensor, valid: torch.Tensor, tiles_per_block: int):
    """The BlockMask of sparse_local on the block-major layout where each 2D block fills
    `tiles_per_block` whole tiles: a query tile lists every tile of its block's selected blocks; all
    are partial (their padding is masked)."""
    b, nh, n, _ = idx.shape
    chosen = torch.zeros(b, nh, n, n, dtype=torch.bool, device=idx.device).scatter_(-1, idx, True)
    t = tiles_per_block
    tiles = chosen.repeat_interleave(t, dim=2).repeat_interleave(t, dim=3)  # [B, nh, N*t, N*t]
    span = t * FLEX_TILE
    real = F.pad(valid, (0, span - valid.shape[1])).reshape(-1)  # [N*span]

    def selected_real(bi, h, q_idx, kv_idx):
        return chosen[bi, h, q_idx // span, kv_idx // span] & real[kv_idx]

    return _block_mask(tiles, None, selected_real, n * span)


def _sparse_flex(qb, kb, vb, valid, idx) -> torch.Tensor:
    """One flex_attention call over the blocks padded to whole tiles: [B, nh, N, S, d]."""
    b, nh, n, s, d = qb.shape
    t = -(-s // FLEX_TILE)

    def flat(x):
        return F.pad(x, (0, 0, 0, t * FLEX_TILE - s)).reshape(b, nh, n * t * FLEX_TILE, d)

    o = _flex(flat(qb), flat(kb), flat(vb), sparse_block_mask(idx, valid, t))
    return o.reshape(b, nh, n, t * FLEX_TILE, d)[:, :, :, :s]


def attention(
    q,
    k,
    v,
    grid,
    mode: str,
    *,
    block_index: int = 0,
    unit_frames: int = 5,
    sparse_block=(9, 12),
    sparse_topk: int = 1,
    kernel: str | None = "auto",
) -> torch.Tensor:
    """Dispatch on the attention mode and kernel (`resolve_kernel`); q, k, v: [B, heads, F*H*W, d]
    frame-major."""
    if mode == "full":
        return full_attention(q, k, v)
    if mode == "temporal_units":
        return temporal_unit_attention(
            q,
            k,
            v,
            grid,
            unit_frames,
            shifted=block_index % 2 == 1,
            kernel=resolve_kernel(kernel, q.device),
        )
    if mode == "sparse_local":
        return sparse_local_attention(
            q, k, v, grid, tuple(sparse_block), sparse_topk, kernel=resolve_kernel(kernel, q.device)
        )
    raise ValueError(f"attention mode {mode!r}: expected full, temporal_units or sparse_local")
