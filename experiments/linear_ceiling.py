"""How much of the LR a noised condition leaves: the best linear estimate of HR from c_s, decoded,
against latent bilinear + decode of the clean LR.

    python experiments/linear_ceiling.py [--noise 0.6] [--split validation] [--frames 1,3,5]
        [--kernel 5]

A model sampled with condition noise s sees c_s = (1 - s) c + s e, never c. The least-squares linear
map from c_s to the HR latent, in expectation over e (`training/fit_upsampler.solve_linear_map`,
closed form: the Wiener filter of that condition), fitted on the train split's pair shards (made by
`simplegvr demo --retrain`), is what the upsampler's fitted base gives before any learning. This
script scores it through the demo codec on a split's clips, with the condition drawn exactly as
`simplegvr demo` draws it, for maps that read each latent pixel's k x k neighbourhood in 1 frame
(the model's `LinearBase`) or in several: causal (this frame and those before it, as the upsampler
is causal and the condition is built in chunks with past context) and centred (frames on both sides,
an upper bound the model's causal contract does not allow). A learned model must add what separates
the best of these from latent bilinear; experiments/ablations.py needs that of its condition-noise
variants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simplegvr_core import demo, metrics, seeding  # noqa: E402
from simplegvr_core.sampling import add_condition_noise  # noqa: E402


@torch.no_grad()
def score(maps: dict, fmt, vae, clips, s: float, factor: int, kernel: int, seed: int = 0) -> dict:
    """{name: {"psnr": [...], "ssim": [...]}} per clip for each map {name: (a, frames, causal)} and
    for latent bilinear + decode of the clean LR; the LR and the condition noise are drawn as
    `demo.evaluate` draws them."""
    from training.fit_upsampler import apply_linear_map

    out = {name: {"psnr": [], "ssim": []} for name in (*maps, "latent_bilinear")}
    for k, (_name, hr) in enumerate(clips):
        lr_lat = vae.encode(torch.from_numpy(demo.lr_clip(hr, "area", seed + k))[None])
        c0 = fmt.normalise(lr_lat.float())
        cs = add_condition_noise(
            c0, s, generator=seeding.torch_generator(seed + k, seeding.CONDITION_NOISE)
        )
        frames_out = {}
        for m, (a, n, causal) in maps.items():
            c = apply_linear_map(a, cs, factor=factor, kernel=kernel, frames=n, causal=causal)
            frames_out[m] = vae.decode(fmt.denormalise(c))[0].numpy()
        frames_out["latent_bilinear"] = demo.baselines(vae, lr_lat)["latent_bilinear"][0]
        for m, video in frames_out.items():
            out[m]["psnr"].append(metrics.psnr(video, hr))
            out[m]["ssim"].append(metrics.ssim(video, hr))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--noise",
        type=float,
        default=0.6,
        help="the condition noise level s the maps are fitted to and scored at",
    )
    ap.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    ap.add_argument(
        "--pairs", default=str(ROOT / "runs/demo/pairs"), help="the train split's pair shards"
    )
    ap.add_argument("--frames", default="1,3,5", help="temporal taps of the maps, comma-separated")
    ap.add_argument(
        "--kernel",
        type=int,
        default=5,
        help="spatial taps (k x k), the model's upsampler.base_kernel",
    )
    args = ap.parse_args(argv)
    from simplegvr_core.demo.clips import split_files
    from training.fit_upsampler import load_pairs, solve_linear_map

    s = args.noise
    hr, lr = load_pairs(args.pairs)
    factor = hr.shape[-1] // lr.shape[-1]
    maps = {}
    for n in (int(x) for x in args.frames.split(",")):
        for causal in (True,) if n == 1 else (True, False):
            name = (
                "per frame (the model's base)"
                if n == 1
                else f"{n} frames, {'causal' if causal else 'centred'}"
            )
            maps[name] = (
                solve_linear_map(
                    hr,
                    lr,
                    factor=factor,
                    kernel=args.kernel,
                    frames=n,
                    causal=causal,
                    noise_level=[s, s],
                ),
                n,
                causal,
            )
            print(f"  fitted {name} on {len(hr)} pairs", flush=True)
    model, vae, _ = demo.load_assets()
    clips, _ = demo.load_clips(split_files(args.split), log=lambda *_: None)
    r = score(maps, model.latent_format, vae, clips, s, factor, args.kernel)
    lb = r["latent_bilinear"]
    print(
        f"\n"
        f"### The linear ceiling at condition noise s = {s:g} ({args.split} split, {len(clips)} "
        f"clips, {args.kernel}x{args.kernel} taps)\n"
    )
    print(
        "| estimate of HR | PSNR (dB) | SSIM | PSNR minus latent bilinear [95% CI] |\n"
        "|---|---|---|---|"
    )
    for m, v in r.items():
        if m == "latent_bilinear":
            m, d = "latent bilinear + decode of the clean LR", "(reference)"
        else:
            b = metrics.paired_bootstrap(v["psnr"], lb["psnr"])
            d = f"{b['diff']:+.3f} [{b['lo']:+.3f}, {b['hi']:+.3f}]"
        print(f"| {m} | {np.mean(v['psnr']):.2f} | {np.mean(v['ssim']):.4f} | {d} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
