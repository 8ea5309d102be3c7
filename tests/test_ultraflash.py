"""Ultra Flash's published one-step weights, run exactly (issue 31): against their own code, at tiny
size.

The weights are built here in their layout (`ultraflash_tiny.build_state_dicts`: every tensor of
their `sr_dit_sparse.pth` / `latent_upsampler.pth` key tables, seeded). The expected outputs are
their code's, run on the CPU in float32 with one block mask per head as their CUDA kernel computes
it (tests/data/ultraflash_reference. safetensors, made by tools/fixtures/make_ultraflash_fixtures.py
from github.com/xin1u/UltraFlash at 8913be2778698be55c42498684a7aa129c9c9c55; its metadata records
the command and the sha256 of their files).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import ultraflash_tiny as uft
from safetensors.torch import load_file

from simplegvr_core import SimpleGVR, load_checkpoint
from simplegvr_core.app import main
from simplegvr_core.checkpoint import untrained_warning
from simplegvr_core.latent_formats import WAN21
from simplegvr_core.models.dit import CausalStream
from simplegvr_core.pipeline import pad_text, upscale
from simplegvr_core.plan import plan_sampling
from simplegvr_core.weights import (
    ULTRAFLASH_RECIPE,
    import_ultraflash,
    read_metadata,
    ultraflash_config,
    unwrap_state_dict,
)

FIXTURE = load_file(str(Path(__file__).parent / "data" / "ultraflash_reference.safetensors"))
CASES = uft.tiny_configs()
TOL = 1e-4  # float32, their code vs ours: measured 1.2e-5 at most


def weights(name):
    case = CASES[name]
    return case, *uft.build_state_dicts(case, case["seeds"]["weights"])


def inputs(case):
    return uft.build_inputs(case, case["seeds"]["inputs"])


def imported(name, **settings) -> SimpleGVR:
    """Their weights through the importer, with the case's sparse settings (the tiny cases vary
    them)."""
    case, dit_sd, up_sd = weights(name)
    model = import_ultraflash(dit_sd, up_sd, num_heads=case["dit"]["num_heads"])
    sp = case["sparse"]
    d = model.config.to_dict()
    d["dit"].update(
        causal_local_range=sp["local_range"],
        causal_top_k_ratio=sp["top_k_ratio"],
        causal_ref_tokens=sp["ref_spatial_tokens"],
        causal_kv_blocks=sp["kv_len"],
        text_len=case["dit"]["text_len"],
        **settings,
    )
    out = SimpleGVR.from_config(d, device="meta")
    out.load_state_dict(model.state_dict(), assign=True)
    out.sampling = model.sampling
    return out.eval()


def test_the_cascade_with_every_setting_auto_equals_their_code():
    """13 latent frames (groups 6, 6, 1: the last one partial and padded) at an odd LR size (9x13
    latent: the token grid is zero-padded to whole blocks), through `upscale` with steps, cfg, noise
    level and size left at auto: the recipe imported with the weights (one step at t = 1000, the
    upsampler's output as the condition, no CFG, 2x)."""
    model = imported("shipped")
    inp = inputs(CASES["shipped"])
    raw = upscale(model, WAN21.denormalise(inp["lr"]), context=inp["context"], noise=inp["noise"])
    assert raw.shape == FIXTURE["shipped/x0"].shape == (1, 16, 13, 18, 26)
    torch.testing.assert_close(WAN21.normalise(raw), FIXTURE["shipped/x0"], rtol=0, atol=TOL)
    explicit = upscale(
        model,
        WAN21.denormalise(inp["lr"]),
        scale=2,
        steps=1,
        cfg=1.0,
        noise_level=0.0,
        shift=1.0,
        context=inp["context"],
        noise=inp["noise"],
    )
    torch.testing.assert_close(explicit, raw, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_the_streaming_dit_and_every_block_mask_equal_their_code(name):
    """Group after group with the KV cache of the groups before (their grouping, incl. the
    long-video 4, 6, 3), the upsampler's output and the clean latent x0 = noise - v within 1e-4, and
    every selected block of every head, group and layer equal to theirs."""
    case = CASES[name]
    model = imported(name)
    inp = inputs(case)
    with torch.no_grad():
        cond = model.upsampler.memory(inp["lr"])
        torch.testing.assert_close(cond, FIXTURE[f"{name}/cond"], rtol=0, atol=TOL)
        stream = CausalStream(len(model.dit.blocks), record_masks=True)
        ctx, start, out = pad_text(inp["context"], case["dit"]["text_len"]), 0, []
        for g in case["groups"]:
            x = inp["noise"][:, :, start : start + g]
            v = model.dit(
                x, cond[:, :, start : start + g], torch.full((1,), 1000.0), ctx, None, stream=stream
            )
            out.append(x - v)
            start += g
    torch.testing.assert_close(torch.cat(out, 2), FIXTURE[f"{name}/x0"], rtol=0, atol=TOL)
    assert stream.frame == sum(case["groups"]) and len(stream.masks) == len(case["groups"])
    for g, layers in enumerate(stream.masks):
        for i, chosen in enumerate(layers):
            assert torch.equal(chosen[0], FIXTURE[f"{name}/mask/g{g}/l{i}"]), (g, i)


def test_the_plan_runs_the_checkpoints_groups_and_refuses_windows():
    model = imported("shipped")
    plan = plan_sampling(model, (1, 16, 13, 18, 26))
    assert (
        plan.causal
        and plan.t_windows == ((0, 6), (6, 12), (12, 13))
        and "3 group(s)" in plan.describe()
    )
    with pytest.raises(ValueError, match="groups of 6 latent frames"):
        plan_sampling(model, (1, 16, 13, 18, 26), chunk_frames=4)


def test_the_streaming_estimate_counts_the_sdpa_kernels_gather_buffer():
    """The sdpa kernel's working buffer (SDPA_CHUNK_BYTES; most of a small model's measured
    streaming peak, benchmarks/streaming_memory.py) is in the estimate where that kernel runs;
    compiled flex gathers nothing."""
    from simplegvr_core.models.block_sparse import SDPA_CHUNK_BYTES

    model = imported("shipped")
    plan = plan_sampling(model, (1, 16, 13, 18, 26))
    model.dit.attention_kernel = "sdpa"
    with_gather = plan.memory(model, guidance=1.0)
    model.dit.attention_kernel = "flex"
    assert with_gather - plan.memory(model, guidance=1.0) == SDPA_CHUNK_BYTES


# --- the importer ---------------------------------------------------------------------------------
def _save_pth(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrap", ["model", "generator", "state_dict", None])
@pytest.mark.parametrize("prefix", ["", "module.", "_fsdp_wrapped_module."])
def test_wrappers_and_prefixes_load_the_same_weights(tmp_path, wrap, prefix):
    case, dit_sd, up_sd = weights("shipped")
    sd = {prefix + k: v for k, v in dit_sd.items()}
    dit_file = _save_pth({wrap: sd} if wrap else sd, tmp_path / "sr_dit_sparse.pth")
    up_file = _save_pth({"model": up_sd}, tmp_path / "latent_upsampler.pth")
    model = import_ultraflash(dit_file, up_file, num_heads=2)
    for k, v in dit_sd.items():
        assert torch.equal(model.dit.state_dict()[k], v), k


def test_the_cli_writes_one_ordinary_checkpoint_with_its_origin_and_recipe(tmp_path, capsys):
    case, dit_sd, up_sd = weights("shipped")
    dit_file = _save_pth(dit_sd, tmp_path / "sr_dit_sparse.pth")
    up_file = _save_pth(up_sd, tmp_path / "latent_upsampler.pth")
    out = tmp_path / "ultraflash.safetensors"
    assert (
        main(
            [
                "import-ultraflash",
                "--dit",
                str(dit_file),
                "--upsampler",
                str(up_file),
                "--num-heads",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    model, meta = load_checkpoint(out), read_metadata(out)
    assert (
        model.sampling == ULTRAFLASH_RECIPE and model.config.dit.attention == "block_sparse_causal"
    )
    assert model.config.upsampler.mode == "memory" and not model.config.dit.noise_level_embed
    assert "UltraFlash" in meta["origin"] and "apache-2.0" in meta["license"]
    # a trained, published model: no untrained warning
    assert untrained_warning(meta, out.name) is None
    assert (
        main(
            [
                "import-ultraflash",
                "--dit",
                str(dit_file),
                "--upsampler",
                str(up_file),
                "--num-heads",
                "2",
                "--out",
                str(out),
            ]
        )
        == 2
    )  # exists: --overwrite replaces it
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d, u: d.pop("blocks.1.ffn.0.weight"), "missing ['blocks.1.ffn.0.weight']"),
        (
            lambda d, u: d.update({"blocks.0.ffn.0.weight": torch.zeros(3, 3)}),
            "blocks.0.ffn.0.weight has shape (3, 3)",
        ),
        (lambda d, u: d.update({"img_emb.proj.weight": torch.zeros(3)}), "image-to-video"),
        (lambda d, u: d.update({"extra.weight": torch.zeros(3)}), "unexpected ['extra.weight']"),
        (
            lambda d, u: u.pop("final.bias"),
            "the Ultra Flash upsampler does not match: missing ['final.bias']",
        ),
        (
            lambda d, u: d.update({"head.head.bias": torch.full((64,), float("nan"))}),
            "head.head.bias contains NaN",
        ),
    ],
)
def test_a_wrong_key_is_refused_and_named(tmp_path, capsys, edit, words):
    case, dit_sd, up_sd = weights("shipped")
    edit(dit_sd, up_sd)
    dit_file = _save_pth(dit_sd, tmp_path / "d.pth")
    up_file = _save_pth(up_sd, tmp_path / "u.pth")
    assert (
        main(
            [
                "import-ultraflash",
                "--dit",
                str(dit_file),
                "--upsampler",
                str(up_file),
                "--num-heads",
                "2",
                "--out",
                str(tmp_path / "o.safetensors"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not (tmp_path / "o.safetensors").exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    _save_pth({"model": {"x": _RunsCode(str(marker))}}, tmp_path / "evil.pth")
    _, _, up_sd = weights("shipped")
    up_file = _save_pth(up_sd, tmp_path / "u.pth")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "simplegvr_core",
            "import-ultraflash",
            "--dit",
            str(tmp_path / "evil.pth"),
            "--upsampler",
            str(up_file),
            "--out",
            str(tmp_path / "o.safetensors"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "refused as unsafe" in r.stderr and "Traceback" not in r.stderr
    assert "weights_only" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_unwrap_refuses_what_is_not_a_state_dict():
    with pytest.raises(ValueError, match="holds no state dict"):
        unwrap_state_dict({"model": {}}, "x")
    with pytest.raises(ValueError, match="'a' is a str, not a tensor"):
        unwrap_state_dict({"a": "b", "c": torch.zeros(1)}, "x")
    with pytest.raises(ValueError, match="both become 'w'"):
        unwrap_state_dict({"module.w": torch.zeros(1), "w": torch.zeros(1)}, "x")


def test_real_size_on_meta_is_their_1_3b_dit_and_4_8m_upsampler():
    """The real files' shapes (their key tables at full size, on `meta`): 825 DiT tensors,
    1,419,095,104 parameters, the only change from Wan 2.1 T2V 1.3B being patch_embedding's 32 input
    channels; the v1 upsampler's 4,814,352."""
    with torch.device("meta"):
        dit_sd, up_sd = uft.real_size_files()
        config = ultraflash_config(dit_sd, up_sd)
        model = SimpleGVR(config)
    assert len(dit_sd) == 825 and config.dit.num_heads == 12 and config.dit.in_dim == 32
    assert sum(p.numel() for p in model.dit.parameters()) == 1_419_095_104
    assert sum(p.numel() for p in model.upsampler.parameters()) == 4_814_352
    assert model.upsampler.native_size((60, 104)) == (120, 208)  # 832x480 -> 1664x960
