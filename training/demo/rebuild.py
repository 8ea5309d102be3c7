"""The lab's demo stage: rebuilds the demo's weights and is the ONE writer of
`simplegvr_core/demo/assets/`.

    python -m training.demo [--assets DIR] [--work DIR] [--quick]      (also: simplegvr demo
        --retrain, in a clone)

Stages, each a training script of this folder's parent run in this process (`STAGES`), reading the
train split only (validation for choices, never the test split): the codec (train_vae.py), LR/HR
latent pairs (make_pairs.py), the teacher (train.py), its sampling settings chosen on validation
(`tune`), then the one-step default model: clean pairs, the fitted linear base (fit_upsampler.py),
two regression stages (train.py) and its residual scale chosen on validation
(calibrate_residual.py). Everything is built in the work folder and swapped into the assets folder
as one set at the end (`install_assets`): an interrupted rebuild leaves the old set whole, and the
manifest records every file's SHA-256 so that a mixed set is refused when it is read.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from simplegvr_core.demo import (
    ASSET_FILES,
    ASSETS,
    BASELINES,
    FRAMES,
    HR_SIZE,
    LR_SIZE,
    MANIFEST,
    MODEL_FILE,
    STUDENT_FILE,
    VAE_FILE,
    evaluate,
    file_sha256,
    load_assets,
    load_clips,
    read_manifest,
)

ROOT = Path(__file__).resolve().parents[2]  # the repository: commands are recorded relative to it


# The demo model's recipe (`--retrain`): random crops of the train split (TRAIN_REPEATS per file),
# the LR drawn per clip from a clean area resize (as the demo's LR) or the paper's flow-guided
# degradation, TRAIN_STEPS steps.
TRAIN_REPEATS, DEGRADATION, TRAIN_STEPS = 24, "none,flow", 3000


# each of the one-step default model's two regression stages (`student_commands`)
STUDENT_STEPS = 1500


STUDENT_SAMPLING = {"steps": 1, "shift": 1.0, "noise_level": 0.0}


TUNE_GRID = [(st, sh, nl) for st in (1, 2, 4, 10) for sh in (1.0, 3.0) for nl in (0.0, 0.1)]


WORK_MARKER = ".simplegvr_demo_work"


def install_assets(
    assets: str | os.PathLike | None, files: dict[str, str | os.PathLike], manifest: dict
) -> dict:
    """Put new weights into the assets folder as one set: each file of `files` ({asset name: source
    path}) is copied beside its place under a temporary name, then all are renamed into place with
    the manifest last - recording every asset's SHA-256 - while SIGINT/SIGTERM/SIGHUP wait. An
    interruption before the renames leaves the old set whole; a set that still ends up mixed (a
    SIGKILL between two renames) is refused by `read_manifest`."""
    import shutil
    import signal

    from simplegvr_core.files import commit, remove_temporary, temp_path

    a = Path(assets) if assets else ASSETS
    a.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(files) - set(ASSET_FILES))
    if unknown:
        raise ValueError(f"not demo assets: {unknown} (expected names among {ASSET_FILES})")
    staged: list[tuple[Path, Path]] = []
    try:
        for name, src in files.items():
            tmp = temp_path(a / name)
            shutil.copyfile(src, tmp)
            staged.append((tmp, a / name))
        hashes = {dst.name: file_sha256(tmp) for tmp, dst in staged}
        for name in ASSET_FILES:
            if name not in hashes and (a / name).is_file():
                hashes[name] = file_sha256(a / name)
        manifest = {**manifest, "files": hashes}
        tmp = temp_path(a / MANIFEST)
        tmp.write_text(json.dumps(manifest, indent=1))
        staged.append((tmp, a / MANIFEST))
        blocked = {
            getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)
        }
        old = (
            signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            if hasattr(signal, "pthread_sigmask")
            else None
        )
        try:
            for tmp, dst in staged:
                commit(tmp, dst, replace=True)
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                remove_temporary(tmp)
    return manifest


# --- rebuilding the weights -----------------------------------------------------------------------
def write_train_list(folder: Path, repeats: int) -> Path:
    """`folder/captions.jsonl` listing every train-split clip `repeats` times (each row is one
    random crop, window and degradation in `make_pairs`); captions are empty: the demo runs with the
    null prompt."""
    from simplegvr_core.demo.clips import split_files
    from simplegvr_core.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        json.dumps({"video": str(p), "caption": ""})
        for _ in range(repeats)
        for p in split_files("train")
    ]
    return atomic_write(
        folder / "captions.jsonl", lambda tmp: Path(tmp).write_text("\n".join(rows) + "\n")
    )


def retrain_commands(assets: Path, work: Path, quick: bool = False) -> list[list[str]]:
    """The exact commands that rebuild the demo codec and teacher (run from the repository root);
    they read the train split only (train_vae.py reports on the validation split)."""
    py = sys.executable
    vae_args, steps = (["--crops", "8", "--steps", "20"], "4") if quick else ([], str(TRAIN_STEPS))
    return [
        [py, "training/train_vae.py", "--out", str(assets / VAE_FILE), *vae_args],
        _pairs_command(assets, work, "pairs", DEGRADATION),
        [
            py,
            "training/train.py",
            "--config",
            "training/configs/demo.toml",
            f"data.path={work / 'pairs'}",
            f"log.output_dir={work / 'run'}",
            f"train.steps={steps}",
            "--export",
            str(assets / MODEL_FILE),
        ],
    ]


def _pairs_command(assets: Path, work: Path, name: str, degradation: str) -> list[str]:
    return [
        sys.executable,
        "training/make_pairs.py",
        "--videos",
        str(work / "videos"),
        "--frames",
        str(FRAMES),
        "--per-shard",
        "64",
        "--hr-size",
        f"{HR_SIZE}x{HR_SIZE}",
        "--lr-size",
        f"{LR_SIZE}x{LR_SIZE}",
        "--vae",
        "file",
        "--vae-path",
        str(assets / VAE_FILE),
        "--text",
        "byte",
        "--text-dim",
        "32",
        "--out",
        str(work / name),
        "--degradation",
        degradation,
    ]


def student_commands(
    assets: Path, work: Path, out: Path, quick: bool = False
) -> list[tuple[Path, list[str]]]:
    """(output, command) of each stage of the one-step default model
    (training/configs/demo_onestep.toml; run from the repository root after `retrain_commands`,
    whose codec and none,flow pairs it reads): shards of clean LR, the fitted linear base,
    STUDENT_STEPS steps of one-step regression to HR on the none,flow pairs and as many on the clean
    ones (the upsampler frozen, the loss in pixels through the codec), then the residual's scale
    chosen on the validation split (training/calibrate_residual.py). Outputs go to `out`; the last
    one is the model."""
    py = sys.executable
    steps = "4" if quick else str(STUDENT_STEPS)
    train = [
        py,
        "training/train.py",
        "--config",
        "training/configs/demo_distill.toml",
        f"train.steps={steps}",
        "distill.method=regress_hr",
        "distill.teacher=",
        "train.lr=5e-4",
        "train.warmup_steps=50",
        "train.ema_decay=0.998",
        f"train.pixel_metric={assets / VAE_FILE}",
        "log.tracker=none",
        "log.checkpoint_every=250",
        'train.freeze=["upsampler"]',
    ]
    return [
        (work / "pairs_clean", _pairs_command(assets, work, "pairs_clean", "none")),
        (
            out / "init.safetensors",
            [
                py,
                "training/fit_upsampler.py",
                "--config",
                "training/configs/demo_onestep.toml",
                f"data.path={work / 'pairs'}",
                "--out",
                str(out / "init.safetensors"),
            ],
        ),
        (
            out / "mixed.safetensors",
            train
            + [
                f"data.path={work / 'pairs'}",
                f"model.init={out / 'init.safetensors'}",
                f"log.output_dir={out / 'mixed'}",
                "--export",
                str(out / "mixed.safetensors"),
            ],
        ),
        (
            out / "clean.safetensors",
            train
            + [
                f"data.path={work / 'pairs_clean'}",
                f"model.init={out / 'mixed.safetensors'}",
                f"log.output_dir={out / 'clean'}",
                "--export",
                str(out / "clean.safetensors"),
            ],
        ),
        (
            out / "calibrated.safetensors",
            [
                py,
                "training/calibrate_residual.py",
                "--model",
                str(out / "clean.safetensors"),
                "--vae",
                str(assets / VAE_FILE),
                "--out",
                str(out / "calibrated.safetensors"),
                *(["--clips", "2", "--scales", "0.5,1"] if quick else []),
            ],
        ),
    ]


def student_entry(validation_psnr_db: float, commands: list[str], residual_scale: float) -> dict:
    """The manifest's `student` entry: the one-step default model, how it is sampled (1 step, no
    noise) and the residual scale chosen on validation (already folded into its weights: recorded,
    not applied again)."""
    return {
        "file": STUDENT_FILE,
        "default": True,
        "r_embedding": False,
        **STUDENT_SAMPLING,
        "timesteps": None,
        "validation_psnr_db": round(validation_psnr_db, 3),
        "residual_scale": residual_scale,
        "recipe": "training/configs/demo_onestep.toml (experiments/onestep_results.py)",
        "commands": commands,
    }


def tune(model, vae, grid=None, clips=None, log=print) -> dict:
    """Pick steps / shift / noise level by PSNR on the validation split (never the test split)."""
    from simplegvr_core.demo.clips import split_files

    if clips is None:
        clips, _ = load_clips(split_files("validation"), log)
    best = None
    for st, sh, nl in grid or TUNE_GRID:
        r = evaluate(
            model, vae, clips, steps=st, shift=sh, noise_level=nl, progress=False, keep_videos=False
        )
        p = r["summary"]["simplegvr"]["psnr"]
        log(f"  validation: steps {st}, shift {sh}, noise level {nl}: PSNR {p:.2f} dB")
        if best is None or p > best[0]:
            best = (p, st, sh, nl)
    return {
        "steps": best[1],
        "shift": best[2],
        "noise_level": best[3],
        "validation_psnr_db": round(best[0], 3),
    }


def record_test_margins(results: dict, role: str, assets: str | os.PathLike | None = None) -> dict:
    """Write `evaluate`'s mean PSNR / SSIM margins over each baseline on the test split into the
    manifest (`test_margins`, and `test_margins_model`: which model they measure), for
    tests/test_demo.py."""
    from simplegvr_core.files import atomic_write

    a = Path(assets) if assets else ASSETS
    manifest = read_manifest(a)
    manifest["test_margins"] = {
        b: {k: round(results["comparisons"][b][k]["diff"], 4) for k in ("psnr", "ssim")}
        for b in BASELINES
    }
    manifest["test_margins_model"] = role
    atomic_write(a / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return manifest


def retune(assets: str | os.PathLike | None = None, log=print) -> dict:
    """Re-run `tune` on existing weights and update the manifest's sampling settings."""
    from simplegvr_core.files import atomic_write

    a = Path(assets) if assets else ASSETS
    model, vae, manifest = load_assets(a)
    manifest.update(tune(model, vae, log=log))
    atomic_write(a / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    return manifest


def _clips_version() -> str:
    from importlib import metadata

    from simplegvr_core.demo.clips import DISTRIBUTION

    try:
        return f"{DISTRIBUTION}=={metadata.version(DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        return "not installed"


def _relative(arg: str, root: Path) -> str:
    """A command argument with paths inside the repository written relative to it (also in
    key=value)."""
    key, sep, value = (
        arg.rpartition("=") if "=" in arg and not arg.startswith("-") else ("", "", arg)
    )
    if os.path.isabs(value) and value.startswith(str(root)):
        value = os.path.relpath(value, root)
    return key + sep + value


def command_line(cmd: list[str], root: Path) -> str:
    """A command as the manifest records it: `python script ...`, paths inside the repository
    relative to it."""
    return " ".join(["python"] + [_relative(c, root) for c in cmd[1:]])


def fresh_work_folder(work: Path) -> Path:
    """Empty the scratch folder of an earlier `--retrain` (clips, pairs and checkpoints left there
    would be reused silently); a folder that holds anything else is refused rather than touched
    (`files.empty_private_folder`)."""
    from simplegvr_core.files import empty_private_folder, write_marker

    empty_private_folder(work, WORK_MARKER, "--work", "a demo scratch folder")
    return write_marker(
        work,
        WORK_MARKER,
        "scratch folder of `simplegvr demo --retrain`: emptied by the next --retrain\n",
    )


STAGE_SCRIPTS = (
    "training/train_vae.py",
    "training/make_pairs.py",
    "training/train.py",
    "training/fit_upsampler.py",
    "training/calibrate_residual.py",
)


def run_stage(cmd: list[str], log=print) -> None:
    """Run one recorded command ([python, script, args...]) in this process: the script's
    `main(args)`, with paths of the repository made absolute; ValueError naming the stage when it
    fails."""
    import importlib

    script = cmd[1]
    if script not in STAGE_SCRIPTS:
        raise ValueError(
            f"{script!r} is not a stage of the demo rebuild (expected one of {STAGE_SCRIPTS})"
        )
    args = [str(ROOT / a) if a.startswith("training/") else a for a in cmd[2:]]
    log("$ " + command_line(cmd, ROOT))
    main = importlib.import_module("training." + Path(script).stem).main
    rc = main(args)
    if rc != 0:
        raise ValueError(
            f"the demo rebuild's stage {script} failed (exit {rc}); its error is above"
        )


def retrain(
    assets: str | os.PathLike | None = None,
    work: str | os.PathLike = "runs/demo",
    quick: bool = False,
    log=print,
) -> dict:
    """Rebuild the demo codec, the teacher (its sampling tuned on validation) and the one-step
    default model with the training scripts, run in this process (`run_stage`); the student's
    validation PSNR goes in the manifest. Everything is built in `work`/assets and swapped into
    `assets` as one set at the end (`install_assets`): an interrupted rebuild leaves the old set
    whole. The test split is never read: experiments/onestep_results.py measures it."""
    from simplegvr_core.demo.clips import split_files
    from simplegvr_core.files import parse_json
    from simplegvr_core.weights import read_metadata

    a = Path(assets).resolve() if assets else ASSETS
    w = fresh_work_folder(Path(work).resolve())
    stage = w / "assets"  # the new set is built here, beside nothing the user owns
    stage.mkdir()
    write_train_list(w / "videos", 1 if quick else TRAIN_REPEATS)
    cmds = retrain_commands(stage, w, quick)
    stages = student_commands(stage, w, w / "onestep", quick)
    t0 = time.time()
    for cmd in cmds + [c for _, c in stages]:
        run_stage(cmd, log)
    vmeta = read_metadata(stage / VAE_FILE)
    model, vae, _ = load_assets(stage)
    grid = [(2, 3.0, 0.0)] if quick else None
    val, _ = load_clips(split_files("validation"), log)
    settings = tune(model, vae, grid=grid, clips=val, log=log)
    # its last stage scored it on validation (training/calibrate_residual.py)
    smeta = read_metadata(stages[-1][0])
    scale = float(smeta["residual_scale"])
    scores = parse_json(
        smeta["residual_scale_validation_psnr_db"], "the calibration's validation scores"
    )
    manifest = {
        **settings,
        "codec_validation_psnr_db": float(vmeta.get("validation_psnr_db", "nan")),
        "codec_validation_blockiness": float(vmeta.get("validation_blockiness", "nan")),
        "seconds": round(time.time() - t0, 1),
        "quick": quick,
        "clips_package": _clips_version(),
        "commands": [command_line(cmd, ROOT) for cmd in cmds],
        "student": student_entry(
            scores[smeta["residual_scale"]], [command_line(cmd, ROOT) for _, cmd in stages], scale
        ),
    }
    return install_assets(
        a,
        {VAE_FILE: stage / VAE_FILE, MODEL_FILE: stage / MODEL_FILE, STUDENT_FILE: stages[-1][0]},
        manifest,
    )
