"""FlexAttention with block masks equals the gathered-window SDPA path (issue 14), and the kernel
rule."""

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR
from simplegvr_core.models import attention as attn
from simplegvr_core.models.attention import (
    FLEX_TILE,
    resolve_kernel,
    sparse_local_attention,
    temporal_unit_attention,
    unit_bounds,
)

pytestmark = [
    pytest.mark.skipif(not attn.flex_available(), reason="this torch has no flex_attention"),
    # eager flex_attention (the CPU) warns that it is unfused: that is the point of the CPU keeping
    # sdpa
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
]


def qkv(grid, heads=3, d=16, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1] * grid[2]
    return [torch.randn(batch, heads, n, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize(
    "grid, unit, shifted, sizes",
    [
        ((20, 3, 4), 5, False, [5, 5, 5, 5]),
        ((20, 3, 4), 5, True, [2, 5, 5, 5, 3]),  # shifted: smaller edge units at both ends
        (
            (21, 3, 4),
            5,
            False,
            [5, 5, 5, 5, 1],
        ),  # 81 frames -> 21 latent frames: a 1-frame edge unit
        ((21, 3, 4), 5, True, [2, 5, 5, 5, 4]),
        # odd frame count and odd grid: unit edges fall inside 128-token tiles
        ((7, 5, 7), 3, True, [1, 3, 3]),
        ((9, 9, 13), 2, False, [2, 2, 2, 2, 1]),  # 1053 tokens: not a whole number of tiles
    ],
)
def test_flex_temporal_units_equal_gathered_sdpa(grid, unit, shifted, sizes):
    assert [e - s for s, e in unit_bounds(grid[0], unit, shifted)] == sizes
    q, k, v = qkv(grid)
    ref = temporal_unit_attention(q, k, v, grid, unit, shifted, kernel="sdpa")
    out = temporal_unit_attention(q, k, v, grid, unit, shifted, kernel="flex")
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "grid, block, topk",
    [
        ((3, 9, 12), (9, 12), 1),  # the paper's 12x9 blocks, one block per frame
        ((2, 6, 7), (4, 4), 1),  # padded edge blocks (6 = 4+2 rows, 7 = 4+3 columns)
        ((3, 6, 8), (3, 4), 2),  # odd frame count, top-2
        ((2, 4, 4), (2, 2), 0),  # own block only
        ((1, 20, 20), (12, 12), 1),  # 144 tokens per block: two tiles per block
    ],
)
def test_flex_sparse_local_equals_gathered_sdpa(grid, block, topk):
    q, k, v = qkv(grid)
    ref = sparse_local_attention(q, k, v, grid, block, topk, kernel="sdpa")
    out = sparse_local_attention(q, k, v, grid, block, topk, kernel="flex")
    assert (out - ref).abs().max().item() < 1e-5


def _tile_map(mask_mod, b, h, n):
    """What the element mask allows per tile: any pair (must be listed) and all pairs (may be
    full)."""
    from torch.nn.attention.flex_attention import create_mask

    tiles = -(-n // FLEX_TILE)
    dense = create_mask(mask_mod, b, h, n, n, device="cpu")
    dense = torch.nn.functional.pad(dense, (0, tiles * FLEX_TILE - n, 0, tiles * FLEX_TILE - n))
    t = dense.reshape(b, h, tiles, FLEX_TILE, tiles, FLEX_TILE)
    return t.any(5).any(3), t.all(5).all(3)


def _check_block_mask(bm, n):
    """The tiles a compiled kernel visits (eager flex ignores them) cover every allowed pair, and a
    tile it runs without the mask_mod ("full") allows every pair."""
    b, h = bm.kv_num_blocks.shape[:2]
    some, every = _tile_map(bm.mask_mod, b, h, n)
    listed = bm.to_dense().bool()
    assert torch.equal(listed | some, listed), (
        "an allowed query/key pair lies in a tile the kernel skips"
    )
    if bm.full_kv_num_blocks is not None:
        from torch.nn.attention.flex_attention import _ordered_to_dense

        full = _ordered_to_dense(bm.full_kv_num_blocks, bm.full_kv_indices, listed.shape[-1]).bool()
        assert torch.equal(full & every, full), "a full tile holds a masked pair"
        return full
    return None


def test_temporal_units_block_mask_lists_the_right_tiles():
    grid = (21, 8, 10)  # 80 tokens a frame: unit edges at 400-token steps, mid-tile
    for shifted in (False, True):
        bounds = unit_bounds(21, 5, shifted)
        bm = attn.temporal_units_block_mask(grid, bounds, "cpu")
        full = _check_block_mask(bm, 21 * 80)
        # a query tile of the first unit sees the key tiles of that unit and nothing of the third
        listed = bm.to_dense()[0, 0].bool()
        assert listed[0, 0] and not listed[0, -1]
        assert full is not None and full.any()  # whole tiles inside a unit skip the mask_mod


def test_sparse_block_mask_lists_exactly_the_selected_blocks():
    grid, block = (2, 6, 6), (3, 3)
    q, k, _ = qkv(grid, heads=2, batch=1)
    qb, kb = (attn._to_blocks(t, grid, block) for t in (q, k))
    valid = attn._to_blocks(torch.ones(1, 1, 72, 1), grid, block)[0, 0, :, :, 0] > 0
    idx = attn.selected_blocks(qb, kb, valid, topk=2)  # [1, 2, 8, 3]
    bm = attn.sparse_block_mask(idx, valid, tiles_per_block=1)
    _check_block_mask(bm, 8 * FLEX_TILE)
    listed = bm.to_dense()[0].bool()  # [heads, 8, 8]: one tile per 3x3 block
    expect = torch.zeros(2, 8, 8, dtype=torch.bool).scatter_(-1, idx[0], True)
    assert torch.equal(listed, expect)
    assert listed.sum(-1).eq(3).all()  # own block + top-2


def test_dit_forward_is_the_same_with_either_kernel():
    torch.manual_seed(0)
    model = randomize_(SimpleGVR.from_config("tiny"), std=0.1).eval()
    # odd frame count (units of 2: 2,2,1 and 1,2,2); tokens 5 x 2 x 3
    x = torch.randn(1, 16, 5, 4, 6)
    ctx = torch.randn(1, 8, 32)
    outs = {}
    for mode in ("temporal_units", "sparse_local"):
        for kernel in ("sdpa", "flex"):
            model.dit.set_attention(mode, kernel=kernel)
            with torch.no_grad():
                outs[mode, kernel] = model.dit(x, x, torch.tensor([700.0]), ctx, 0.4)
        diff = (outs[mode, "flex"] - outs[mode, "sdpa"]).abs().max().item()
        assert diff < 1e-5, (mode, diff)
    # modes differ
    assert (outs["temporal_units", "sdpa"] - outs["sparse_local", "sdpa"]).abs().max() > 1e-3


def test_kernel_rule_auto_is_sdpa_on_cpu_flex_on_cuda(monkeypatch):
    monkeypatch.delenv(attn.KERNEL_ENV, raising=False)
    assert resolve_kernel("auto", "cpu") == "sdpa"
    assert resolve_kernel(None, "cpu") == "sdpa"
    assert resolve_kernel("auto", "cuda") == "flex"
    assert resolve_kernel("sdpa", "cuda") == "sdpa"
    assert resolve_kernel("flex", "cpu") == "flex"
    monkeypatch.setattr(attn, "flex_available", lambda: False)
    assert resolve_kernel("auto", "cuda") == "sdpa"  # the fallback where flex_attention is missing
    with pytest.raises(ValueError, match="no flex_attention"):
        resolve_kernel("flex", "cpu")


def test_kernel_env_var_forces_auto_only(monkeypatch):
    monkeypatch.setenv(attn.KERNEL_ENV, "flex")
    assert resolve_kernel("auto", "cpu") == "flex"
    assert resolve_kernel("sdpa", "cpu") == "sdpa"  # an explicit choice wins over the environment
    monkeypatch.setenv(attn.KERNEL_ENV, "triton")
    with pytest.raises(
        ValueError,
        match=r"SIMPLEGVR_ATTENTION_KERNEL='triton': expected one of \('auto', 'sdpa', 'flex'\)",
    ):
        resolve_kernel("auto", "cpu")


def test_set_attention_validates_the_kernel():
    model = SimpleGVR.from_config("tiny", device="meta")
    assert model.dit.attention_kernel == "auto"
    with pytest.raises(ValueError, match="attention kernel 'cuda'"):
        model.dit.set_attention("temporal_units", kernel="cuda")
    assert model.dit.attention_kernel == "auto"
    model.dit.set_attention("sparse_local", kernel="flex")
    assert (model.dit.attention_mode, model.dit.attention_kernel) == ("sparse_local", "flex")
