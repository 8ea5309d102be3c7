"""Ultra Flash's block-sparse, chunk-causal self-attention with a KV cache (docs/ultraflash.md §2).

What their CUDA kernel computes in one streaming call ("SR group") of a DiT layer, with ONE block
mask per head (their CPU fallback ORs the masks of all heads: that is not this):

1. q, k, v (after q/k RMSNorm and RoPE) on the call's token grid (f, h, w) are zero-padded at the
   end of each axis to whole blocks (2, 8, 8) and cut into blocks of 128 tokens, blocks ordered
   (tb, hb, wb) row-major, tokens inside a block (dt, dy, dx). Padded tokens are NOT masked: they
   are zero keys (logit 0) and zero values in every softmax, and they count in the block means.
2. Keys and values of the last `kv_blocks` temporal blocks of earlier calls (`KVCache`, C temporal
   blocks, oldest first, with their own RoPE positions and padding) are prepended to this call's.
3. `allowed_blocks`: query temporal block tq (absolute tq + C) sees key temporal blocks
   tk <= tq + C (chunk-causal, one temporal block = one chunk), and a spatial window of
   `local_range` blocks truncated at the borders, the same for every temporal block.
4. `select_blocks`, per head: pooled score = mean(q block) . mean(k block) / sqrt(d) in the
   model dtype, -inf where not allowed, softmax over the key blocks of a row; for each
   (head, query temporal block) the slab of its S rows is thresholded at its (k+1)-th largest
   value (`>=`, ties all kept) with k = `sparse_top_k`; empty rows take their first allowed key
   block; without a cache the diagonal is forced on.
5. Each query block attends (scale 1/sqrt(d)) to every token of its selected key blocks; the
   output is un-blocked and cropped to (f, h, w).

Two kernels give the same result (`resolve_kernel` chooses for 'auto'):
- `sdpa`: per chunk of query blocks, gather each row's selected key blocks (padded to the chunk's
  largest row, the padding masked out) and call SDPA; memory is bounded by `SDPA_CHUNK_BYTES`.
- `flex`: one flex_attention call on the block layout; a block is one 128-token tile, so the
  BlockMask lists the selected tiles as full tiles (no mask_mod inside them on the compiled GPU
  kernel); the mask_mod says the same thing for eager flex (the CPU), which ignores the lists.

Sources (UltraFlash 8913be2, read for facts only): sr/dit_sparse/attention.py
(`_pad_3d_grid_to_window`, `_window_partition_3d`, `generate_draft_block_mask`,
`block_sparse_attention_with_cache`), sr/stream_forward.py (`_compute_sparse_params`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import FLEX_TILE, _flex, resolve_kernel

SDPA_CHUNK_BYTES = 256 << 20  # gathered K/V + scores of one chunk of query blocks (sdpa kernel)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class BlockSparseSettings:
    """Ultra Flash's sparse settings (shipped values, configs/sr_sparse_ultraforcing.py)."""

    block: tuple[int, int, int] = (2, 8, 8)  # (frames, rows, columns) of tokens per block
    local_range: int = 9  # spatial window, in blocks, per axis
    top_k_ratio: float = 1.0  # r in `sparse_top_k`; <= 0 (without `top_k`) keeps the whole window
    ref_tokens: int = 1560  # reference tokens per frame (30 x 52, 480p); 0: r is not rescaled
    kv_blocks: int | None = 3  # temporal blocks of K/V kept after a call; None keeps all
    top_k: int = 0  # > 0: a fixed top-k instead of the ratio rule

    def __post_init__(self):
        block = tuple(self.block) if isinstance(self.block, (tuple, list)) else self.block
        if not (
            isinstance(block, tuple)
            and len(block) == 3
            and all(_is_int(b) and b > 0 for b in block)
        ):
            raise ValueError(
                f"block={self.block!r}: expected three positive ints (frames, rows, "
                "columns), e.g. (2, 8, 8)"
            )
        object.__setattr__(self, "block", block)
        if not (_is_int(self.local_range) and self.local_range >= 1):
            raise ValueError(f"local_range={self.local_range!r}: expected an int >= 1")
        ratio = self.top_k_ratio
        if not (
            isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and math.isfinite(ratio)
        ):
            raise ValueError(f"top_k_ratio={self.top_k_ratio!r}: expected a finite number")
        if not (_is_int(self.ref_tokens) and self.ref_tokens >= 0):
            raise ValueError(f"ref_tokens={self.ref_tokens!r}: expected an int >= 0")
        if not (self.kv_blocks is None or (_is_int(self.kv_blocks) and self.kv_blocks >= 1)):
            raise ValueError(f"kv_blocks={self.kv_blocks!r}: expected None or an int >= 1")
        if not (_is_int(self.top_k) and self.top_k >= 0):
            raise ValueError(f"top_k={self.top_k!r}: expected an int >= 0 (0: the ratio rule)")

    @property
    def block_tokens(self) -> int:
        """Tokens per block (128 for (2, 8, 8))."""
        return self.block[0] * self.block[1] * self.block[2]


SHIPPED = BlockSparseSettings()


def _check_grid(grid) -> tuple[int, int, int]:
    if not (
        isinstance(grid, (tuple, list))
        and len(grid) == 3
        and all(_is_int(g) and g > 0 for g in grid)
    ):
        raise ValueError(
            f"grid={grid!r}: expected three positive ints (frames, height, width) of tokens"
        )
    return tuple(grid)


def _check_settings(settings) -> BlockSparseSettings:
    if not isinstance(settings, BlockSparseSettings):
        raise ValueError(f"settings: expected a BlockSparseSettings, got {type(settings).__name__}")
    return settings


def block_grid(grid, block) -> tuple[int, int, int]:
    """(temporal, row, column) block counts of token grid (f, h, w) padded to whole blocks."""
    f, h, w = _check_grid(grid)
    return -(-f // block[0]), -(-h // block[1]), -(-w // block[2])


def sparse_top_k(grid, settings: BlockSparseSettings = SHIPPED) -> int:
    """Ultra Flash's top-k of one call on token grid (f, h, w) (before padding).

    r' = r * ref / (h * w) (r alone when ref is 0), S = spatial blocks, TQ = temporal blocks:
    top_k = min(max(int(S*S*r'), 1), max(S*S*TQ - 1, 1)); a fixed `settings.top_k` > 0 wins and
    r' <= 0 gives 0 (keep the whole allowed window). 2704 at 60x104 tokens, 6400 at 90x156."""
    f, h, w = _check_grid(grid)
    settings = _check_settings(settings)
    if settings.top_k > 0:
        return settings.top_k
    tq, bh, bw = block_grid(grid, settings.block)
    square = max(1, bh * bw) ** 2
    ratio = float(settings.top_k_ratio)
    if settings.ref_tokens > 0:
        ratio = ratio * settings.ref_tokens / max(h * w, 1)  # their order of float operations
    if ratio <= 0:
        return 0
    return min(max(int(square * ratio), 1), max(square * tq - 1, 1))


def to_blocks(x: torch.Tensor, grid, block) -> torch.Tensor:
    """[B, heads, f*h*w, d] frame-major tokens -> [B, heads, N, T, d] blocks, zero-padded.

    N = TB*BH*BW blocks ordered (tb, hb, wb); T = bt*bh*bw tokens ordered (dt, dy, dx)."""
    f, h, w = _check_grid(grid)
    if x.ndim != 4 or x.shape[2] != f * h * w:
        raise ValueError(
            f"x: expected [B, heads, {f * h * w}, d] for grid {grid}, got {list(x.shape)}"
        )
    b, nh, _, d = x.shape
    bt, bh, bw = block
    tb, nb_h, nb_w = block_grid(grid, block)
    x = x.reshape(b, nh, f, h, w, d)
    x = F.pad(x, (0, 0, 0, nb_w * bw - w, 0, nb_h * bh - h, 0, tb * bt - f))
    x = x.reshape(b, nh, tb, bt, nb_h, bh, nb_w, bw, d).permute(0, 1, 2, 4, 6, 3, 5, 7, 8)
    return x.reshape(b, nh, tb * nb_h * nb_w, bt * bh * bw, d)


def from_blocks(xb: torch.Tensor, grid, block) -> torch.Tensor:
    """Inverse of `to_blocks`: [B, heads, N, T, d] -> [B, heads, f*h*w, d], padding cropped."""
    f, h, w = _check_grid(grid)
    bt, bh, bw = block
    tb, nb_h, nb_w = block_grid(grid, block)
    if xb.ndim != 5 or tuple(xb.shape[2:4]) != (tb * nb_h * nb_w, bt * bh * bw):
        raise ValueError(
            f"xb: expected [B, heads, {tb * nb_h * nb_w}, {bt * bh * bw}, d] for grid "
            f"{grid} and block {tuple(block)}, got {list(xb.shape)}"
        )
    b, nh, _, _, d = xb.shape
    x = xb.reshape(b, nh, tb, nb_h, nb_w, bt, bh, bw, d).permute(0, 1, 2, 5, 3, 6, 4, 7, 8)
    x = x.reshape(b, nh, tb * bt, nb_h * bh, nb_w * bw, d)[:, :, :f, :h, :w]
    return x.reshape(b, nh, f * h * w, d)


def allowed_blocks(
    query_tblocks: int, cached_tblocks: int, spatial, local_range: int, device=None
) -> torch.Tensor:
    """Which key blocks each query block may select: bool [TQ*S, (C+TQ)*S], the same for all heads.

    Query temporal block tq (absolute tq + C) sees key temporal blocks tk <= tq + C; query block
    (r, c) sees key blocks (r', c') with r'-r and c'-c in [-L//2, L-1-L//2] (truncated at the
    borders, not shifted), tiled identically over the cached and the current temporal blocks."""
    if not (_is_int(query_tblocks) and query_tblocks >= 1):
        raise ValueError(f"query_tblocks={query_tblocks!r}: expected an int >= 1")
    if not (_is_int(cached_tblocks) and cached_tblocks >= 0):
        raise ValueError(f"cached_tblocks={cached_tblocks!r}: expected an int >= 0")
    if not (
        isinstance(spatial, (tuple, list))
        and len(spatial) == 2
        and all(_is_int(s) and s > 0 for s in spatial)
    ):
        raise ValueError(
            f"spatial={spatial!r}: expected (row blocks, column blocks), positive ints"
        )
    if not (_is_int(local_range) and local_range >= 1):
        raise ValueError(f"local_range={local_range!r}: expected an int >= 1")
    tq, c = query_tblocks, cached_tblocks
    lo, hi = -(local_range // 2), local_range - 1 - local_range // 2
    t_q = torch.arange(tq, device=device)[:, None] + c
    temporal = torch.arange(c + tq, device=device)[None, :] <= t_q  # [TQ, C+TQ]

    def window(n):
        delta = torch.arange(n, device=device)[None, :] - torch.arange(n, device=device)[:, None]
        return (delta >= lo) & (delta <= hi)  # [n, n]: query index, key index

    rows, cols = window(spatial[0]), window(spatial[1])
    s = spatial[0] * spatial[1]
    space = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(s, s)
    return (temporal[:, None, :, None] & space[None, :, None, :]).reshape(tq * s, (c + tq) * s)


def select_blocks(
    q_blocks: torch.Tensor,
    k_blocks: torch.Tensor,
    allowed: torch.Tensor,
    top_k: int,
    force_diagonal: bool,
    *,
    spatial_blocks: int,
) -> torch.Tensor:
    """The key blocks every query block attends to, per head: bool [B, heads, Qb, Kb].

    q_blocks [B, heads, Qb, T, d], k_blocks [B, heads, Kb, T, d] (cache first), allowed [Qb, Kb],
    Qb = TQ * `spatial_blocks`. Scoring runs in the blocks' dtype as Ultra Flash's does (bf16 in
    their shipped run): block means, their dot product / sqrt(d), softmax per row; the top-k
    threshold is taken per (head, query temporal block) over its S x Kb slab and `>=` keeps every
    tie (in bf16 equal rounded scores are all kept). top_k 0 keeps the whole allowed window."""
    if q_blocks.ndim != 5 or k_blocks.ndim != 5:
        raise ValueError(
            f"q_blocks, k_blocks: expected [B, heads, blocks, T, d], got "
            f"{list(q_blocks.shape)} and {list(k_blocks.shape)}"
        )
    b, nh, nq, t, d = q_blocks.shape
    nk = k_blocks.shape[2]
    if (k_blocks.shape[:2], k_blocks.shape[3:]) != (q_blocks.shape[:2], q_blocks.shape[3:]):
        raise ValueError(
            f"k_blocks: expected [{b}, {nh}, Kb, {t}, {d}] like q_blocks, got "
            f"{list(k_blocks.shape)}"
        )
    if allowed.dtype != torch.bool or tuple(allowed.shape) != (nq, nk):
        raise ValueError(
            f"allowed: expected bool [{nq}, {nk}], got {allowed.dtype} {list(allowed.shape)}"
        )
    if not (_is_int(spatial_blocks) and spatial_blocks >= 1 and nq % spatial_blocks == 0):
        raise ValueError(
            f"spatial_blocks={spatial_blocks!r}: expected a positive divisor of the "
            f"{nq} query blocks"
        )
    if not (_is_int(top_k) and top_k >= 0):
        raise ValueError(f"top_k={top_k!r}: expected an int >= 0")
    if force_diagonal and nq != nk:
        raise ValueError(
            f"force_diagonal needs as many key blocks as query blocks (no cache), got "
            f"{nq} query and {nk} key blocks"
        )
    allowed = allowed.to(q_blocks.device)
    if top_k == 0:  # their window-only mask; no row is empty (a block always sees itself)
        return allowed.expand(b, nh, nq, nk).clone()
    with torch.no_grad():  # a selection, not a differentiable function (theirs is no_grad too)
        mean_q, mean_k = q_blocks.mean(3), k_blocks.mean(3)  # [B, heads, Qb|Kb, d], with padding
        score = (mean_q @ mean_k.transpose(-1, -2)) / math.sqrt(d)  # [B, heads, Qb, Kb]
        prob = torch.softmax(score.masked_fill(~allowed, float("-inf")), dim=-1)
    slab = prob.reshape(b, nh, nq // spatial_blocks, spatial_blocks * nk)
    k = min(slab.shape[-1] - 1, top_k)
    tau = slab.topk(k + 1, dim=-1).values[..., -1:]  # the (k+1)-th largest of the slab
    chosen = (slab >= tau).reshape(b, nh, nq, nk) & allowed
    empty = ~chosen.any(-1)  # [B, heads, Qb]
    if bool(empty.any()):
        first = allowed.to(torch.int32).argmax(-1)  # first allowed key block of each row
        chosen |= empty[..., None] & (torch.arange(nk, device=allowed.device) == first[:, None])
    if force_diagonal:
        chosen.diagonal(dim1=-2, dim2=-1).fill_(True)
    return chosen


@dataclass(frozen=True)
class KVCache:
    """One layer's keys and values of earlier calls, in block layout, oldest first.

    k, v: [B, heads, C*S, T, d] post-RoPE (each call's own positions) with their zero padding;
    `spatial` = (row blocks, column blocks) of the grid they were made on. Immutable: `append`
    and `trim` return new caches."""

    k: torch.Tensor
    v: torch.Tensor
    spatial: tuple[int, int]

    def __post_init__(self):
        if not (
            isinstance(self.spatial, (tuple, list))
            and len(self.spatial) == 2
            and all(_is_int(s) and s > 0 for s in self.spatial)
        ):
            raise ValueError(f"spatial={self.spatial!r}: expected (row blocks, column blocks)")
        object.__setattr__(self, "spatial", tuple(self.spatial))
        s = self.spatial[0] * self.spatial[1]
        if self.k.ndim != 5 or self.k.shape[2] % s or self.k.shape[2] == 0:
            raise ValueError(
                f"k: expected [B, heads, C*{s}, T, d] with C >= 1, got {list(self.k.shape)}"
            )
        if self.v.shape != self.k.shape or self.v.dtype != self.k.dtype:
            raise ValueError(
                f"v: expected {self.k.dtype} {list(self.k.shape)} like k, got "
                f"{self.v.dtype} {list(self.v.shape)}"
            )

    @property
    def temporal_blocks(self) -> int:
        """C: cached temporal blocks."""
        return self.k.shape[2] // (self.spatial[0] * self.spatial[1])

    def append(self, k_blocks: torch.Tensor, v_blocks: torch.Tensor) -> KVCache:
        """This cache followed by the blocks of one more call ([B, heads, TQ*S, T, d])."""
        for name, x in (("k_blocks", k_blocks), ("v_blocks", v_blocks)):
            if x.ndim != 5 or (x.shape[:2], x.shape[3:]) != (self.k.shape[:2], self.k.shape[3:]):
                b, nh, _, t, d = self.k.shape
                raise ValueError(
                    f"{name}: expected [{b}, {nh}, blocks, {t}, {d}] like the cache, "
                    f"got {list(x.shape)}"
                )
        return KVCache(
            torch.cat([self.k, k_blocks], 2), torch.cat([self.v, v_blocks], 2), self.spatial
        )

    def trim(self, kv_blocks: int | None) -> KVCache:
        """The last `kv_blocks` temporal blocks (a copy, so the longer tensors can be freed);
        self when it holds no more than that or `kv_blocks` is None."""
        if not (kv_blocks is None or (_is_int(kv_blocks) and kv_blocks >= 1)):
            raise ValueError(f"kv_blocks={kv_blocks!r}: expected None or an int >= 1")
        if kv_blocks is None or self.temporal_blocks <= kv_blocks:
            return self
        keep = kv_blocks * self.spatial[0] * self.spatial[1]
        return KVCache(self.k[:, :, -keep:].clone(), self.v[:, :, -keep:].clone(), self.spatial)


def _check_qkv(q, k, v, grid) -> None:
    f, h, w = grid
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a tensor [B, heads, L, d], got {got}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k, v: expected one shape, got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v: expected one dtype and device, got {q.dtype}/{q.device}, "
            f"{k.dtype}/{k.device}, {v.dtype}/{v.device}"
        )
    if q.shape[2] != f * h * w:
        raise ValueError(
            f"q: expected L = f*h*w = {f * h * w} tokens for grid {tuple(grid)}, got {q.shape[2]}"
        )


def _check_cache(cache, q, spatial, tokens: int) -> None:
    if cache is None:
        return
    if not isinstance(cache, KVCache):
        raise ValueError(f"cache: expected a KVCache or None, got {type(cache).__name__}")
    b, nh, _, d = q.shape
    if cache.spatial != spatial:
        raise ValueError(
            f"cache: made on a {cache.spatial[0]}x{cache.spatial[1]} block grid, this "
            f"call has {spatial[0]}x{spatial[1]} (a new clip or size needs "
            "cache=None)"
        )
    want = (b, nh, tokens, d)
    got = (cache.k.shape[0], cache.k.shape[1], cache.k.shape[3], cache.k.shape[4])
    if got != want:
        raise ValueError(f"cache: expected (B, heads, block tokens, d) = {want}, got {got}")
    if cache.k.dtype != q.dtype or cache.k.device != q.device:
        raise ValueError(
            f"cache: expected {q.dtype} on {q.device} like q, got {cache.k.dtype} on "
            f"{cache.k.device}"
        )


def _resolve(kernel, device, block_tokens: int) -> str:
    explicit = kernel in ("sdpa", "flex")
    name = resolve_kernel(kernel, device)
    if name == "flex" and block_tokens != FLEX_TILE:
        if explicit:
            raise ValueError(
                f"kernel 'flex' needs blocks of {FLEX_TILE} tokens (one BlockMask "
                f"tile), got {block_tokens}: use 'sdpa'"
            )
        name = "sdpa"
    return name


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid,
    settings: BlockSparseSettings = SHIPPED,
    cache: KVCache | None = None,
    kernel: str | None = "auto",
):
    """Ultra Flash's sparse chunk-causal self-attention for one streaming call of one layer.

    q, k, v: [B, heads, f*h*w, d], frame-major tokens of this call after q/k RMSNorm and RoPE
    (temporal RoPE position = absolute latent frame). `cache`: this layer's `KVCache` from the
    previous call of the clip, None for the clip's first call. Returns (out [B, heads, f*h*w, d]
    in q's dtype, the layer's next cache (this call's K/V appended, trimmed to
    `settings.kv_blocks`), the selection bool [B, heads, Qb, Kb]). `kernel`: 'auto' | 'sdpa' |
    'flex' (`resolve_kernel`; 'auto' keeps sdpa where the block is not one 128-token tile)."""
    grid = _check_grid(grid)
    settings = _check_settings(settings)
    _check_qkv(q, k, v, grid)
    tq, nb_h, nb_w = block_grid(grid, settings.block)
    spatial = (nb_h, nb_w)
    _check_cache(cache, q, spatial, settings.block_tokens)
    flex = _resolve(kernel, q.device, settings.block_tokens) == "flex"

    qb, kb, vb = (to_blocks(x, grid, settings.block) for x in (q, k, v))  # [B, heads, TQ*S, T, d]
    keys = KVCache(kb, vb, spatial) if cache is None else cache.append(kb, vb)  # cache first
    c = keys.temporal_blocks - tq
    allowed = allowed_blocks(tq, c, spatial, settings.local_range, q.device)
    chosen = select_blocks(
        qb, keys.k, allowed, sparse_top_k(grid, settings), c == 0, spatial_blocks=nb_h * nb_w
    )
    run = _sparse_flex if flex else _sparse_sdpa
    out = from_blocks(run(qb, keys.k, keys.v, chosen), grid, settings.block)
    return out, keys.trim(settings.kv_blocks), chosen


def _sparse_sdpa(qb, kb, vb, chosen) -> torch.Tensor:
    """Gather each query block's selected key blocks and run SDPA on them. [B, heads, Qb, T, d].

    Rows (b, head, query block) are sorted by their number of selected blocks and cut into chunks
    of at most SDPA_CHUNK_BYTES (gathered K/V + scores); a chunk pads its rows to its longest
    one and masks the padding, so sorting keeps the padding small."""
    b, nh, nq, t, d = qb.shape
    nk = kb.shape[2]
    rows = b * nh * nq
    counts = chosen.reshape(rows, nk).sum(-1)  # selected key blocks per row (>= 1)
    by_count = torch.argsort(counts)  # rows, fewest selected first
    # The selected key blocks of every row, ascending, first (a stable sort of the mask).
    order = torch.argsort(
        chosen.reshape(rows, nk).to(torch.uint8), dim=-1, descending=True, stable=True
    )
    sorted_counts = counts[by_count].tolist()
    per_block = t * (2 * d * kb.element_size() + 4 * t)  # one key block of one row
    q_flat, out = qb.reshape(rows, t, d), torch.empty(rows, t, d, dtype=qb.dtype, device=qb.device)
    k_flat, v_flat = kb.reshape(b * nh * nk, t, d), vb.reshape(b * nh * nk, t, d)
    s = 0
    while s < rows:
        lo, hi = s + 1, rows  # the longest chunk [s, e) within the budget (at least one row)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            fits = (mid - s) * sorted_counts[mid - 1] * per_block <= SDPA_CHUNK_BYTES
            lo, hi = (mid, hi) if fits else (lo, mid - 1)
        e, m = lo, sorted_counts[lo - 1]
        sel = by_count[s:e]  # [n] rows of this chunk
        n = e - s
        idx = order[sel, :m] + (sel // nq * nk)[:, None]  # [n, m] rows of k_flat
        keep = torch.arange(m, device=kb.device) < counts[sel, None]  # [n, m]
        kg = k_flat.index_select(0, idx.reshape(-1)).view(1, n, m * t, d)
        vg = v_flat.index_select(0, idx.reshape(-1)).view(1, n, m * t, d)
        mask = keep[:, None, :, None].expand(n, 1, m, t).reshape(1, n, 1, m * t)
        o = F.scaled_dot_product_attention(
            q_flat.index_select(0, sel)[None], kg, vg, attn_mask=mask
        )
        out.index_copy_(0, sel, o[0])
        s = e
    return out.view(b, nh, nq, t, d)


def block_sparse_block_mask(chosen: torch.Tensor):
    """The flex BlockMask of a selection bool [B, heads, Qb, Kb] on the block layout, one block
    per 128-token tile: every selected tile is listed as full (the compiled kernel runs no
    mask_mod inside it); the mask_mod is the same selection for eager flex, which reads only it."""
    from torch.nn.attention.flex_attention import BlockMask

    b, nh, nq, nk = chosen.shape
    dense = chosen.to(torch.int32)
    full_num = dense.sum(-1, dtype=torch.int32)
    full_idx = torch.argsort(dense, dim=-1, descending=True, stable=True).to(torch.int32)
    none_num, none_idx = torch.zeros_like(full_num), torch.zeros_like(full_idx)

    def selected(bi, h, q_idx, kv_idx):
        return chosen[bi, h, q_idx // FLEX_TILE, kv_idx // FLEX_TILE]

    return BlockMask.from_kv_blocks(
        none_num,
        none_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=FLEX_TILE,
        mask_mod=selected,
        seq_lengths=(nq * FLEX_TILE, nk * FLEX_TILE),
    )


def _sparse_flex(qb, kb, vb, chosen) -> torch.Tensor:
    """One flex_attention call over the block layout (blocks are whole tiles).
    [B, heads, Qb, T, d]."""
    b, nh, nq, t, d = qb.shape
    nk = kb.shape[2]
    o = _flex(
        qb.reshape(b, nh, nq * t, d),
        kb.reshape(b, nh, nk * t, d),
        vb.reshape(b, nh, nk * t, d),
        block_sparse_block_mask(chosen),
    )
    return o.reshape(b, nh, nq, t, d)
