"""The demo's weights and their manifest: where they live, how a set is checked, which model
`simplegvr demo` runs.

`assets/` holds the codec (`demo_vae.safetensors`), the teacher (`demo_simplegvr.safetensors`), the
one-step default model (`demo_student.safetensors`) and `demo_manifest.json`: how they were made,
the sampling settings chosen on the validation split, and the SHA-256 of every file, so that a mixed
set (an interrupted rebuild, a hand-copied file) is refused. Only the lab's demo stage writes this
folder (`training/demo`, `install_assets` there); everything here reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
# the codec with Wan 2.1's latent contract (training/train_vae.py)
VAE_FILE = "demo_vae.safetensors"
MODEL_FILE = "demo_simplegvr.safetensors"  # the teacher: the flow-matching model
STUDENT_FILE = "demo_student.safetensors"  # the one-step default model
MANIFEST = "demo_manifest.json"
ASSET_FILES = (VAE_FILE, MODEL_FILE, STUDENT_FILE)  # the set the manifest vouches for, by SHA-256


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(assets: str | os.PathLike | None = None) -> dict:
    """The assets folder's manifest ({} when it has none), after checking that every file it lists
    by hash is the file it lists: ValueError for a mixed set (an interrupted rebuild, a hand-copied
    file)."""
    from ..files import parse_json

    a = Path(assets) if assets else ASSETS
    path = a / MANIFEST
    if not path.is_file():
        return {}
    manifest = parse_json(path.read_text(), f"demo manifest {str(path)!r}")
    if not isinstance(manifest, dict):
        raise ValueError(f"demo manifest {str(path)!r} is not a JSON object")
    for name, digest in (manifest.get("files") or {}).items():
        f = a / name
        if not f.is_file() or file_sha256(f) != digest:
            raise ValueError(
                f"the demo weights in {str(a)!r} are not the set their manifest records: {name} "
                f"{'is missing' if not f.is_file() else 'differs'} (an interrupted rebuild?); "
                f"rebuild them with `simplegvr demo --retrain`, or restore the folder"
            )
    return manifest


def load_assets(assets: str | os.PathLike | None = None):
    """(model, vae, manifest) from the assets folder; ValueError naming what is missing or does not
    belong."""
    from ..checkpoint import load_checkpoint
    from ..vae import VideoVAE

    a = Path(assets) if assets else ASSETS
    for name in (VAE_FILE, MODEL_FILE):
        if not (a / name).is_file():
            raise ValueError(
                f"demo weights {str(a / name)!r} are missing: rebuild them with `simplegvr "
                f"demo --retrain`"
            )
    manifest = read_manifest(a)
    return load_checkpoint(a / MODEL_FILE).eval(), VideoVAE.load("file", a / VAE_FILE), manifest


def load_model(assets: str | os.PathLike | None = None, teacher: bool = False):
    """(model, vae, sampling) that `simplegvr demo` runs: the one-step student when the manifest
    names it the default (`experiments/onestep_results.py` builds it, chosen on the validation
    split) and `teacher` is False, else the teacher with the sampling settings `tune` chose.
    sampling = {"model": "student" | "teacher", "steps", "shift", "noise_level"}."""
    from ..checkpoint import load_checkpoint

    a = Path(assets) if assets else ASSETS
    teacher_model, vae, manifest = load_assets(a)
    st = manifest.get("student") or {}
    if not teacher and st.get("default") and (a / STUDENT_FILE).is_file():
        return (
            load_checkpoint(a / STUDENT_FILE).eval(),
            vae,
            {
                "model": "student",
                "steps": int(st["steps"]),
                "shift": float(st["shift"]),
                "noise_level": float(st.get("noise_level", 0.0)),
            },
        )
    return (
        teacher_model,
        vae,
        {
            "model": "teacher",
            "steps": int(manifest.get("steps", 2)),
            "shift": float(manifest.get("shift", 3.0)),
            "noise_level": float(manifest.get("noise_level", 0.0)),
        },
    )
