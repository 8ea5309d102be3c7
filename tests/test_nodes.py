"""The ComfyUI nodes' glue (nodes/glue.py) and how the pack imports, without ComfyUI (CI has none).

What ComfyUI itself adds (schemas, model management, progress, previews) is exercised against a real
server in tests/integration/.
"""

import ast
import importlib
import importlib.util
import inspect
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nodes import glue  # noqa: E402
from simplegvr_core import SimpleGVR, save_checkpoint  # noqa: E402
from simplegvr_core.latent_formats import WAN21  # noqa: E402
from simplegvr_core.models.upsampler import resize_frames  # noqa: E402
from simplegvr_core.pipeline import build_condition, sample, upscale  # noqa: E402
from simplegvr_core.pipeline import plan_condition as pipeline_plan_condition  # noqa: E402
from simplegvr_core.plan import plan_sampling  # noqa: E402


def tiny_model(seed=0):
    return randomize_(SimpleGVR.from_config("tiny"), seed=seed, std=0.05).eval()


def raw_latent(t=3, h=8, w=12, seed=0):
    """A raw-scale Wan 2.1 latent (channel statistics near the VAE's mean/std), as KSampler hands
    on."""
    z = torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(seed))
    return WAN21.denormalise(z)


# --- LATENT in ------------------------------------------------------------------------------------
def test_core_sampler_latent_is_read_as_raw_bcthw():
    x = raw_latent()
    lr = glue.read_video_latent({"samples": x, "batch_index": [0]}, "wan21")
    assert (lr.layout, lr.scale) == ("BCTHW", "raw")
    assert torch.equal(lr.raw, x)
    assert "auto chose 'raw'" in lr.note


def test_wrapper_latent_normalised_btchw_is_detected_and_converted_to_raw():
    x = raw_latent()
    wrapped = WAN21.normalise(x).permute(0, 2, 1, 3, 4)  # kijai-style: model space, [B,T,C,H,W]
    lr = glue.read_video_latent({"samples": wrapped}, "wan21")
    assert (lr.layout, lr.scale) == ("BTCHW", "normalised")
    torch.testing.assert_close(lr.raw, x, rtol=0, atol=1e-5)
    assert "wrapper layout" in lr.note and "auto chose 'normalised'" in lr.note


def test_explicit_latent_scale_wins_over_detection():
    x = raw_latent()
    lr = glue.read_video_latent({"samples": x}, WAN21, latent_scale="normalised")
    assert lr.scale == "normalised" and "as set" in lr.note
    torch.testing.assert_close(lr.raw, WAN21.denormalise(x))


@pytest.mark.parametrize(
    "latent, message",
    [
        ({"samples": torch.zeros(1, 16, 8, 8)}, r"image latent \[B,C,H,W\].*video latents"),
        (
            {"samples": torch.zeros(1, 48, 3, 8, 8)},
            r"48 channels \(a wan22 latent\?\).*'wan21' latents with 16 channels",
        ),
        ({"samples": torch.zeros(1, 3, 5, 8, 8)}, r"3 channels, shape \(1, 3, 5, 8, 8\).*'wan21'"),
        ({"samples": torch.full((1, 16, 2, 4, 4), float("nan"))}, "NaN or Inf"),
        ({"samples": torch.zeros(1, 16, 2, 4, 4, dtype=torch.int32)}, "floating-point"),
        ({"samples": torch.zeros(1, 16, 0, 4, 4)}, "empty"),
        ({"latent": torch.zeros(1, 16, 2, 4, 4)}, r"expected a LATENT \(a dict with 'samples'\)"),
        ({"samples": [1, 2]}, "must be a torch.Tensor"),
    ],
)
def test_bad_latents_raise_a_message_that_names_the_problem(latent, message):
    with pytest.raises(ValueError, match=message):
        glue.read_video_latent(latent, "wan21")


def test_unknown_latent_scale_choice_is_rejected():
    with pytest.raises(ValueError, match="latent_scale 'model'"):
        glue.read_video_latent({"samples": raw_latent()}, "wan21", latent_scale="model")


# --- Latent Upsampler -----------------------------------------------------------------------------
def test_upsampler_latent_carries_the_core_condition_and_a_bilinear_preview():
    m, x = tiny_model(), raw_latent()
    lr = glue.read_video_latent({"samples": x}, m.latent_format)
    size = glue.target_args("width and height", 1080, 192, 128, 9.9)
    out = glue.upsample_latent(
        m, lr, size=size, noise_level=0.3, seed=11, model_name="tiny.safetensors"
    )
    info = out[glue.LATENT_KEY]
    assert out["samples"].shape == (1, 16, 3, 16, 24)  # 128x192 px -> 16x24 latent
    torch.testing.assert_close(out["samples"], resize_frames(x, (16, 24)))
    ref = build_condition(m, x, width=192, height=128, noise_level=0.3, seed=11)
    assert torch.equal(info.condition.c, ref.c) and info.condition.noise_level == 0.3
    assert (info.latent_format, info.layout, info.scale, info.seed, info.model) == (
        "wan21",
        "BCTHW",
        "raw",
        11,
        "tiny.safetensors",
    )


def test_upsampler_keeps_a_wrappers_scale_and_layout_in_its_preview():
    m, x = tiny_model(), raw_latent()
    lr = glue.read_video_latent(
        {"samples": WAN21.normalise(x).permute(0, 2, 1, 3, 4)}, m.latent_format
    )
    out = glue.upsample_latent(
        m, lr, size=glue.target_args("scale", 1080, 0, 0, 2.0), noise_level=0.4, seed=0
    )
    assert out["samples"].shape == (1, 3, 16, 16, 24)
    torch.testing.assert_close(
        out["samples"],
        WAN21.normalise(resize_frames(x, (16, 24))).permute(0, 2, 1, 3, 4),
        rtol=0,
        atol=1e-5,
    )


def test_target_too_small_and_bad_resize_mode_are_refused():
    m = tiny_model()
    lr = glue.read_video_latent({"samples": raw_latent(h=60, w=104)}, m.latent_format)
    with pytest.raises(ValueError, match="smaller than the input.*only upscales"):
        glue.upsample_latent(
            m,
            lr,
            size=glue.target_args("width and height", 1080, 640, 360, 1),
            noise_level=0.4,
            seed=0,
        )
    with pytest.raises(ValueError, match="resize_by 'factor'"):
        glue.target_args("factor", 1, 1, 1, 1.0)


def test_node_path_equals_the_one_call_pipeline():
    """Latent Upsampler + Sampler glue == simplegvr_core.pipeline.upscale with the same settings."""
    m, x = tiny_model(), raw_latent()
    ctx, neg = torch.randn(1, 7, 32), torch.randn(1, 4, 32)
    kw = dict(steps=2, cfg=3.0, shift=5.0, seed=5)
    ref = upscale(
        m, x, width=192, height=128, noise_level=0.4, context=ctx, negative_context=neg, **kw
    )
    for wrapped, scale in ((x, "raw"), (WAN21.normalise(x).permute(0, 2, 1, 3, 4), "normalised")):
        lr = glue.read_video_latent({"samples": wrapped}, m.latent_format)
        info = glue.upsample_latent(
            m,
            lr,
            size=glue.target_args("width and height", 1080, 192, 128, 1),
            noise_level=0.4,
            seed=5,
        )[glue.LATENT_KEY]
        got = sample(
            m,
            info.condition,
            context=glue.conditioning_to_context([[ctx, {}]]),
            negative_context=glue.conditioning_to_context([[neg, {}]], "negative"),
            **kw,
        )
        out = glue.to_output(got, m.latent_format, info.layout, info.scale)
        if scale == "raw":
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        else:  # back in the wrapper's own scale and layout
            torch.testing.assert_close(
                out, WAN21.normalise(ref).permute(0, 2, 1, 3, 4), rtol=0, atol=1e-5
            )
        forced_raw = glue.to_output(got, m.latent_format, "BCTHW", "raw")
        torch.testing.assert_close(forced_raw, ref, rtol=0, atol=1e-5)


# --- Sampler inputs -------------------------------------------------------------------------------
def test_condition_is_found_checked_and_absent_for_a_plain_latent():
    m = tiny_model()
    lr = glue.read_video_latent({"samples": raw_latent()}, m.latent_format)
    out = glue.upsample_latent(
        m, lr, size={"scale": 2.0}, noise_level=0.4, seed=0, model_name="a.safetensors"
    )
    assert glue.condition_from_latent(out, m, "a.safetensors") is out[glue.LATENT_KEY]
    assert glue.condition_from_latent({"samples": out["samples"]}, m) is None
    out[glue.LATENT_KEY].latent_format = "wan22"
    with pytest.raises(ValueError, match="upsampled for 'wan22' latents.*works in 'wan21' latents"):
        glue.condition_from_latent(out, m)
    with pytest.raises(ValueError, match="not a SimpleGVR condition"):
        glue.condition_from_latent({"samples": out["samples"], glue.LATENT_KEY: "junk"}, m)


def test_conditioning_becomes_text_features_or_a_clear_error():
    """The node unpacks the CONDITIONING; the features are validated once, by the core
    (`prepare_context`)."""
    from simplegvr_core.pipeline import prepare_context

    m = tiny_model()
    t = torch.randn(1, 512, 32)
    assert glue.conditioning_to_context(None) is None  # not connected: the null prompt
    assert torch.equal(glue.conditioning_to_context([[t, {"pooled_output": None}]]), t)
    wide = glue.conditioning_to_context([[torch.zeros(1, 512, 4096), {}]])
    with pytest.raises(
        ValueError, match=r"positive has shape \(1, 512, 4096\): expected \[B, L, 32\].*umt5-xxl"
    ):
        prepare_context(m, wide, 1, "positive")
    with pytest.raises(ValueError, match="2 combined conditionings"):
        glue.conditioning_to_context([[t, {}], [t, {}]])
    with pytest.raises(ValueError, match="negative: expected a CONDITIONING"):
        glue.conditioning_to_context("a prompt", "negative")
    with pytest.raises(ValueError, match="NaN"):
        prepare_context(
            m, glue.conditioning_to_context([[torch.full((1, 3, 32), float("nan")), {}]]), 1
        )


# --- model files ---------------------------------------------------------------------------------
def test_only_simplegvr_checkpoints_are_recognised(tmp_path):
    save_checkpoint(SimpleGVR.from_config("tiny"), tmp_path / "gvr.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    assert glue.is_simplegvr_file(tmp_path / "gvr.safetensors")
    assert not glue.is_simplegvr_file(tmp_path / "other.safetensors")
    assert not glue.is_simplegvr_file(tmp_path / "junk.safetensors")
    assert not glue.is_simplegvr_file(tmp_path / "missing.safetensors")
    assert glue.is_model_file("a/b.SafeTensors") and not glue.is_model_file("model.ckpt")


def test_dtype_choice():
    assert glue.resolve_dtype("auto", torch.float16) is torch.float16
    assert glue.resolve_dtype("bf16", torch.float32) is torch.bfloat16
    with pytest.raises(ValueError, match="dtype 'fp8'"):
        glue.resolve_dtype("fp8", torch.float32)


# --- how the pack imports ------------------------------------------------------------------------
def _comfy_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [
        n
        for n in names
        if n.split(".")[0]
        in (
            "comfy",
            "comfy_api",
            "comfy_extras",
            "folder_paths",
            "latent_preview",
            "node_helpers",
            "server",
            "execution",
        )
    ]


def test_only_the_node_modules_import_comfy():
    for path in (REPO / "simplegvr_core").rglob("*.py"):
        assert not _comfy_imports(path), f"{path} imports ComfyUI"
    for name in ("__init__.py", "_core.py", "glue.py"):  # imported by CI, which has no ComfyUI
        assert not _comfy_imports(REPO / "nodes" / name), f"nodes/{name} imports ComfyUI"
    assert not _comfy_imports(REPO / "__init__.py")
    assert _comfy_imports(REPO / "nodes" / "runtime.py")  # the real nodes do


def test_pack_root_exposes_comfy_entrypoint_and_no_node_class_mappings(tmp_path):
    """Load the pack the way ComfyUI's loader does (a dashed directory name, imported as a package):
    the nodes then use the pack's own simplegvr_core, not an installed one."""
    pack = tmp_path / "ComfyUI-SimpleGVR"
    pack.mkdir()
    shutil.copy2(REPO / "__init__.py", pack / "__init__.py")
    for sub in ("nodes", "simplegvr_core"):
        shutil.copytree(REPO / sub, pack / sub, ignore=shutil.ignore_patterns("__pycache__"))
    name = pack.name
    spec = importlib.util.spec_from_file_location(name, pack / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        # it would make ComfyUI ignore comfy_entrypoint
        assert not hasattr(module, "NODE_CLASS_MAPPINGS")
        assert inspect.iscoroutinefunction(module.comfy_entrypoint)
        pack_glue = importlib.import_module(f"{name}.nodes.glue")
        assert pack_glue.pipeline.__name__ == f"{name}.simplegvr_core.pipeline"
        assert Path(pack_glue.pipeline.__file__).is_relative_to(pack)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


# --- Flow Degrade ---------------------------------------------------------------------------------
def moving_square(t=5, h=48, w=64):
    """uint8 frames [T,H,W,3]: a red square moving right by 5 px per frame over a green gradient."""
    import numpy as np

    f = np.zeros((t, h, w, 3), np.uint8)
    f[..., 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, None]
    for i in range(t):
        f[i, 12:36, 4 + 5 * i : 28 + 5 * i] = (230, 40, 40)
    return f


def flow_cfg(**kw):
    base = dict(strength=1.0, motion_threshold=1.0, bleed=True, blur=True, dis_preset="ultrafast")
    base.update(kw)
    return glue.flow_config(**base)


def test_image_frames_round_trip_and_bad_images_are_refused():
    frames = moving_square()
    images = glue.frames_to_images(frames)
    assert (
        images.dtype == torch.float32
        and images.shape == (5, 48, 64, 3)
        and float(images.max()) <= 1.0
    )
    assert (glue.images_to_frames(images) == frames).all()
    with pytest.raises(ValueError, match="RGBA: drop the alpha channel"):
        glue.images_to_frames(torch.zeros(2, 8, 8, 4))
    with pytest.raises(ValueError, match=r"expected video frames \[frames, H, W, 3\]"):
        glue.images_to_frames(torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match="expected a float IMAGE"):
        glue.images_to_frames(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        glue.images_to_frames(torch.full((2, 8, 8, 3), float("nan")))


def test_flow_config_takes_the_widgets_and_json_extras():
    cfg = flow_cfg(
        strength=0.5,
        motion_threshold=2.0,
        bleed=False,
        dis_preset="fast",
        extra_json='{"ellipses": [2, 6], "block_size": 32}',
    )
    assert (cfg.strength, cfg.motion_threshold, cfg.bleed, cfg.blur, cfg.dis_preset) == (
        0.5,
        2.0,
        False,
        True,
        "fast",
    )
    assert cfg.ellipses == (2, 6) and cfg.block_size == 32
    for bad, message in (
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"strength": 2}', r"sets \['strength'\]: set those with their widgets"),
        ('{"ellipse_count": 3}', r"unknown keys \['ellipse_count'\]"),
        ('{"max_kernel": 4}', "max_kernel=4: expected an odd length"),
    ):
        with pytest.raises(ValueError, match=message):
            flow_cfg(extra_json=bad)


def test_degrade_frames_is_the_core_flow_guided_degradation_seeded():
    import numpy as np

    from simplegvr_core import degrade, seeding
    from simplegvr_core.degrade.flow_guided import flow_guided

    frames, cfg = moving_square(), flow_cfg()
    seen = []
    out = glue.degrade_frames(frames, cfg, seed=3, on_frame=seen.append)
    assert np.array_equal(out, flow_guided(frames, cfg, seeding.numpy_rng(3, seeding.FLOW_DEGRADE)))
    # the one chain
    assert np.array_equal(out, degrade.degrade_frames(frames, "flow", None, 3, flow_config=cfg))
    assert seen == [0, 1, 2, 3, 4]
    # the moving square was degraded
    assert out.shape == frames.shape and not np.array_equal(out, frames)
    assert np.array_equal(out, glue.degrade_frames(frames, cfg, seed=3))
    assert not np.array_equal(out, glue.degrade_frames(frames, cfg, seed=4))
    # every bit of the seed counts
    assert not np.array_equal(out, glue.degrade_frames(frames, cfg, seed=3 + 2**32))
    still = np.repeat(frames[:1], 4, axis=0)
    # nothing moves: untouched
    assert np.array_equal(glue.degrade_frames(still, cfg, seed=3), still)


def test_degrade_frames_can_add_the_classic_pipeline_at_a_smaller_size():
    import numpy as np

    from simplegvr_core import seeding
    from simplegvr_core.degrade.classic import ClassicConfig, classic_degrade

    frames, cfg = moving_square(), flow_cfg()
    out = glue.degrade_frames(frames, cfg, seed=3, classic_strength=0.5, classic_scale=0.5)
    assert out.shape == (5, 24, 32, 3) and out.dtype == np.uint8
    # the flow stage's draws do not depend on classic's
    flow_out = glue.degrade_frames(frames, cfg, seed=3)
    ref = classic_degrade(
        flow_out,
        (24, 32),
        ClassicConfig().scaled(0.5),
        seeding.numpy_rng(3, seeding.CLASSIC_DEGRADE),
    )
    assert np.array_equal(out, ref)
    assert glue.classic_output_size(frames, 1.0) == (48, 64)  # (H, W)
    assert glue.classic_output_size(moving_square(h=1080, w=1920), 0.444) == (480, 852)
    with pytest.raises(ValueError, match="classic_scale=0"):
        glue.classic_output_size(frames, 0)


# --- issue 16: sizes, memory, colour --------------------------------------------------------------
def test_resize_choices_map_to_the_core_size_rule():
    assert (
        glue.RESIZE_CHOICES[0] == glue.DEFAULT_RESIZE_BY == "short edge"
        and glue.DEFAULT_EDGE == 1080
    )
    assert (
        glue.target_args("short edge", 1080, 1, 1, 1.0) == {"short_edge": 1080} == glue.DEFAULT_SIZE
    )
    assert glue.target_args("long edge", 1920, 1, 1, 1.0) == {"long_edge": 1920}
    m = tiny_model()
    # portrait 240x416 px
    lr = glue.read_video_latent({"samples": raw_latent(h=52, w=30)}, m.latent_format)
    plan = pipeline_plan_condition(
        m, lr.raw.shape, chunk_frames="auto", memory_budget=2**30, **glue.DEFAULT_SIZE
    )
    out = glue.upsample_latent(m, lr, noise_level=0.4, seed=0, plan=plan)
    assert out["samples"].shape == (1, 16, 3, 234, 135)  # 1080x1872 px: the aspect ratio is kept
    assert out[glue.LATENT_KEY].condition.c.shape == (1, 16, 3, 234, 135)
    assert "latent 52x30 (240x416 px) -> latent 234x135 (1080x1872 px)" == glue.size_text(
        m, (52, 30), (234, 135)
    )


def test_sampler_memory_modes_plan_and_say_what_they_chose():
    m = tiny_model()
    shape = (1, 16, 9, 16, 16)
    whole = plan_sampling(m, shape, attention="temporal_units")
    plan, need, text = glue.sampling_plan(
        m, shape, memory="auto", free=10 * 2**30, guidance=3.0, attention="temporal_units"
    )
    assert plan == whole and text.startswith(
        "memory auto, 10.00 GiB free: temporal_units on the whole clip"
    )
    assert need == whole.memory(m, guidance=3.0)
    tight = whole.memory(m, guidance=3.0) // 3
    plan, need, text = glue.sampling_plan(
        m, shape, memory="auto", free=tight, guidance=3.0, attention="temporal_units"
    )
    assert (
        need == plan.memory(m, guidance=3.0) <= tight
        and plan.calls_per_step > 1
        and "DiT call(s) per step" in text
    )
    plan, _, text = glue.sampling_plan(
        m,
        shape,
        memory="manual",
        free=None,
        guidance=3.0,
        attention="temporal_units",
        chunk_frames=4,
        tile_size=8,
    )
    assert plan.chunk_frames == 4 and plan.tile_size == (8, 8) and text.startswith("memory manual")
    with pytest.raises(ValueError, match="memory 'lots'"):
        glue.sampling_plan(m, shape, memory="lots", free=None, guidance=1.0, attention=None)


def test_colour_fix_images_is_the_core_fix_on_comfy_images():
    from simplegvr_core.colour import wavelet_colour_fix

    hr, lr = torch.rand(3, 32, 48, 3), torch.rand(3, 16, 24, 3)
    torch.testing.assert_close(
        glue.colour_fix_images(hr, lr, "wavelet"), wavelet_colour_fix(hr, lr)
    )
    with pytest.raises(ValueError, match="reference: expected an IMAGE tensor"):
        glue.colour_fix_images(hr, None, "wavelet")
    with pytest.raises(ValueError, match="do not match the HR frames"):
        glue.colour_fix_images(hr, lr[:2], "wavelet")


# --- issue 30: a plain LATENT through the Sampler, each thing computed once -----------------------
def test_a_plain_latent_through_the_sampler_computes_each_size_plan_and_estimate_once(monkeypatch):
    """The Sampler on a plain LR latent (upsampled with the Latent Upsampler's defaults, then
    sampled): five calls into the core (plan the condition, build it, the room the mode's own plan
    would need, fit the plan to what is free, sample). The target size, the aspect check and the
    sigmas are computed once; each memory estimate once beside its search (whose first candidate
    fits here). Before the three wings: 9 pipeline calls, the target size twice, the upsampler
    estimate 4x, the sampling estimate 5x and the sigmas twice."""
    from simplegvr_core import pipeline, plan

    counts: dict[str, int] = {}
    host_calls: list[str] = []

    def count(module, name):
        real = getattr(module, name)

        def counted(*a, **k):
            counts[name] = counts.get(name, 0) + 1
            if sys._getframe(1).f_globals.get("__name__") == glue.__name__:  # a call the host makes
                host_calls.append(name)
            return real(*a, **k)

        monkeypatch.setattr(module, name, counted)

    for name in (
        "plan_condition",
        "build_condition",
        "sample",
        "target_size",
        "aspect_warning",
        "sampling_sigmas",
        "upscale",
    ):
        count(pipeline, name)
    for name in (
        "plan_sampling",
        "fit_plan",
        "auto_plan",
        "upsampler_memory",
        "fit_condition_chunk",
    ):
        for module in (plan, pipeline):  # pipeline calls its imported names, plan its own
            if hasattr(module, name):
                count(module, name)
    real_memory = plan.SamplingPlan.memory

    def memory(self, *a, **k):
        counts["SamplingPlan.memory"] = counts.get("SamplingPlan.memory", 0) + 1
        return real_memory(self, *a, **k)

    monkeypatch.setattr(plan.SamplingPlan, "memory", memory)
    m = tiny_model()
    loads, lines = [], []
    host = glue.Host(
        load=loads.append, free=lambda: 8 * 2**30, budget=16 * 2**30, model_name="tiny.safetensors"
    )
    out = glue.run_sampler(
        m,
        {"samples": raw_latent(t=3, h=8, w=12)},
        host,
        context=None,
        negative_context=None,
        seed=0,
        steps=2,
        guidance=1.0,
        shift=5.0,
        sampler="euler",
        attention=None,
        say=lines.append,
    )
    assert out["samples"].shape == (1, 16, 3, 135, 203)  # short edge 1080 px, the aspect ratio kept
    assert host_calls == [
        "plan_condition",
        "build_condition",
        "plan_sampling",
        "fit_plan",
        "sample",
    ]
    assert counts["target_size"] == counts["aspect_warning"] == counts["sampling_sigmas"] == 1
    # the room the whole clip needs, then the search (whose first chunk fits)
    assert counts["upsampler_memory"] == 2
    assert counts["SamplingPlan.memory"] == 2  # the room the mode's own plan needs, then the search
    assert len(loads) == 3 and len(lines) == 1 and "2 steps" in lines[0]


# --- issue 31: Ultra Flash in the graph -----------------------------------------------------------
def _ultraflash_files(tmp_path, case="shipped"):
    """Tiny weights in Ultra Flash's layout (tests/ultraflash_tiny.py), saved as torch.save .pth
    files like theirs."""
    import ultraflash_tiny as uft

    c = uft.tiny_configs()[case]
    dit_sd, up_sd = uft.build_state_dicts(c, c["seeds"]["weights"])
    torch.save(dit_sd, tmp_path / "sr_dit_sparse.pth")
    torch.save({"model": up_sd}, tmp_path / "latent_upsampler.pth")
    return c, tmp_path / "sr_dit_sparse.pth", tmp_path / "latent_upsampler.pth"


def test_file_lists_show_each_loader_only_its_kind_with_the_published_file_first(tmp_path):
    from taehv_tiny import build_taehv_state_dict

    from simplegvr_core.weights import weights_kind

    _, dit, up = _ultraflash_files(tmp_path)
    torch.save(build_taehv_state_dict(0), tmp_path / "tiny_decoder.pth")
    save_file(build_taehv_state_dict(1), str(tmp_path / "taew2_1.safetensors"))
    save_checkpoint(SimpleGVR.from_config("tiny"), tmp_path / "gvr.safetensors")
    # a legacy (non-zip) pickle: cannot be told
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02}q\x00.")
    (tmp_path / "notes.txt").write_text("not weights")
    kinds = {p.name: weights_kind(p) for p in sorted(tmp_path.iterdir()) if p.suffix != ".txt"}
    assert kinds == {
        "gvr.safetensors": "simplegvr",
        "latent_upsampler.pth": "ultraflash_upsampler",
        "legacy.pth": None,
        "sr_dit_sparse.pth": "wan_dit",
        "taew2_1.safetensors": "tiny_decoder",
        "tiny_decoder.pth": "tiny_decoder",
    }
    entries = [(p.name, str(p)) for p in sorted(tmp_path.iterdir())]
    assert glue.weight_files(entries, ("wan_dit",), glue.ULTRAFLASH_DIT) == [
        "sr_dit_sparse.pth",
        "legacy.pth",
    ]
    assert glue.weight_files(entries, ("ultraflash_upsampler",), glue.ULTRAFLASH_UPSAMPLER) == [
        "latent_upsampler.pth",
        "legacy.pth",
    ]
    assert glue.weight_files(entries, ("tiny_decoder",), glue.TINY_DECODER) == [
        "tiny_decoder.pth",
        "legacy.pth",
        "taew2_1.safetensors",
    ]


def test_ultraflash_loader_imports_their_files_once_while_they_are_unchanged(tmp_path, monkeypatch):
    from simplegvr_core import weights
    from simplegvr_core.weights import ULTRAFLASH_RECIPE

    c, dit, up = _ultraflash_files(tmp_path)
    calls = []
    real = weights.import_ultraflash
    monkeypatch.setattr(
        weights, "import_ultraflash", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    heads = c["dit"]["num_heads"]
    m = glue.load_ultraflash(
        dit, up, num_heads=heads, dtype="auto", auto_dtype=lambda n: torch.bfloat16
    )
    assert m.sampling == ULTRAFLASH_RECIPE and next(m.parameters()).dtype == torch.bfloat16
    assert (
        glue.load_ultraflash(
            dit, up, num_heads=heads, dtype="auto", auto_dtype=lambda n: torch.bfloat16
        )
        is m
    )
    assert len(calls) == 1
    ref = real(dit, up, num_heads=heads)
    torch.testing.assert_close(
        m.dit.patch_embedding.weight.float(), ref.dit.patch_embedding.weight.bfloat16().float()
    )
    m32 = glue.load_ultraflash(dit, up, num_heads=heads, dtype="fp32")
    assert m32 is not m and len(calls) == 2 and next(m32.parameters()).dtype == torch.float32
    import os

    st = os.stat(dit)
    os.utime(dit, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed: read again
    assert (
        glue.load_ultraflash(dit, up, num_heads=heads, dtype="fp32") is not m32 and len(calls) == 3
    )
    text = glue.model_text(m32)
    assert (
        text.split("\n")[0]
        == f"one-step Ultra Flash, {sum(p.numel() for p in m32.parameters()) / 1e6:.0f}M "
        "parameters, float32"
    )
    assert "block_sparse_causal in groups of 6 latent frames" in text and "native 2x" in text
    with pytest.raises(ValueError, match="Wan dim=64 is not a released size"):
        glue.load_ultraflash(dit, up, dtype="fp32")  # tiny: its heads must be given
    with pytest.raises(ValueError, match="num_heads=-1"):
        glue.load_ultraflash(dit, up, num_heads=-1)


def test_untrained_and_demo_checkpoints_are_named_before_anything_runs(tmp_path):
    from simplegvr_core.checkpoint import CODEC_KEY, DEMO_CODEC, IMPORTED_METADATA
    from simplegvr_core.demo import assets

    save_checkpoint(
        SimpleGVR.from_config("tiny"),
        tmp_path / "imported.safetensors",
        extra_metadata=IMPORTED_METADATA,
    )
    save_checkpoint(tiny_model(), tmp_path / "trained.safetensors")
    # renamed: still the demo
    shutil.copy(assets.ASSETS / assets.STUDENT_FILE, tmp_path / "my_upscaler.safetensors")
    # any demo-world model, not only the shipped files: a rebuild's (other weights) says so too
    save_checkpoint(
        tiny_model(), tmp_path / "rebuilt.safetensors", extra_metadata={CODEC_KEY: DEMO_CODEC}
    )
    entries = [(p.name, str(p)) for p in sorted(tmp_path.iterdir())]
    assert glue.flagged_checkpoints(entries) == {
        "imported.safetensors": glue.UNTRAINED_HEADLINE,
        "my_upscaler.safetensors": glue.DEMO_HEADLINE,
        "rebuilt.safetensors": glue.DEMO_HEADLINE,
    }
    headline, warning = glue.checkpoint_warning(
        tmp_path / "imported.safetensors", "imported.safetensors"
    )
    assert "generates a new video from the prompt instead of upscaling" in warning
    assert glue.checkpoint_warning(tmp_path / "trained.safetensors", "trained.safetensors") is None
    m = tiny_model()
    text = glue.model_text(
        m, glue.checkpoint_warning(tmp_path / "my_upscaler.safetensors", "my_upscaler.safetensors")
    )
    first = text.split("\n")[0]
    # fits the node's first line
    assert first == "WARNING: " + glue.DEMO_HEADLINE and len(first) <= 50
    assert "does not upscale real video" in text and "copies Wan 2.1's latent statistics" in text
    assert glue.model_text(m).split("\n")[0].startswith("50-step tiny, ")  # a teacher's recipe


def test_hr_latent_is_the_condition_in_the_inputs_scale_and_layout():
    m, x = tiny_model(), raw_latent()
    for incoming, scale in ((x, "raw"), (WAN21.normalise(x).permute(0, 2, 1, 3, 4), "normalised")):
        lr = glue.read_video_latent({"samples": incoming}, m.latent_format)
        out = glue.upsample_latent(m, lr, size={"scale": 2.0}, noise_level=0.0, seed=0)
        hr = glue.condition_latent(out[glue.LATENT_KEY])["samples"]
        c = out[glue.LATENT_KEY].condition.c
        expected = WAN21.denormalise(c) if scale == "raw" else c.permute(0, 2, 1, 3, 4)
        torch.testing.assert_close(hr, expected, rtol=0, atol=1e-5)
        assert hr.shape == out["samples"].shape  # the same size and layout as the preview


def test_node_texts_put_a_short_headline_first():
    m = tiny_model()
    lines = []
    host = glue.Host(load=lambda need: None, free=lambda: 8 * 2**30, budget=16 * 2**30)
    lr = glue.read_video_latent({"samples": raw_latent(h=52, w=30)}, m.latent_format)
    _, text, warnings = glue.upsample(m, lr, {"width": 1920, "height": 1080}, 0.4, 0, host)
    head = text.split("\n")
    assert head[0] == "WARNING: the picture is stretched" and head[1] == ""
    assert warnings[0] in text and "240x416 -> 1920x1080 px, 3 latent frames" in text
    _, text, _ = glue.upsample(m, lr, {"short_edge": 1080}, 0.4, 0, host)
    assert text.split("\n")[0] == "240x416 -> 1080x1872 px, 3 latent frames"
    glue.run_sampler(
        m,
        {"samples": raw_latent(t=3, h=8, w=12)},
        host,
        context=None,
        negative_context=None,
        seed=0,
        steps=2,
        guidance=1.0,
        shift=5.0,
        sampler="euler",
        attention=None,
        say=lines.append,
    )
    assert lines[0].split("\n")[0] == "2-step tiny, 3 latent frames, 1 DiT call(s)/step"
    assert "memory auto" in lines[0]


def test_ultraflash_sampler_streams_in_groups_reports_each_and_stops_on_interrupt(tmp_path):
    import ultraflash_tiny as uft

    c, dit, up = _ultraflash_files(tmp_path)
    m = glue.load_ultraflash(dit, up, num_heads=c["dit"]["num_heads"], dtype="fp32")
    host = glue.Host(load=lambda need: None, free=lambda: 8 * 2**30, budget=16 * 2**30)
    x = WAN21.denormalise(uft.build_inputs(c, c["seeds"]["inputs"])["lr"])  # [1, 16, 13, 9, 13]
    latent, _, _ = glue.upsample(
        m, glue.read_video_latent({"samples": x}, m.latent_format), {}, "auto", 0, host
    )
    steps, lines = [], []
    kw = dict(
        context=None,
        negative_context=None,
        seed=0,
        steps="auto",
        guidance="auto",
        shift=5.0,
        sampler="euler",
        attention=None,
    )
    out = glue.run_sampler(
        m,
        latent,
        host,
        say=lines.append,
        callback_for=lambda n: lambda d: steps.append((d["i"] + 1, d["total"])),
        **kw,
    )
    assert out["samples"].shape == (1, 16, 13, 18, 26)  # native 2x
    assert steps == [(1, 3), (2, 3), (3, 3)]  # one step per group of 6, 6, 1 latent frames
    assert lines[0].split("\n")[0] == "one-step (auto) Ultra Flash, 13 latent frames in 3 groups"
    blocks = []

    def cancel():
        blocks.append(1)
        if len(blocks) == 3:
            raise InterruptedError("Cancel")

    with pytest.raises(InterruptedError):
        glue.run_sampler(m, latent, host, interrupt=cancel, **kw)
    assert len(blocks) == 3  # stopped within one block


def test_fast_decode_normalises_a_raw_wan_latent_and_decodes_chunk_by_chunk(tmp_path):
    from taehv_tiny import build_taehv_state_dict

    from simplegvr_core.latent_formats import COGVIDEOX_2B
    from simplegvr_core.weights import load_tiny_decoder

    torch.save(build_taehv_state_dict(0), tmp_path / "tiny_decoder.pth")
    dec = glue.load_decoder(tmp_path / "tiny_decoder.pth")
    assert glue.load_decoder(tmp_path / "tiny_decoder.pth") is dec  # cached per file
    z = torch.randn(2, 16, 5, 4, 6, generator=torch.Generator().manual_seed(3))
    raw = WAN21.denormalise(z)
    seen, stops = [], []
    images, text = glue.fast_decode(
        dec,
        {"samples": raw},
        2,
        on_chunk=lambda d, n: seen.append((d, n)),
        interrupt=lambda: stops.append(1),
    )
    ref = load_tiny_decoder(tmp_path / "tiny_decoder.pth").decode(z)  # [B, 3, 17, 32, 48]
    assert images.shape == (2 * 17, 32, 48, 3) and images.dtype == torch.float32
    torch.testing.assert_close(
        images, ref.permute(0, 2, 3, 4, 1).reshape(34, 32, 48, 3), rtol=0, atol=1e-5
    )
    assert seen == [(1, 3), (2, 3), (3, 3)] and len(stops) == 3
    assert text.split("\n")[0] == "17 frames 48x32 px from 5 latent frames"
    wrapped = raw.permute(0, 2, 1, 3, 4)  # a wrapper's [B,T,C,H,W]: same frames
    torch.testing.assert_close(
        glue.fast_decode(dec, {"samples": wrapped}, 6)[0], images, rtol=0, atol=1e-5
    )

    def cancel():
        raise InterruptedError

    with pytest.raises(InterruptedError):
        glue.fast_decode(dec, {"samples": raw}, 2, interrupt=cancel)
    with pytest.raises(ValueError, match=r"48 channels, but this tiny decoder decodes 'wan21'"):
        glue.fast_decode(dec, {"samples": torch.randn(1, 48, 2, 4, 4)})
    cog = (
        torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        * COGVIDEOX_2B.raw_std
    )
    with pytest.raises(
        ValueError, match="looks like a raw CogVideoX latent.*decode it with VAE Decode"
    ):
        glue.fast_decode(dec, {"samples": cog})
    with pytest.raises(ValueError, match="image latent"):
        glue.fast_decode(dec, {"samples": torch.randn(1, 16, 4, 4)})
    with pytest.raises(ValueError, match="chunk_frames=0"):
        glue.fast_decode(dec, {"samples": raw}, 0)
    assert glue.decode_memory(dec, {"samples": raw}, 6, torch.float16) > 0
    assert glue.decode_memory(dec, {"samples": "junk"}, 6, torch.float16) == 0
