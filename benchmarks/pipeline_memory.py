"""Peak memory of `upscale` against video length: 5, 20 and 80 latent frames at a fixed small size.

    python benchmarks/pipeline_memory.py [--no-write]

Each case runs in a fresh subprocess; we report its peak RSS (ru_maxrss) minus the RSS right before
`upscale` (imports and weights), for `full` attention in temporal windows of the trained length
(5 latent frames, overlap 1), `temporal_units` in one pass, and `full` on the whole clip for contrast.
Results go to the `pipeline_memory` section of BENCHMARKS.md.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
from simplegvr_core import SimpleGVR, get_config
from simplegvr_core.pipeline import upscale
cfg = get_config("tiny").to_dict()
cfg["dit"].update(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, unit_frames=5)
cfg["upsampler"].update(hidden=32)
torch.manual_seed(0)
m = SimpleGVR.from_config(cfg).eval()
lr = torch.randn(1, 16, {frames}, 16, 16)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
out = upscale(m, lr, scale=2.0, steps=2, cfg=1.0, attention={mode!r}, chunk_frames={chunk!r})
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"base_mb": before / 1024, "extra_mb": (peak - before) / 1024, "seconds": dt,
                  "shape": list(out.shape)}}))
"""
CASES = [("full, windows of 5 (default for full)", "full", 5),
         ("temporal_units, one pass (default)", "temporal_units", None),
         ("temporal_units, windows of 10", "temporal_units", 10),
         ("full, whole clip", "full", None)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[5, 20, 80])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for label, mode, chunk in CASES:
        for f in args.frames:
            code = CHILD.format(root=str(ROOT), frames=f, mode=mode, chunk=chunk)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if r.returncode != 0:
                rows.append((label, f, None, None, r.stderr.strip().splitlines()[-1][:80]))
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append((label, f, res["extra_mb"], res["seconds"], ""))
            print(label, f, res, flush=True)
    lines = ["## Pipeline memory vs video length (`benchmarks/pipeline_memory.py`)", "",
             "`upscale` of a [1,16,T,16,16] latent to 32x32 (x2), DiT dim 256 / 4 layers / 4 heads, upsampler hidden 32, "
             "2 Euler steps, cfg 1, CPU. Peak RSS above the RSS before `upscale` (weights and imports excluded).", "",
             "| DiT attention | latent frames | peak extra RSS (MB) | seconds |", "|---|---|---|---|"]
    for label, f, mb, s, err in rows:
        lines.append(f"| {label} | {f} | {mb:.0f} | {s:.1f} |" if mb is not None else f"| {label} | {f} | failed: {err} | |")
    lines += ["", "Reading: with temporal windows the peak stays flat from 20 to 80 latent frames (it is set by the window "
              "and the condition chunk). One pass over the whole clip - the default for `temporal_units`, whose "
              "attention is bounded by the unit - keeps the attention cost linear but holds every token's activations, "
              "so its memory grows linearly with length; pass `chunk_frames` (CLI `--chunk-frames`) to bound it. "
              "`full` on the whole clip grows linearly in memory here only because CPU SDPA streams the softmax; its "
              "time grows quadratically.", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(ROOT))
        from simplegvr_core.bench import update_section

        update_section(ROOT / "BENCHMARKS.md", "pipeline_memory", text)


if __name__ == "__main__":
    main()
