"""The latent interface against the pixel round trip it replaces, on a CPU-sized clip.

    python benchmarks/latent_vs_pixel.py [--frames 17 --height 128 --width 224] [--no-write]

Pixel route (what a cascade without SimpleGVR does between stages): Wan 2.1 VAE decode of the LR
latent
-> bicubic resize x2 -> Wan 2.1 VAE encode. Latent route: SimpleGVR's learned latent upsampler
(`wan2.1-1.3b` config, hidden 128) straight from the LR latent to the HR latent size. The VAE is
diffusers' `AutoencoderKLWan` at its real (Wan 2.1) config with random weights: its speed does not
depend on the weights. Results go to the `latent_vs_pixel` section of BENCHMARKS.md.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simplegvr_core import SimpleGVR  # noqa: E402
from simplegvr_core.bench import update_section  # noqa: E402


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=224)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    t_lat = 1 + (args.frames - 1) // 4
    h, w = args.height // 8, args.width // 8
    lr = torch.randn(1, 16, t_lat, h, w)
    up = SimpleGVR.from_config("wan2.1-1.3b", device="meta").config.upsampler
    from simplegvr_core.models.upsampler import LatentUpsampler

    upsampler = LatentUpsampler(up).eval()
    with torch.inference_mode():
        upsampler(lr, size=(2 * h, 2 * w))  # warm-up
        t0 = time.perf_counter()
        hr_latent = upsampler(lr, size=(2 * h, 2 * w))
        t_latent = time.perf_counter() - t0
        print(f"latent upsampler: {t_latent:.2f} s -> {tuple(hr_latent.shape)}", flush=True)

        vae = AutoencoderKLWan().eval()  # the Wan 2.1 VAE config, random weights
        t0 = time.perf_counter()
        frames = vae.decode(lr).sample  # [1, 3, 17, H, W]
        t_dec = time.perf_counter() - t0
        print(f"decode: {t_dec:.1f} s -> {tuple(frames.shape)}", flush=True)
        t0 = time.perf_counter()
        b, c, t, H, W = frames.shape
        big = F.interpolate(
            frames.permute(0, 2, 1, 3, 4).reshape(b * t, c, H, W), scale_factor=2, mode="bicubic"
        )
        big = big.reshape(b, t, c, 2 * H, 2 * W).permute(0, 2, 1, 3, 4).clamp(-1, 1)
        t_resize = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = vae.encode(big).latent_dist.mode()
        t_enc = time.perf_counter() - t0
        print(f"encode: {t_enc:.1f} s -> {tuple(enc.shape)}", flush=True)
    assert enc.shape == hr_latent.shape, (enc.shape, hr_latent.shape)
    pixel = t_dec + t_resize + t_enc
    text = "\n".join(
        [
            "## Latent interface vs pixel round trip (`benchmarks/latent_vs_pixel.py`)",
            "",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}. Clip: {args.frames} frames at {args.width}x{args.height} "
            f"(latent {t_lat}x{h}x{w}) -> x2 (latent {t_lat}x{2 * h}x{2 * w}). Wan 2.1 VAE "
            f"(diffusers `AutoencoderKLWan`, real config, random weights).",
            "",
            "| route | seconds |",
            "|---|---|",
            f"| pixel: VAE decode | {t_dec:.1f} |",
            f"| pixel: bicubic x2 | {t_resize:.2f} |",
            f"| pixel: VAE encode | {t_enc:.1f} |",
            f"| **pixel round trip total** | **{pixel:.1f}** |",
            f"| **latent upsampler (SimpleGVR, hidden 128)** | **{t_latent:.2f}** |",
            "",
            f"The latent route is **{pixel / t_latent:.0f}x** faster than the round trip it "
            f"replaces (same output latent shape {tuple(hr_latent.shape)}).",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        update_section(ROOT / "BENCHMARKS.md", "latent_vs_pixel", text)


if __name__ == "__main__":
    main()
