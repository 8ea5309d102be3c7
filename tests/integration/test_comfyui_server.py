"""The pack inside a real ComfyUI server (v0.22): node registration, prompts, errors, example workflows.

Runs only when COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (the Python of its environment, with
this pack's requirements.txt installed) are set; skipped otherwise (CI has no ComfyUI). It installs the
pack into a temporary base directory, starts `main.py --cpu` on 127.0.0.1 with `--base-directory` there,
and stops the server when done. Optional: COMFY_CLI=path/to/comfy also checks comfy-cli's conversion of
the example workflows. SIMPLEGVR_RECORD_OBJECT_INFO=1 rewrites tests/data/simplegvr_object_info.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfyui_server import OUR_NODES, REPO, ComfyServer, comfyui_from_env, execution_error, install_pack, our_object_info  # noqa: E402

FOUND = comfyui_from_env()
if FOUND is None:
    pytest.skip("set COMFYUI_DIR and COMFYUI_PYTHON to run the ComfyUI integration tests", allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from comfy_workflows import to_api  # noqa: E402
from helpers import randomize_  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from simplegvr_core import SimpleGVR, get_config, load_checkpoint, save_checkpoint  # noqa: E402
from simplegvr_core.latent_formats import WAN21  # noqa: E402
from simplegvr_core.latent_io import load_latent, save_latent  # noqa: E402
from simplegvr_core.pipeline import build_condition, sample  # noqa: E402

RECORDED = REPO / "tests" / "data" / "simplegvr_object_info.json"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
VIDEO = "simplegvr_example.mp4"
LOTUS_WIDTH = 1024  # LotusConditioning: a core node that makes a CONDITIONING without any model file
# Where the example workflows' loaders look for their files.
LOADER_FOLDERS = {("UNETLoader", "unet_name"): "diffusion_models", ("CLIPLoader", "clip_name"): "text_encoders",
                  ("VAELoader", "vae_name"): "vae", ("SimpleGVRModelLoader", "model_name"): "simplegvr"}
LOADERS = {"UNETLoader", "CLIPLoader", "VAELoader", "SimpleGVRModelLoader"}


def tiny(path: Path, text_dim: int = 32, seed: int = 0) -> Path:
    cfg = get_config("tiny").to_dict()
    cfg["dit"]["text_dim"] = text_dim
    save_checkpoint(randomize_(SimpleGVR.from_config(cfg), seed=seed, std=0.05), path)
    return path


def write_video(path: Path, frames: int = 9, h: int = 64, w: int = 96) -> None:
    """A square moving right over a gradient: motion for the flow-guided degradation to find."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "12"}
        for t in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 1] = np.linspace(0, 200, w, dtype=np.uint8)[None]
            img[20:44, 6 + 6 * t:30 + 6 * t] = (230, 40, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


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
    save_file({"blocks.0.block.0.conv.weight": torch.zeros(1)}, str(models / "latent_upscale_models" / "not_ours.safetensors"))
    # empty stand-ins for the example workflows' model files: their names then validate, loading them fails
    for wf in WORKFLOWS:
        for node in json.loads(wf.read_text(encoding="utf-8"))["nodes"]:
            for (cls, _), folder in LOADER_FOLDERS.items():
                if node["type"] == cls:
                    (models / folder / node["widgets_values"][0]).touch()
    inp = base / "input"
    inp.mkdir()
    save_latent(WAN21.denormalise(torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))), inp / "lr_wan21.latent")
    save_latent(torch.randn(1, 48, 3, 8, 8), inp / "lr_wan22.latent")
    write_video(inp / VIDEO)
    srv = ComfyServer(*FOUND, base)
    srv.start()
    yield srv
    srv.stop()
    print(f"\nComfyUI server log tail ({srv.log_path}):\n{srv.log_tail(25)}")


_counter = iter(range(1, 10**6))


def upscale_prompt(model="tiny.safetensors", latent="lr_wan21.latent", seed=7, steps=3, cfg=3.0, conditioned=False,
                   upsample=True, prefix=None, **sampler):
    """LoadLatent -> Load SimpleGVR Model -> Latent Upsampler -> SimpleGVR Sampler -> SaveLatent (API format)."""
    p = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": latent}},
        "2": {"class_type": "SimpleGVRModelLoader", "inputs": {"model_name": model, "dtype": "auto",
                                                              "attention": "checkpoint default"}},
        "3": {"class_type": "SimpleGVRLatentUpsampler", "inputs": {
            "model": ["2", 0], "samples": ["1", 0], "resize_by": "width and height", "width": 128, "height": 96,
            "scale": 2.25, "noise_level": 0.4, "seed": 3, "latent_scale": "auto"}},
        "4": {"class_type": "SimpleGVRSampler", "inputs": {
            "model": ["2", 0], "samples": ["3", 0] if upsample else ["1", 0], "seed": seed, "steps": steps, "cfg": cfg,
            "shift": 5.0, "sampler": "euler", "attention": "model default", "tile_size": 0,
            "output_scale": "same as input", **sampler}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0],
                                                     "filename_prefix": prefix or f"it/run{next(_counter)}"}},
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
    assert live == recorded, "the nodes' schemas changed: rerun with SIMPLEGVR_RECORD_OBJECT_INFO=1 and commit tests/data"
    for node in OUR_NODES:
        assert info[node]["category"] == "SimpleGVR"
        for kind, section in info[node]["input"].items():
            if kind == "hidden":  # unique_id: what the node shows its text under, not a widget
                continue
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    assert set(info["SimpleGVRLatentUpsampler"]["input"]["required"]) == {
        "model", "samples", "resize_by", "edge", "width", "height", "scale", "noise_level", "seed", "latent_scale"}
    assert set(info["SimpleGVRSampler"]["input"]["optional"]) == {"positive", "negative"}
    assert info["SimpleGVRModelLoader"]["output"] == ["SIMPLEGVR_MODEL"]
    # models/simplegvr lists everything, models/latent_upscale_models only SimpleGVR checkpoints
    options = info["SimpleGVRModelLoader"]["input"]["required"]["model_name"][1]["options"]
    assert {"tiny.safetensors", "tiny_text1024.safetensors", "shared_tiny.safetensors"} <= set(options)
    assert "not_ours.safetensors" not in options
    templates = server.get("/workflow_templates")
    assert {p.stem for p in WORKFLOWS} <= set(templates.get("ComfyUI-SimpleGVR", [])), templates


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
    """dtype=auto picks bf16/fp16 on GPUs; before the fix neither sampled (RuntimeError: mixed dtype)."""
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
    from simplegvr_core.cli import main

    bad = torch.full((1, 16, 2, 4, 4), 1e30)
    save_latent(bad, server.base / "input" / "huge.latent")
    err = run_error(server, upscale_prompt(latent="huge.latent"))
    assert err["node_type"] == "SimpleGVRLatentUpsampler"
    cli_err = io.StringIO()
    with contextlib.redirect_stderr(cli_err):
        rc = main(["upscale", "--checkpoint", str(server.base / "models" / "simplegvr" / "tiny.safetensors"), "--latent",
                   str(server.base / "input" / "huge.latent"), "--out", str(tmp_path / "o.latent")])
    assert rc == 2
    node_msg = err["exception_message"].strip()
    cli_msg = cli_err.getvalue().strip().removeprefix("simplegvr: error: ")
    assert node_msg == cli_msg, (node_msg, cli_msg)


def test_conditioning_reaches_the_model_and_options_apply(server):
    base = dict(model="tiny_text1024.safetensors", seed=5, steps=2, cfg=2.0, attention="temporal_units", sampler="heun",
                tile_size=8)
    with_text, null = upscale_prompt(conditioned=True, **base), upscale_prompt(conditioned=False, **base)
    run_ok(server, with_text)
    run_ok(server, null)
    a, b = saved_latent(server, with_text), saved_latent(server, null)
    assert a.shape == b.shape == (1, 16, 3, 12, 16) and torch.isfinite(a).all()
    assert not torch.allclose(a, b, atol=1e-4), "the text conditioning made no difference"
    normalised = upscale_prompt(output_scale="normalised", seed=5, steps=2)
    raw = upscale_prompt(seed=5, steps=2)
    run_ok(server, normalised)
    run_ok(server, raw)
    torch.testing.assert_close(saved_latent(server, normalised), WAN21.normalise(saved_latent(server, raw)), rtol=0, atol=1e-4)


def test_sampler_reports_progress_with_latent_previews_every_step(server):
    messages, previews = server.run_watching(upscale_prompt(seed=21, steps=4, cfg=1.0))
    assert messages[-1]["type"] == "execution_success"
    steps = [(m["data"]["value"], m["data"]["max"]) for m in messages
             if m["type"] == "progress" and m["data"]["node"] == "4"]  # node 4: SimpleGVR Sampler
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert previews >= 4  # one JPEG preview per step (the server runs with --preview-method latent2rgb)


def test_a_plain_lr_latent_into_the_sampler_is_upsampled_with_the_defaults(server):
    prompt = upscale_prompt(upsample=False, steps=1, cfg=1.0, attention="sparse_local")
    run_ok(server, prompt)
    assert saved_latent(server, prompt).shape == (1, 16, 3, 135, 240)  # 1920x1080


def test_wrong_inputs_fail_with_our_message_and_the_server_keeps_running(server):
    err = run_error(server, upscale_prompt(latent="lr_wan22.latent"))
    assert err["node_type"] == "SimpleGVRLatentUpsampler" and err["exception_type"] == "ValueError"
    assert "48 channels (a wan22 latent?)" in err["exception_message"]
    assert "'wan21' latents with 16 channels" in err["exception_message"]

    err = run_error(server, upscale_prompt(model="tiny.safetensors", conditioned=True))
    assert err["node_type"] == "SimpleGVRSampler"
    assert f"positive conditioning has width {LOTUS_WIDTH}" in err["exception_message"]
    assert "text_dim 32" in err["exception_message"]

    image = upscale_prompt()
    image["1"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    err = run_error(server, image)
    assert err["node_type"] == "SimpleGVRLatentUpsampler" and "image latent" in err["exception_message"]

    small = upscale_prompt()
    small["3"]["inputs"].update(width=32, height=32)
    err = run_error(server, small)
    assert "smaller than the input" in err["exception_message"]

    bad_file = upscale_prompt(model="simplegvr_wan21_1080p.safetensors")  # the empty stand-in file
    err = run_error(server, bad_file)
    assert err["node_type"] == "SimpleGVRModelLoader" and "not a readable safetensors file" in err["exception_message"]

    assert server.alive()
    prompt = upscale_prompt(seed=11, steps=2)
    run_ok(server, prompt)
    assert saved_latent(server, prompt).shape == (1, 16, 3, 12, 16)


def test_cancel_stops_the_sampler_between_steps(server):
    prompt = upscale_prompt(steps=1000, cfg=3.0)
    prompt["3"]["inputs"].update(width=512, height=384)  # 48x64 latent: ~1000 steps take minutes on a CPU
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
    prompt, problems = to_api(wf, info, files_optional=False)  # strict: the stand-in files are listed
    assert problems == []
    comfy_cli = os.environ.get("COMFY_CLI")
    if comfy_cli:  # the conversion `comfy run --workflow` does gives the same prompt
        r = subprocess.run([comfy_cli, "--skip-prompt", "run", "--workflow", str(path), "--print-prompt", "--host",
                            "127.0.0.1", "--port", str(server.port)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        theirs = json.loads(r.stdout)["data"]["prompt"]
        assert {k: (v["class_type"], v["inputs"]) for k, v in theirs.items()} == {
            k: (v["class_type"], v["inputs"]) for k, v in prompt.items()}
    status, body = server.queue(prompt)
    assert status == 200 and body.get("node_errors") == {}, body  # the server's own validation of every input
    entry = server.wait(body["prompt_id"], timeout=300)
    if path.name == "flow_degrade_preview.json":
        assert entry["status"]["status_str"] == "success", execution_error(entry)
        videos = list((server.base / "output").rglob("simplegvr_flow_degraded*.mp4"))
        assert videos, list((server.base / "output").rglob("*"))
        import av

        with av.open(str(videos[0])) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 9 and frames[0].shape == (64, 96, 3)
        images = [o for o in entry["outputs"].values() if "images" in o]
        assert images and len(images[0]["images"]) == 9  # the PreviewImage frames
    else:  # everything validates; the run stops at the first loader, whose model file is an empty stand-in
        err = execution_error(entry)
        assert err is not None and err["node_type"] in LOADERS, err
