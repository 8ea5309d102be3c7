import time

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, get_config
from simplegvr_core.models.attention import (
    full_attention,
    sparse_local_attention,
    temporal_unit_attention,
    unit_bounds,
)
from simplegvr_core.models.dit import SimpleGVRDiT, rope_split


def tiny(**dit):
    cfg = get_config("tiny").to_dict()
    cfg["dit"].update(dit)
    m = SimpleGVR.from_config(cfg).eval()
    return randomize_(m, seed=1, std=0.15)


def inputs(t=6, h=8, w=10, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 16, t, h, w, generator=g)
    c = torch.randn(b, 16, t, h, w, generator=g)
    ctx = torch.randn(b, 7, 32, generator=g)
    return z, c, torch.full((b,), 600.0), ctx


def test_rope_split_is_wans_44_42_42():
    assert rope_split(128) == (44, 42, 42)
    assert rope_split(16) == (8, 4, 4)


def test_unit_bounds_shift_by_half_a_unit_non_cyclic():
    assert unit_bounds(20, 5, shifted=False) == [(0, 5), (5, 10), (10, 15), (15, 20)]
    # edges 2 and 3
    assert unit_bounds(20, 5, shifted=True) == [(0, 2), (2, 7), (7, 12), (12, 17), (17, 20)]
    assert unit_bounds(7, 5, shifted=False) == [(0, 5), (5, 7)]
    assert unit_bounds(5, 5, shifted=True) == [(0, 5)]  # a clip of one unit is never cut


def test_temporal_units_with_unit_covering_clip_equals_full():
    m = tiny(unit_frames=6)
    z, c, t, ctx = inputs(t=6)
    with torch.no_grad():
        full = m.dit(z, c, t, ctx, 0.4, attention="full")
        units = m.dit(z, c, t, ctx, 0.4, attention="temporal_units")
    assert full.abs().max() > 0.1
    torch.testing.assert_close(units, full, rtol=0, atol=1e-5)


def test_unshifted_block_keeps_queries_inside_their_unit():
    m = tiny(num_layers=1, unit_frames=3)  # block 0 is unshifted: units [0,3), [3,6)
    z, c, t, ctx = inputs(t=6)
    with torch.no_grad():
        base = m.dit(z, c, t, ctx, 0.4, attention="temporal_units")
        z2 = z.clone()
        z2[:, :, 4] += 3.0  # a frame of the second unit
        moved = m.dit(z2, c, t, ctx, 0.4, attention="temporal_units")
        moved_full = m.dit(z2, c, t, ctx, 0.4, attention="full")
        base_full = m.dit(z, c, t, ctx, 0.4, attention="full")
    assert torch.equal(moved[:, :, :3], base[:, :, :3])  # first unit untouched
    assert not torch.allclose(moved[:, :, 3:], base[:, :, 3:])
    # full attention does see it
    assert not torch.allclose(moved_full[:, :, :3], base_full[:, :, :3])


def test_shifted_block_uses_shifted_units():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 20 * 4, 8) for _ in range(3))  # 20 frames of 2x2 tokens
    out = temporal_unit_attention(q, k, v, (20, 2, 2), unit=5, shifted=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 2 * 4 : 3 * 4] += 5  # frame 2: first frame of the unit [2, 7)
    v2[:, :, 2 * 4 : 3 * 4] += 5
    out2 = temporal_unit_attention(q, k2, v2, (20, 2, 2), unit=5, shifted=True)
    changed = (out2 - out).abs().amax(dim=(0, 1, 3)).view(20, 4).amax(1) > 0
    assert changed.tolist() == [False] * 2 + [True] * 5 + [False] * 13


def test_sparse_local_with_all_blocks_equals_full():
    # 8x10 latent -> 4x5 tokens -> partial edge blocks
    m = tiny(sparse_block=(3, 4), sparse_topk=1000)
    z, c, t, ctx = inputs(t=3)
    with torch.no_grad():
        full = m.dit(z, c, t, ctx, 0.4, attention="full")
        sparse = m.dit(z, c, t, ctx, 0.4, attention="sparse_local")
    torch.testing.assert_close(sparse, full, rtol=0, atol=1e-5)


def test_sparse_local_attends_own_block_plus_topk():
    torch.manual_seed(0)
    grid, block = (2, 4, 4), (2, 2)  # 8 blocks of 4 tokens
    q, k, v = (torch.randn(1, 1, 32, 8) for _ in range(3))
    own_only = sparse_local_attention(q, k, v, grid, block, topk=0)
    # With k=0 a query sees only its own block: equal to attention within each block.
    qb = q.view(1, 1, 2, 2, 2, 2, 2, 8).permute(0, 1, 2, 3, 5, 4, 6, 7).reshape(1, 8, 4, 8)
    kb = k.view(1, 1, 2, 2, 2, 2, 2, 8).permute(0, 1, 2, 3, 5, 4, 6, 7).reshape(1, 8, 4, 8)
    vb = v.view(1, 1, 2, 2, 2, 2, 2, 8).permute(0, 1, 2, 3, 5, 4, 6, 7).reshape(1, 8, 4, 8)
    ref = (
        full_attention(qb, kb, vb)
        .view(1, 1, 2, 2, 2, 2, 2, 8)
        .permute(0, 1, 2, 3, 5, 4, 6, 7)
        .reshape(1, 1, 32, 8)
    )
    torch.testing.assert_close(own_only, ref)
    # With k=1, each query block adds exactly the block whose mean key best matches its mean query.
    out = sparse_local_attention(q, k, v, grid, block, topk=1)
    mq, mk = qb.mean(2), kb.mean(2)
    score = mq[0] @ mk[0].T
    score.fill_diagonal_(float("-inf"))
    best = score.argmax(-1)
    for i in range(8):
        keys = torch.cat([kb[0, i], kb[0, best[i]]])
        vals = torch.cat([vb[0, i], vb[0, best[i]]])
        ref_i = full_attention(qb[0, i][None, None], keys[None, None], vals[None, None])[0, 0]
        got_i = out.view(1, 1, 2, 2, 2, 2, 2, 8).permute(0, 1, 2, 3, 5, 4, 6, 7).reshape(8, 4, 8)[i]
        torch.testing.assert_close(got_i, ref_i)


def test_odd_latent_size_is_padded_and_cropped():
    m = tiny()
    z, c, t, ctx = inputs(t=2, h=7, w=9)  # like 1080p's 135 latent rows
    with torch.no_grad():
        out = m.dit(z, c, t, ctx, 0.4)
    assert out.shape == z.shape and torch.isfinite(out).all()


def test_noise_level_embedding_starts_at_zero_then_matters():
    m = SimpleGVR.from_config("tiny").eval()
    randomize_(m.dit.blocks, seed=3)
    randomize_(m.dit.head, seed=4)
    z, c, t, ctx = inputs(t=2)
    with torch.no_grad():
        # zero-init projection
        assert torch.equal(m.dit(z, c, t, ctx, 0.3), m.dit(z, c, t, ctx, 0.6))
        randomize_(m.dit.noise_level_embedding, seed=5)
        assert not torch.allclose(m.dit(z, c, t, ctx, 0.3), m.dit(z, c, t, ctx, 0.6))


def test_set_attention_switches_mode_and_validates():
    m = tiny()
    z, c, t, ctx = inputs(t=6)
    with torch.no_grad():
        m.dit.set_attention("temporal_units", unit_frames=2)
        a = m.dit(z, c, t, ctx, 0.4)
        b = m.dit(z, c, t, ctx, 0.4, attention="full")
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="attention mode 'swin'"):
        m.dit.set_attention("swin")


def test_dit_input_errors_name_the_input():
    m = tiny()
    z, c, t, ctx = inputs(t=2)
    with pytest.raises(ValueError, match=r"z_t has shape \(1, 48, 2, 8, 10\)"):
        m.dit(torch.randn(1, 48, 2, 8, 10), c, t, ctx, 0.4)
    with pytest.raises(ValueError, match="condition c has shape"):
        m.dit(z, c[:, :, :1], t, ctx, 0.4)
    with pytest.raises(ValueError, match="condition c is None"):
        m.dit(z, None, t, ctx, 0.4)
    with pytest.raises(
        ValueError, match=r"context has shape \(1, 7, 4096\): expected \[1, L, 32\]"
    ):
        m.dit(z, c, t, torch.randn(1, 7, 4096), 0.4)
    with pytest.raises(ValueError, match="noise_level is None"):
        m.dit(z, c, t, ctx)
    with pytest.raises(ValueError, match="timestep t has shape"):
        m.dit(z, c, torch.ones(3), ctx, 0.4)


def test_plain_t2v_dit_takes_no_condition():
    cfg = get_config("tiny").dit
    cfg.in_dim, cfg.noise_level_embed = 16, False
    dit = randomize_(SimpleGVRDiT(cfg))
    z, _, t, ctx = inputs(t=2)
    assert dit(z, None, t, ctx).shape == z.shape
    with pytest.raises(ValueError, match="plain T2V model"):
        dit(z, z, t, ctx)


def test_gradient_checkpointing_gives_same_gradients():
    m = tiny()
    z, c, t, ctx = inputs(t=2)
    m.dit(z, c, t, ctx, 0.4).square().mean().backward()
    ref = [p.grad.clone() for p in m.dit.parameters()]
    m.zero_grad()
    m.dit.gradient_checkpointing = True
    m.dit(z, c, t, ctx, 0.4).square().mean().backward()
    for a, p in zip(ref, m.dit.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-5, atol=1e-6)


def test_tiny_is_under_a_million_parameters():
    n = SimpleGVR.from_config("tiny").num_parameters()
    assert n["total"] < 1_000_000


def test_wan13b_on_meta_parameter_count_and_build_time():
    SimpleGVR.from_config("tiny", device="meta")  # warm up torch's meta kernels
    t0 = time.perf_counter()
    m = SimpleGVR.from_config("wan2.1-1.3b", device="meta")
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"meta build took {elapsed:.2f}s"
    n = m.num_parameters()
    wan = 1_418_996_800  # Wan2.1-T2V-1.3B (reference-facts §1)
    widened = 16 * 1536 * 1 * 2 * 2  # patch_embedding gains 16 condition channels
    noise_embed = 256 * 1536 + 1536 + 1536 * 1536 + 1536
    assert n["dit"] == wan + widened + noise_embed
    assert abs(n["total"] - (wan + widened)) / (wan + widened) < 0.01
    cfg = m.config.dit
    assert (cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.num_layers, cfg.head_dim) == (
        1536,
        8960,
        12,
        30,
        128,
    )
    assert m.dit.patch_embedding.weight.shape == (1536, 32, 1, 2, 2)
    assert m.dit.head.head.weight.shape == (64, 1536)
    # Wan's 825 keys + noise_level_embedding.{0,2}.{weight,bias}
    assert len(m.dit.state_dict()) == 825 + 4


def test_wan13b_forward_shapes_and_dtype_on_meta_at_1080p():
    m = SimpleGVR.from_config("wan2.1-1.3b", device="meta", dtype=torch.bfloat16)
    x = torch.empty(1, 16, 20, 135, 240, device="meta", dtype=torch.bfloat16)
    c = m.upsampler(
        torch.empty(1, 16, 20, 60, 104, device="meta", dtype=torch.bfloat16), size=(135, 240)
    )
    assert c.shape == x.shape
    ctx = torch.empty(1, 512, 4096, device="meta", dtype=torch.bfloat16)
    for mode in ("temporal_units", "sparse_local"):
        v = m.dit(x, c, torch.empty(1, device="meta"), ctx, 0.4, attention=mode)
        assert v.shape == x.shape and v.dtype == torch.bfloat16


# --- the other families' real-size configs, on meta -----------------------------------------------
def test_wan22_ti2v_5b_on_meta_parameter_count():
    m = SimpleGVR.from_config("wan2.2-ti2v-5b", device="meta")
    n = m.num_parameters()
    # Wan2.2-TI2V-5B, counted on meta from Wan-Video/Wan2.2's WanModel and diffusers alike
    wan = 4_999_787_712
    widened = 48 * 3072 * 1 * 2 * 2  # patch_embedding gains 48 condition channels
    noise_embed = 256 * 3072 + 3072 + 3072 * 3072 + 3072
    assert n["dit"] == wan + widened + noise_embed
    assert abs(n["total"] - n["dit"]) / n["dit"] < 0.002  # the upsampler is small beside it
    cfg = m.config
    assert (
        cfg.dit.dim,
        cfg.dit.ffn_dim,
        cfg.dit.num_heads,
        cfg.dit.num_layers,
        cfg.dit.head_dim,
    ) == (3072, 14336, 24, 30, 128)
    assert (cfg.latent_format, cfg.upsampler.channels, cfg.dit.text_dim, cfg.dit.text_len) == (
        "wan22",
        48,
        4096,
        512,
    )
    assert m.latent_format.spatial_ratio == 16
    assert m.dit.patch_embedding.weight.shape == (3072, 96, 1, 2, 2)
    assert m.dit.head.head.weight.shape == (192, 3072)  # 4 x 48, as the released head
    # the same 825 Wan keys as 1.3B + the noise-level embedding
    assert len(m.dit.state_dict()) == 825 + 4


def test_wan22_ti2v_5b_count_equals_diffusers_released_5b_config():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):  # diffusers' Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer config
        ref = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=24,
            attention_head_dim=128,
            in_channels=48,
            out_channels=48,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=14336,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        )
    ours = SimpleGVR.from_config("wan2.2-ti2v-5b", device="meta").dit
    extra = sum(
        p.numel() for k, p in ours.named_parameters() if k.startswith("noise_level_embedding.")
    )
    assert sum(p.numel() for p in ref.parameters()) == 4_999_787_712
    assert sum(p.numel() for p in ours.parameters()) - extra - 48 * 3072 * 4 == 4_999_787_712


def test_cogvideox_config_on_meta_has_wan13b_shape_and_cogvideox_latents_and_text():
    m = SimpleGVR.from_config("cogvideox-1.3b", device="meta")
    wan13 = SimpleGVR.from_config("wan2.1-1.3b", device="meta")
    # initialisable from Wan2.1-T2V-1.3B (its in_dim is 16 too)
    assert m.num_parameters() == wan13.num_parameters()
    assert {k: v.shape for k, v in m.state_dict().items()} == {
        k: v.shape for k, v in wan13.state_dict().items()
    }
    fmt = m.latent_format
    assert (fmt.family, fmt.channels, fmt.spatial_ratio, fmt.scale) == (
        "CogVideoX",
        16,
        8,
        1.15258426,
    )
    # T5-XXL, CogVideoX's max_text_seq_length
    assert (m.config.dit.text_dim, m.config.dit.text_len) == (4096, 226)


# 1280x704 -> 1080p
@pytest.mark.parametrize(
    "name, lr_hw, hr_px",
    [
        ("wan2.2-ti2v-5b", (44, 80), (1080, 1920)),
        # 720x480 -> 1080p
        ("cogvideox-1.3b", (60, 90), (1080, 1620)),
    ],
)
def test_family_configs_run_their_native_lr_to_1080p_on_meta(name, lr_hw, hr_px):
    from simplegvr_core.pipeline import target_size

    m = SimpleGVR.from_config(name, device="meta", dtype=torch.bfloat16)
    fmt = m.latent_format
    size = target_size(m, lr_hw, width=hr_px[1], height=hr_px[0])
    assert size == fmt.latent_size(*hr_px)
    c = m.upsampler(
        torch.empty(1, fmt.channels, 13, *lr_hw, device="meta", dtype=torch.bfloat16), size=size
    )
    assert c.shape == (1, fmt.channels, 13, *size)
    ctx = torch.empty(1, m.config.dit.text_len, 4096, device="meta", dtype=torch.bfloat16)
    v = m.dit(
        torch.empty_like(c), c, torch.empty(1, device="meta"), ctx, 0.4, attention="temporal_units"
    )
    assert v.shape == c.shape and v.dtype == torch.bfloat16
