"""Fit the demo world's video codec: a linear patch VAE with Wan 2.1's latent contract (PCA on procedural clips).

    python training/train_vae.py --out simplegvr_core/assets/demo_vae.safetensors [--clips 200] [--seed 0]

`simplegvr_core.vae.PatchPCAVideoVAE`: 16 channels, /8 space, causal /4 time (frame 0 alone, then groups of
4), raw latents with Wan 2.1's per-channel mean and std, so the `wan21` latent format applies unchanged.
Fitting is an SVD of the 8x8x3x4 patch vectors of `--clips` procedural clips (17 frames, half at 128x128
and half at 64x64, so both the HR and the LR scale of the demo world are represented). The file is written
atomically with its config and the reconstruction PSNR on held-out 17x128x128 clips in the metadata.

(A convolutional VAE would reconstruct better, but Conv3d/Conv2d training is far too slow on a 2-core CPU
for `simplegvr demo --retrain` to stay under 30 minutes; every method in the demo is decoded with the same
codec, so the comparison is fair.)
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

from simplegvr_core.procedural import make_clip  # noqa: E402
from simplegvr_core.vae import PatchPCAVideoVAE, frames_to_vae  # noqa: E402

HELD_OUT = 2_000_000


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [-1, 1] tensors on the [0, 1] pixel scale."""
    mse = float(((a.clamp(-1, 1) - b) ** 2).mean()) / 4
    return 10 * math.log10(1 / max(mse, 1e-12))


def fit_vae(out: str, clips: int = 200, seed: int = 0, log=print) -> dict:
    from safetensors.torch import save_file

    from simplegvr_core.files import atomic_write

    t0 = time.time()
    big = [make_clip(seed * 100_003 + i, 17, 128, 128) for i in range(clips // 2)]
    small = [make_clip(seed * 100_003 + clips + i, 17, 64, 64) for i in range(clips - clips // 2)]
    vae = PatchPCAVideoVAE()
    g1, _ = vae._pack(frames_to_vae(torch.from_numpy(np.stack(big))))
    g2, _ = vae._pack(frames_to_vae(torch.from_numpy(np.stack(small))))
    vecs = torch.cat([g1.reshape(-1, g1.shape[-1]), g2.reshape(-1, g2.shape[-1])])  # both scales, one SVD
    vae.fit(vecs)
    held = frames_to_vae(torch.from_numpy(np.stack([make_clip(HELD_OUT + i, 17, 128, 128) for i in range(4)])))
    with torch.no_grad():
        rec = vae.decode(vae.encode(held).mode())
        z = vae.encode(held).mode()
    p = psnr(rec, held)
    log(f"demo codec: PCA of {vecs.shape[0]:,} patch vectors from {clips} clips, reconstruction PSNR {p:.2f} dB on 4 "
        f"held-out 17x128x128 clips (latent mean {float(z.mean()):.3f}, std {float(z.std()):.3f}), {time.time() - t0:.0f} s")
    tensors = {k: v.contiguous() for k, v in vae.state_dict().items()}
    meta = {"kind": "simplegvr-demo-vae", "vae_config": json.dumps(vae.config()), "psnr_db": f"{p:.3f}",
            "clips": str(clips), "seed": str(seed)}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return {"psnr": p, "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", type=int, default=200, help="procedural clips to fit on (half 128x128, half 64x64)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    fit_vae(args.out, args.clips, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
