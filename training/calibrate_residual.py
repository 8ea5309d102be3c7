"""The last stage of the one-step demo model: choose the scale of its residual on the validation
split.

    python training/calibrate_residual.py --model runs/onestep/clean.safetensors \
        --vae runs/demo/assets/demo_vae.safetensors --out runs/onestep/calibrated.safetensors

A `residual_x0` model estimates x0 = c + D: the fitted linear base c plus the DiT's residual D.
Trained by regression to HR on the 54 clips of the train split, D overshoots on clips it has not
seen (on validation the demo model scores best with about 0.6 of its residual). This stage evaluates
x0 = c + alpha * D for each alpha of
--scales on the validation split, as `simplegvr demo` runs it (1 step, the demo's LR and codec), and
writes the model with the alpha of the highest mean PSNR (ties: the larger alpha) folded into the
DiT's last layer (`SimpleGVR.scale_residual_`, exact). Choosing settings is what the validation
split is for; the test split is never read. The chosen alpha and every alpha's validation PSNR go
into the checkpoint's metadata; the file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simplegvr_core import demo, load_checkpoint, save_checkpoint  # noqa: E402
from simplegvr_core.checkpoint import CODEC_KEY  # noqa: E402
from simplegvr_core.console import report_errors  # noqa: E402
from simplegvr_core.weights import read_metadata  # noqa: E402
from training.demo.rebuild import STUDENT_SAMPLING  # noqa: E402

SCALES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--scales {text!r}: expected comma-separated numbers, e.g. 0.5,0.75,1"
        ) from None
    if not scales or not all(math.isfinite(a) and 0 < a <= 2 for a in scales):
        raise ValueError(f"--scales {text!r}: expected one or more numbers in (0, 2]")
    return sorted(set(scales))


def calibrate(
    model_path: str | Path,
    vae_path: str | Path,
    out: str | Path,
    scales=SCALES,
    clips: int | None = None,
    log=print,
    overwrite: bool = False,
) -> dict:
    """Score each residual scale on the first `clips` validation clips (all by default) and write
    the model with the best one. An existing `out` is refused before any work, and again at the
    rename, unless `overwrite`; an `out` that is the model or the codec is refused. Returns
    {"residual_scale": alpha, "validation_psnr_db": {alpha: PSNR}}."""
    from simplegvr_core.demo.clips import split_files
    from simplegvr_core.files import check_output
    from simplegvr_core.vae import VideoVAE

    if clips is not None and clips < 1:
        raise ValueError(f"--clips {clips}: expected at least 1")
    # before work
    check_output(out, overwrite=overwrite, inputs=[model_path, vae_path], what="--out")
    model = load_checkpoint(model_path).eval()
    if model.config.prediction != "residual_x0":
        raise ValueError(
            f"{model_path}: prediction={model.config.prediction!r}, expected 'residual_x0' "
            f"(x0 = c + D)"
        )
    vae = VideoVAE.load("file", vae_path)
    val, _ = demo.load_clips(split_files("validation")[:clips], log=lambda *_: None)
    if not val:
        raise ValueError(
            "no readable validation clip: is comfyui-workflow-templates-media-video installed?"
        )
    scores, applied = {}, 1.0
    for alpha in sorted(scales):
        model.scale_residual_(alpha / applied)
        applied = alpha
        r = demo.evaluate(
            model,
            vae,
            val,
            role="student",
            progress=False,
            keep_videos=False,
            log=lambda *_: None,
            **STUDENT_SAMPLING,
        )
        scores[alpha] = r["summary"]["simplegvr"]["psnr"]
        log(f"  residual scale {alpha:g}: validation PSNR {scores[alpha]:.3f} dB")
    best = max(scores, key=lambda a: (round(scores[a], 6), a))
    model.scale_residual_(best / applied)
    table = {f"{a:g}": round(p, 4) for a, p in scores.items()}
    meta = {"residual_scale": f"{best:g}", "residual_scale_validation_psnr_db": json.dumps(table)}
    codec = read_metadata(model_path).get(CODEC_KEY) or vae.codec  # a demo-world model stays one
    if codec:
        meta[CODEC_KEY] = codec
    save_checkpoint(model, out, extra_metadata=meta, replace=overwrite)
    log(
        f"calibrate_residual: residual scale {best:g} ({scores[best]:.3f} dB on {len(val)} "
        f"validation clips)"
    )
    return {"residual_scale": best, "validation_psnr_db": scores}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="the trained residual_x0 checkpoint")
    ap.add_argument(
        "--vae",
        required=True,
        help="the demo codec (demo_vae.safetensors) the model was trained with",
    )
    ap.add_argument("--out", required=True, help="the .safetensors checkpoint to write")
    ap.add_argument(
        "--scales",
        default=",".join(f"{a:g}" for a in SCALES),
        help="residual scales to try (default: %(default)s)",
    )
    ap.add_argument(
        "--clips", type=int, default=None, help="only the first N validation clips (default: all)"
    )
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run():
        calibrate(
            args.model,
            args.vae,
            args.out,
            parse_scales(args.scales),
            args.clips,
            overwrite=args.overwrite,
        )

    return report_errors("calibrate_residual", run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
