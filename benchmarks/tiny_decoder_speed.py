"""Tiny decoder (TAEHV layout, Ultra Flash's tiny_decoder.pth) vs the Wan 2.1 VAE decode, on CPU.

    python benchmarks/tiny_decoder_speed.py [--no-write] [--quick] [--wan-latent-frames 1]

Real spatial size: an Ultra Flash HR latent of 120x208 (960x1664 frames), random weights (speed
and memory do not depend on them). The Wan 2.1 VAE is diffusers' `AutoencoderKLWan` with Wan 2.1's
configuration (its defaults), decoding the same latent in raw VAE scale (`denormalise`d; the tiny
decoder takes the normalised one). Each case runs in a fresh subprocess (2 threads) after a small
warm-up decode; memory is the peak RSS (ru_maxrss) above the RSS just before the decode (weights
and latent excluded), with MALLOC_MMAP_THRESHOLD_=1000000 so freed blocks go back at once.

Per output frame: T latents decode to 4T - 3 frames, so T = 1 is one frame for both decoders (the
tiny decoder's MemBlocks also run on the 3 warm-up frames it drops; the Wan VAE computes 1), and a
long clip costs the per-latent increment per 4 frames. The Wan VAE is timed at T = 1 only by
default: at this size T = 2 needs about 31 GB untiled (1.9 GB measured at 240x416, x16) and about
half an hour on two cores. Its cost for longer clips is given as counted FLOPs
(torch.utils.flop_counter on `meta`), next to the tiny decoder's. Results go to the
`tiny_decoder` section of BENCHMARKS.md.
"""

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _child import run_child  # noqa: E402  (the benchmarks' child process)

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(2)
from simplegvr_core import TinyDecoder, get_format
dtype, T, h, w = {dtype}, {frames}, {h}, {w}
torch.manual_seed(0)
z = torch.randn(1, 16, T, h, w, generator=torch.Generator().manual_seed(1))   # normalised latent
if {kind!r} == "wan":
    from diffusers import AutoencoderKLWan
    m = AutoencoderKLWan().eval().to(dtype)                   # Wan 2.1's configuration
    raw = get_format("wan21").denormalise(z).to(dtype)
    run = lambda x: m.decode(x).sample
    small = raw[:, :, :1, :4, :4]
    inp = raw
else:
    m = TinyDecoder(16).eval().to(dtype)
    run = lambda x: m.decode(x, chunk_frames={chunk})
    small = z[:, :, :1, :4, :4]
    inp = z
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
with torch.no_grad():
    run(small)                                                # warm-up (oneDNN primitives)
    before, t0 = rss(), time.perf_counter()
    out = run(inp)
    seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": seconds, "extra": peak - before, "before": before,
                   "shape": list(out.shape), "finite": bool(torch.isfinite(out.float()).all())}}))
"""
WAN_UNTILED_T2_GB = 31  # 1.92 GiB measured at 240x416, T = 2, scaled by 16 (see the docstring)


def cases(args):
    """(label, kind, dtype, latent frames, chunk_frames) of every timed case."""
    t, tw = args.tiny_latent_frames, args.wan_latent_frames
    out = []
    for dt in ("float32", "bfloat16"):
        out += [
            ("tiny decoder", "tiny", f"torch.{dt}", 1, 1),
            ("tiny decoder", "tiny", f"torch.{dt}", t, 1),
        ]
    out.append(("tiny decoder, whole clip at once", "tiny", "torch.float32", t, None))
    for dt in filter(None, args.wan_dtypes.split(",")):
        out.append(("Wan 2.1 VAE (diffusers)", "wan", f"torch.{dt}", tw, None))
    return out


def run_case(kind, dtype, frames, chunk, h, w):
    code = CHILD.format(
        root=str(ROOT), kind=kind, dtype=dtype, frames=frames, chunk=chunk, h=h, w=w
    )
    return run_child(code)


def flop_table(h, w, frames=(1, 2, 21)) -> list[str]:
    """Counted FLOPs per decode on `meta` for both decoders."""
    sys.path.insert(0, str(ROOT))
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    from simplegvr_core import TinyDecoder

    with torch.device("meta"):
        wan, tiny = AutoencoderKLWan().eval(), TinyDecoder(16).eval()
    rows = [
        "| latent frames | output frames | Wan 2.1 VAE TFLOPs | tiny TFLOPs | Wan / tiny | "
        "Wan GFLOPs / frame | tiny GFLOPs / frame |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in frames:
        z = torch.empty(1, 16, t, h, w, device="meta")
        fl = {}
        runs = (("wan", lambda z=z: wan.decode(z).sample), ("tiny", lambda z=z: tiny.decode(z)))
        for name, f in runs:
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                f()
            fl[name] = fc.get_total_flops()
        n = 4 * t - 3
        rows.append(
            f"| {t} | {n} | {fl['wan'] / 1e12:.1f} | {fl['tiny'] / 1e12:.2f} | "
            f"{fl['wan'] / fl['tiny']:.1f} | {fl['wan'] / n / 1e9:.0f} | "
            f"{fl['tiny'] / n / 1e9:.0f} |"
        )
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def report(rows, args, h, w, load0, load1) -> str:
    """The BENCHMARKS.md section: timings, measured ratios, counted FLOPs."""
    lines = [
        f"CPU ({machine()}), 2 shared cores: other jobs ran beside it (load average {load0:.1f} at "
        f"the start, {load1:.1f} at the end), so the times are upper bounds; "
        f"torch.set_num_threads(2). Latent 1x16xTx{h}x{w} -> frames {8 * h}x{8 * w} (HxW), random "
        "weights, one timed decode per fresh process after a 4x4 warm-up. Peak: RSS above the RSS "
        "before the decode.",
        "",
        "| decoder | dtype | latent frames | chunk | output frames | seconds | s / frame | "
        "peak (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    times = {}
    for label, kind, dtype, frames, chunk, res in rows:
        dt = dtype.split(".")[1]
        head = f"| {label} | {dt} | {frames} | {chunk or 'whole'} |"
        if "error" in res:
            lines.append(f"{head} | failed: {res['error']} | | | |")
            continue
        n = res["shape"][2]
        times[(kind, dt, frames, chunk)] = res["seconds"]
        lines.append(
            f"{head} {n} | {res['seconds']:.1f} | {res['seconds'] / n:.2f} | "
            f"{res['extra'] / 2**30:.2f} |"
        )
    lines += ["", "Measured ratios (same latent, same run):", ""]
    tf = args.tiny_latent_frames
    for dt in ("float32", "bfloat16"):
        wan1, tiny1 = times.get(("wan", dt, 1, None)), times.get(("tiny", dt, 1, 1))
        if wan1 and tiny1:
            lines.append(
                f"- one latent frame (one output frame), {dt}: Wan 2.1 VAE {wan1:.1f} s, "
                f"tiny decoder {tiny1:.1f} s: **{wan1 / tiny1:.1f}x**"
            )
        t1, t2 = tiny1, times.get(("tiny", dt, tf, 1))
        if t1 and t2 and tf > 1:
            per = (t2 - t1) / (tf - 1)
            lines.append(
                f"- tiny decoder {dt}, each further latent frame (4 output frames): "
                f"{per:.1f} s, {per / 4:.2f} s per frame"
            )
    lines += [
        "",
        f"Counted FLOPs at {8 * h}x{8 * w} (torch.utils.flop_counter on `meta`). 21 "
        "latent frames are Ultra Flash's 81-frame clip. The Wan VAE decodes its first "
        "latent frame to one frame and each later one to four; the tiny decoder also "
        "computes most of the three warm-up frames it drops at the start:",
        "",
    ]
    lines += flop_table(h, w)
    if args.wan_latent_frames == 1 and not args.quick:
        lines += [
            "",
            f"Not timed: the Wan 2.1 VAE at T = 2 needs about {WAN_UNTILED_T2_GB} GB "
            f"here untiled (this machine has {mem_total_gib():.0f} GiB) and about half an "
            "hour on two cores; `--wan-latent-frames 2` runs it where there is room.",
        ]
    head = "## Tiny decoder vs the Wan 2.1 VAE decode (`benchmarks/tiny_decoder_speed.py`)"
    return head + "\n\n" + "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--quick", action="store_true", help="latent 15x26, not 120x208 (smoke run)")
    ap.add_argument("--tiny-latent-frames", type=int, default=2)
    ap.add_argument("--wan-latent-frames", type=int, default=1)
    ap.add_argument(
        "--wan-dtypes", default="float32,bfloat16", help="comma-separated; '' skips the Wan VAE"
    )
    args = ap.parse_args()
    h, w = (15, 26) if args.quick else (120, 208)
    load0 = os.getloadavg()[0]
    rows = []
    for label, kind, dtype, frames, chunk in cases(args):
        res = run_case(kind, dtype, frames, chunk, h, w)
        rows.append((label, kind, dtype, frames, chunk, res))
        print(label, dtype, frames, chunk, res, flush=True)
    text = report(rows, args, h, w, load0, os.getloadavg()[0])
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(ROOT))
        from simplegvr_core.bench import update_section

        update_section(ROOT / "BENCHMARKS.md", "tiny_decoder", text)


if __name__ == "__main__":
    main()
