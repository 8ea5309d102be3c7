"""The demo's one-step SimpleGVR (the default model of `simplegvr demo`): build it, choose it,
measure it.

    python experiments/onestep_results.py [--train] [--work runs/onestep] [--no-write]

The recipe (training/configs/demo_onestep.toml; RESULTS.md reads why):
1. `training/fit_upsampler.py`: the upsampler's linear base becomes the least-squares map from LR to
   HR latents on the train split's pair shards (`runs/demo/pairs`, from the manifest's make_pairs
   command), and the DiT's head starts at zero (`prediction = "residual_x0"`: x0 = c + DiT), so the
   model starts as that linear estimate;
2. one-step regression to HR (distill.method = regress_hr, no teacher), the upsampler frozen, the
   loss in pixels through the codec, 1,500 steps on those none,flow shards;
3. 1,500 more on shards of clean area-downscaled LR only (`runs/demo/pairs_clean`, `--degradation
   none`);
4. `training/calibrate_residual.py`: x0 = c + alpha * D, alpha chosen on the validation split (the
   residual the regression learns on 54 clips overshoots on unseen ones).
With `--train` the stages whose outputs are missing under --work are run (about 12 minutes on 2
cores, alone); the none,flow pair shards must exist. (`python -m training.demo` runs the same
stages, `training.demo.student_commands`, after rebuilding the codec and the teacher.) Then the
fitted init and the result are measured on the validation split, the result on the test split (clean
LR, and LR with flow-guided artefacts). Unless --no-write, the result becomes the demo's default
model (`demo_student.safetensors`, the manifest's `student` entry with these commands), its
test-split margins become the manifest's `test_margins`, and RESULTS.md's `onestep` section is
rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplegvr_core import demo  # noqa: E402
from training import demo as lab  # noqa: E402

# the committed codec the stages read, relative to the repository root
ASSETS = demo.ASSETS.relative_to(ROOT)
# where `simplegvr demo --retrain` (or the manifest's commands) left the train list and pairs
WORK = Path("runs/demo")


def commands(work: str) -> list[tuple[Path, list[str]]]:
    """(output, command) for each stage (`lab.student_commands`), run from the repository root."""
    return lab.student_commands(ASSETS, WORK, Path(work))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", default="runs/onestep")
    ap.add_argument("--train", action="store_true", help="run the stages whose outputs are missing")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    from simplegvr_core.checkpoint import load_checkpoint
    from simplegvr_core.demo.clips import split_files
    from simplegvr_core.weights import read_metadata

    stages = commands(args.work)
    for out, cmd in stages:
        if not (ROOT / out).exists():
            if not args.train:
                raise SystemExit(
                    f"{out} is missing: run with --train (or its command: "
                    f"{lab.command_line(cmd, ROOT)})"
                )
            lab.run_stage(cmd)
    vae = demo.load_assets()[1]
    kw = dict(steps=1, shift=1.0, noise_level=0.0, progress=False, keep_videos=False)
    init, student = (load_checkpoint(ROOT / stages[i][0]).eval() for i in (1, 4))
    val, _ = demo.load_clips(split_files("validation"))
    v_init, v_mixed, v_clean, v_student = (
        demo.evaluate(m, vae, val, **kw)
        for m in (init, *(load_checkpoint(ROOT / stages[i][0]).eval() for i in (2, 3)), student)
    )
    scale = float(read_metadata(ROOT / stages[4][0])["residual_scale"])
    test, _ = demo.load_clips(split_files("test"))
    clean = demo.evaluate(student, vae, test, role="student", **kw)
    flow = demo.evaluate(student, vae, test, role="student", lr_mode="flow", **kw)

    def line(r):
        s = r["summary"]["simplegvr"]
        return f"{s['psnr']:.2f} dB / SSIM {s['ssim']:.4f} / HF {s['hf_ratio']:.3f}"

    b = v_init["summary"]["pixel_bicubic"]
    text = "\n".join(
        [
            "## The one-step default model (`experiments/onestep_results.py`)",
            "",
            f"Validation split (10 clips), 1 step: decode + bicubic {b['psnr']:.2f} dB / SSIM "
            f"{b['ssim']:.4f} / HF {b['hf_ratio']:.3f}; the fitted init (the least-squares linear "
            f"base alone) {line(v_init)}; after stage 2 (none,flow pairs) {line(v_mixed)}; after "
            f"stage 3 (clean pairs) {line(v_clean)}; stage 4, its residual scaled by {scale:g} "
            f"(chosen on these clips by `training/calibrate_residual.py`: the model) "
            f"{line(v_student)}.",
            "",
            f"Test split ({len(test)} clips), clean area-downscaled LR, 1 step:",
            "",
            demo.format_table(clean),
            "",
            "SimpleGVR minus each baseline, mean over the test clips with its 95% paired "
            "bootstrap interval:",
            "",
            demo.format_comparisons(clean),
            "",
            "The paper's degradation setting (LR with flow-guided T2V artefacts), 1 step:",
            "",
            demo.format_table(flow),
            "",
            demo.format_comparisons(flow),
            "",
        ]
    )
    print(text)
    if args.no_write:
        return 0
    from simplegvr_core.bench import update_section

    manifest = demo.read_manifest()
    manifest["student"] = lab.student_entry(
        v_student["summary"]["simplegvr"]["psnr"],
        [lab.command_line(cmd, ROOT) for _, cmd in stages],
        scale,
    )
    lab.install_assets(None, {demo.STUDENT_FILE: ROOT / stages[-1][0]}, manifest)
    lab.record_test_margins(clean, "student")
    update_section(ROOT / "RESULTS.md", "onestep", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
