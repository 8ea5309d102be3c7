"""Self-attention patterns of SimpleGVR (paper §4.4), all on SDPA over gathered windows.

Tokens arrive frame-major, as Wan flattens them: index = (f * H + h) * W + w on an (F, H, W) grid.
RoPE is applied globally before these functions, so windows need no position rework (a rotary
score depends only on relative offsets).

- `full`: every token attends to every token.
- `temporal_units`: the clip is cut along time into units of `unit` latent frames; attention stays
  inside a unit. Shifted layers move the cut by half a unit, non-cyclically, so the edge units are
  smaller (e.g. 20 frames, unit 5, shift 2 -> 2,5,5,5,3). As in Swin, a clip no longer than one unit
  is never cut.
- `sparse_local`: each frame is tiled into 2D blocks of (bh, bw) tokens; a query block attends to its
  own block plus the `topk` key blocks of the whole clip with the highest mean-query . mean-key
  score (MoBA-style; per head, future frames included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def temporal_unit_attention(q, k, v, grid: tuple[int, int, int], unit: int, shifted: bool) -> torch.Tensor:
    """Attention restricted to temporal units of `unit` frames (shifted by unit//2 if `shifted`)."""
    f, h, w = grid
    hw = h * w
    bounds = unit_bounds(f, unit, shifted)
    if len(bounds) == 1:
        return full_attention(q, k, v)
    out = torch.empty_like(q)
    b, nh, _, d = q.shape
    # Full-size units are contiguous in the frame-major sequence: batch them as extra heads.
    full = [(s, e) for s, e in bounds if e - s == unit]
    if full:
        s0, e0, n = full[0][0], full[-1][1], len(full)

        def batched(x):
            return x[:, :, s0 * hw:e0 * hw].reshape(b, nh * n, unit * hw, d)

        o = F.scaled_dot_product_attention(batched(q), batched(k), batched(v))
        out[:, :, s0 * hw:e0 * hw] = o.reshape(b, nh, n * unit * hw, d)
    for s, e in bounds:  # the smaller edge units
        if e - s != unit:
            sl = slice(s * hw, e * hw)
            out[:, :, sl] = F.scaled_dot_product_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl])
    return out


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


def sparse_local_attention(q, k, v, grid: tuple[int, int, int], block: tuple[int, int], topk: int) -> torch.Tensor:
    """Block-sparse attention: own 2D block + the `topk` best-scoring blocks of the clip."""
    f, h, w = grid
    bh, bw = block
    qb, kb, vb = (_to_blocks(t, grid, block) for t in (q, k, v))  # [B, nh, N, S, d]
    b, nh, n, s, d = qb.shape
    # Which padded positions are real tokens: [N, S].
    valid = _to_blocks(torch.ones(1, 1, f * h * w, 1, device=q.device, dtype=q.dtype), grid, block)
    valid = valid[0, 0, :, :, 0] > 0
    kk = min(topk, n - 1)
    if kk > 0:
        count = valid.sum(-1).to(q.dtype)[:, None]  # [N, 1]
        mean_q = qb.sum(3) / count  # padded positions are zero, so sums are over real tokens
        mean_k = kb.sum(3) / count
        score = mean_q @ mean_k.transpose(-1, -2)  # [B, nh, N, N]
        eye = torch.eye(n, dtype=torch.bool, device=q.device)
        score = score.masked_fill(eye, float("-inf"))
        chosen = score.topk(kk, dim=-1).indices  # [B, nh, N, kk]
        own = torch.arange(n, device=q.device).view(1, 1, n, 1).expand(b, nh, n, 1)
        idx = torch.cat([own, chosen], dim=-1)  # [B, nh, N, 1+kk]
    else:
        idx = torch.arange(n, device=q.device).view(1, 1, n, 1).expand(b, nh, n, 1)
    m = idx.shape[-1]
    gather_idx = idx.reshape(b, nh, n * m, 1, 1).expand(b, nh, n * m, s, d)
    kg = torch.gather(kb, 2, gather_idx).reshape(b, nh * n, m * s, d)
    vg = torch.gather(vb, 2, gather_idx).reshape(b, nh * n, m * s, d)
    mask = valid[idx].reshape(b, nh * n, 1, m * s)  # keys that are real tokens
    o = F.scaled_dot_product_attention(qb.reshape(b, nh * n, s, d), kg, vg, attn_mask=mask)
    return _from_blocks(o.reshape(b, nh, n, s, d), grid, block)


def attention(q, k, v, grid, mode: str, *, block_index: int = 0, unit_frames: int = 5,
              sparse_block=(9, 12), sparse_topk: int = 1) -> torch.Tensor:
    """Dispatch on the attention mode; q, k, v: [B, heads, F*H*W, d] in frame-major order."""
    if mode == "full":
        return full_attention(q, k, v)
    if mode == "temporal_units":
        return temporal_unit_attention(q, k, v, grid, unit_frames, shifted=block_index % 2 == 1)
    if mode == "sparse_local":
        return sparse_local_attention(q, k, v, grid, tuple(sparse_block), sparse_topk)
    raise ValueError(f"attention mode {mode!r}: expected full, temporal_units or sparse_local")
