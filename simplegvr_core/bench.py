"""Cost of the attention modes: FLOPs of one DiT forward on the meta device, CPU wall time at a
small size.

Used by `simplegvr bench` and `benchmarks/attention_cost.py`. The paper (Table 2) reports 1612.5 /
452.6 / 377.1 GFLOPs for full / Swin-style units / sparse local at its own (unstated) model and
size; only the ratios are comparable.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import ATTENTION_MODES, CAUSAL_MODE, get_config
from .model import SimpleGVR

PAPER_GFLOPS = {"full": 1612.5, "temporal_units": 452.6, "sparse_local": 377.1}
# The modes compared here: block_sparse_causal selects its blocks from the data (no count on `meta`)
# and runs in streaming groups (benchmarks/gpu_throughput.py --ultraflash counts it apart).
COMPARED_MODES = tuple(m for m in ATTENTION_MODES if m != CAUSAL_MODE)


def dit_flops(
    config="wan2.1-1.3b", latent_thw=(20, 135, 240), text_len=512, modes=COMPARED_MODES
) -> dict:
    """FLOPs (total and attention bmm) of one DiT forward per attention mode, counted on `meta`."""
    model = SimpleGVR.from_config(config, device="meta")
    config = model.config.dit
    t, h, w = latent_thw
    x = torch.empty(1, config.out_dim, t, h, w, device="meta")
    ctx = torch.empty(1, text_len, config.text_dim, device="meta")
    ts = torch.empty(1, device="meta")
    out = {}
    for mode in modes:
        with FlopCounterMode(display=False) as fc:
            model.dit(x, x, ts, ctx, 0.4, attention=mode)
        by_op = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
        out[mode] = {"total": fc.get_total_flops(), "bmm": by_op.get("aten.bmm", 0)}
    return out


def cpu_times(
    latent_thw=(10, 32, 48), repeats=3, threads: int | None = None, seed: int = 0
) -> dict:
    """Median seconds of one forward of a small DiT (dim 256, 4 layers) per attention mode on the
    CPU."""
    if threads:
        torch.set_num_threads(threads)
    config = get_config("tiny").to_dict()
    config["dit"].update(
        dim=256,
        ffn_dim=1024,
        num_heads=4,
        num_layers=4,
        text_dim=64,
        unit_frames=5,
        sparse_block=(9, 12),
    )
    torch.manual_seed(seed)
    model = SimpleGVR.from_config(config).eval()
    t, h, w = latent_thw
    x = torch.randn(1, 16, t, h, w)
    ctx = torch.randn(1, 64, 64)
    res = {}
    with torch.inference_mode():
        for mode in COMPARED_MODES:
            model.dit(x, x, torch.tensor([500.0]), ctx, 0.4, attention=mode)  # warm-up
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.dit(x, x, torch.tensor([500.0]), ctx, 0.4, attention=mode)
                runs.append(time.perf_counter() - t0)
            res[mode] = statistics.median(runs)
    return res


def attention_report(flops: dict, times: dict | None, latent_thw, small_thw) -> str:
    """A Markdown table of the measurements with the paper's ratios beside ours."""
    full = flops["full"]["total"]
    lines = [
        f"One DiT forward, `wan2.1-1.3b`, latent {latent_thw[0]}x{latent_thw[1]}x{latent_thw[2]} "
        f"(T x H x W; 1080p x 77 frames), 512 text tokens, FLOPs counted with "
        f"`torch.utils.flop_counter` on `meta`.",
        "",
        "| attention | TFLOPs (total) | attention bmm TFLOPs | ratio to full | paper GFLOPs | "
        "paper ratio |",
        "|---|---|---|---|---|---|",
    ]
    for mode, f in flops.items():
        paper = PAPER_GFLOPS[mode]
        lines.append(
            f"| {mode} | {f['total'] / 1e12:.1f} | {f['bmm'] / 1e12:.1f} | "
            f"{f['total'] / full:.3f} | {paper} | {paper / PAPER_GFLOPS['full']:.3f} |"
        )
    if times:
        tf = times["full"]
        lines += [
            "",
            f"CPU wall time of one forward, small DiT (dim 256, 4 layers), latent "
            f"{small_thw[0]}x{small_thw[1]}x{small_thw[2]}, {torch.get_num_threads()} "
            f"threads (median):",
            "",
            "| attention | seconds | ratio to full |",
            "|---|---|---|",
        ]
        for mode, s in times.items():
            lines.append(f"| {mode} | {s:.3f} | {s / tf:.3f} |")
    return "\n".join(lines) + "\n"


def update_section(path, name: str, text: str) -> None:
    """Replace (or append) the block between `<!-- name:start -->` and `<!-- name:end -->` in a
    Markdown file, written atomically; other benchmarks' sections are kept."""
    from pathlib import Path

    from .files import atomic_write

    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nFigures measured by the scripts in `benchmarks/`.\n"
    )
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(new))
