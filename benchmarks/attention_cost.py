"""Cost of SimpleGVR's attention modes: FLOPs at 1080p x 77 frames and CPU wall-time ratios.

    python benchmarks/attention_cost.py [--repeats 3] [--no-write]

FLOPs: one forward of the `wan2.1-1.3b` DiT on the meta device (latent 20x135x240, 512 text tokens),
counted by torch.utils.flop_counter, per mode, with the paper's Table 2 ratios beside ours.
Time: one forward of a small DiT on this machine's CPU, median of `--repeats` runs, per mode.
Results go to the `attention_cost` section of BENCHMARKS.md.
"""

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from simplegvr_core.bench import (  # noqa: E402
    attention_report,
    cpu_times,
    dit_flops,
    update_section,
)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    latent, small = (20, 135, 240), (10, 32, 48)
    flops = dit_flops("wan2.1-1.3b", latent)
    times = cpu_times(small, repeats=args.repeats)
    report = attention_report(flops, times, latent, small)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    text = f"## Attention cost (`benchmarks/attention_cost.py`)\n\nMachine: {machine}.\n\n{report}"
    print(text)
    if not args.no_write:
        update_section(
            Path(__file__).resolve().parents[1] / "BENCHMARKS.md", "attention_cost", text
        )


if __name__ == "__main__":
    main()
