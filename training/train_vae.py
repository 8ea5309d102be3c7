"""Fit the demo world's video codec: a linear lapped codec with Wan 2.1's latent contract, on the
train split.

    python training/train_vae.py --out runs/demo/assets/demo_vae.safetensors [--crops 384] [--steps
        1500]

`simplegvr_core.vae.LappedVideoCodec`: 16 channels, /8 space, causal /4 time (frame 0 alone, then
groups of 4), a spatial kernel wider than the stride (every pixel blends several latent pixels: no
8x8 blocks), raw latents with Wan 2.1's per-channel mean and std so the `wan21` latent format
applies unchanged. Fitting: Adam on the pixel MSE of random 17-frame crops of the **train split**
only (`simplegvr_core.demo.clips`), half at the demo's HR size and half at its LR size (the LR crops
are area-downscaled from HR-size crops), so both scales are coded well; then the latent statistics
are set to Wan 2.1's. The file is written atomically with its config and the reconstruction PSNR /
SSIM / blockiness on the validation split in the metadata (the test split is only ever read by
`simplegvr demo`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core import seeding  # noqa: E402
from simplegvr_core.checkpoint import CODEC_KEY, DEMO_CODEC  # noqa: E402
from simplegvr_core.demo import clips as C  # noqa: E402
from simplegvr_core.vae import LappedVideoCodec, frames_to_vae, vae_to_frames  # noqa: E402

FRAMES, HR_SIZE, LR_SIZE = C.FRAMES, C.HR_SIZE, C.LR_SIZE  # the demo world's sizes (demo/clips.py)


def random_crops(
    videos: list[np.ndarray], n: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """n random FRAMES-long windows, each scaled to cover size x size and cropped at random: uint8
    [n, T, s, s, 3]."""
    from training.data import resize_crop

    out = []
    for _ in range(n):
        v = videos[int(rng.integers(len(videos)))]
        s = int(rng.integers(0, len(v) - FRAMES + 1))
        out.append(resize_crop(v[s : s + FRAMES], (size, size), rng))
    return np.stack(out)


def area(x: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.stack(
        [
            np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in c])
            for c in x
        ]
    )


def seam_loss(rec: torch.Tensor, x: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """Squared error of the horizontal and vertical differences across the `grid`-pixel lines: what
    a block seam adds; weighting it keeps the fitted codec free of blocks (blockiness near 1)."""
    dx = (rec[..., grid::grid] - rec[..., grid - 1 : -1 : grid]) - (
        x[..., grid::grid] - x[..., grid - 1 : -1 : grid]
    )
    dy = (rec[..., grid::grid, :] - rec[..., grid - 1 : -1 : grid, :]) - (
        x[..., grid::grid, :] - x[..., grid - 1 : -1 : grid, :]
    )
    return (dx.pow(2).mean() + dy.pow(2).mean()) / 2


def codec_report(vae: LappedVideoCodec, videos: list[np.ndarray]) -> dict:
    """Reconstruction PSNR / SSIM / blockiness of the demo's HR clips of `videos` (means)."""
    from simplegvr_core import metrics

    rows = []
    with torch.no_grad():
        for v in videos:
            hr = C.demo_clip(v, FRAMES, HR_SIZE)
            rec = vae_to_frames(
                vae.decode(vae.encode(frames_to_vae(torch.from_numpy(hr[None]))).mode())
            )[0].numpy()
            rows.append((metrics.psnr(rec, hr), metrics.ssim(rec, hr), metrics.blockiness(rec)))
    p, s, b = np.mean(rows, 0)
    return {"psnr_db": float(p), "ssim": float(s), "blockiness": float(b)}


def fit_vae(
    out: str,
    crops: int = 384,
    steps: int = 1500,
    kernel: int = 16,
    seed: int = 0,
    seam_weight: float = 1.0,
    freqs: int = 8,
    log=print,
    overwrite: bool = False,
) -> dict:
    """Fit the codec and write it to `out`: an existing file is refused before any work, and again
    at the rename, unless `overwrite`."""
    from safetensors.torch import save_file

    from simplegvr_core.degrade.video_io import read_video
    from simplegvr_core.files import atomic_write, check_output

    check_output(out, overwrite=overwrite, what="--out")
    t0 = time.time()
    train = [read_video(p)[0] for p in C.split_files("train")]
    rng = seeding.numpy_rng(seed, seeding.FILE, 0)
    hr = random_crops(train, crops, HR_SIZE, rng)
    lr = area(random_crops(train, crops, HR_SIZE, rng), LR_SIZE)
    del train
    torch.manual_seed(seed)
    vae = LappedVideoCodec(kernel=kernel, freqs=freqs)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)) + 0.02
    )
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        pool = hr if step % 2 == 0 else lr  # both scales in every pair of steps
        idx = torch.randint(0, len(pool), (6,), generator=g).numpy()
        x = frames_to_vae(torch.from_numpy(pool[idx]))
        rec = vae.reconstruct(vae.code(x))
        loss = torch.nn.functional.mse_loss(rec, x) + seam_weight * seam_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            log(
                f"  codec step {step}: reconstruction PSNR "
                f"{10 * math.log10(4 / max(float(loss.detach()), 1e-12)):.2f} dB"
            )
    with torch.no_grad():
        codes = [
            vae.code(frames_to_vae(torch.from_numpy(pool[i : i + 16])))
            for pool in (hr, lr)
            for i in range(0, min(len(pool), 64), 16)
        ]
        vae.fit_statistics(torch.cat([c.transpose(0, 1).reshape(vae.z_dim, -1) for c in codes], 1))
    report = codec_report(vae, [read_video(p)[0] for p in C.split_files("validation")])
    log(
        f"demo codec: lapped {kernel}x{kernel}/8 linear codec fitted in {steps} steps on "
        f"{2 * crops} crops of the train split; validation split: PSNR {report['psnr_db']:.2f} "
        f"dB, SSIM {report['ssim']:.3f}, blockiness {report['blockiness']:.3f} "
        f"({time.time() - t0:.0f} s)"
    )
    tensors = {k: v.contiguous() for k, v in vae.state_dict().items()}
    meta = {
        "kind": "simplegvr-demo-vae",
        CODEC_KEY: DEMO_CODEC,
        "vae_config": json.dumps(vae.config()),
        "fitted_on": "train split",
        "validation_psnr_db": f"{report['psnr_db']:.3f}",
        "validation_ssim": f"{report['ssim']:.4f}",
        "validation_blockiness": f"{report['blockiness']:.4f}",
        "crops": str(crops),
        "steps": str(steps),
        "seed": str(seed),
        "seam_weight": str(seam_weight),
        "freqs": str(freqs),
    }
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta), replace=overwrite)
    return {**report, "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out", required=True, help="the codec file to write (an existing one needs --overwrite)"
    )
    ap.add_argument(
        "--crops", type=int, default=384, help="random crops per scale from the train split"
    )
    ap.add_argument("--steps", type=int, default=1500, help="Adam steps (batches of 6 crops)")
    ap.add_argument(
        "--kernel",
        type=int,
        default=16,
        help="spatial kernel of the codec (stride 8; wider = smoother)",
    )
    ap.add_argument(
        "--seam-weight",
        type=float,
        default=1.0,
        help="weight of the loss across the 8-pixel grid lines",
    )
    ap.add_argument(
        "--freqs",
        type=int,
        default=8,
        help="cosines per side of the decoder's smooth basis functions",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    if args.crops < 1 or args.steps < 1:
        print("train_vae: error: --crops and --steps must be >= 1", file=sys.stderr)
        return 2
    from simplegvr_core.console import report_errors

    def run():
        fit_vae(
            args.out,
            args.crops,
            args.steps,
            args.kernel,
            args.seed,
            args.seam_weight,
            args.freqs,
            overwrite=args.overwrite,
        )

    return report_errors("train_vae", run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
