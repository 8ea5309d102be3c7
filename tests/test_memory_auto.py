"""The `auto` memory mode (plan.auto_plan / auto_condition_chunk): one estimator beside the window
plan, plans that fit 16 GB and 8 GB for 81 frames at 1080p with the 1.3B config (on `meta`), and
results equal to the unchunked ones."""

import pytest
import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, get_config
from simplegvr_core.memory import GiB
from simplegvr_core.pipeline import build_condition, sample, upscale
from simplegvr_core.plan import (
    auto_candidates,
    auto_condition_chunk,
    auto_plan,
    plan_sampling,
    upsampler_memory,
    weights_memory,
)

SHAPE_1080P_81F = (1, 16, 21, 135, 240)  # 81 frames -> 21 latent frames, 1920x1080 -> 135x240
LR_480P_81F = (1, 16, 21, 60, 104)  # 832x480
RESERVE = 1 * GiB  # CUDA context, allocator slack: left free on top of the estimate


def budget_for(model, gib):
    """What a card of `gib` GiB leaves for activations once the bf16 weights are resident and
    RESERVE is kept free."""
    return gib * GiB - weights_memory(model, torch.bfloat16) - RESERVE


@pytest.fixture(scope="module")
def wan13b():
    return SimpleGVR.from_config("wan2.1-1.3b", device="meta")


@pytest.mark.parametrize("gib", [16, 8])
def test_auto_fits_81_frames_at_1080p_of_the_13b_config(wan13b, gib):
    m = wan13b
    budget = budget_for(m, gib)
    plan = auto_plan(m, SHAPE_1080P_81F, budget, guidance=5.0, dtype=torch.bfloat16)
    need = plan.memory(m, guidance=5.0, dtype=torch.bfloat16)
    assert need <= budget
    assert weights_memory(m, torch.bfloat16) + need + RESERVE <= gib * GiB
    chunk = auto_condition_chunk(m, LR_480P_81F, (135, 240), budget, torch.bfloat16)
    assert (
        weights_memory(m, torch.bfloat16)
        + upsampler_memory(m, LR_480P_81F, (135, 240), chunk, torch.bfloat16)
        + RESERVE
        <= gib * GiB
    )
    whole = plan_sampling(m, SHAPE_1080P_81F)  # the default: temporal_units over the whole clip
    # so the default alone would not fit
    assert whole.memory(m, guidance=5.0, dtype=torch.bfloat16) > budget
    if gib == 16:  # temporal windows suffice, and they are as long as fits
        assert plan.tile_size is None and plan.chunk_frames >= m.config.train_latent_frames
        longer = plan_sampling(m, SHAPE_1080P_81F, chunk_frames=plan.chunk_frames + 1)
        assert longer.memory(m, guidance=5.0, dtype=torch.bfloat16) > budget
    else:  # 8 GB: windows of the trained length and spatial tiles, more DiT calls per step (slower)
        assert plan.calls_per_step > 2 and plan.chunk_frames <= m.config.train_latent_frames


def test_auto_keeps_the_whole_clip_when_it_fits_and_refuses_when_nothing_does(wan13b):
    m = wan13b
    roomy = auto_plan(m, SHAPE_1080P_81F, budget_for(m, 80), guidance=5.0, dtype=torch.bfloat16)
    assert roomy == plan_sampling(m, SHAPE_1080P_81F)
    with pytest.raises(ValueError, match=r"needs at least [0-9.]+ MiB .* but 102\.40 MiB is free"):
        auto_plan(m, SHAPE_1080P_81F, int(0.1 * GiB), guidance=5.0, dtype=torch.bfloat16)
    with pytest.raises(
        ValueError, match=r"condition for \(1, 16, 21, 60, 104\) -> latent 135x240 needs at least"
    ):
        auto_condition_chunk(m, LR_480P_81F, (135, 240), int(0.1 * GiB), torch.bfloat16)


def test_auto_takes_the_first_candidate_that_fits_and_the_candidates_shrink(wan13b):
    """The estimate decides: each budget gets the first plan (least change to the result) under
    it."""
    m = wan13b
    plans = list(auto_candidates(m, SHAPE_1080P_81F))
    mem = [p.memory(m, guidance=5.0, dtype=torch.bfloat16) for p in plans]
    assert plans[0] == plan_sampling(m, SHAPE_1080P_81F) and mem[-1] < mem[0] / 20
    for budget in (mem[0] - 1, mem[3], (mem[len(mem) // 2] + mem[-1]) // 2):
        chosen = auto_plan(m, SHAPE_1080P_81F, budget, guidance=5.0, dtype=torch.bfloat16)
        first = next(p for p, need in zip(plans, mem) if need <= budget)
        assert chosen == first
    # temporal windows never shrink below the trained length before tiles are tried
    tiled = [p for p in plans if p.tile_size is not None]
    assert tiled[0].chunk_frames == m.config.train_latent_frames
    assert all(
        p.chunk_frames >= m.config.train_latent_frames
        for p in plans[: plans.index(tiled[0])]
        if p.chunk_frames
    )


def tiny(seed=0):
    cfg = get_config("tiny").to_dict()
    return randomize_(SimpleGVR.from_config(cfg), seed=seed, std=0.05).eval()


def test_auto_equals_the_unchunked_result_where_the_whole_clip_fits():
    m = tiny()
    lr = torch.randn(1, 16, 7, 6, 8, generator=torch.Generator().manual_seed(1))
    cond = build_condition(m, lr, scale=2.0, seed=3)
    kw = dict(steps=3, cfg=3.0, seed=3)
    whole = sample(
        m, cond, plan_sampling(m, cond.c.shape, attention="temporal_units", chunk_frames=None), **kw
    )
    auto = upscale(
        m, lr, scale=2.0, plan="auto", memory_budget=10 * GiB, attention="temporal_units", **kw
    )
    assert torch.equal(auto, whole)


def test_auto_chunks_run_the_plan_they_estimated_and_blend_to_the_unchunked_result():
    """A small budget makes auto cut the clip into windows and tiles; what runs is that plan, and
    for a pointwise velocity (where blending is exact) the result equals the unchunked one within
    the blending tolerance."""
    m = tiny()
    lr = torch.randn(1, 16, 9, 8, 10, generator=torch.Generator().manual_seed(2))
    cond = build_condition(m, lr, scale=2.0, seed=3)
    kw = dict(steps=3, cfg=3.0, seed=3)
    whole_plan = plan_sampling(m, cond.c.shape, attention="temporal_units", chunk_frames=None)
    budget = whole_plan.memory(m, guidance=3.0) // 3
    plan = auto_plan(m, cond.c.shape, budget, guidance=3.0, attention="temporal_units")
    assert plan.calls_per_step > 1 and plan.memory(m, guidance=3.0) <= budget
    m.dit.forward = lambda x, c, t, ctx, nl, attention=None: (
        0.3 * x - 0.5 * c + 0.001 * t.view(-1, 1, 1, 1, 1)
    )
    torch.testing.assert_close(
        sample(m, cond, plan, **kw), sample(m, cond, whole_plan, **kw), rtol=0, atol=1e-5
    )


def test_auto_condition_chunks_equal_the_whole_clip():
    m = tiny()
    lr = torch.randn(1, 16, 20, 6, 8, generator=torch.Generator().manual_seed(4))
    size = (12, 16)
    budget = upsampler_memory(m, lr.shape, size, 2)
    assert auto_condition_chunk(m, lr.shape, size, budget) == 2
    auto = build_condition(m, lr, scale=2.0, seed=0, chunk_frames="auto", memory_budget=budget)
    whole = build_condition(m, lr, scale=2.0, seed=0, chunk_frames=None)
    assert auto.chunk_frames == 2 and whole.chunk_frames is None
    torch.testing.assert_close(auto.c, whole.c, rtol=0, atol=1e-5)
    torch.testing.assert_close(auto.reference[0], whole.reference[0])


def test_sample_refuses_a_plan_for_another_shape():
    m = tiny()
    cond = build_condition(m, torch.randn(1, 16, 3, 4, 4), scale=2.0)
    with pytest.raises(
        ValueError, match=r"SamplingPlan for the condition's shape \(1, 16, 3, 8, 8\)"
    ):
        sample(m, cond, steps=1, cfg=1.0, plan=plan_sampling(m, (1, 16, 4, 8, 8)))


# --- the other families: Wan 2.2 TI2V-5B (48 channels, /16) and CogVideoX (16 channels, /8), as
# their workflows run ---
@pytest.mark.parametrize(
    "config, lr, hr_hw, cases",
    [
        # 121 frames at 1280x704 -> 1968x1088 (latent 44x80 -> 68x123); the 5B's bf16 weights alone
        # take 9.3 GiB
        (
            "wan2.2-ti2v-5b",
            (1, 48, 31, 44, 80),
            (68, 123),
            {24: "whole", 16: "windows", 12: "tiles"},
        ),
        # 49 frames at 720x480 -> 1624x1080 (latent 60x90 -> 135x203)
        ("cogvideox-1.3b", (1, 16, 13, 60, 90), (135, 203), {16: "whole", 8: "windows"}),
    ],
)
def test_auto_fits_each_familys_workflow_clip(config, lr, hr_hw, cases):
    m = SimpleGVR.from_config(config, device="meta")
    shape = (*lr[:3], *hr_hw)
    for gib, kind in cases.items():
        budget = budget_for(m, gib)
        plan = auto_plan(m, shape, budget, guidance=5.0, dtype=torch.bfloat16)
        assert plan.shape == shape and plan.memory(m, guidance=5.0, dtype=torch.bfloat16) <= budget
        assert kind == (
            "whole"
            if plan.calls_per_step == 1
            else "windows"
            if plan.tile_size is None
            else "tiles"
        ), (gib, plan.describe())
        if kind != "tiles":  # windows no shorter than the trained length before tiles are tried
            assert (plan.chunk_frames or shape[2]) >= m.config.train_latent_frames
        chunk = auto_condition_chunk(m, lr, hr_hw, budget, torch.bfloat16)
        assert upsampler_memory(m, lr, hr_hw, chunk, torch.bfloat16) <= budget
    # the estimate counts the family's channels: the 6 float32 latent buffers of a 48- vs a
    # 16-channel condition
    plan = plan_sampling(m, shape)
    wider = plan_sampling(m, (1, 2 * shape[1], *shape[2:]))
    assert (
        wider.memory(m, guidance=5.0, dtype=torch.bfloat16)
        - plan.memory(m, guidance=5.0, dtype=torch.bfloat16)
        == 6 * 4 * shape[1] * shape[2] * hr_hw[0] * hr_hw[1]
    )


def test_auto_windows_and_tiles_on_a_48_channel_wan22_latent_blend_to_the_unchunked_result():
    """Wan 2.2's 48-channel /16 latent through a plan with windows and tiles (tiles on its 2x2 patch
    grid): the plan that was estimated runs, and for a pointwise velocity it equals the unchunked
    result within the blending tolerance."""
    m = randomize_(SimpleGVR.from_config("tiny-wan22"), seed=0, std=0.05).eval()
    lr = torch.randn(1, 48, 9, 12, 16, generator=torch.Generator().manual_seed(6))
    cond = build_condition(m, lr, short_edge=16 * 24, seed=3)  # 256x192 px -> 512x384: latent 24x32
    assert cond.c.shape == (1, 48, 9, 24, 32)
    kw = dict(steps=2, cfg=3.0, seed=3)
    tiled = next(
        p
        for p in auto_candidates(m, cond.c.shape, attention="temporal_units")
        if p.tile_size is not None
    )
    budget = tiled.memory(m, guidance=3.0)
    plan = auto_plan(m, cond.c.shape, budget, guidance=3.0, attention="temporal_units")
    assert (
        plan.tile_size is not None
        and plan.calls_per_step > 2
        and plan.memory(m, guidance=3.0) <= budget
    )
    # tiles start on the 2x2 patch grid
    assert all(s % 2 == 0 for s, _ in plan.h_windows + plan.w_windows if s)
    m.dit.forward = lambda x, c, t, ctx, nl, attention=None: (
        0.3 * x - 0.5 * c + 0.001 * t.view(-1, 1, 1, 1, 1)
    )
    out = sample(m, cond, plan, **kw)
    assert out.shape == (1, 48, 9, 24, 32)
    whole = plan_sampling(m, cond.c.shape, attention="temporal_units", chunk_frames=None)
    torch.testing.assert_close(out, sample(m, cond, whole, **kw), rtol=0, atol=1e-5)
