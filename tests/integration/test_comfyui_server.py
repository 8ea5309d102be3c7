"""The pack inside a real ComfyUI server (v0.22): node registration, prompts, errors, example
workflows.

Runs only when COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (the Python of its environment,
with this pack's requirements.txt installed) are set; skipped otherwise (CI has no ComfyUI). It
installs the pack into a temporary base directory, starts `main.py --cpu` on 127.0.0.1 with
`--base-directory` there, and stops the server when done. Optional: COMFY_CLI=path/to/comfy also
checks comfy-cli's conversion of the example workflows. SIMPLEGVR_RECORD_OBJECT_INFO=1 rewrites
tests/data/simplegvr_object_info.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfyui_server import (
    OUR_NODES,
    REPO,
    ComfyServer,
    comfyui_from_env,
    execution_error,
    install_pack,
    our_object_info,
)  # noqa: E402

FOUND = comfyui_from_env()
if FOUND is None:
    pytest.skip(
        "set COMFYUI_DIR and COMFYUI_PYTHON to run the ComfyUI integration tests",
        allow_module_level=True,
    )

import numpy as np  # noqa: E402
import torch  # noqa: E402
from comfy_workflows import to_api  # noqa: E402
from helpers import randomize_  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from simplegvr_core import SimpleGVR, get_config, load_checkpoint, save_checkpoint  # noqa: E402
from simplegvr_core.checkpoint import IMPORTED_METADATA  # noqa: E402
from simplegvr_core.latent_formats import COGVIDEOX_2B, WAN21, WAN22  # noqa: E402
from simplegvr_core.latent_io import load_latent, save_latent  # noqa: E402
from simplegvr_core.pipeline import build_condition, sample  # noqa: E402

RECORDED = REPO / "tests" / "data" / "simplegvr_object_info.json"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
VIDEO = "simplegvr_example.mp4"
FRAME_COUNTS = (1, 2, 5, 21)
# LotusConditioning: a core node that makes a CONDITIONING without any model file
LOTUS_WIDTH = 1024
# Where the example workflows' loaders look for their files.
LOADER_FOLDERS = {
    "UNETLoader": "diffusion_models",
    "CLIPLoader": "text_encoders",
    "VAELoader": "vae",
    "SimpleGVRModelLoader": "simplegvr",
    "SimpleGVRUltraFlashLoader": "simplegvr",
    "SimpleGVRFastDecode": "simplegvr",
}
LOADERS = set(LOADER_FOLDERS)
MODEL_SUFFIXES = (".safetensors", ".pth")


def tiny(path: Path, text_dim: int = 32, seed: int = 0, metadata=None) -> Path:
    cfg = get_config("tiny").to_dict()
    cfg["dit"]["text_dim"] = text_dim
    save_checkpoint(
        randomize_(SimpleGVR.from_config(cfg), seed=seed, std=0.05), path, extra_metadata=metadata
    )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_base")
    install_pack(base)
    models = base / "models"
    for sub in ("simplegvr", "latent_upscale_models", "diffusion_models", "text_encoders", "vae"):
        (models / sub).mkdir(parents=True)
    tiny(models / "simplegvr" / "tiny.safetensors")
    tiny(models / "simplegvr" / "tiny_text1024.safetensors", text_dim=LOTUS_WIDTH, seed=1)
    tiny(models / "latent_upscale_models" / "shared_tiny.safetensors", seed=2)
    tiny(
        models / "simplegvr" / "imported_untrained.safetensors", seed=3, metadata=IMPORTED_METADATA
    )
    save_file(
        {"blocks.0.block.0.conv.weight": torch.zeros(1)},
        str(models / "latent_upscale_models" / "not_ours.safetensors"),
    )
    # empty stand-ins for the example workflows' model files: their names then validate, loading
    # them fails
    for wf in WORKFLOWS:
        for node in json.loads(wf.read_text(encoding="utf-8"))["nodes"]:
            for v in node.get("widgets_values") or [] if node["type"] in LOADER_FOLDERS else []:
                if isinstance(v, str) and v.endswith(MODEL_SUFFIXES):
                    (models / LOADER_FOLDERS[node["type"]] / v).touch()
    add_ultraflash_files(models)
    inp = base / "input"
    inp.mkdir()
    save_latent(
        WAN21.denormalise(torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))),
        inp / "lr_wan21.latent",
    )
    save_latent(torch.randn(1, 48, 3, 8, 8), inp / "lr_wan22.latent")
    add_family_files(models, inp)
    uf_lr_latent(inp)
    portrait = WAN21.denormalise(
        torch.randn(1, 16, 2, 52, 30, generator=torch.Generator().manual_seed(1))
    )
    save_latent(portrait, inp / "portrait.latent")  # 240x416 px, the example
    for t in FRAME_COUNTS:
        save_latent(
            WAN21.denormalise(
                torch.randn(1, 16, t, 6, 4, generator=torch.Generator().manual_seed(t))
            ),
            inp / f"frames{t}.latent",
        )
    # no example clip here: the pack copies workflows/input/simplegvr_example.mp4 into input/ when
    # it loads
    srv = ComfyServer(*FOUND, base)
    srv.start()
    yield srv
    srv.stop()
    print(f"\nComfyUI server log tail ({srv.log_path}):\n{srv.log_tail(25)}")


# --- Ultra Flash: tiny weights in their layout, converted and as their .pth files; a tiny TAEHV
# decoder tests/ultraflash_tiny.py: their shipped sparse settings at dim 64, 2 heads, 2 layers
UF_CASE = "shipped"
# import_ultraflash + save_checkpoint: what `simplegvr import-ultraflash` writes
UF_TINY = "ultraflash_tiny.safetensors"
UF_DIT, UF_UP, TAEHV = "tiny_sr_dit.pth", "tiny_latent_upsampler.pth", "tiny_taehv.pth"


def add_ultraflash_files(models: Path) -> None:
    import ultraflash_tiny as uft
    from taehv_tiny import build_taehv_state_dict

    from simplegvr_core.weights import import_ultraflash

    case = uft.tiny_configs()[UF_CASE]
    dit_sd, up_sd = uft.build_state_dicts(case, case["seeds"]["weights"])
    torch.save(dit_sd, models / "simplegvr" / UF_DIT)
    # their loader's wrapper, the shared folder
    torch.save({"model": up_sd}, models / "latent_upscale_models" / UF_UP)
    save_checkpoint(
        import_ultraflash(dit_sd, up_sd, num_heads=case["dit"]["num_heads"]),
        models / "simplegvr" / UF_TINY,
    )
    (models / "vae_approx").mkdir(exist_ok=True)
    torch.save(build_taehv_state_dict(0), models / "vae_approx" / TAEHV)


def uf_lr_latent(inp: Path) -> str:
    """Their tiny case's LR latent (13 latent frames at 9x13: groups 6, 6, 1), raw as KSampler hands
    it on."""
    import ultraflash_tiny as uft

    case = uft.tiny_configs()[UF_CASE]
    save_latent(
        WAN21.denormalise(uft.build_inputs(case, case["seeds"]["inputs"])["lr"]),
        inp / "lr_uf.latent",
    )
    return "lr_uf.latent"


# --- the other families: Wan 2.2 (48 channels, /16) and CogVideoX (16 channels, /8, scalar scale)
FAMILY = {
    "wan22": ("tiny-wan22", WAN22, (4, 4)),
    "cogvideox": ("tiny-cogvideox", COGVIDEOX_2B, (8, 8)),
}
# a tiny CogVideoX transformer through `convert-cogvideox`
COG_UNET = "tiny_cogvideox_comfy.safetensors"


def core_latent(fmt, hw, seed=0) -> torch.Tensor:
    """A LR latent as ComfyUI's own sampler of that family hands it on: [B,C,T,H,W], raw VAE
    scale."""
    z = torch.randn(1, fmt.channels, 3, *hw, generator=torch.Generator().manual_seed(seed))
    return fmt.denormalise(z) if fmt.mean is not None else z * fmt.raw_std


def tiny_cogvideox_transformer(text_dim: int = LOTUS_WIDTH, seed: int = 0):
    """A tiny diffusers CogVideoX-5b-style transformer (RoPE, head_dim 64 as ComfyUI's detection
    assumes)."""
    import diffusers

    torch.manual_seed(seed)
    return diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=64,
        time_embed_dim=32,
        text_embed_dim=text_dim,
        num_layers=2,
        use_rotary_positional_embeddings=True,
    ).eval()


def add_family_files(models: Path, inp: Path) -> None:
    from simplegvr_core.weights import convert_cogvideox

    for family, (config, fmt, hw) in FAMILY.items():
        model = randomize_(SimpleGVR.from_config(config), seed=5, std=0.05)
        save_checkpoint(model, models / "simplegvr" / f"tiny_{family}.safetensors")
        save_latent(core_latent(fmt, hw), inp / f"lr_{family}_core.latent")
    src = models.parent / "cogvideox_diffusers.safetensors"
    save_file(
        {k: v.contiguous() for k, v in tiny_cogvideox_transformer().state_dict().items()}, str(src)
    )
    convert_cogvideox(src, models / "diffusion_models" / COG_UNET)


_counter = iter(range(1, 10**6))


def upscale_prompt(
    model="tiny.safetensors",
    latent="lr_wan21.latent",
    seed=7,
    steps=3,
    cfg=3.0,
    conditioned=False,
    upsample=True,
    prefix=None,
    size=None,
    **sampler,
):
    """LoadLatent -> Load SimpleGVR Model -> Latent Upsampler -> SimpleGVR Sampler -> SaveLatent
    (API format)."""
    p = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": latent}},
        "2": {
            "class_type": "SimpleGVRModelLoader",
            "inputs": {"model_name": model, "dtype": "auto", "attention": "checkpoint default"},
        },
        "3": {
            "class_type": "SimpleGVRLatentUpsampler",
            "inputs": {
                "model": ["2", 0],
                "samples": ["1", 0],
                "resize_by": "width and height",
                "edge": 1080,
                "width": 128,
                "height": 96,
                "scale": 2.25,
                "noise_level": 0.4,
                "seed": 3,
                "latent_scale": "auto",
                **(size or {}),
            },
        },
        "4": {
            "class_type": "SimpleGVRSampler",
            "inputs": {
                "model": ["2", 0],
                "samples": ["3", 0] if upsample else ["1", 0],
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "shift": 5.0,
                "sampler": "euler",
                "attention": "model default",
                "memory": "auto",
                "colour_fix": "none",
                "chunk_frames": 0,
                "tile_size": 0,
                "output_scale": "same as input",
                **sampler,
            },
        },
        "5": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["4", 0], "filename_prefix": prefix or f"it/run{next(_counter)}"},
        },
    }
    if conditioned:
        p["6"] = {"class_type": "LotusConditioning", "inputs": {}}
        p["7"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}
        p["4"]["inputs"].update(positive=["6", 0], negative=["7", 0])
    return p


def saved_latent(server, prompt) -> torch.Tensor:
    prefix = prompt["5"]["inputs"]["filename_prefix"]
    files = sorted((server.base / "output").glob(prefix + "_*.latent"))
    assert len(files) == 1, files
    return load_latent(files[0])


def run_ok(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    return entry


def run_error(server, prompt) -> dict:
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "error"
    err = execution_error(entry)
    assert err is not None
    return err


# --- registration --------------------------------------------------------------------------------
def test_our_nodes_appear_in_object_info_with_their_inputs(server):
    info = server.get("/object_info")
    missing = [n for n in OUR_NODES if n not in info]
    assert not missing, f"not registered: {missing}\n{server.log_tail()}"
    live = our_object_info(info)
    if os.environ.get("SIMPLEGVR_RECORD_OBJECT_INFO") == "1":
        RECORDED.write_text(json.dumps(live, indent=1, ensure_ascii=False) + "\n")
    recorded = json.loads(RECORDED.read_text())
    assert live == recorded, (
        "the nodes' schemas changed: rerun with SIMPLEGVR_RECORD_OBJECT_INFO=1 and "
        "commit tests/data"
    )
    for node in OUR_NODES:
        assert info[node]["category"] == "SimpleGVR"
        for kind, section in info[node]["input"].items():
            if kind == "hidden":  # unique_id: what the node shows its text under, not a widget
                continue
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    assert set(info["SimpleGVRLatentUpsampler"]["input"]["required"]) == {
        "model",
        "samples",
        "resize_by",
        "edge",
        "width",
        "height",
        "scale",
        "noise_level",
        "seed",
        "latent_scale",
    }
    assert set(info["SimpleGVRSampler"]["input"]["optional"]) == {"positive", "negative"}
    assert info["SimpleGVRModelLoader"]["output"] == ["SIMPLEGVR_MODEL"]
    # models/simplegvr lists everything, models/latent_upscale_models only SimpleGVR checkpoints
    options = info["SimpleGVRModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert {"tiny.safetensors", "tiny_text1024.safetensors", "shared_tiny.safetensors"} <= set(
        options
    )
    assert "not_ours.safetensors" not in options
    templates = server.get("/workflow_templates")
    assert {p.stem for p in WORKFLOWS} <= set(templates.get("ComfyUI-SimpleGVR", [])), templates


def test_the_template_browser_gets_each_workflow_and_its_thumbnail(server):
    """Frontend 1.43 fetches /api/workflow_templates/<pack>/<name>.json and <name>.jpg (names with
    spaces, encoded)."""
    for path in WORKFLOWS:
        for suffix, kind in ((".json", "application/json"), (".jpg", "image/jpeg")):
            url = (
                f"{server.url}/api/workflow_templates/ComfyUI-SimpleGVR/{quote(path.stem + suffix)}"
            )
            with urllib.request.urlopen(url, timeout=30) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith(kind), (
                    url,
                    r.headers["Content-Type"],
                )
                assert r.read() == path.with_suffix(suffix).read_bytes()
    i18n = server.get("/i18n")
    assert i18n["en"]["templateWorkflows"]["category"]["ComfyUI-SimpleGVR"] == "SimpleGVR"
    assert (server.base / "input" / VIDEO).read_bytes() == (
        REPO / "workflows" / "input" / VIDEO
    ).read_bytes()


# --- prompts -------------------------------------------------------------------------------------
def test_upscale_prompt_saves_the_hr_latent_the_core_pipeline_computes(server):
    prompt = upscale_prompt(seed=7, steps=3, cfg=3.0)
    run_ok(server, prompt)
    out = saved_latent(server, prompt)
    assert out.shape == (1, 16, 3, 12, 16)  # 96x128 px -> 12x16 latent, frames kept
    m = load_checkpoint(server.base / "models" / "simplegvr" / "tiny.safetensors")
    lr = load_latent(server.base / "input" / "lr_wan21.latent")
    cond = build_condition(m, lr, width=128, height=96, noise_level=0.4, seed=3)
    ref = sample(m, cond, steps=3, cfg=3.0, shift=5.0, seed=7)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype, tol", [("bf16", 4 * 2**-8), ("fp16", 4 * 2**-11)])
def test_low_precision_loader_samples_through_the_server(server, dtype, tol):
    """dtype=auto picks bf16/fp16 on GPUs; before the fix neither sampled (RuntimeError: mixed
    dtype)."""
    prompt = upscale_prompt(seed=7, steps=3, cfg=3.0)
    prompt["2"]["inputs"]["dtype"] = dtype
    run_ok(server, prompt)
    out = saved_latent(server, prompt)
    ref_prompt = upscale_prompt(seed=7, steps=3, cfg=3.0)
    run_ok(server, ref_prompt)
    ref = saved_latent(server, ref_prompt)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert float((out - ref).norm() / ref.norm()) < tol


def test_the_node_and_the_cli_give_the_same_message_for_a_bad_latent(server, tmp_path):
    from simplegvr_core.app import main

    bad = torch.full((1, 16, 2, 4, 4), 1e30)
    save_latent(bad, server.base / "input" / "huge.latent")
    err = run_error(server, upscale_prompt(latent="huge.latent"))
    assert err["node_type"] == "SimpleGVRLatentUpsampler"
    cli_err = io.StringIO()
    with contextlib.redirect_stderr(cli_err):
        rc = main(
            [
                "upscale",
                "--checkpoint",
                str(server.base / "models" / "simplegvr" / "tiny.safetensors"),
                "--latent",
                str(server.base / "input" / "huge.latent"),
                "--out",
                str(tmp_path / "o.latent"),
            ]
        )
    assert rc == 2
    node_msg = err["exception_message"].strip()
    cli_msg = cli_err.getvalue().strip().removeprefix("simplegvr: error: ")
    assert node_msg == cli_msg, (node_msg, cli_msg)


def test_conditioning_reaches_the_model_and_options_apply(server):
    base = dict(
        model="tiny_text1024.safetensors",
        seed=5,
        steps=2,
        cfg=2.0,
        attention="temporal_units",
        sampler="heun",
        tile_size=8,
    )
    with_text, null = (
        upscale_prompt(conditioned=True, **base),
        upscale_prompt(conditioned=False, **base),
    )
    run_ok(server, with_text)
    run_ok(server, null)
    a, b = saved_latent(server, with_text), saved_latent(server, null)
    assert a.shape == b.shape == (1, 16, 3, 12, 16) and torch.isfinite(a).all()
    assert not torch.allclose(a, b, atol=1e-4), "the text conditioning made no difference"
    normalised = upscale_prompt(output_scale="normalised", seed=5, steps=2)
    raw = upscale_prompt(seed=5, steps=2)
    run_ok(server, normalised)
    run_ok(server, raw)
    torch.testing.assert_close(
        saved_latent(server, normalised),
        WAN21.normalise(saved_latent(server, raw)),
        rtol=0,
        atol=1e-4,
    )


def test_sampler_reports_progress_with_latent_previews_every_step(server):
    messages, previews = server.run_watching(upscale_prompt(seed=21, steps=4, cfg=1.0))
    assert messages[-1]["type"] == "execution_success"
    steps = [
        (m["data"]["value"], m["data"]["max"])
        for m in messages
        if m["type"] == "progress" and m["data"]["node"] == "4"
    ]  # node 4: SimpleGVR Sampler
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # one JPEG preview per step (the server runs with --preview-method latent2rgb)
    assert previews >= 4


def test_a_plain_lr_latent_into_the_sampler_is_upsampled_with_the_defaults(server):
    prompt = upscale_prompt(upsample=False, steps=1, cfg=1.0, attention="sparse_local")
    run_ok(server, prompt)
    # 8x8 latent: short edge 1080 -> 1080x1080
    assert saved_latent(server, prompt).shape == (1, 16, 3, 135, 135)


def test_a_portrait_latent_keeps_its_aspect_ratio_end_to_end(server):
    """(1,16,2,52,30) = 240x416 px: the default short edge 1080 gives 1080x1872 (latent 234x135),
    through the Latent Upsampler and through the Sampler's plain-latent path; 1920x1080 asked
    explicitly stretches it and says so."""
    default = upscale_prompt(
        latent="portrait.latent", steps=1, cfg=1.0, size={"resize_by": "short edge", "edge": 1080}
    )
    messages, _, texts = server.watch(default)
    assert messages[-1]["type"] == "execution_success", messages[-1]
    assert saved_latent(server, default).shape == (1, 16, 2, 234, 135)
    assert any(
        "latent 52x30 (240x416 px) -> latent 234x135 (1080x1872 px)" in t for t in texts["3"]
    )
    assert not any("WARNING" in t for t in texts["3"])
    plain = upscale_prompt(latent="portrait.latent", steps=1, cfg=1.0, upsample=False)
    run_ok(server, plain)
    assert saved_latent(server, plain).shape == (1, 16, 2, 234, 135)
    stretched = upscale_prompt(
        latent="portrait.latent", steps=1, cfg=1.0, size={"width": 1920, "height": 1080}
    )
    _, _, texts = server.watch(stretched)
    assert saved_latent(server, stretched).shape == (1, 16, 2, 135, 240)
    assert texts["3"][-1].startswith(
        "WARNING: the picture is stretched\n\n1920x1080 px changes "
        "the aspect ratio of the 240x416 px input"
    )


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_latent_frames_in_equal_latent_frames_out(server, frames):
    prompt = upscale_prompt(
        latent=f"frames{frames}.latent",
        steps=1,
        cfg=1.0,
        attention="temporal_units",
        size={"resize_by": "short edge", "edge": 64},
    )
    run_ok(server, prompt)
    assert saved_latent(server, prompt).shape == (1, 16, frames, 12, 8)


def test_auto_memory_shows_its_plan_on_the_sampler(server):
    # seeds no other test uses: not cached
    prompt = upscale_prompt(steps=1, cfg=3.0, seed=161, size={"seed": 161})
    _, _, texts = server.watch(prompt)
    sampler = " ".join(texts["4"])
    # tiny: full
    assert (
        "memory auto, " in sampler
        and "GiB free: full on the whole clip (3 latent frames)" in sampler
    )
    assert "DiT call(s) per step; estimate" in sampler
    assert "upsampler in chunks of 3 latent frames" in " ".join(texts["3"])
    manual = upscale_prompt(
        steps=1, cfg=3.0, seed=162, memory="manual", chunk_frames=2, tile_size=8
    )
    _, _, texts = server.watch(manual)
    assert (
        "memory manual: full on 2 windows of 2 latent frames (3 latent frames), 5x9 tiles of "
        "8x8 latent px" in " ".join(texts["4"])
    )
    assert saved_latent(server, manual).shape == (1, 16, 3, 12, 16)


def test_an_untrained_checkpoint_warns_on_the_loader_node(server):
    prompt = upscale_prompt(model="imported_untrained.safetensors", steps=1, cfg=1.0)
    messages, _, texts = server.watch(prompt)
    assert messages[-1]["type"] == "execution_success"
    loader = texts.get("2", [])
    assert loader and loader[-1].startswith(
        "WARNING: UNTRAINED: makes a new video, no "
        "upscale\n\nimported_untrained.safetensors is an "
        "untrained SimpleGVR"
    ), texts
    assert "generates a new video from the prompt instead of upscaling" in loader[-1]
    tooltip = server.get("/object_info/SimpleGVRModelLoader")["SimpleGVRModelLoader"]["input"][
        "required"
    ]["model_name"][1]["tooltip"]  # named before anything runs
    assert (
        "In this folder now: imported_untrained.safetensors: UNTRAINED: makes a new "
        "video, no upscale" in tooltip
    )
    assert "tiny.safetensors:" not in tooltip
    trained = upscale_prompt(model="tiny_text1024.safetensors", steps=1, cfg=1.0)
    _, _, texts = server.watch(trained)
    assert not any("WARNING" in t for t in texts.get("2", []))
    assert "untrained SimpleGVR" in server.log_tail(400)


def test_latent_adain_colour_fix_runs_through_the_sampler(server):
    fixed, plain = (
        upscale_prompt(steps=2, seed=163, colour_fix="latent AdaIN"),
        upscale_prompt(steps=2, seed=163),
    )
    run_ok(server, fixed)
    run_ok(server, plain)
    a, b = saved_latent(server, fixed), saved_latent(server, plain)
    assert a.shape == b.shape and not torch.allclose(a, b)
    lr = load_latent(server.base / "input" / "lr_wan21.latent")
    ref = WAN21.normalise(
        torch.nn.functional.interpolate(lr[0].transpose(0, 1), size=(12, 16), mode="bilinear")
    )
    got = WAN21.normalise(a)[0].transpose(0, 1)  # [T, C, H, W]
    torch.testing.assert_close(got.mean((0, 2, 3)), ref.mean((0, 2, 3)), rtol=0, atol=1e-3)


def test_the_colour_fix_node_takes_the_reference_colours(server):
    """Two flat clips through SimpleGVR Colour Fix: the output has the reference's colour (wavelet:
    its low band)."""
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 3, "color": 0x204080},
        },
        "2": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 3, "color": 0x806040},
        },
        "3": {
            "class_type": "SimpleGVRColourFix",
            "inputs": {"images": ["1", 0], "reference": ["2", 0], "method": "wavelet", "levels": 5},
        },
        "4": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": "it/colourfix"},
        },
    }
    entry = run_ok(server, prompt)
    images = entry["outputs"]["4"]["images"]
    assert len(images) == 3
    import cv2

    img = cv2.imread(str(server.base / "output" / images[0]["subfolder"] / images[0]["filename"]))[
        ..., ::-1
    ]
    assert (
        img.shape == (64, 64, 3)
        and np.abs(img.reshape(-1, 3).mean(0) - [0x80, 0x60, 0x40]).max() <= 1
    )


def test_wrong_inputs_fail_with_our_message_and_the_server_keeps_running(server):
    err = run_error(server, upscale_prompt(latent="lr_wan22.latent"))
    assert err["node_type"] == "SimpleGVRLatentUpsampler" and err["exception_type"] == "ValueError"
    assert "48 channels (a wan22 latent?)" in err["exception_message"]
    assert "'wan21' latents with 16 channels" in err["exception_message"]

    err = run_error(server, upscale_prompt(model="tiny.safetensors", conditioned=True))
    assert err["node_type"] == "SimpleGVRSampler"
    assert (
        f"context has shape (1, 2, {LOTUS_WIDTH}): expected [B, L, 32]" in err["exception_message"]
    )
    # validated once, in the core (prepare_context)
    assert "text_dim is 32" in err["exception_message"]

    image = upscale_prompt()
    image["1"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    err = run_error(server, image)
    assert (
        err["node_type"] == "SimpleGVRLatentUpsampler"
        and "image latent" in err["exception_message"]
    )

    small = upscale_prompt()
    small["3"]["inputs"].update(width=32, height=32)
    err = run_error(server, small)
    assert "smaller than the input" in err["exception_message"]

    bad_file = upscale_prompt(model="simplegvr_wan21_1080p.safetensors")  # the empty stand-in file
    err = run_error(server, bad_file)
    assert (
        err["node_type"] == "SimpleGVRModelLoader"
        and "not a readable safetensors file" in err["exception_message"]
    )

    assert server.alive()
    prompt = upscale_prompt(seed=11, steps=2)
    run_ok(server, prompt)
    assert saved_latent(server, prompt).shape == (1, 16, 3, 12, 16)


def test_cancel_stops_the_sampler_between_steps(server):
    prompt = upscale_prompt(steps=1000, cfg=3.0)
    # 48x64 latent: ~1000 steps take minutes on a CPU
    prompt["3"]["inputs"].update(width=512, height=384)
    status, body = server.queue(prompt)
    assert status == 200, body
    pid = body["prompt_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.get("/queue")["queue_running"]:
        time.sleep(0.1)
    time.sleep(2.0)  # inside the sampling loop by now
    t0 = time.monotonic()
    server.post("/interrupt", {})
    entry = server.wait(pid, timeout=120)
    assert time.monotonic() - t0 < 30
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    interrupted = dict(entry["status"]["messages"])["execution_interrupted"]
    assert interrupted["node_type"] == "SimpleGVRSampler"
    run_ok(server, upscale_prompt(seed=12, steps=1))


# --- example workflows ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_converts_through_live_object_info_and_the_server_accepts_it(server, path):
    wf = json.loads(path.read_text(encoding="utf-8"))
    info = server.get("/object_info")
    # strict: the stand-in files are listed
    prompt, problems = to_api(wf, info, files_optional=False)
    assert problems == []
    comfy_cli = os.environ.get("COMFY_CLI")
    if comfy_cli:  # the conversion `comfy run --workflow` does gives the same prompt
        r = subprocess.run(
            [
                comfy_cli,
                "--skip-prompt",
                "run",
                "--workflow",
                str(path),
                "--print-prompt",
                "--host",
                "127.0.0.1",
                "--port",
                str(server.port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        theirs = json.loads(r.stdout)["data"]["prompt"]
        assert {k: (v["class_type"], v["inputs"]) for k, v in theirs.items()} == {
            k: (v["class_type"], v["inputs"]) for k, v in prompt.items()
        }
    status, body = server.queue(prompt)
    # the server's own validation of every input
    assert status == 200 and body.get("node_errors") == {}, body
    entry = server.wait(body["prompt_id"], timeout=300)
    if path.name == "Flow Degrade preview.json":
        assert entry["status"]["status_str"] == "success", execution_error(entry)
        videos = list((server.base / "output").rglob("simplegvr_flow_degraded*.mp4"))
        assert videos, list((server.base / "output").rglob("*"))
        import av

        with av.open(str(videos[0])) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 33 and frames[0].shape == (360, 640, 3)  # the shipped example clip
        images = [o for o in entry["outputs"].values() if "images" in o]
        assert images and len(images[0]["images"]) == 33  # the PreviewImage frames
    # everything validates; the run stops at the first loader, whose model file is an empty stand-in
    else:
        err = execution_error(entry)
        assert err is not None and err["node_type"] in LOADERS, err


# --- every family the pack promises: a checkpoint of that family upscales a latent of that family
@pytest.mark.parametrize("family", sorted(FAMILY))
def test_a_family_checkpoint_upscales_a_core_latent_of_its_family(server, family):
    config, fmt, hw = FAMILY[family]
    prompt = upscale_prompt(
        model=f"tiny_{family}.safetensors", latent=f"lr_{family}_core.latent", seed=7, steps=2
    )
    # latent 12 x 16
    prompt["3"]["inputs"].update(width=8 * fmt.spatial_ratio * 2, height=6 * fmt.spatial_ratio * 2)
    run_ok(server, prompt)
    out = saved_latent(server, prompt)
    # the family's channels; 12 x 16 latent = its ratio x the pixels
    assert out.shape == (1, fmt.channels, 3, 12, 16)
    m = load_checkpoint(server.base / "models" / "simplegvr" / f"tiny_{family}.safetensors")
    assert m.latent_format is fmt
    lr = load_latent(server.base / "input" / f"lr_{family}_core.latent")
    cond = build_condition(
        m, lr, width=16 * fmt.spatial_ratio, height=12 * fmt.spatial_ratio, noise_level=0.4, seed=3
    )
    torch.testing.assert_close(
        out, sample(m, cond, steps=2, cfg=3.0, shift=5.0, seed=7), rtol=0, atol=1e-4
    )
    # the workflows' size rule on the family's grid: short edge 200 px is 12.5 latent pixels on Wan
    # 2.2's /16 grid, rounded up to 13 (208 px); 25 on CogVideoX's /8; the square LR latent stays
    # square
    prompt = upscale_prompt(
        model=f"tiny_{family}.safetensors",
        latent=f"lr_{family}_core.latent",
        seed=7,
        steps=1,
        size={"resize_by": "short edge", "edge": 200},
    )
    run_ok(server, prompt)
    side = {16: 13, 8: 25}[fmt.spatial_ratio]
    assert saved_latent(server, prompt).shape == (1, fmt.channels, 3, side, side)


def test_a_latent_of_another_family_is_named_in_the_error(server):
    # into the Wan 2.1 tiny checkpoint
    err = run_error(server, upscale_prompt(latent="lr_cogvideox_core.latent"))
    assert err["node_type"] == "SimpleGVRLatentUpsampler" and err["exception_type"] == "ValueError"
    assert "looks like a raw CogVideoX latent" in err["exception_message"]
    assert (
        "works in 'wan21' (Wan 2.1 VAE: 16 channels, /8 spatial) latents"
        in err["exception_message"]
    )
    err = run_error(
        server, upscale_prompt(model="tiny_cogvideox.safetensors", latent="lr_wan21.latent")
    )
    assert (
        "looks like a raw Wan 2.1 latent" in err["exception_message"]
        and "'cogvideox_2b'" in err["exception_message"]
    )
    err = run_error(
        server, upscale_prompt(model="tiny_wan22.safetensors", latent="lr_wan21.latent")
    )
    assert "16 channels (a wan21 / cogvideox_2b / cogvideox_5b latent?)" in err["exception_message"]
    assert server.alive()


def test_cogvideox_t2v_half_of_the_workflow_runs_on_a_converted_transformer(server):
    """UNETLoader reads what convert-cogvideox writes; the workflow's CogVideoX sampling (CFGGuider,
    BasicScheduler, RandomNoise, VOIDSampler, SamplerCustomAdvanced) hands its LATENT to SimpleGVR,
    which saves a CogVideoX latent."""
    p = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": COG_UNET, "weight_dtype": "default"},
        },
        "2": {"class_type": "LotusConditioning", "inputs": {}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "4": {
            "class_type": "CFGGuider",
            "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 6.0},
        },
        "5": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0},
        },
        "6": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
        "7": {"class_type": "VOIDSampler", "inputs": {}},
        "8": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 1},
        },
        "9": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["6", 0],
                "guider": ["4", 0],
                "sampler": ["7", 0],
                "sigmas": ["5", 0],
                "latent_image": ["8", 0],
            },
        },
        "10": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["9", 0], "filename_prefix": "it/cogvideox_t2v"},
        },
    }
    gvr = upscale_prompt(model="tiny_cogvideox.safetensors", prefix="it/cogvideox_gvr", steps=2)
    # a random transformer's latent: raw by definition
    gvr["3"]["inputs"].update(samples=["9", 0], latent_scale="raw")
    del gvr["1"]
    for node in gvr.values():  # the SimpleGVR nodes join under ids g2..g5, their links re-pointed
        for name, v in node["inputs"].items():
            if isinstance(v, list) and v[0] in gvr:
                node["inputs"][name] = [f"g{v[0]}", v[1]]
    p.update({f"g{k}": v for k, v in gvr.items()})
    run_ok(server, p)
    t2v = sorted((server.base / "output").glob("it/cogvideox_t2v_*.latent"))
    hr = sorted((server.base / "output").glob("it/cogvideox_gvr_*.latent"))
    assert len(t2v) == 1 and len(hr) == 1
    # CogVideoX: 16 channels, /8, (9-1)/4+1 frames
    assert load_latent(t2v[0]).shape == (1, 16, 3, 8, 8)
    out = load_latent(hr[0])
    assert out.shape == (1, 16, 3, 12, 16) and torch.isfinite(out).all()


COMFY_COGVIDEOX_FORWARD = """
import sys
model_path, inputs, out, scale = sys.argv[1:5]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import torch, comfy.sd
from safetensors.torch import load_file, save_file
patcher = comfy.sd.load_diffusion_model(model_path)  # what UNETLoader calls
dm = patcher.model.diffusion_model.float()
if scale != "default":
    dm.spatial_interpolation_scale = float(scale)
t = load_file(inputs)
with torch.no_grad():
    y = dm(t["x"], t["timestep"], t["context"])
scale_factor = torch.tensor(patcher.model.latent_format.scale_factor)
save_file({"y": y.float().contiguous(), "scale_factor": scale_factor}, out)
"""


def test_comfyuis_cogvideox_on_the_converted_file_computes_the_diffusers_transformer(tmp_path):
    """The key conversion is right: ComfyUI's own CogVideoX module, loaded the way UNETLoader loads
    it, gives the diffusers transformer's output at the base grid (60x90 latent = 720x480), with
    RoPE positions in unit steps as diffusers and SAT use. (v0.22 scales them by
    spatial_interpolation_scale = 1.875 for CogVideoX 1.0; see README.)"""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    from simplegvr_core.weights import convert_cogvideox

    ref = randomize_(tiny_cogvideox_transformer(text_dim=32, seed=1), seed=1, std=0.2)
    # sharp attention, so that the RoPE positions matter (29% of the output here)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if ".norm_q.weight" in name or ".norm_k.weight" in name:
                param.mul_(20)
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        str(tmp_path / "diffusers.safetensors"),
    )
    convert_cogvideox(tmp_path / "diffusers.safetensors", tmp_path / "comfy.safetensors")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 60, 90, generator=g)
    ctx = torch.randn(1, 11, 32, generator=g)
    timestep = torch.tensor([321.0])
    save_file({"x": x, "timestep": timestep, "context": ctx}, str(tmp_path / "inputs.safetensors"))
    grid = (30, 45)  # as CogVideoXPipeline._prepare_rotary_positional_embeddings does for 720x480
    crops = get_resize_crop_region_for_grid(grid, 45, 30)
    rope = get_3d_rotary_pos_embed(
        embed_dim=64, crops_coords=crops, grid_size=grid, temporal_size=2
    )
    with torch.no_grad():
        expected = ref(
            hidden_states=x.permute(0, 2, 1, 3, 4),
            encoder_hidden_states=ctx,
            timestep=timestep,
            image_rotary_emb=rope,
            return_dict=False,
        )[0].permute(0, 2, 1, 3, 4)
    comfy_dir, python = FOUND
    env = dict(os.environ, PYTHONPATH=str(comfy_dir))
    errs = {}
    for scale in ("1.0", "default"):
        out = tmp_path / f"out_{scale}.safetensors"
        r = subprocess.run(
            [
                str(python),
                "-c",
                COMFY_COGVIDEOX_FORWARD,
                str(tmp_path / "comfy.safetensors"),
                str(tmp_path / "inputs.safetensors"),
                str(out),
                scale,
            ],
            cwd=comfy_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        from safetensors.torch import load_file

        got = load_file(str(out))
        # a 2b-sized (2 heads) model: CogVideoX's 1.15258426
        assert float(got["scale_factor"]) == pytest.approx(COGVIDEOX_2B.scale)
        errs[scale] = float((got["y"] - expected).abs().max() / expected.abs().max())
    assert errs["1.0"] < 1e-4, errs
    print(
        f"ComfyUI v0.22 CogVideoX vs diffusers: max rel. error {errs['1.0']:.1e} with unit RoPE "
        f"steps, {errs['default']:.2e} with its default spatial_interpolation_scale"
    )


def test_flow_degrade_reports_each_progress_step_once(server):
    wf = json.loads((REPO / "workflows" / "Flow Degrade preview.json").read_text(encoding="utf-8"))
    prompt, problems = to_api(wf, server.get("/object_info"), files_optional=False)
    assert problems == []
    node = next(k for k, v in prompt.items() if v["class_type"] == "SimpleGVRFlowDegrade")
    prompt[node]["inputs"]["seed"] = 12345  # not cached from the workflow test
    messages, _ = server.run_watching(prompt)
    assert messages[-1]["type"] == "execution_success"
    steps = [
        (m["data"]["value"], m["data"]["max"])
        for m in messages
        if m["type"] == "progress" and m["data"]["node"] == node
    ]
    values = [v for v, _ in steps]  # the server may skip some (it throttles), but never repeats one
    assert steps and all(m == 33 for _, m in steps) and values == sorted(set(values)), steps
    assert values[-1] == 33 and values.count(33) == 1, steps


# --- Ultra Flash (issue 31): the SimpleGVR half of the one-step workflow on tiny weights in their
# layout
def ultraflash_prompt(
    loader: dict, prefix: str, latent: str = "lr_uf.latent", seed: int = 7
) -> dict:
    """The workflow's SimpleGVR half, as it is saved (resize_by native, noise -1 = auto, steps 0 and
    cfg 0 = auto), from a LoadLatent: model -> Latent Upsampler -> Sampler -> SaveLatent and Fast
    Decode -> SaveImage; the Upsampler's hr_latent -> SaveLatent."""
    return {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": latent}},
        "2": loader,
        "3": {
            "class_type": "SimpleGVRLatentUpsampler",
            "inputs": {
                "model": ["2", 0],
                "samples": ["1", 0],
                "resize_by": "native",
                "edge": 1080,
                "width": 1920,
                "height": 1080,
                "scale": 2.25,
                "noise_level": -1.0,
                "seed": 0,
                "latent_scale": "auto",
            },
        },
        "4": {
            "class_type": "SimpleGVRSampler",
            "inputs": {
                "model": ["2", 0],
                "samples": ["3", 0],
                "seed": seed,
                "steps": 0,
                "cfg": 0.0,
                "shift": 5.0,
                "sampler": "euler",
                "attention": "model default",
                "memory": "auto",
                "colour_fix": "none",
                "chunk_frames": 0,
                "tile_size": 0,
                "output_scale": "same as input",
            },
        },
        "5": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["4", 0], "filename_prefix": prefix},
        },
        "6": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["3", 1], "filename_prefix": prefix + "-hr"},
        },
        "7": {
            "class_type": "SimpleGVRFastDecode",
            "inputs": {"decoder_name": TAEHV, "samples": ["4", 0], "chunk_frames": 6},
        },
        "8": {
            "class_type": "SaveImage",
            "inputs": {"images": ["7", 0], "filename_prefix": prefix + "-frames"},
        },
    }


def test_the_ultraflash_half_of_the_workflow_runs_a_converted_checkpoint_as_the_core_does(server):
    """13 latent frames of their tiny case through the workflow's settings (all auto) on the
    converted checkpoint: the HR latent equals simplegvr_core's `upscale` with everything at auto
    (itself equal to Ultra Flash's own code, tests/test_ultraflash.py), the progress bar counts the
    3 streaming groups, the node texts lead with one short line, hr_latent is the condition, and
    Fast Decode's frames are the tiny decoder's on the normalised latent."""
    from simplegvr_core.pipeline import upscale
    from simplegvr_core.weights import load_tiny_decoder

    loader = {
        "class_type": "SimpleGVRModelLoader",
        "inputs": {"model_name": UF_TINY, "dtype": "fp32", "attention": "checkpoint default"},
    }
    prompt = ultraflash_prompt(loader, "it/uf_converted")
    messages, _, texts = server.watch(prompt)
    assert messages[-1]["type"] == "execution_success", messages[-1]
    out = saved_latent(server, prompt)
    m = load_checkpoint(server.base / "models" / "simplegvr" / UF_TINY)
    lr = load_latent(server.base / "input" / "lr_uf.latent")
    ref = upscale(m, lr, seed=7)  # size, noise level, steps and cfg: auto
    assert out.shape == (1, 16, 13, 18, 26)  # 9x13 -> the upsampler's native 2x
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    steps = [
        (m_["data"]["value"], m_["data"]["max"])
        for m_ in messages
        if m_["type"] == "progress" and m_["data"]["node"] == "4"
    ]
    assert steps == [(1, 3), (2, 3), (3, 3)]  # one step per group of 6, 6, 1 latent frames
    assert (
        texts["4"][-1].split("\n")[0] == "one-step (auto) Ultra Flash, 13 latent frames in 3 groups"
    )
    assert texts["3"][-1].split("\n")[0] == "104x72 -> 208x144 px, 13 latent frames"
    assert texts["2"][-1].split("\n")[0].startswith("one-step Ultra Flash, ")
    hr = load_latent(sorted((server.base / "output").glob("it/uf_converted-hr_*.latent"))[0])
    cond = build_condition(m, lr, noise_level="auto", seed=0)
    torch.testing.assert_close(hr, WAN21.denormalise(cond.c), rtol=0, atol=1e-4)
    import cv2

    pngs = sorted((server.base / "output").glob("it/uf_converted-frames_*.png"))
    assert len(pngs) == 4 * 13 - 3  # 49 frames at 8x the HR latent
    dec = load_tiny_decoder(server.base / "models" / "vae_approx" / TAEHV)
    frames = dec.decode(WAN21.normalise(out))[0].permute(1, 2, 3, 0).numpy()  # [49, 144, 208, 3]
    for k in (0, 24, 48):
        png = cv2.imread(str(pngs[k]))[..., ::-1].astype(np.float32)
        # SaveImage truncates
        assert png.shape == (144, 208, 3) and np.abs(png - frames[k] * 255).max() < 1.01
    assert "49 frames 208x144 px from 13 latent frames" in texts["7"][-1]
    fast = [
        (m_["data"]["value"], m_["data"]["max"])
        for m_ in messages
        if m_["type"] == "progress" and m_["data"]["node"] == "7"
    ]
    assert fast and fast[-1] == (3, 3)  # a bar per chunk of 6 latent frames


def test_load_ultra_flash_model_reads_their_pth_files_and_samples_as_the_converted_checkpoint(
    server,
):
    """Their two .pth files (the upsampler wrapped under 'model', from
    models/latent_upscale_models/) through Load Ultra Flash Model give the converted checkpoint's
    result; each list shows only its kind."""
    import ultraflash_tiny as uft

    info = server.get("/object_info/SimpleGVRUltraFlashLoader")["SimpleGVRUltraFlashLoader"][
        "input"
    ]["required"]
    dits, ups = info["dit_name"][1]["options"], info["upsampler_name"][1]["options"]
    assert (
        UF_DIT in dits
        and UF_UP not in dits
        and UF_TINY not in dits
        and "tiny.safetensors" not in dits
    )
    assert UF_UP in ups and UF_DIT not in ups
    decoders = server.get("/object_info/SimpleGVRFastDecode")["SimpleGVRFastDecode"]["input"][
        "required"
    ]["decoder_name"][1]["options"]
    assert TAEHV in decoders and UF_DIT not in decoders
    heads = uft.tiny_configs()[UF_CASE]["dit"]["num_heads"]
    loader = {
        "class_type": "SimpleGVRUltraFlashLoader",
        "inputs": {
            "dit_name": UF_DIT,
            "upsampler_name": UF_UP,
            "dtype": "fp32",
            "num_heads": heads,
        },
    }
    prompt = ultraflash_prompt(loader, "it/uf_pth", seed=8)
    run_ok(server, prompt)
    converted = ultraflash_prompt(
        {
            "class_type": "SimpleGVRModelLoader",
            "inputs": {"model_name": UF_TINY, "dtype": "fp32", "attention": "checkpoint default"},
        },
        "it/ufref",
        seed=8,
    )
    run_ok(server, converted)
    torch.testing.assert_close(
        saved_latent(server, prompt), saved_latent(server, converted), rtol=0, atol=1e-5
    )
    bad = dict(loader, inputs=dict(loader["inputs"], num_heads=0))  # dim 64 is no released size
    err = run_error(server, ultraflash_prompt(bad, "it/uf_bad"))
    assert (
        err["node_type"] == "SimpleGVRUltraFlashLoader"
        and "Wan dim=64 is not a released size" in err["exception_message"]
    )


def test_fast_decode_refuses_a_latent_of_another_family(server):
    prompt = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "lr_cogvideox_core.latent"}},
        "2": {
            "class_type": "SimpleGVRFastDecode",
            "inputs": {"decoder_name": TAEHV, "samples": ["1", 0], "chunk_frames": 6},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    err = run_error(server, prompt)
    assert (
        err["node_type"] == "SimpleGVRFastDecode"
        and "looks like a raw CogVideoX latent" in err["exception_message"]
    )
    prompt["1"]["inputs"]["latent"] = "lr_wan22.latent"
    err = run_error(server, prompt)
    assert "48 channels, but this tiny decoder decodes 'wan21'" in err["exception_message"]


def test_cancel_stops_the_ultraflash_sampler_within_a_group(server):
    """18 latent frames at 60x104 (Ultra Flash's 480p latent; 3 streaming groups of ~8 s each for
    the tiny model on a CPU) cancelled a few seconds into sampling: interrupted in the Sampler, long
    before the clip's ~24 s (the core checks after every DiT block; tests/test_nodes.py counts the
    blocks), and nothing saved."""
    save_latent(
        WAN21.denormalise(
            torch.randn(1, 16, 18, 60, 104, generator=torch.Generator().manual_seed(9))
        ),
        server.base / "input" / "uf_long.latent",
    )
    loader = {
        "class_type": "SimpleGVRModelLoader",
        "inputs": {"model_name": UF_TINY, "dtype": "fp32", "attention": "checkpoint default"},
    }
    prompt = ultraflash_prompt(loader, "it/uf_cancel", latent="uf_long.latent", seed=99)
    for k in ("6", "7", "8"):
        del prompt[k]
    status, body = server.queue(prompt)
    assert status == 200, body
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.get("/queue")["queue_running"]:
        time.sleep(0.1)
    time.sleep(6.0)  # the upsampler takes about a second; then inside the first group
    t0 = time.monotonic()
    server.post("/interrupt", {})
    entry = server.wait(body["prompt_id"], timeout=120)
    waited = time.monotonic() - t0
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    assert (
        dict(entry["status"]["messages"])["execution_interrupted"]["node_type"]
        == "SimpleGVRSampler"
    )
    assert waited < 10, waited  # the clip would take ~24 s more
    assert not list((server.base / "output").glob("it/uf_cancel_*.latent"))
