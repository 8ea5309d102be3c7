"""Peak memory of the two pipeline calls against the core's estimate, and the plans `auto` picks.

    python benchmarks/pipeline_memory.py [--no-write]

Each case runs in a fresh subprocess on the CPU and reports its peak RSS (ru_maxrss) minus the RSS
right before the call (imports, weights and inputs excluded), next to the estimate the core plans
with: `pipeline.upsampler_memory` for `build_condition`, `SamplingPlan.memory` for `sample` (one
Euler step; the peak is the same at every step). The children run with
MALLOC_MMAP_THRESHOLD_=1000000 so glibc hands freed blocks back at once and RSS follows the live
tensors (otherwise freed heap blocks linger and RSS overstates the peak by up to a third). A GPU
adds its own allocator slack and the CUDA context; the nodes keep ComfyUI's reserve free on top. The
last table is what `auto` (`pipeline.auto_plan`) picks for 81 frames at 1080p with the 1.3B config
(meta device, no memory needed). Results go to the `pipeline_memory` section of BENCHMARKS.md.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _child import run_child  # noqa: E402  (the benchmarks' child process)

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(2)
from simplegvr_core import SimpleGVR, get_config
from simplegvr_core.pipeline import Condition, build_condition, sample
from simplegvr_core.plan import plan_sampling, upsampler_memory
cfg = get_config("tiny").to_dict()
cfg["dit"].update(dim={dim}, ffn_dim={ffn}, num_heads={dim} // 64, num_layers=2, unit_frames=5,
                  text_len=16, sparse_block=[9, 12])
cfg["upsampler"].update(hidden={hidden})
torch.manual_seed(0)
m = SimpleGVR.from_config(cfg).eval().to({dtype})
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
if {phase!r} == "condition":
    lr = torch.randn(1, 16, {frames}, {h} // 2, {w} // 2)
    before, t0 = rss(), time.perf_counter()
    build_condition(m, lr, scale=2.0, noise_level=0.3, chunk_frames={chunk})
    est = upsampler_memory(m, lr.shape, ({h}, {w}), {chunk}, {dtype})
else:
    c = torch.randn(1, 16, {frames}, {h}, {w})
    cond = Condition(c=c, noise_level=0.3, layout="BCTHW",
                     lr_shape=(1, 16, {frames}, {h} // 2, {w} // 2))
    plan = plan_sampling(m, c.shape, attention={mode!r}, chunk_frames={chunk}, tile_size={tile})
    before, t0 = rss(), time.perf_counter()
    sample(m, cond, steps=1, cfg={cfg_}, plan=plan)
    est = plan.memory(m, guidance={cfg_}, dtype={dtype})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"extra": peak - before, "estimate": est, "seconds": time.perf_counter() - t0}}))
"""
BASE = dict(
    dim=256,
    ffn=1024,
    hidden=32,
    dtype="torch.float32",
    frames=40,
    h=48,
    w=64,
    chunk=None,
    tile=None,
    mode="temporal_units",
    cfg_=1.0,
)
COND = dict(frames=20, h=96, w=128)  # the condition: 20 latent frames, 48x64 -> 96x128
CASES = [  # (label, phase, overrides)
    ("condition, whole clip", "condition", dict(COND)),
    ("condition, chunks of 2", "condition", dict(COND, chunk=2)),
    ("condition, chunks of 2, bf16", "condition", dict(COND, chunk=2, dtype="torch.bfloat16")),
    ("condition, hidden 64, chunks of 8", "condition", dict(COND, chunk=8, hidden=64)),
    ("sample, temporal_units, whole clip", "sample", dict()),
    ("sample, temporal_units, whole clip, bf16", "sample", dict(dtype="torch.bfloat16")),
    ("sample, temporal_units, whole clip, cfg 3", "sample", dict(cfg_=3.0)),
    ("sample, temporal_units, windows of 10", "sample", dict(chunk=10)),
    ("sample, temporal_units, windows of 10, tiles 24x32", "sample", dict(chunk=10, tile=(24, 32))),
    ("sample, full, windows of 5", "sample", dict(mode="full", chunk=5)),
    ("sample, sparse_local, whole clip", "sample", dict(mode="sparse_local")),
    (
        "sample, sparse_local, whole clip, bf16",
        "sample",
        dict(mode="sparse_local", dtype="torch.bfloat16"),
    ),
    ("sample, dim 512 / ffn 1024, whole clip", "sample", dict(dim=512, frames=20)),
    (
        "sample, dim 512 / ffn 1024, whole clip, bf16",
        "sample",
        dict(dim=512, frames=20, dtype="torch.bfloat16"),
    ),
    (
        "sample, dim 256 / ffn 2048, whole clip, bf16",
        "sample",
        dict(ffn=2048, frames=20, dtype="torch.bfloat16"),
    ),
]


def auto_table() -> list[str]:
    sys.path.insert(0, str(ROOT))
    import torch

    from simplegvr_core import SimpleGVR
    from simplegvr_core.memory import GiB
    from simplegvr_core.plan import (
        auto_condition_chunk,
        auto_plan,
        plan_sampling,
        upsampler_memory,
        weights_memory,
    )

    m = SimpleGVR.from_config("wan2.1-1.3b", device="meta")
    shape, lr = (1, 16, 21, 135, 240), (1, 16, 21, 60, 104)
    w = weights_memory(m, torch.bfloat16)
    whole = plan_sampling(m, shape)
    lines = [
        "",
        f"`auto` for 81 frames at 1080p (condition {shape}, from 832x480), the 1.3B config, bf16 "
        f"weights ({w / GiB:.2f} GiB), cfg 5; budget = card - weights - 1 GiB reserve. The "
        f"default plan alone ({whole.describe()}) needs "
        f"{(w + whole.memory(m, guidance=5.0, dtype=torch.bfloat16)) / GiB:.1f} GiB with "
        f"the weights.",
        "",
        "| card | Sampler plan | DiT calls / step | estimate with weights (GiB) | Latent "
        "Upsampler chunk | estimate with weights (GiB) |",
        "|---|---|---|---|---|---|",
    ]
    for gib in (24, 16, 12, 8):
        budget = gib * GiB - w - GiB
        p = auto_plan(m, shape, budget, guidance=5.0, dtype=torch.bfloat16)
        ch = auto_condition_chunk(m, lr, (135, 240), budget, torch.bfloat16)
        lines.append(
            f"| {gib} GB | {p.describe().split(':')[0]} | {p.calls_per_step} | "
            f"{(w + p.memory(m, guidance=5.0, dtype=torch.bfloat16)) / GiB:.2f} | {ch} latent "
            f"frames | {(w + upsampler_memory(m, lr, (135, 240), ch, torch.bfloat16)) / GiB:.2f} |"
        )
    return lines


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for label, phase, over in CASES:
        case = {**BASE, **over, "phase": phase, "root": str(ROOT)}
        res = run_child(CHILD.format(**case))
        if "error" in res:
            rows.append((label, None, None, None, res["error"][:80]))
            continue
        rows.append((label, res["extra"], res["estimate"], res["seconds"], ""))
        print(label, res, flush=True)
    lines = [
        "## Pipeline memory: measured peak vs the estimate (`benchmarks/pipeline_memory.py`)",
        "",
        f"CPU, 2 threads. DiT dim 256 / ffn 1024 / 2 layers (unless stated), upsampler hidden 32. "
        f"Sampling: a condition [1,16,40,{BASE['h']},{BASE['w']}] (20 frames for dim 512 and ffn "
        f"2048), one Euler step. The condition: "
        f"[1,16,{COND['frames']},{COND['h'] // 2},{COND['w'] // 2}] -> x2. fp32 and cfg 1 unless "
        f"stated. Peak RSS above the RSS before the call.",
        "",
        "| case | measured peak (MB) | estimate (MB) | estimate / measured | seconds |",
        "|---|---|---|---|---|",
    ]
    ratios = []
    for label, extra, est, s, err in rows:
        if extra is None:
            lines.append(f"| {label} | failed: {err} | | | |")
            continue
        ratios.append(est / extra)
        lines.append(
            f"| {label} | {extra / 2**20:.0f} | {est / 2**20:.0f} | {est / extra:.2f} | {s:.1f} |"
        )
    if ratios:
        lines += [
            "",
            f"Estimate / measured: {min(ratios):.2f} to {max(ratios):.2f} (median "
            f"{sorted(ratios)[len(ratios) // 2]:.2f}) over {len(ratios)} cases.",
        ]
    lines += auto_table()
    lines += [
        "",
        "Reading: the estimate is what `auto` plans with, so a ratio above 1 is memory left "
        "unused and below 1 is memory the plan did not count. With temporal windows or tiles the "
        "peak is set by the window, not the clip; the whole clip in one pass (the default for "
        "`temporal_units` and `sparse_local`) grows linearly with its length, which is why `auto` "
        "cuts long clips into windows.",
        "",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(ROOT))
        from simplegvr_core.bench import update_section

        update_section(ROOT / "BENCHMARKS.md", "pipeline_memory", text)


if __name__ == "__main__":
    main()
