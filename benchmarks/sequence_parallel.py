"""Sequence-parallel upscaling: communication per sampling step next to compute, 1080p x 81 frames,
N = 2, 4, 6, 12.

    python benchmarks/sequence_parallel.py [--no-write] [--tflops 400] [--bandwidth 150 25]

For the `wan2.1-1.3b` DiT (dim 1536, 30 blocks, 12 heads) on the window plan `upscale` uses by
default (`pipeline.plan_sampling`: `full` runs overlapping windows of the trained 5 latent frames,
the windowed modes the whole clip), with CFG (batch 2) in bf16:
- compute: FLOPs of the DiT calls of one step (torch.utils.flop_counter on the meta device), divided
  by N (every block's work is split; the replicated embeddings are < 0.1 %);
- communication: bytes one GPU sends per step (`parallel.bytes_per_forward`: per block an all_to_all
  of q, k, v and one of the attention output, then an all-gather of the head output), the formula
  the 2-process test checks against the bytes the code really sends;
- the time of each at an assumed sustained throughput and all-to-all bandwidth per GPU (defaults:
  400 TFLOP/s, i.e. ~40 % of an H100's bf16 peak; 150 GB/s within an NVLink node, 25 GB/s across
  nodes on 200 Gb/s InfiniBand). These two numbers are assumptions, not measurements: change them to
  your hardware.
Results go to the `sequence_parallel` section of BENCHMARKS.md.
"""

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simplegvr_core import SimpleGVR  # noqa: E402
from simplegvr_core.bench import dit_flops, update_section  # noqa: E402
from simplegvr_core.config import ATTENTION_MODES  # noqa: E402
from simplegvr_core.parallel import bytes_per_forward, valid_worlds  # noqa: E402
from simplegvr_core.pipeline import plan_sampling  # noqa: E402

FRAMES, HEIGHT, WIDTH = 81, 1080, 1920
WORLDS = (2, 4, 6, 12)


def measure(config: str = "wan2.1-1.3b") -> dict:
    model = SimpleGVR.from_config(config, device="meta")
    dit = model.config.dit
    fmt = model.latent_format
    t = 1 + (FRAMES - 1) // 4
    h, w = fmt.latent_size(HEIGHT, WIDTH)
    pt, ph, pw = dit.patch_size
    out_patch = dit.out_dim * pt * ph * pw
    rows = {}
    for mode in ATTENTION_MODES:
        plan = plan_sampling(model, (1, dit.out_dim, t, h, w), attention=mode)
        calls = [
            (te - ts, he - hs, we - ws)
            for ts, te in plan.t_windows
            for hs, he in plan.h_windows
            for ws, we in plan.w_windows
        ]
        # CFG: batch 2
        flops = sum(dit_flops(config, c, modes=(mode,))[mode]["total"] for c in calls) * 2
        tokens = [math.ceil(a / pt) * math.ceil(b / ph) * math.ceil(c / pw) for a, b, c in calls]
        rows[mode] = {
            "calls": len(calls),
            "window": calls[0],
            "tokens": tokens[0],
            "flops": flops,
            "bytes": {
                n: sum(
                    bytes_per_forward(k, dit.dim, dit.num_layers, out_patch, n, batch=2)
                    for k in tokens
                )
                for n in WORLDS
            },
        }
    return {"latent": (t, h, w), "heads": dit.num_heads, "rows": rows}


def report(res: dict, tflops: float, bandwidths: tuple[float, float]) -> str:
    t, h, w = res["latent"]
    intra, inter = bandwidths
    lines = [
        f"`wan2.1-1.3b`, {WIDTH}x{HEIGHT} x {FRAMES} frames (latent {t}x{h}x{w}), the default "
        f"window plan, CFG (batch 2), bf16; per GPU and per sampling step. Valid N for "
        f"{res['heads']} heads: {valid_worlds(res['heads'])}. Times at an assumed {tflops:g} "
        f"TFLOP/s per GPU and an all-to-all bandwidth of {intra:g} GB/s (NVLink node) or "
        f"{inter:g} GB/s (across nodes).",
        "",
        "| attention | DiT calls x tokens | N | TFLOP / GPU | compute s | GB sent / GPU | comm s "
        "(node) | comm / compute (node) | comm s (nodes) | comm / compute (nodes) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in res["rows"].items():
        for n in WORLDS:
            f = r["flops"] / n
            comp = f / (tflops * 1e12)
            gb = r["bytes"][n] / 1e9
            c1, c2 = gb / intra, gb / inter
            lines.append(
                f"| {mode} | {r['calls']} x {r['tokens']:,} | {n} | {f / 1e12:.1f} | {comp:.2f} | "
                f"{gb:.2f} | {c1:.3f} | {c1 / comp:.2f} | {c2:.3f} | {c2 / comp:.2f} |"
            )
    lines += [
        "",
        "Reading: per GPU, compute falls as 1/N and the bytes sent as (N-1)/N^2, so communication "
        "over compute only grows by the factor 2(N-1)/N from N = 2 (at most 2x): sequence "
        "parallelism keeps scaling to N = 12. Within an NVLink node the all-to-alls cost under 10 "
        "% of the compute for `full` and `temporal_units` and about a third for `sparse_local`, "
        "whose attention is cheap; across nodes the first two stay compute-bound (about half) "
        "while `sparse_local` becomes communication-bound: keep its group inside one node. This "
        "implementation runs communication and compute one after the other, so a step takes about "
        "compute + communication.",
    ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tflops", type=float, default=400.0, help="assumed sustained TFLOP/s per GPU")
    ap.add_argument(
        "--bandwidth",
        type=float,
        nargs=2,
        default=[150.0, 25.0],
        metavar=("NODE", "NODES"),
        help="assumed all-to-all GB/s per GPU within a node and across nodes",
    )
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    text = (
        "## Sequence-parallel upscaling: communication vs compute "
        "(`benchmarks/sequence_parallel.py`)\n"
        "\n" + report(measure(), args.tflops, tuple(args.bandwidth))
    )
    print(text)
    if not args.no_write:
        update_section(
            Path(__file__).resolve().parents[1] / "BENCHMARKS.md", "sequence_parallel", text
        )


if __name__ == "__main__":
    main()
