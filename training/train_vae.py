"""Train a compact video VAE with Wan 2.1's latent contract on procedural clips (the demo world's VAE).

    python training/train_vae.py --out simplegvr_core/assets/demo_vae.safetensors [--steps 800] [--base-dim 16]

Contract (`simplegvr_core.vae.CompactVideoVAE`): 16 channels, /8 space, causal /4 time with the first
frame alone. After training, an affine map is folded into `quant_conv` / `post_quant_conv` so the raw
latents have Wan 2.1's per-channel mean and std: the `wan21` latent format (and ComfyUI's Wan21
normalisation) then applies to this VAE unchanged. Loss: L1 + 0.5 MSE on pixels plus a small KL term.
5-frame 64x64 clips (half of them crops of 128x128 clips), seeded per step; the result is written
atomically with the config and the reconstruction PSNR on held-out 17x128x128 clips in its metadata.
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

from simplegvr_core.latent_formats import WAN21  # noqa: E402
from simplegvr_core.procedural import make_clip  # noqa: E402
from simplegvr_core.vae import frames_to_vae  # noqa: E402


def batch_of_clips(step: int, batch: int, frames: int, size: int, seed: int) -> torch.Tensor:
    """`batch` procedural clips at size x size; every other one is a random crop of a clip made at twice
    the size, so the VAE sees both the LR and the HR scale of the demo world's textures."""
    clips = []
    for b in range(batch):
        s = seed * 100_003 + step * batch + b
        if b % 2:
            big = make_clip(s, frames, 2 * size, 2 * size)
            r = np.random.default_rng(s)
            y, x = r.integers(0, size + 1, 2)
            clips.append(big[:, y:y + size, x:x + size])
        else:
            clips.append(make_clip(s, frames, size, size))
    return frames_to_vae(torch.from_numpy(np.ascontiguousarray(np.stack(clips))))


@torch.no_grad()
def match_wan_statistics(vae, samples: torch.Tensor) -> dict:
    """Fold z' = a z + b into the VAE so its latent means/stds become Wan 2.1's; returns the measured stats."""
    mu = vae.encode(samples).mode()  # [B, 16, T, h, w]
    mean = mu.mean(dim=(0, 2, 3, 4)).double()
    std = mu.std(dim=(0, 2, 3, 4)).double().clamp_min(1e-4)
    a = torch.tensor(WAN21.std, dtype=torch.float64) / std
    b = torch.tensor(WAN21.mean, dtype=torch.float64) - a * mean
    z = 16
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias  # [32, C, 1, 1]: first 16 = mean, last 16 = logvar
    qw[:z] *= a.view(-1, 1, 1, 1).to(qw.dtype)
    qb[:z] = (qb[:z].double() * a + b).to(qb.dtype)
    qb[z:] += (2 * torch.log(a)).to(qb.dtype)  # var scales by a^2
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias  # decoder sees (z' - b) / a
    w2 = pw.double()[:, :, 0, 0]
    pb.copy_((pb.double() - w2 @ (b / a)).to(pb.dtype))
    pw.copy_((w2 / a.view(1, -1)).view_as(pw).to(pw.dtype))
    return {"mean": mean.tolist(), "std": std.tolist()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(-1, 1) - b) ** 2).mean()) / 4  # [-1,1] -> [0,1] scale
    return 10 * math.log10(1 / max(mse, 1e-12))


def train_vae(out: str, steps: int = 800, widths=(64, 128), batch: int = 4, lr: float = 1e-3, seed: int = 0,
              kl_weight: float = 1e-6, log=print) -> dict:
    from tqdm.auto import tqdm

    from simplegvr_core.checkpoint import atomic_write
    from simplegvr_core.vae import CompactVideoVAE

    torch.manual_seed(seed)
    vae = CompactVideoVAE(tuple(widths))
    cfg = vae.config()
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, k / steps))))
    t0 = time.time()
    bar = tqdm(range(steps), desc="demo VAE")
    for step in bar:
        x = batch_of_clips(step, batch, 5, 64, seed)  # 5 frames: frame 0 alone + one group of 4
        post = vae.encode(x)
        g = torch.Generator().manual_seed(seed * 7 + step)
        zs = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(zs)
        loss = (rec - x).abs().mean() + 0.5 * ((rec - x) ** 2).mean() + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{float(loss):.4f}")
    vae.eval()
    held = frames_to_vae(torch.from_numpy(np.stack([make_clip(2_000_000 + i, 17, 128, 128) for i in range(4)])))
    stats = match_wan_statistics(vae, held)  # held-out clips, 17 frames at 128x128
    with torch.no_grad():
        rec = vae.decode(vae.encode(held).mode())
    p = psnr(rec, held)
    log(f"demo VAE: {sum(q.numel() for q in vae.parameters()):,} parameters, reconstruction PSNR {p:.2f} dB "
        f"on 4 held-out 17x128x128 clips, {time.time() - t0:.0f} s")
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in vae.state_dict().items()}
    meta = {"kind": "simplegvr-demo-vae", "vae_config": json.dumps(cfg), "psnr_db": f"{p:.3f}", "steps": str(steps),
            "seed": str(seed), "raw_latent_stats": json.dumps(stats)}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return {"psnr": p, "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--widths", type=int, nargs=2, default=[64, 128], help="channels at 1/4 and 1/8 resolution")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train_vae(args.out, args.steps, args.widths, args.batch, args.lr, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
