"""The README's first screen says what works today: its commands are the ones CI and the package
define, and every size, count and figure on it is the code's or the committed results'. A change
that makes one of them false fails here, so the first screen cannot drift from what the pack
does."""

import json
import re
import sys
from pathlib import Path

import torch
import ultraflash_tiny as uft

from simplegvr_core import SimpleGVR, demo, load_checkpoint
from simplegvr_core.demo import clips
from simplegvr_core.weights import (
    ULTRAFLASH_ATTENTION,
    ULTRAFLASH_METADATA,
    ULTRAFLASH_RECIPE,
    ultraflash_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# the first screen: the commands, what works today, the pitch
FIRST = README[: README.index("## What is here")]
FLAT = " ".join(FIRST.split())  # its text with the line breaks undone
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", FIRST, re.S)
    assert block and FIRST.index("```bash") < 200, "the README starts with its commands"
    return [line.split("  #")[0].strip() for line in block.group(1).strip().splitlines()]


def test_the_first_two_commands_install_and_run_the_demo_then_run_the_tests_as_ci_does():
    install, tests = _commands()
    url = PYPROJECT["project"]["urls"]["Repository"]
    assert install.startswith(f"git clone {url} && cd {url.rsplit('/', 1)[1]} && ")
    assert 'pip install -e ".[demo]"' in install and install.endswith("&& simplegvr demo")
    assert "torch==2.13.0" in install  # what .ci/run installs first: a CPU wheel there
    assert PYPROJECT["project"]["scripts"]["simplegvr"] == "simplegvr_core.app:main"
    demo_extra = " ".join(PYPROJECT["project"]["optional-dependencies"]["demo"])
    # the clips, their reader
    assert "comfyui-workflow-templates-media-video" in demo_extra and "Pillow" in demo_extra
    # never installs torch
    assert not any(r.startswith("torch") for r in PYPROJECT["project"]["dependencies"])
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].replace("python3", "python") == tests.split("&& ")[-1] == "python -m pytest tests"
    assert 'pip install -e ".[dev,train]"' in tests and '-e ".[dev,train]"' in "\n".join(ci)


def test_the_demo_line_states_the_demos_scale_and_committed_figures():
    assert f"{clips.FRAMES} frames" in FLAT
    assert f"{clips.LR_SIZE}×{clips.LR_SIZE} → {clips.HR_SIZE}×{clips.HR_SIZE} px" in FLAT
    assert f"{len(clips.TEST)} real AI-generated clips it never saw" in FLAT
    manifest = json.loads((demo.ASSETS / demo.MANIFEST).read_text())
    # the model `simplegvr demo` runs
    default = load_checkpoint(demo.ASSETS / manifest["student"]["file"])
    assert manifest["student"]["default"] and manifest["test_margins_model"] == "student"
    assert f"{sum(p.numel() for p in default.parameters()) / 1e6:.1f}M-parameter SimpleGVR" in FLAT
    margin = manifest["test_margins"]["pixel_bicubic"]["psnr"]
    assert f"+{margin:.3f} dB PSNR over decode + bicubic" in FLAT
    interval = re.search(r"95% interval \+(\d\.\d+) to \+(\d\.\d+)", FLAT)
    assert (
        interval
        and f"+{margin:.3f} [+{interval.group(1)}, +{interval.group(2)}]"
        in (REPO / "RESULTS.md").read_text()
    )


def test_the_ultraflash_line_is_what_the_importer_and_the_workflow_do():
    # their real files' shapes: the 1.3B DiT with 32 input channels, the v1 upsampler
    with torch.device("meta"):
        model = SimpleGVR(ultraflash_config(*uft.real_size_files()))
    lr_h, lr_w = 480 // 8, 832 // 8
    hr_h, hr_w = model.upsampler.native_size((lr_h, lr_w))
    assert f"832×480 → {hr_w * 8}×{hr_h * 8}" in FLAT and (hr_w * 8, hr_h * 8) == (1664, 960)
    assert f"streamed {ULTRAFLASH_ATTENTION['causal_group_frames']} latent frames at a time" in FLAT
    assert ULTRAFLASH_RECIPE.steps == 1 and "(one step, Apache-2.0)" in FLAT
    assert ULTRAFLASH_METADATA["license"].startswith("apache-2.0")
    sys.path.insert(0, str(REPO))
    import ast

    from nodes import glue  # (runtime.py needs ComfyUI: its folder name is read from its source)

    runtime = ast.parse((REPO / "nodes" / "runtime.py").read_text())
    folder = next(
        n.value.value
        for n in runtime.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MODEL_FOLDER"
    )

    for name in (glue.ULTRAFLASH_DIT, glue.ULTRAFLASH_UPSAMPLER, glue.TINY_DECODER):
        assert f"`{name}`" in FLAT
    assert f"`ComfyUI/models/{folder}/`" in FLAT
    workflow = re.search(r"`workflows/([^`]+\.json)`", FLAT).group(1)
    graph = json.loads((REPO / "workflows" / workflow).read_text())
    types = {n["type"] for n in graph["nodes"]}
    assert {"SimpleGVRUltraFlashLoader", "SimpleGVRSampler", "SimpleGVRFastDecode"} <= types
    # the claim stays honest until someone has
    assert "not yet run on the real weights here" in FLAT


def test_the_first_screen_says_no_real_size_simplegvr_weights_exist():
    assert not any(
        p.suffix == ".safetensors" and p.stat().st_size > 100 << 20
        for p in REPO.rglob("*.safetensors")
    )
    assert "No SimpleGVR weights at real size yet" in FLAT
