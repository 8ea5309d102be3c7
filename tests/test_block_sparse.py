"""Ultra Flash's block-sparse chunk-causal attention with a KV cache (models/block_sparse.py)
against a straightforward reimplementation written here from the rules in docs/ultraflash.md §2:
plain loops over blocks for the selection, a dense per-head token mask over the zero-padded
frame-major grids for the output. The reference shares no helper with the module."""

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from ultraflash_tiny import tiny_configs, token_grid

from simplegvr_core.models import block_sparse as bsa
from simplegvr_core.models.attention import FLEX_TILE, flex_available
from simplegvr_core.models.block_sparse import (
    BlockSparseSettings,
    KVCache,
    allowed_blocks,
    block_sparse_attention,
    block_sparse_block_mask,
    from_blocks,
    select_blocks,
    sparse_top_k,
    to_blocks,
)

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
needs_flex = pytest.mark.skipif(not flex_available(), reason="this torch has no flex_attention")

BLOCK = (2, 8, 8)
FIXTURE = (
    Path(__file__).parent / "data" / "ultraflash_reference.safetensors"
)  # tools/fixtures/make_ultraflash_fixtures.py


# --------------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------------
def pad_grid(x, grid):
    """[B, H, f*h*w, d] -> zero-padded [B, H, Fp, Hp, Wp, d] (padding at the end of every axis)."""
    f, h, w = grid
    b, nh, _, d = x.shape
    fp, hp, wp = (-(-n // s) * s for n, s in zip(grid, BLOCK))
    out = torch.zeros(b, nh, fp, hp, wp, d, dtype=x.dtype)
    out[:, :, :f, :h, :w] = x.reshape(b, nh, f, h, w, d)
    return out


def block_ids(frames, hp, wp):
    """Block index of every position of a padded [frames, hp, wp] grid, flattened frame-major."""
    bw = wp // BLOCK[2]
    bh = hp // BLOCK[1]
    ids = []
    for t in range(frames):
        for y in range(hp):
            for x in range(wp):
                ids.append(((t // BLOCK[0]) * bh + y // BLOCK[1]) * bw + x // BLOCK[2])
    return torch.tensor(ids)


def gather_blocks(tokens, ids):
    """[B, H, positions, d] -> [B, H, blocks, 128, d]: a block's positions in frame-major order."""
    b, nh, _, d = tokens.shape
    return tokens[:, :, torch.argsort(ids, stable=True)].reshape(b, nh, -1, 128, d)


def reference(q, k, v, grid, cached_k, cached_v, local_range, top_k, given=None):
    """Selection [B, H, Qb, Kb], output [B, H, f*h*w, d], rows that fell back, smallest margin.

    cached_k / cached_v: padded frames of earlier calls [B, H, Fc, Hp, Wp, d], or None; `given`: use
    this selection instead of making one. Computed in float64 (the tests keep every top-k threshold
    far from float32 noise: see `margin`)."""
    f, h, w = grid
    b, nh, _, d = q.shape
    q, k, v = q.double(), k.double(), v.double()
    qp, kp, vp = pad_grid(q, grid), pad_grid(k, grid), pad_grid(v, grid)
    fp, hp, wp = qp.shape[2:5]
    if cached_k is not None:
        kp, vp = torch.cat([cached_k.double(), kp], 2), torch.cat([cached_v.double(), vp], 2)
    fc = kp.shape[2] - fp
    bh, bw = hp // BLOCK[1], wp // BLOCK[2]
    s, tq, c = bh * bw, fp // BLOCK[0], fc // BLOCK[0]
    nq, nk = tq * s, (c + tq) * s
    qid, kid = block_ids(fp, hp, wp), block_ids(fc + fp, hp, wp)
    qtok, ktok, vtok = qp.reshape(b, nh, -1, d), kp.reshape(b, nh, -1, d), vp.reshape(b, nh, -1, d)

    lo, hi = -(local_range // 2), local_range - 1 - local_range // 2
    allowed = torch.tensor(
        [
            [
                j // s <= i // s + c
                and lo <= (j % s) // bw - (i % s) // bw <= hi
                and lo <= j % bw - i % bw <= hi
                for j in range(nk)
            ]
            for i in range(nq)
        ]
    )

    # block means over all 128 positions, zero padding included: [B, H, blocks, d]
    mq, mk = gather_blocks(qtok, qid).mean(3), gather_blocks(ktok, kid).mean(3)
    sel = torch.zeros(b, nh, nq, nk, dtype=torch.bool)
    fallbacks, margin = 0, math.inf
    for bi in range(b if given is None else 0):
        for hd in range(nh):
            if top_k == 0:
                sel[bi, hd] = allowed
                continue
            p = torch.softmax(
                (mq[bi, hd] @ mk[bi, hd].T / math.sqrt(d)).masked_fill(~allowed, -math.inf), -1
            )
            for t in range(tq):
                slab = p[t * s : (t + 1) * s]
                values = sorted(slab.flatten().tolist(), reverse=True)
                tau = values[min(len(values) - 1, top_k)]
                sel[bi, hd, t * s : (t + 1) * s] = (slab >= tau) & allowed[t * s : (t + 1) * s]
                margin = min(
                    [margin] + [abs(x - tau) / tau for x in values if x != tau and tau > 0]
                )
            for i in (~sel[bi, hd].any(-1)).nonzero().flatten().tolist():
                fallbacks += 1
                sel[bi, hd, i, int(allowed[i].nonzero()[0])] = True  # the row's first allowed block
            if c == 0:
                for i in range(nq):
                    sel[bi, hd, i, i] = True

    sel = sel if given is None else given
    real = (
        pad_grid(torch.ones(1, 1, f * h * w, 1), grid).flatten().bool()
    )  # unpadded query positions
    out = torch.empty(b, nh, f * h * w, d, dtype=torch.float64)
    for bi in range(b):
        for hd in range(nh):
            tok_mask = sel[bi, hd][qid[real]][:, kid]  # [real queries, padded keys]
            logits = qtok[bi, hd, real] @ ktok[bi, hd].T / math.sqrt(d)
            out[bi, hd] = torch.softmax(logits.masked_fill(~tok_mask, -math.inf), -1) @ vtok[bi, hd]
    return sel, out.float(), fallbacks, margin


def fields(grid, gen, batch=2, heads=2, d=16):
    """q, k with structure at the block scale (constant 4x4 patches + noise), so that the pooled
    block scores are spread out and the top-k decisions are far from ties; v plain noise."""
    f, h, w = grid

    def structured():
        coarse = torch.randn(batch, heads, f, -(-h // 4), -(-w // 4), d, generator=gen)
        coarse = coarse.repeat_interleave(4, 3).repeat_interleave(4, 4)[:, :, :, :h, :w]
        x = coarse + 0.3 * torch.randn(batch, heads, f, h, w, d, generator=gen)
        return x.reshape(batch, heads, f * h * w, d)

    return structured(), structured(), torch.randn(batch, heads, f * h * w, d, generator=gen)


# --------------------------------------------------------------------------------------------------
# (a) masks and outputs against the reference
# --------------------------------------------------------------------------------------------------
CASES = {
    # name: (previous call's frames or 0, grid of this call, local_range,
    #        fixed top_k or 0 (the ratio rule), seed)
    "no cache, top-k keeps the whole window": (0, (4, 16, 16), 9, 0, 0),
    "odd f/h/w, local 3, top-k 5 bites": (0, (3, 17, 19), 3, 5, 2),
    "cache of 2, local 5, top-k 7 bites": (4, (2, 9, 13), 5, 7, 3),
    "cache of 3, shipped settings, ratio rule bites": (6, (5, 12, 20), 9, 0, 0),
    "one frame after a cache of 1, local 1": (2, (1, 8, 24), 1, 2, 0),
    "cache of 3, top-k 1: rows fall back": (5, (2, 9, 17), 3, 1, 2),
}
# Seeds are chosen so that no score lies this close (relative) to a threshold: ~100x float32 noise.
MARGIN = 1e-5


@pytest.mark.parametrize("name", list(CASES))
def test_masks_and_outputs_equal_the_reference(name):
    prev_frames, grid, local, fixed, seed = CASES[name]
    settings = BlockSparseSettings(local_range=local, top_k=fixed)
    gen = torch.Generator().manual_seed(seed)
    cache = None
    ref_ck, ref_cv = None, None
    if prev_frames:
        prev_grid = (prev_frames, grid[1], grid[2])
        pq, pk, pv = fields(prev_grid, gen)
        _, cache, _ = block_sparse_attention(pq, pk, pv, prev_grid, settings, kernel="sdpa")
        ref_ck, ref_cv = pad_grid(pk, prev_grid), pad_grid(pv, prev_grid)
    q, k, v = fields(grid, gen)
    top_k = sparse_top_k(grid, settings)
    out, _, chosen = block_sparse_attention(q, k, v, grid, settings, cache, kernel="sdpa")
    sel, ref_out, fallbacks, margin = reference(q, k, v, grid, ref_ck, ref_cv, local, top_k)
    assert margin > MARGIN, "the inputs put a top-k threshold within float32 noise of another score"
    assert torch.equal(chosen, sel)
    assert (out - ref_out).abs().max().item() < 1e-5
    tq, cached, spatial = (
        -(-grid[0] // 2),
        -(-prev_frames // 2),
        (-(-grid[1] // 8), -(-grid[2] // 8)),
    )
    window = allowed_blocks(tq, cached, spatial, local).expand_as(chosen)
    if name.startswith("no cache"):
        assert top_k == 31 and torch.equal(
            chosen, window
        )  # slab of 32 entries: everything allowed kept
    else:
        assert not torch.equal(chosen, window)  # top-k removed allowed blocks
        assert not torch.equal(chosen[:, 0], chosen[:, 1])  # and the heads chose differently
    if name.endswith("fall back"):
        assert fallbacks > 0  # rows whose every allowed block lies below the slab's threshold


def test_sdpa_kernel_is_per_head_not_the_union_over_heads():
    grid, settings = (3, 17, 19), BlockSparseSettings(local_range=3, top_k=5)
    q, k, v = fields(grid, torch.Generator().manual_seed(1), batch=1)
    out, _, chosen = block_sparse_attention(q, k, v, grid, settings, kernel="sdpa")
    union = chosen.any(1, keepdim=True).expand_as(
        chosen
    )  # what their CPU fallback uses for every head
    _, with_union, _, _ = reference(q, k, v, grid, None, None, 3, 5, given=union)
    assert not torch.equal(union, chosen) and (out - with_union).abs().max().item() > 1e-2


def test_sdpa_chunks_do_not_change_the_result(monkeypatch):
    grid, settings = (4, 9, 17), BlockSparseSettings(local_range=3, top_k=9)
    q, k, v = fields(grid, torch.Generator().manual_seed(4))
    whole, _, chosen = block_sparse_attention(q, k, v, grid, settings, kernel="sdpa")
    assert chosen.sum(-1).unique().numel() > 1  # rows of different lengths, padded within a chunk
    monkeypatch.setattr(
        bsa, "SDPA_CHUNK_BYTES", 3 * 128 * (2 * 16 * 4 + 4 * 128)
    )  # 3 key blocks a chunk
    chunked, _, _ = block_sparse_attention(q, k, v, grid, settings, kernel="sdpa")
    assert (whole - chunked).abs().max().item() < 1e-6


def test_auto_kernel_is_sdpa_on_cpu_and_wherever_a_block_is_not_one_tile(monkeypatch):
    monkeypatch.delenv("SIMPLEGVR_ATTENTION_KERNEL", raising=False)
    assert bsa._resolve("auto", "cpu", 128) == "sdpa" and bsa._resolve("flex", "cpu", 128) == "flex"
    monkeypatch.setattr("simplegvr_core.models.attention.flex_available", lambda: True)
    assert bsa._resolve("auto", "cuda", 128) == "flex" and bsa._resolve(None, "cuda", 128) == "flex"
    assert bsa._resolve("auto", "cuda", 64) == "sdpa"


def test_block_layout_is_tb_hb_wb_then_dt_dy_dx():
    grid = (3, 9, 10)  # padded to 4 x 16 x 16: 2 x 2 x 2 blocks
    x = (torch.arange(270, dtype=torch.float32) + 1).view(1, 1, 270, 1)
    xb = to_blocks(x, grid, BLOCK)  # [1, 1, 8, 128, 1]
    assert list(xb.shape) == [1, 1, 8, 128, 1]
    for t, y, c in [(0, 0, 0), (1, 7, 9), (2, 8, 3), (2, 8, 9), (0, 5, 8)]:
        block = ((t // 2) * 2 + y // 8) * 2 + c // 8
        pos = ((t % 2) * 8 + y % 8) * 8 + c % 8
        assert xb[0, 0, block, pos, 0].item() == (t * 9 + y) * 10 + c + 1
    assert (xb > 0).sum().item() == 270  # everything else is zero padding
    assert torch.equal(from_blocks(xb, grid, BLOCK), x)


# --------------------------------------------------------------------------------------------------
# (b) flex == sdpa
# --------------------------------------------------------------------------------------------------
@needs_flex
@pytest.mark.parametrize(
    "prev_frames, grid, local, fixed",
    [
        (0, (3, 9, 13), 3, 5),
        (4, (2, 9, 13), 5, 7),
        (6, (3, 12, 20), 9, 0),
        (2, (1, 8, 24), 1, 2),
    ],
)
def test_flex_equals_sdpa(prev_frames, grid, local, fixed):
    settings = BlockSparseSettings(local_range=local, top_k=fixed)
    gen = torch.Generator().manual_seed(7)
    cache = None
    if prev_frames:
        prev_grid = (prev_frames, grid[1], grid[2])
        _, cache, _ = block_sparse_attention(
            *fields(prev_grid, gen, batch=1, heads=3), prev_grid, settings
        )
    q, k, v = fields(grid, gen, batch=1, heads=3)
    ref, ref_cache, ref_mask = block_sparse_attention(q, k, v, grid, settings, cache, kernel="sdpa")
    out, out_cache, mask = block_sparse_attention(q, k, v, grid, settings, cache, kernel="flex")
    assert torch.equal(mask, ref_mask)
    assert (out - ref).abs().max().item() < 1e-5
    assert torch.equal(out_cache.k, ref_cache.k) and torch.equal(out_cache.v, ref_cache.v)


@needs_flex
def test_flex_block_mask_lists_exactly_the_selected_tiles_as_full():
    chosen = torch.rand(2, 3, 6, 18, generator=torch.Generator().manual_seed(3)) < 0.3
    chosen[..., 0] = True
    bm = block_sparse_block_mask(chosen)
    assert bm.BLOCK_SIZE == (FLEX_TILE, FLEX_TILE) and bm.seq_lengths == (6 * 128, 18 * 128)
    assert bm.kv_num_blocks.eq(0).all()  # no partial tile: the compiled kernel runs no mask_mod
    from torch.nn.attention.flex_attention import _ordered_to_dense

    full = _ordered_to_dense(bm.full_kv_num_blocks, bm.full_kv_indices, 18).bool()
    assert torch.equal(full, chosen)
    # the mask_mod (all eager flex reads) says the same, token by token
    qi, ki = torch.tensor([5, 130, 700]), torch.tensor([0, 300, 2300])
    for b in range(2):
        for h in range(3):
            got = bm.mask_mod(b, h, qi[:, None], ki[None, :])
            assert torch.equal(got, chosen[b, h][qi[:, None] // 128, ki[None, :] // 128])


# --------------------------------------------------------------------------------------------------
# (c) the cache
# --------------------------------------------------------------------------------------------------
def test_streaming_three_calls_equals_the_reconcatenated_reference():
    settings = BlockSparseSettings(local_range=3, top_k=9, kv_blocks=3)
    gen = torch.Generator().manual_seed(1)
    cache, frames_k, frames_v, cached = None, None, None, []
    for f in (4, 6, 3):  # the long-video grouping: cache 0, then 2, then 3 temporal blocks
        grid = (f, 9, 17)
        q, k, v = fields(grid, gen)
        out, cache_next, chosen = block_sparse_attention(
            q, k, v, grid, settings, cache, kernel="sdpa"
        )
        sel, ref_out, _, margin = reference(q, k, v, grid, frames_k, frames_v, 3, 9)
        assert margin > MARGIN
        assert torch.equal(chosen, sel) and (out - ref_out).abs().max().item() < 1e-5
        cached.append(0 if cache is None else cache.temporal_blocks)
        # the reference's cache: every padded frame so far, then the last kv_blocks * 2 frames
        frames_k = torch.cat([x for x in (frames_k, pad_grid(k, grid)) if x is not None], 2)[
            :, :, -6:
        ]
        frames_v = torch.cat([x for x in (frames_v, pad_grid(v, grid)) if x is not None], 2)[
            :, :, -6:
        ]
        # cached blocks are the same numbers as the reference's frames (own RoPE, unchanged)
        ids = block_ids(frames_k.shape[2], 16, 24)
        assert torch.equal(cache_next.k, gather_blocks(frames_k.reshape(2, 2, -1, 16), ids))
        assert torch.equal(cache_next.v, gather_blocks(frames_v.reshape(2, 2, -1, 16), ids))
        cache = cache_next
    assert cached == [0, 2, 3] and cache.temporal_blocks == 3


def test_cache_trims_only_beyond_kv_blocks_and_keeps_old_blocks_unchanged():
    grid = (6, 8, 16)  # 3 temporal blocks of 2 spatial blocks
    gen = torch.Generator().manual_seed(12)
    q, k, v = fields(grid, gen)
    s3 = BlockSparseSettings(kv_blocks=3)
    _, c1, _ = block_sparse_attention(q, k, v, grid, s3)
    assert c1.temporal_blocks == 3 and torch.equal(
        c1.k, to_blocks(k, grid, BLOCK)
    )  # 3 = kv: no trim
    q2, k2, v2 = fields(grid, gen)
    _, c2, m2 = block_sparse_attention(q2, k2, v2, grid, s3, c1)
    assert m2.shape[-2:] == (6, 12)  # 3 query temporal blocks see 3 cached + 3 current
    assert c2.temporal_blocks == 3 and torch.equal(c2.k, to_blocks(k2, grid, BLOCK))
    _, c1b, _ = block_sparse_attention(q, k, v, grid, BlockSparseSettings(kv_blocks=1))
    assert c1b.temporal_blocks == 1 and torch.equal(c1b.v, to_blocks(v, grid, BLOCK)[:, :, -2:])
    everything = BlockSparseSettings(kv_blocks=None)
    _, ca, _ = block_sparse_attention(q, k, v, grid, everything)
    _, cb, _ = block_sparse_attention(q2, k2, v2, grid, everything, ca)
    assert cb.temporal_blocks == 6 and torch.equal(cb.k[:, :, :6], ca.k)  # earlier K kept as it was
    # KVCache on its own
    assert cb.trim(4).temporal_blocks == 4 and cb.trim(6) is cb and cb.trim(None) is cb
    assert torch.equal(cb.trim(2).k, cb.k[:, :, -4:])


def test_first_call_forces_the_diagonal_later_calls_do_not():
    grid = (2, 8, 24)  # one temporal block of 3 spatial blocks
    q, k, v = fields(grid, torch.Generator().manual_seed(13))
    qb, kb = to_blocks(q, grid, BLOCK), to_blocks(k, grid, BLOCK)
    allowed = allowed_blocks(1, 0, (1, 3), 9)
    off = select_blocks(qb, kb, allowed, 1, False, spatial_blocks=3)  # slab of 9, top-1: >= 2 kept
    on = select_blocks(qb, kb, allowed, 1, True, spatial_blocks=3)
    eye = torch.eye(3, dtype=torch.bool)
    assert torch.equal(on, off | eye) and not torch.equal(on, off)
    with pytest.raises(ValueError, match="force_diagonal needs as many key blocks"):
        select_blocks(
            qb, torch.cat([kb, kb], 2), allowed_blocks(1, 1, (1, 3), 9), 1, True, spatial_blocks=3
        )


def test_allowed_window_is_truncated_at_borders_and_causal_in_blocks():
    a = allowed_blocks(2, 1, (3, 4), 3)  # TQ 2, C 1, 3 x 4 spatial blocks, |d| <= 1
    assert a.shape == (24, 36)
    s = 12
    corner = a[0, :s].view(3, 4)  # query (tq 0, r 0, c 0) against cached temporal block 0
    assert corner.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]  # truncated, not shifted
    assert (
        a[0, s : 2 * s].any() and not a[0, 2 * s :].any()
    )  # tq 0 (absolute 1) sees tk 0, 1, not 2
    assert a[s, 2 * s :].any()
    even = allowed_blocks(1, 0, (1, 8), 4)[0].nonzero().flatten().tolist()  # L 4: [-2, 1]
    assert even == [0, 1] and allowed_blocks(1, 0, (1, 8), 4)[5].nonzero().flatten().tolist() == [
        3,
        4,
        5,
        6,
    ]


# --------------------------------------------------------------------------------------------------
# (d) top-k per call
# --------------------------------------------------------------------------------------------------
def test_sparse_top_k_matches_the_reference_fixture():
    with safe_open(str(FIXTURE), "pt") as fixture:
        for name, case in tiny_configs().items():
            sp = case["sparse"]
            settings = BlockSparseSettings(
                block=tuple(sp["block"]),
                local_range=sp["local_range"],
                top_k_ratio=sp["top_k_ratio"],
                ref_tokens=sp["ref_spatial_tokens"],
                kv_blocks=sp["kv_len"],
            )
            groups = fixture.get_tensor(f"{name}/groups").tolist()
            want = fixture.get_tensor(f"{name}/top_k").tolist()
            assert groups == list(case["groups"])
            assert [sparse_top_k(token_grid(case, f), settings) for f in groups] == want
            assert (
                want == {"shipped": [47, 47, 15], "biting": [9, 9, 9]}[name]
            )  # capped / int(36*2*20/153)


def test_sparse_top_k_at_the_shipped_sizes_and_overrides():
    assert sparse_top_k((6, 60, 104)) == 2704  # 1K: S = 8 x 13, ratio 1560 / 6240
    assert sparse_top_k((6, 90, 156)) == 6400  # 2K: S = 12 x 20
    assert (
        sparse_top_k((3, 60, 104)) == 2704 and sparse_top_k((1, 9, 13)) == 15
    )  # capped at S*S*TQ - 1
    assert sparse_top_k((6, 60, 104), BlockSparseSettings(top_k=4)) == 4
    assert sparse_top_k((6, 60, 104), BlockSparseSettings(top_k_ratio=0.0)) == 0  # the window alone
    assert (
        sparse_top_k((2, 8, 8), BlockSparseSettings(ref_tokens=0, top_k_ratio=0.5)) == 1
    )  # max(.., 1)


def test_top_k_zero_keeps_the_allowed_window():
    grid = (4, 9, 17)
    settings = BlockSparseSettings(local_range=3, top_k_ratio=0.0)
    gen = torch.Generator().manual_seed(14)
    pq, pk, pv = fields(grid, gen)
    _, cache, _ = block_sparse_attention(pq, pk, pv, grid, settings)
    q, k, v = fields(grid, gen)
    out, _, chosen = block_sparse_attention(q, k, v, grid, settings, cache)
    sel, ref_out, _, _ = reference(q, k, v, grid, pad_grid(pk, grid), pad_grid(pv, grid), 3, 0)
    assert torch.equal(chosen, allowed_blocks(2, 2, (2, 3), 3).expand_as(chosen)) and torch.equal(
        chosen, sel
    )
    assert (out - ref_out).abs().max().item() < 1e-5


# --------------------------------------------------------------------------------------------------
# (e) bf16
# --------------------------------------------------------------------------------------------------
def test_bf16_scores_in_bf16_and_keeps_rounded_ties():
    """Key block 1's mean is 1 and block 2's is 1 - 2^-9 (one token 0.75; every token is
    bf16-exact): in float32 block 2 scores lower; in bf16 the two means round to the same value,
    their scores tie and `>=` keeps both, as Ultra Flash's bf16 scoring does: the scores are
    computed in the inputs' dtype."""
    grid = (2, 8, 24)  # one temporal block, 1 x 3 spatial blocks, no padding
    q = torch.zeros(1, 1, 2, 8, 24, 8)
    q[..., 0] = 1.0
    k = torch.zeros_like(q)
    k[..., 0:8, 0] = 3.0  # block 0: mean 3 (the best)
    k[..., 8:16, 0] = 1.0  # block 1: mean 1
    k[..., 16:24, 0] = 1.0
    k[0, 0, 0, 0, 16, 0] = 0.75  # block 2: mean 1 - 0.25/128
    q, k = q.reshape(1, 1, -1, 8), k.reshape(1, 1, -1, 8)
    v = torch.randn(q.shape, generator=torch.Generator().manual_seed(15))
    settings = BlockSparseSettings(top_k=4)  # slab 3 x 3: tau = 5th largest of the 9
    _, _, m32 = block_sparse_attention(q, k, v, grid, settings)
    out16, cache16, m16 = block_sparse_attention(
        q.bfloat16(), k.bfloat16(), v.bfloat16(), grid, settings
    )
    # float32: tau = the 5th of (p0, p0, p0, p1, p1, p1, p2, p2, p2) = p1 keeps blocks 0 and 1 (plus
    # the forced diagonal of the first call); bf16: p1 == p2, so block 2 is kept by every row
    assert m32[0, 0, :, :2].all() and m32[0, 0, :, 2].tolist() == [False, False, True]
    assert m16.all()
    assert out16.dtype == torch.bfloat16 and cache16.k.dtype == torch.bfloat16


def test_bf16_runs_and_matches_float64_attention_on_its_own_selection():
    grid, settings = (3, 9, 13), BlockSparseSettings(local_range=3, top_k=5)
    gen = torch.Generator().manual_seed(16)
    pq, pk, pv = (x.bfloat16() for x in fields(grid, gen, batch=1))
    _, cache, _ = block_sparse_attention(pq, pk, pv, grid, settings)
    q, k, v = (x.bfloat16() for x in fields(grid, gen, batch=1))
    out, nxt, chosen = block_sparse_attention(q, k, v, grid, settings, cache, kernel="sdpa")
    assert (
        out.dtype == torch.bfloat16 and nxt.k.dtype == torch.bfloat16 and nxt.temporal_blocks == 3
    )
    _, ref, _, _ = reference(
        q, k, v, grid, pad_grid(pk, grid), pad_grid(pv, grid), 3, 5, given=chosen
    )
    assert (out.float() - ref).abs().max().item() < 0.03  # bf16 rounding of the output
    if flex_available():
        out_flex, _, chosen_flex = block_sparse_attention(
            q, k, v, grid, settings, cache, kernel="flex"
        )
        assert (
            torch.equal(chosen_flex, chosen) and (out_flex.float() - ref).abs().max().item() < 0.03
        )


# --------------------------------------------------------------------------------------------------
# (f) validation
# --------------------------------------------------------------------------------------------------
def test_settings_validation():
    for kwargs, msg in [
        (dict(block=(2, 8)), r"block=\(2, 8\): expected three positive ints"),
        (dict(block=(2, 0, 8)), "block=.*expected three positive ints"),
        (dict(local_range=0), "local_range=0: expected an int >= 1"),
        (dict(top_k_ratio=float("nan")), "top_k_ratio=nan: expected a finite number"),
        (dict(ref_tokens=-1), "ref_tokens=-1: expected an int >= 0"),
        (dict(kv_blocks=0), "kv_blocks=0: expected None or an int >= 1"),
        (dict(top_k=-1), "top_k=-1: expected an int >= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            BlockSparseSettings(**kwargs)
    assert BlockSparseSettings(block=[2, 8, 8]).block == (2, 8, 8)
    with pytest.raises(ValueError, match="settings: expected a BlockSparseSettings, got dict"):
        sparse_top_k((2, 8, 8), {})


def test_attention_input_validation():
    grid = (2, 8, 16)
    q = torch.zeros(1, 2, 256, 16)
    cases = [
        (dict(q=q[0]), r"q: expected a tensor \[B, heads, L, d\], got \[2, 256, 16\]"),
        (
            dict(k=q[:, :1]),
            r"q, k, v: expected one shape, got \[1, 2, 256, 16\], \[1, 1, 256, 16\]",
        ),
        (dict(v=q.double()), "q, k, v: expected one dtype and device"),
        (dict(q=q.long(), k=q.long(), v=q.long()), "q: expected a floating dtype, got torch.int64"),
        (
            dict(grid=(2, 8, 15)),
            r"q: expected L = f\*h\*w = 240 tokens for grid \(2, 8, 15\), got 256",
        ),
        (dict(grid=(0, 8, 16)), r"grid=\(0, 8, 16\): expected three positive ints"),
        (dict(kernel="cuda"), "attention kernel='cuda': expected one of"),
        (dict(cache="x"), "cache: expected a KVCache or None, got str"),
        (
            dict(
                cache=KVCache(torch.zeros(1, 2, 4, 128, 16), torch.zeros(1, 2, 4, 128, 16), (2, 2))
            ),
            "cache: made on a 2x2 block grid, this call has 1x2",
        ),
        (
            dict(
                cache=KVCache(torch.zeros(1, 3, 2, 128, 16), torch.zeros(1, 3, 2, 128, 16), (1, 2))
            ),
            r"cache: expected \(B, heads, block tokens, d\) = \(1, 2, 128, 16\), "
            r"got \(1, 3, 128, 16\)",
        ),
        (
            dict(cache=KVCache(*[torch.zeros(1, 2, 2, 128, 16, dtype=torch.bfloat16)] * 2, (1, 2))),
            "cache: expected torch.float32 on cpu like q, got torch.bfloat16",
        ),
        (
            dict(settings=BlockSparseSettings(block=(1, 8, 8)), kernel="flex"),
            "kernel 'flex' needs blocks of 128 tokens",
        ),
    ]
    for change, msg in cases:
        args = dict(
            q=q, k=q, v=q, grid=grid, settings=BlockSparseSettings(), cache=None, kernel="sdpa"
        )
        args.update(change)
        with pytest.raises(ValueError, match=msg):
            block_sparse_attention(**args)


def test_helper_validation():
    with pytest.raises(
        ValueError,
        match=r"x: expected \[B, heads, 240, d\] for grid \(2, 8, 15\), got \[1, 2, 256, 16\]",
    ):
        to_blocks(torch.zeros(1, 2, 256, 16), (2, 8, 15), BLOCK)
    with pytest.raises(ValueError, match="cached_tblocks=-1: expected an int >= 0"):
        allowed_blocks(1, -1, (1, 2), 9)
    with pytest.raises(ValueError, match=r"spatial=\(1,\): expected \(row blocks, column blocks\)"):
        allowed_blocks(1, 0, (1,), 9)
    qb = torch.zeros(1, 2, 4, 128, 16)
    with pytest.raises(
        ValueError, match=r"allowed: expected bool \[4, 4\], got torch.bool \[4, 6\]"
    ):
        select_blocks(qb, qb, torch.ones(4, 6, dtype=torch.bool), 1, False, spatial_blocks=2)
    with pytest.raises(ValueError, match="spatial_blocks=3: expected a positive divisor of the 4"):
        select_blocks(qb, qb, torch.ones(4, 4, dtype=torch.bool), 1, False, spatial_blocks=3)
    with pytest.raises(ValueError, match=r"k_blocks: expected \[1, 2, Kb, 128, 16\] like q_blocks"):
        select_blocks(
            qb, qb[..., :8], torch.ones(4, 4, dtype=torch.bool), 1, False, spatial_blocks=2
        )
    with pytest.raises(ValueError, match=r"k: expected \[B, heads, C\*4, T, d\] with C >= 1"):
        KVCache(torch.zeros(1, 2, 6, 128, 16), torch.zeros(1, 2, 6, 128, 16), (2, 2))
    with pytest.raises(ValueError, match="kv_blocks=0: expected None or an int >= 1"):
        KVCache(qb, qb, (2, 2)).trim(0)
