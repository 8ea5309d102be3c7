"""Recommended steps in the checkpoint metadata, "auto" steps in the core, the CLI and the Sampler
node (issue 14)."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

from simplegvr_core import SimpleGVR, load_checkpoint, save_checkpoint
from simplegvr_core.checkpoint import checkpoint_sampling
from simplegvr_core.latent_formats import WAN21
from simplegvr_core.latent_io import load_latent, save_latent
from simplegvr_core.pipeline import build_condition, sample, sampling_sigmas, upscale
from simplegvr_core.sampling import TEACHER_RECIPE, SamplingRecipe, flow_sigmas
from simplegvr_core.weights import read_metadata, read_safetensors

REPO = Path(__file__).resolve().parents[1]
ONE_STEP = SamplingRecipe(steps=1, timesteps=(1000.0,))
FOUR_STEP = SamplingRecipe(steps=4, shift=3.0)


def tiny_model(seed=0):
    return randomize_(SimpleGVR.from_config("tiny"), seed=seed, std=0.05).eval()


def raw_latent(t=2, h=6, w=8, seed=0):
    return WAN21.denormalise(
        torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(seed))
    )


def _rewrite_sampling(src, dst, value):
    tensors, meta = read_safetensors(src)
    meta["sampling"] = value
    save_file(tensors, str(dst), metadata=meta)
    return dst


# --- the recipe and its metadata ------------------------------------------------------------------
def test_recipe_round_trips_through_the_checkpoint(tmp_path):
    m = tiny_model()
    path = save_checkpoint(m, tmp_path / "student.safetensors", sampling=ONE_STEP)
    assert json.loads(read_metadata(path)["sampling"]) == {
        "steps": 1,
        "shift": 5.0,
        "timesteps": [1000.0],
        "r_embedding": False,
    }
    assert checkpoint_sampling(path) == ONE_STEP
    loaded = load_checkpoint(path)
    assert loaded.sampling == ONE_STEP
    # model.sampling is what a re-save keeps
    again = save_checkpoint(loaded, tmp_path / "again.safetensors")
    assert checkpoint_sampling(again) == ONE_STEP


def test_teacher_and_old_checkpoints_keep_50_steps(tmp_path):
    m = tiny_model()
    assert m.sampling == TEACHER_RECIPE and (TEACHER_RECIPE.steps, TEACHER_RECIPE.shift) == (
        50,
        5.0,
    )
    path = save_checkpoint(m, tmp_path / "teacher.safetensors")
    assert load_checkpoint(path).sampling.steps == 50
    tensors, meta = read_safetensors(path)
    del meta["sampling"]  # a checkpoint written before issue 14
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    assert load_checkpoint(tmp_path / "old.safetensors").sampling == TEACHER_RECIPE
    assert torch.equal(sampling_sigmas(m), flow_sigmas(50, 5.0))


def test_recipe_sigmas_follow_its_timesteps_or_its_shift():
    assert torch.equal(ONE_STEP.sigmas(), torch.tensor([1.0, 0.0]))
    assert torch.allclose(
        SamplingRecipe(steps=2, timesteps=(1000, 500)).sigmas(), torch.tensor([1.0, 0.5, 0.0])
    )
    assert torch.equal(FOUR_STEP.sigmas(), flow_sigmas(4, 3.0))


@pytest.mark.parametrize(
    "value, words",
    [
        ('{"steps": 0}', r"sampling.steps=0: expected an integer in \[1, 10000\]"),
        ('{"steps": 1e9}', r"sampling.steps=1000000000.0: expected an integer"),
        ('{"steps": true}', r"sampling.steps=True"),
        ('{"steps": 4, "shift": -1}', r"sampling.shift=-1: expected a number in \(0, 1000\]"),
        ('{"steps": 4, "shift": NaN}', r"sampling.shift=nan"),
        ('{"steps": 2, "timesteps": [1000]}', r"expected a list of steps=2 numbers, got list of 1"),
        (
            '{"steps": 2, "timesteps": [500, 900]}',
            r"expected strictly decreasing numbers in \(0, 1000\]",
        ),
        ('{"steps": 1, "timesteps": [2000]}', r"strictly decreasing numbers in \(0, 1000\]"),
        (
            '{"steps": 1, "r_embedding": "yes"}',
            r"sampling.r_embedding='yes': expected true or false",
        ),
        (
            '{"steps": 1, "eval": "os.system"}',
            r"expected an object with keys from .*got \['eval'\]",
        ),
        ("[1, 2]", r"expected an object with keys .*got list"),
        ('{"steps": ', r"sampling is not valid JSON"),
        ("[" * 100_000, r"at most 65536 characters, got 100000 characters"),
    ],
)
def test_hostile_recipes_are_refused_on_load(tmp_path, value, words):
    path = save_checkpoint(tiny_model(), tmp_path / "ok.safetensors")
    bad = _rewrite_sampling(path, tmp_path / "bad.safetensors", value)
    for load in (load_checkpoint, checkpoint_sampling):
        with pytest.raises(
            ValueError, match="bad.safetensors' has an invalid sampling entry.*" + words
        ):
            load(bad)


def test_save_checkpoint_refuses_a_recipe_that_is_not_one(tmp_path):
    m = tiny_model()
    with pytest.raises(ValueError, match="sampling must be a SamplingRecipe, got dict"):
        save_checkpoint(m, tmp_path / "a.safetensors", sampling={"steps": 1})
    with pytest.raises(ValueError, match="extra_metadata has a 'sampling' entry"):
        save_checkpoint(m, tmp_path / "a.safetensors", extra_metadata={"sampling": "{}"})
    assert not list(tmp_path.iterdir())


# --- auto in the core -----------------------------------------------------------------------------
def test_auto_steps_take_the_checkpoints_recipe():
    m, x = tiny_model(), raw_latent()
    m.sampling = FOUR_STEP
    # the recipe's shift, not 9
    assert torch.equal(sampling_sigmas(m, "auto", shift=9.0), flow_sigmas(4, 3.0))
    kw = dict(scale=2.0, cfg=1.0, seed=3)
    auto = upscale(m, x, **kw)  # steps default: "auto"
    explicit = upscale(m, x, steps=4, shift=3.0, **kw)
    assert torch.equal(auto, explicit)
    assert not torch.allclose(auto, upscale(m, x, steps=4, shift=5.0, **kw))  # the shift matters


def test_one_step_through_upscale_is_one_euler_step_from_noise():
    m, x = tiny_model(), raw_latent()
    m.sampling = ONE_STEP
    calls = []
    out = upscale(m, x, scale=2.0, cfg=1.0, seed=1, callback=calls.append)
    assert [(d["i"], d["sigma"], d["sigma_next"], d["total"]) for d in calls] == [(0, 1.0, 0.0, 1)]
    # one Euler step from sigma 1 to 0 is x0 = noise - v(noise, t=1000)
    cond = build_condition(m, x, scale=2.0, seed=1)
    assert torch.equal(out, sample(m, cond, steps=1, cfg=1.0, seed=1))
    assert torch.isfinite(out).all() and out.shape == (1, 16, 2, 12, 16)
    assert torch.allclose(
        out,
        calls[0]["x"] * torch.tensor(WAN21.std).view(1, -1, 1, 1, 1)
        + torch.tensor(WAN21.mean).view(1, -1, 1, 1, 1),
        atol=1e-5,
    )


def test_steps_must_be_auto_or_a_positive_int():
    m = tiny_model()
    for bad in (0, -1, "1", 1.0, True):
        with pytest.raises(ValueError, match=r"steps=.*expected an int in \[1, 10000\] or 'auto'"):
            sampling_sigmas(m, bad)


# --- auto in the CLI ------------------------------------------------------------------------------
def test_cli_upscale_defaults_to_the_checkpoints_steps(tmp_path, capsys):
    from simplegvr_core import app as cli

    m = tiny_model()
    ckpt = save_checkpoint(m, tmp_path / "student.safetensors", sampling=ONE_STEP)
    save_latent(raw_latent(), tmp_path / "lr.latent")
    common = [
        "upscale",
        "--checkpoint",
        str(ckpt),
        "--latent",
        str(tmp_path / "lr.latent"),
        "--scale",
        "2",
        "--cfg",
        "1",
    ]
    assert cli.main([*common, "--out", str(tmp_path / "auto.latent")]) == 0
    assert (
        "steps auto: 1 (the checkpoint's recommendation, its timesteps)" in capsys.readouterr().err
    )
    assert cli.main([*common, "--out", str(tmp_path / "one.latent"), "--steps", "1"]) == 0
    assert torch.equal(load_latent(tmp_path / "auto.latent"), load_latent(tmp_path / "one.latent"))
    assert cli.main([*common, "--out", str(tmp_path / "two.latent"), "--steps", "2"]) == 0
    assert not torch.equal(
        load_latent(tmp_path / "auto.latent"), load_latent(tmp_path / "two.latent")
    )
    with pytest.raises(SystemExit) as e:  # argparse's usage error
        cli.main([*common, "--out", str(tmp_path / "x.latent"), "--steps", "many"])
    assert e.value.code == 2
    assert "'many': expected 'auto' or a whole number of steps" in capsys.readouterr().err


# --- the Sampler node, on a stand-in for ComfyUI's V3 API -----------------------------------------
class _Anything:
    """Any attribute, any call: the parts of ComfyUI's schema API the node only declares with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __getattr__(self, name):
        return _Anything

    def __call__(self, *args, **kwargs):
        return _Anything(*args, **kwargs)


class _ProgressBar:
    bars = []

    def __init__(self, total):
        self.total, self.updates = total, []
        _ProgressBar.bars.append(self)

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, total))


class _Patcher:
    def __init__(self, model, load_device="cpu", offload_device="cpu"):
        self.model, self.load_device = model, load_device


@pytest.fixture
def sampler_node(monkeypatch):
    """nodes.sampler imported against stand-ins of comfy_api.latest.io, comfy.model_management and
    friends."""
    io = types.ModuleType("comfy_api.latest.io")
    io.__getattr__ = lambda name: _Anything
    io.ComfyNode = type("ComfyNode", (), {"hidden": types.SimpleNamespace(unique_id=None)})
    io.NodeOutput = lambda *values: values
    latest = types.ModuleType("comfy_api.latest")
    latest.io = io
    mm = types.ModuleType("comfy.model_management")
    for name, fn in dict(
        load_models_gpu=lambda *a, **k: None,
        get_free_memory=lambda dev: 1 << 40,
        extra_reserved_memory=lambda: 0,
        get_total_memory=lambda dev: 1 << 40,
        throw_exception_if_processing_interrupted=lambda: None,
        get_torch_device=lambda: "cpu",
        unet_offload_device=lambda: "cpu",
    ).items():
        setattr(mm, name, fn)
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils = mm, types.SimpleNamespace(ProgressBar=_ProgressBar)
    comfy.model_patcher = types.SimpleNamespace(ModelPatcher=_Patcher)
    comfy.latent_formats = _Anything()
    modules = {
        "comfy_api": types.ModuleType("comfy_api"),
        "comfy_api.latest": latest,
        "comfy_api.latest.io": io,
        "comfy": comfy,
        "comfy.model_management": mm,
        "comfy.utils": comfy.utils,
        "comfy.model_patcher": comfy.model_patcher,
        "comfy.latent_formats": comfy.latent_formats,
        "folder_paths": types.ModuleType("folder_paths"),
        "latent_preview": types.SimpleNamespace(get_previewer=lambda *a: None),
    }
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.syspath_prepend(str(REPO))
    for name in ("nodes.sampler", "nodes.upsampler", "nodes.runtime"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import importlib

    yield importlib.import_module("nodes.sampler")
    for name in ("nodes.sampler", "nodes.upsampler", "nodes.runtime"):
        sys.modules.pop(name, None)


def _run_node(node_module, model, samples, steps):
    from nodes import glue

    _ProgressBar.bars.clear()
    out = node_module.SimpleGVRSampler.execute(
        _Patcher(model),
        samples,
        seed=2,
        steps=steps,
        cfg=1.0,
        shift=5.0,
        sampler="euler",
        attention="model default",
        memory="manual",
    )
    return out[0]["samples"], _ProgressBar.bars[-1], glue


def test_sampler_node_steps_zero_is_auto_and_one_step_runs(sampler_node):
    from nodes import glue

    m, x = tiny_model(), raw_latent()
    m.sampling = ONE_STEP
    lr = glue.read_video_latent({"samples": x}, m.latent_format, "raw")
    samples = glue.upsample_latent(m, lr, size={"scale": 2.0}, noise_level=0.4, seed=2)
    ref = sample(m, samples[glue.LATENT_KEY].condition, steps=1, cfg=1.0, seed=2)
    # 0 = auto: this checkpoint's 1 step; and 1 given explicitly
    for steps in (sampler_node.AUTO_STEPS, 1):
        out, bar, _ = _run_node(sampler_node, m, samples, steps)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        assert bar.total == 1 and bar.updates == [(1, 1)]
    out, bar, _ = _run_node(sampler_node, m, samples, 2)  # an explicit count overrides the recipe
    assert bar.total == 2 and not torch.equal(out, ref)


def test_sampler_node_auto_keeps_50_steps_for_a_teacher(sampler_node):
    from nodes import glue

    m = tiny_model()
    lr = glue.read_video_latent({"samples": raw_latent(t=1, h=2, w=2)}, m.latent_format, "raw")
    samples = glue.upsample_latent(m, lr, size={"scale": 1.0}, noise_level=0.4, seed=2)
    _, bar, _ = _run_node(sampler_node, m, samples, sampler_node.AUTO_STEPS)
    assert bar.total == 50 and len(bar.updates) == 50


def test_loaded_outputs_do_not_depend_on_the_metadata_length(tmp_path):
    """The tensors of a file sit at offsets set by its header; loaded weights are aligned, so a
    longer recipe (or any metadata) cannot change a single bit of the output."""
    m = tiny_model()
    z, ctx = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 3, 32)
    with torch.no_grad():
        ref = m.dit(z, z, torch.tensor([300.0]), ctx, 0.4)
        for pad in range(0, 64, 8):
            path = save_checkpoint(
                m, tmp_path / f"m{pad}.safetensors", extra_metadata={"note": "x" * pad}
            )
            loaded = load_checkpoint(path)
            assert all(p.data_ptr() % 64 == 0 for p in loaded.parameters())
            assert torch.equal(loaded.dit(z, z, torch.tensor([300.0]), ctx, 0.4), ref), pad
