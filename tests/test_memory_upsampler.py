"""Upsampler mode `memory`: Ultra Flash's v1 latent upsampler, exact to their code.

The reference is the output of their `UltraLatentUpsampler` (streamed as their cascade streams it,
condition noise 0) for the seeded tiny weights of tests/ultraflash_tiny.py:
tests/data/ultraflash_reference.safetensors, `<case>/cond`. Their keys load into ours with the
prefix `memory.` added and nothing else.
"""

from pathlib import Path

import pytest
import torch
from helpers import randomize_
from safetensors import safe_open
from ultraflash_tiny import build_inputs, build_state_dicts, group_slices, tiny_configs

from simplegvr_core.checkpoint import load_checkpoint, save_checkpoint
from simplegvr_core.config import SimpleGVRConfig, UpsamplerConfig, get_config
from simplegvr_core.model import SimpleGVR
from simplegvr_core.models.upsampler import LatentUpsampler, MemoryUpsampler, resize_frames
from simplegvr_core.pipeline import UPSAMPLER_CONTEXT, build_condition

REFERENCE = Path(__file__).parent / "data" / "ultraflash_reference.safetensors"
CASES = tiny_configs()
TOL = 1e-5  # float32: their frame-by-frame loop against our frames-in-a-batch convolutions


def ultraflash_upsampler(case: dict) -> LatentUpsampler:
    """Our upsampler in mode `memory` with the case's seeded Ultra Flash weights (strict keys)."""
    u = case["upsampler"]
    cfg = UpsamplerConfig(
        mode="memory",
        channels=u["in_channels"],
        hidden=u["mid_channels"],
        memory_blocks=u["num_blocks"],
        memory_scale=u["scale"],
    )
    up = LatentUpsampler(cfg)
    _, theirs = build_state_dicts(case, case["seeds"]["weights"])
    ours = {"memory." + k: v for k, v in theirs.items()}  # the whole mapping: a prefix
    assert set(ours) == set(up.state_dict())
    up.load_state_dict(ours, strict=True)
    return up.eval()


def reference_cond(name: str) -> torch.Tensor:
    """Their condition for case `name` [1, 16, T, sH, sW], float32."""
    with safe_open(str(REFERENCE), "pt") as f:
        return f.get_tensor(f"{name}/cond")


@pytest.mark.parametrize("name", ["shipped", "biting"])
def test_memory_upsampler_reproduces_ultraflash_whole_clip_and_streamed(name):
    case = CASES[name]
    up = ultraflash_upsampler(case)
    lr = build_inputs(case, case["seeds"]["inputs"])["lr"]  # [1, 16, 13, 9, W]
    ref = reference_cond(name)  # [1, 16, 13, 18, 2W]
    size = up.native_size(lr.shape[-2:])
    assert size == tuple(ref.shape[-2:]) == (18, 2 * lr.shape[-1])
    with torch.no_grad():
        whole = up(lr, size)
        state, parts = None, []
        for sl in group_slices(case):  # their groups: 6, 6, 1 (shipped); 4, 6, 3 (biting)
            c, state = up.stream(lr[:, :, sl], size, state)
            parts.append(c)
        streamed = torch.cat(parts, dim=2)
    assert whole.shape == streamed.shape == ref.shape and whole.dtype == torch.float32
    assert (whole - ref).abs().max() < TOL
    assert (streamed - ref).abs().max() < TOL
    assert ref.abs().max() > 1.0  # the reference is no near-zero tensor a wrong network could match
    assert len(state) == case["upsampler"]["num_blocks"]
    assert state[0].shape == (1, case["upsampler"]["mid_channels"], *size)


def test_streaming_over_any_grouping_equals_the_whole_clip():
    case = CASES["biting"]
    up = ultraflash_upsampler(case).memory
    lr = build_inputs(case, case["seeds"]["inputs"])["lr"][:, :, :7, :5, :6]
    with torch.no_grad():
        whole = up(lr)
        for groups in ((1,) * 7, (2, 5), (3, 1, 3), (7,)):
            state, parts, start = None, [], 0
            for n in groups:
                y, state = up.stream(lr[:, :, start : start + n], state)
                parts.append(y)
                start += n
            torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=0, atol=TOL)
        # the state is each block's input at the last frame: going on from it is the clip's rest
        _, state = up.stream(lr[:, :, :4])
        torch.testing.assert_close(up(lr[:, :, 4:], state), whole[:, :, 4:], rtol=0, atol=TOL)


def test_output_frame_t_sees_input_frames_t_minus_blocks_to_t_only():
    """Block i's memory is its own input at t - 1, so N blocks see N past frames (not a recurrence
    over the whole past): with the most blocks the config allows (16), a change at frame 2 reaches
    frames 2 .. 18 and no other, so build_condition's 16 frames of chunk context are enough."""
    up = randomize_(MemoryUpsampler(16, 4, 16, 2), seed=1, std=0.2)
    x = torch.randn(1, 16, 20, 3, 4, generator=torch.Generator().manual_seed(0))
    x2 = x.clone()
    x2[:, :, 2] += 1.0
    with torch.no_grad():
        y, y2 = up(x), up(x2)
    changed = [not torch.equal(y[:, :, t], y2[:, :, t]) for t in range(20)]
    assert changed == [False] * 2 + [True] * 17 + [False]
    assert (y2[:, :, 18] - y[:, :, 18]).abs().max() > 1e-5  # the farthest reach is no rounding


def test_build_condition_chunks_are_exact_with_the_most_memory_blocks():
    """16 blocks (the most the config allows) see 16 past frames: the pipeline's chunks with
    UPSAMPLER_CONTEXT frames of context give the whole-clip condition at the native scale."""
    assert UPSAMPLER_CONTEXT == 16
    d = get_config("tiny").to_dict()
    d["upsampler"].update(mode="memory", hidden=4, memory_blocks=16, memory_scale=2)
    model = SimpleGVR(SimpleGVRConfig.from_dict(d)).eval()
    randomize_(model.upsampler, seed=2, std=0.1)
    x = torch.randn(1, 16, 20, 3, 4)  # raw Wan 2.1 latent; 20 frames: the last chunk has 16 of past
    whole = build_condition(model, x, scale=2, noise_level=0.0, chunk_frames=None).c
    chunked = build_condition(model, x, scale=2, noise_level=0.0, chunk_frames=9).c  # 3rd: 2..19
    direct = model.upsampler(model.latent_format.normalise(x), size=(6, 8))
    assert whole.shape == (1, 16, 20, 6, 8)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=TOL)
    torch.testing.assert_close(whole, direct, rtol=0, atol=TOL)


def test_another_size_is_a_bilinear_resize_of_the_native_output():
    up = ultraflash_upsampler(CASES["shipped"])
    lr = torch.randn(1, 16, 3, 9, 13)
    with torch.no_grad():
        native = up(lr, (18, 26))
        out = up(lr, (20, 29))  # 2.25x: outside what the weights were trained for
        y, _ = up.stream(lr, (20, 29))
    assert out.shape == (1, 16, 3, 20, 29)
    torch.testing.assert_close(out, resize_frames(native, (20, 29)), rtol=0, atol=1e-6)
    assert torch.equal(y, out)
    assert LatentUpsampler(UpsamplerConfig(mode="learned", hidden=4)).native_size((9, 13)) is None


def test_real_size_on_meta_shipped_and_scale_3():
    with torch.device("meta"):
        up = LatentUpsampler(UpsamplerConfig(mode="memory", hidden=128, memory_blocks=8))
        up3 = LatentUpsampler(
            UpsamplerConfig(mode="memory", hidden=128, memory_blocks=8, memory_scale=3)
        )
    assert sum(p.numel() for p in up.parameters()) == 4_814_352  # their latent_upsampler.pth
    sd = up.state_dict()
    assert sd["memory.pre_shuffle.0.weight"].shape == (512, 16, 3, 3)
    assert sd["memory.blocks.7.conv.0.weight"].shape == (128, 256, 3, 3)
    assert sd["memory.final.weight"].shape == (16, 128, 3, 3)
    assert len(sd) == 2 + 8 * 6 + 2
    assert up3.state_dict()["memory.pre_shuffle.0.weight"].shape == (1152, 16, 3, 3)
    assert sum(p.numel() for p in up3.parameters()) == 4_814_352 + 640 * 16 * 9 + 640  # 4,907,152
    lr = torch.empty(1, 16, 21, 60, 104, device="meta")  # 81 frames of 832x480
    assert up(lr, up.native_size((60, 104))).shape == (1, 16, 21, 120, 208)
    assert up3(lr, up3.native_size((60, 104))).shape == (1, 16, 21, 180, 312)
    y, state = up.stream(lr[:, :, :4], (120, 208))
    assert y.shape == (1, 16, 4, 120, 208)
    assert len(state) == 8 and state[3].shape == (1, 128, 120, 208)


def test_a_fresh_memory_upsampler_outputs_zero_as_theirs_does():
    up = LatentUpsampler(UpsamplerConfig(mode="memory", hidden=4, memory_blocks=1))
    assert torch.equal(up(torch.randn(1, 16, 2, 3, 3), (6, 6)), torch.zeros(1, 16, 2, 6, 6))


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_half_precision_runs_on_cpu(dtype, tol):
    up = ultraflash_upsampler(CASES["shipped"]).to(dtype)  # Ultra Flash runs it in bf16
    lr = build_inputs(CASES["shipped"], CASES["shipped"]["seeds"]["inputs"])["lr"]
    ref = reference_cond("shipped")
    with torch.no_grad():
        whole = up(lr.to(dtype), (18, 26))
        c, state = up.stream(lr[:, :, :6].to(dtype), (18, 26))
        c2, _ = up.stream(lr[:, :, 6:].to(dtype), (18, 26), state)
    assert whole.dtype == c.dtype == state[0].dtype == dtype
    assert ((whole.float() - ref).norm() / ref.norm()).item() < tol
    atol = tol * ref.abs().max().item()
    torch.testing.assert_close(torch.cat([c, c2], dim=2), whole, rtol=0, atol=atol)


def test_config_validation():
    for kw, msg in (
        ({"memory_blocks": 0}, r"memory_blocks=0: expected an integer in \[1, 16\]"),
        ({"memory_blocks": 17}, "memory_blocks=17"),
        ({"memory_blocks": True}, "memory_blocks=True"),
        ({"memory_scale": 4}, "memory_scale=4: expected 2 or 3"),
        ({"memory_scale": 2.0}, "memory_scale=2.0"),
        ({"memory_scale": True}, "memory_scale=True"),
        ({"base": "linear"}, "upsampler.base='linear' is not used by mode 'memory'"),
    ):
        with pytest.raises(ValueError, match=msg):
            UpsamplerConfig(mode="memory", **kw)
    # the other modes keep their keys: nothing of `memory` is built for them
    learned = LatentUpsampler(UpsamplerConfig(hidden=4)).state_dict()
    assert not any(k.startswith("memory.") for k in learned)


def test_checkpoint_round_trip_keeps_mode_fields_and_keys(tmp_path):
    d = get_config("tiny").to_dict()
    d["upsampler"].update(mode="memory", hidden=4, memory_blocks=3, memory_scale=3)
    model = SimpleGVR(SimpleGVRConfig.from_dict(d))
    randomize_(model.upsampler, seed=3, std=0.1)
    back = load_checkpoint(save_checkpoint(model, tmp_path / "m.safetensors"))
    assert back.config.upsampler == model.config.upsampler
    assert "memory.blocks.2.conv.4.weight" in back.upsampler.state_dict()
    x = torch.randn(1, 16, 3, 2, 3)
    assert torch.equal(back.upsampler(x, (6, 9)), model.upsampler(x, (6, 9)))


def test_input_validation():
    up = ultraflash_upsampler(CASES["biting"])  # 12 wide, 3 blocks, scale 2
    x = torch.randn(1, 16, 2, 4, 5)
    _, state = up.stream(x, (8, 10))
    with pytest.raises(ValueError, match=r"c_s has shape \(1, 48, 2, 4, 5\): expected \[B,16,T"):
        up(torch.randn(1, 48, 2, 4, 5), (8, 10))
    with pytest.raises(ValueError, match="NaN or Inf"):
        up.stream(torch.full((1, 16, 2, 4, 5), float("nan")), (8, 10))
    with pytest.raises(ValueError, match="state is a tuple of 2 items: expected 3 tensors"):
        up.stream(x, (8, 10), state[:2])
    with pytest.raises(ValueError, match=r"state\[0\] has shape \(1, 12, 8, 10\): expected \[2,"):
        up.stream(x.expand(2, -1, -1, -1, -1), (8, 10), state)
    with pytest.raises(ValueError, match=r"\(1, 12, 8, 10\): expected \[1, 12, 10, 12\]"):
        up.stream(torch.randn(1, 16, 1, 5, 6), (10, 12), state)
    with pytest.raises(ValueError, match="x is torch.float16: expected the weights' dtype"):
        up.memory(x.half())
    with pytest.raises(ValueError, match=r"x has shape \(1, 16, 0, 4, 5\): expected every size"):
        up.memory(x[:, :, :0])
    with pytest.raises(ValueError, match=r"stream\(\) needs upsampler mode 'memory', got 'interp'"):
        LatentUpsampler(UpsamplerConfig(mode="interp")).stream(x, (8, 10))
