"""Registry packaging: the licence text, accelerator classifiers comfy-cli recognises, an icon URL,
and a .comfyignore that keeps tests, benchmarks and tools out of the node pack while training/
ships."""

import struct
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# comfy-cli 1.23 registry/config_parser.py: any other "Environment ::" classifier drops all
# accelerators
RECOGNISED_ACCELERATORS = {
    "GPU :: NVIDIA CUDA",
    "GPU :: AMD ROCm",
    "GPU :: Intel Arc",
    "NPU :: Huawei Ascend",
    "GPU :: Apple Metal",
}


def test_a_license_file_holds_the_apache_2_text_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert (
        "Apache License" in text
        and "Version 2.0, January 2004" in text
        and "END OF TERMS AND CONDITIONS" in text
    )
    assert PYPROJECT["project"]["license"] == {"file": "LICENSE"}


def test_accelerator_classifiers_are_all_recognised_and_name_cuda():
    env = [
        c.removeprefix("Environment :: ")
        for c in PYPROJECT["project"]["classifiers"]
        if c.startswith("Environment ::")
    ]
    assert set(env) <= RECOGNISED_ACCELERATORS, set(env) - RECOGNISED_ACCELERATORS
    assert {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm"} <= set(env)


def test_the_icon_is_a_url_to_a_png_in_the_repository_within_the_registry_limit():
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    repo = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    assert icon == f"https://raw.githubusercontent.com/{repo}/main/icon.png"
    data = (REPO / "icon.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert 64 <= w <= 800 and 64 <= h <= 400


def _ignored(path: str, patterns: list[str]) -> bool:
    """gitignore matching for anchored patterns only (/name or /name/), which is all .comfyignore
    may use."""
    for p in patterns:
        p = p.lstrip("/")
        if p.endswith("/") and path.startswith(p) or path == p:
            return True
    return False


def test_comfyignore_keeps_tests_benchmarks_and_tools_out_and_ships_training():
    patterns = [
        ln.strip()
        for ln in (REPO / ".comfyignore").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert all(p.startswith("/") and not any(ch in p for ch in "*?[!") for p in patterns), patterns
    try:
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: comfy-cli packs `git ls-files`")
    tracked = [t for t in tracked if t and (REPO / t).exists()]
    packed = [t for t in tracked if not _ignored(t, patterns)]
    assert not [
        t
        for t in packed
        if t.startswith(("tests/", "benchmarks/", "experiments/", "tools/", ".ci/"))
    ]
    for needed in (
        "__init__.py",
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "requirements.txt",
        "nodes/extension.py",
        "simplegvr_core/pipeline.py",
        "training/train.py",
        "training/configs/stage1_classic_17f.toml",
        "workflows/input/simplegvr_example.mp4",
        "locales/en/main.json",
    ):
        assert needed in packed, needed
    assert any(t.startswith("workflows/") and t.endswith(".jpg") for t in packed)
    try:  # comfy-cli's own matcher, where it is installed
        import pathspec
    except ImportError:
        return
    import warnings

    # comfy-cli 1.23 uses the "gitwildmatch" name that pathspec 1.x deprecates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    assert [t for t in tracked if not spec.match_file(t)] == packed


def test_the_readme_states_the_size_of_the_pack_it_makes():
    """The README's pack size is what zipping the files `comfy node pack` takes gives (to 0.1
    MB)."""
    import io
    import re
    import zipfile

    patterns = [
        ln.strip()
        for ln in (REPO / ".comfyignore").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    try:
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: comfy-cli packs `git ls-files`")
    packed = [t for t in tracked if t and (REPO / t).is_file() and not _ignored(t, patterns)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for t in packed:
            z.write(REPO / t, t)
    stated = re.search(
        r"the pack is a ([0-9.]+) MB zip", (REPO / "README.md").read_text().replace("\n", " ")
    )
    assert stated, "the README no longer states the pack's size"
    assert float(stated.group(1)) == pytest.approx(buf.tell() / 1e6, abs=0.1)
