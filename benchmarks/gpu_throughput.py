"""1-step throughput of SimpleGVR at 1080p x 81 frames per attention mode and kernel, on one GPU (issue 14).

    python benchmarks/gpu_throughput.py                 # CUDA: wan2.1-1.3b, bf16, random weights (< 5 min, H100/H200)
    python benchmarks/gpu_throughput.py --cpu-small     # the same measurement at a small size on the CPU (CI)
    python benchmarks/gpu_throughput.py --cpu-ratios    # CPU ratios + the FLOP projection -> BENCHMARKS.md

GPU run: the `wan2.1-1.3b` config at random weights in bf16; an LR latent of 21 x 60 x 107 (480p, 81 frames) is
upsampled by the learned upsampler to the 1080p latent 21 x 135 x 240 (`pipeline.build_condition`), then one Euler
step (cfg 1: one DiT pass) runs on the whole clip (`pipeline.sample`). Per attention mode (full, temporal_units,
sparse_local) and kernel (sdpa: gathered windows; flex: FlexAttention block masks; full attention has one kernel)
it reports the seconds of the DiT step, of the upsampler, output frames per second (81 / both) and peak memory.
The VAE is not part of it. Each case runs once to warm up (flex compiles there) and is timed on the second run.
Without CUDA (or with --cpu-small) the same cases run on a small DiT on the CPU in float32.

--cpu-ratios measures on the CPU what BENCHMARKS.md reports without a GPU: 1-step vs 50-step wall time of the tiny
config, FlexAttention vs gathered-window SDPA (eager and compiled), torch.compile of the DiT, and the FLOP-based
projection for the 1-step 1.3B DiT on an H100 at an assumed MFU; --write puts them and (on a GPU) the table into the
`gpu_throughput` section of BENCHMARKS.md.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simplegvr_core import SimpleGVR, get_config  # noqa: E402
from simplegvr_core.bench import dit_flops, update_section  # noqa: E402
from simplegvr_core.models.attention import flex_available  # noqa: E402
from simplegvr_core.pipeline import build_condition, sample  # noqa: E402
from simplegvr_core.plan import plan_sampling

OUTPUT_FRAMES = 81  # 21 latent frames
GPU_LR, GPU_HR = (21, 60, 107), (135, 240)  # latent (T, H, W) of 480p and (H, W) of 1080p
CPU_LR, CPU_HR = (7, 5, 6), (20, 24)  # --cpu-small: tokens 7 x 10 x 12 (units 5+2, 2 x 1 blocks a frame)
H100_BF16_FLOPS = 989e12  # dense bf16 peak of an H100 SXM
ASSUMED_MFU = 0.4  # a well-tuned bf16 DiT forward (large GEMMs, flash attention) reaches 35-50 % of peak


def small_config(**dit) -> dict:
    """The small DiT of `bench.cpu_times` (dim 256, 4 layers, Wan's 5-frame units and 12x9 blocks)."""
    cfg = get_config("tiny").to_dict()
    cfg["dit"].update(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=64, text_len=64, unit_frames=5,
                      sparse_block=(9, 12), **dit)
    return cfg


def cases(flex: bool) -> list[tuple[str, str]]:
    """(attention mode, kernel) pairs: full has one kernel; the windowed modes have sdpa and, where present, flex."""
    out = [("full", "sdpa")]
    for mode in ("temporal_units", "sparse_local"):
        out += [(mode, "sdpa")] + ([(mode, "flex")] if flex else [])
    return out


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if torch.device(device).type == "cuda" else None


def run_case(model: SimpleGVR, lr: torch.Tensor, hr_hw, mode: str, kernel: str, device, steps: int = 1) -> dict:
    """Seconds of build_condition (the upsampler) and of `steps` Euler steps, and peak bytes, of one upscale."""
    model.dit.set_attention(mode, kernel=kernel)
    _sync(device)
    _peak_reset(device)
    t0 = time.perf_counter()
    cond = build_condition(model, lr, width=hr_hw[1] * 8, height=hr_hw[0] * 8, chunk_frames=None)
    _sync(device)
    t1 = time.perf_counter()
    plan = plan_sampling(model, tuple(cond.c.shape), attention=mode, chunk_frames=None)
    out = sample(model, cond, steps=steps, cfg=1.0, seed=0, plan=plan)
    _sync(device)
    t2 = time.perf_counter()
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{mode}/{kernel}: the output has NaN or Inf")
    return {"mode": mode, "kernel": kernel, "upsampler_s": t1 - t0, "step_s": (t2 - t1) / steps, "peak": _peak(device)}


def throughput(model, lr, hr_hw, device, repeats: int = 1) -> list[dict]:
    """Every case of `cases`: warm-up run, then the median of `repeats` timed runs."""
    rows = []
    for mode, kernel in cases(flex_available()):
        run_case(model, lr, hr_hw, mode, kernel, device)  # warm-up (flex compiles its kernel here on a GPU)
        runs = [run_case(model, lr, hr_hw, mode, kernel, device) for _ in range(repeats)]
        row = dict(runs[-1], step_s=statistics.median(r["step_s"] for r in runs),
                   upsampler_s=statistics.median(r["upsampler_s"] for r in runs))
        row["fps"] = OUTPUT_FRAMES / (row["step_s"] + row["upsampler_s"])
        rows.append(row)
        print(f"{mode:15s} {kernel:5s} step {row['step_s']:.3f} s  upsampler {row['upsampler_s']:.3f} s  "
              f"{row['fps']:.1f} frames/s" + (f"  peak {row['peak'] / 2**30:.1f} GiB" if row["peak"] else ""),
              flush=True)
    return rows


def table(rows: list[dict], title: str) -> str:
    lines = [title, "", "| attention | kernel | s / DiT step | upsampler s | output frames / s | peak memory |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak'] / 2**30:.1f} GiB" if r["peak"] else "-"
        lines.append(f"| {r['mode']} | {r['kernel']} | {r['step_s']:.3f} | {r['upsampler_s']:.3f} | {r['fps']:.1f} | {peak} |")
    return "\n".join(lines) + "\n"


def gpu_model(device) -> tuple[SimpleGVR, torch.Tensor]:
    torch.manual_seed(0)
    model = SimpleGVR.from_config("wan2.1-1.3b", device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
    return model, torch.randn(1, 16, *GPU_LR)


def cpu_model(seed: int = 0) -> tuple[SimpleGVR, torch.Tensor]:
    torch.manual_seed(seed)
    model = SimpleGVR.from_config(small_config()).eval().requires_grad_(False)
    return model, torch.randn(1, 16, *CPU_LR)


# --- CPU ratios and the FLOP projection (BENCHMARKS.md without a GPU) -----------------------------------------
def _median_time(fn, repeats: int) -> float:
    """Median CPU seconds of this process over `repeats` calls after a warm-up. With one thread
    (OMP_NUM_THREADS=1) that is the wall time of an idle machine, and it does not count the time a shared
    machine spends on other jobs."""
    fn()  # warm-up (and compilation)
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        runs.append(time.process_time() - t0)
    return statistics.median(runs)


def steps_ratio(repeats: int) -> dict:
    """Wall time of a whole upscale (upsampler + DiT) of the tiny config at 1 and at 50 steps."""
    torch.manual_seed(0)
    model = SimpleGVR.from_config("tiny").eval()
    lr = torch.randn(1, 16, 5, 16, 24)

    def run(steps):
        cond = build_condition(model, lr, scale=2.0)
        return sample(model, cond, steps=steps, cfg=1.0, seed=0)

    one, fifty = _median_time(lambda: run(1), repeats), _median_time(lambda: run(50), repeats)
    return {"one": one, "fifty": fifty}


def kernel_ratios(latent_thw, repeats: int, compile_: bool) -> list[dict]:
    """One DiT forward of the small DiT per windowed mode and kernel, eager and (optionally) torch.compile'd."""
    torch.manual_seed(0)
    model = SimpleGVR.from_config(small_config()).eval()
    x, ctx, t = torch.randn(1, 16, *latent_thw), torch.randn(1, 64, 64), torch.tensor([500.0])
    rows = []
    for mode in ("full", "temporal_units", "sparse_local"):
        for kernel in (("sdpa", "flex") if mode != "full" else ("sdpa",)):
            model.dit.set_attention(mode, kernel=kernel)
            row = {"mode": mode, "kernel": kernel}
            with torch.inference_mode():
                row["eager"] = _median_time(lambda: model.dit(x, x, t, ctx, 0.4), repeats)
            if compile_:
                torch._dynamo.reset()
                compiled = torch.compile(model.dit)
                t0 = time.perf_counter()
                with torch.no_grad():
                    compiled(x, x, t, ctx, 0.4)
                row["compile_s"] = time.perf_counter() - t0
                with torch.no_grad():
                    row["compiled"] = _median_time(lambda f=compiled: f(x, x, t, ctx, 0.4), repeats)
            rows.append(row)
            print(row, flush=True)
    model.dit.set_attention(model.config.dit.attention, kernel="auto")
    return rows


def projection() -> str:
    """FLOPs of one 1.3B DiT pass at 1080p x 81 frames per mode (meta device) and the time they take at the MFU."""
    flops = dit_flops("wan2.1-1.3b", (GPU_LR[0], *GPU_HR))
    up = upsampler_flops()
    lines = [f"FLOPs counted with `torch.utils.flop_counter` on `meta` (`bench.dit_flops`): `wan2.1-1.3b`, latent "
             f"{GPU_LR[0]}x{GPU_HR[0]}x{GPU_HR[1]} (1080p x {OUTPUT_FRAMES} frames), 512 text tokens, one step at cfg 1, "
             f"plus the learned upsampler ({up / 1e12:.1f} TFLOPs). Projected for one H100 SXM at "
             f"{H100_BF16_FLOPS / 1e12:.0f} TFLOP/s dense bf16 and an **assumed MFU of {ASSUMED_MFU:.0%}** "
             "(the kernels' share of the attention FLOPs they skip is what block-sparse kernels must realise; "
             "FlexAttention visits only the selected tiles).", "",
             "| attention | DiT TFLOPs / step | projected s / step | projected output frames / s (1 step + upsampler) |",
             "|---|---|---|---|"]
    rate = H100_BF16_FLOPS * ASSUMED_MFU
    for mode, f in flops.items():
        s = f["total"] / rate
        lines.append(f"| {mode} | {f['total'] / 1e12:.1f} | {s:.2f} | {OUTPUT_FRAMES / (s + up / rate):.1f} |")
    return "\n".join(lines) + "\n"


def upsampler_flops() -> int:
    """FLOPs of the learned upsampler from the 480p to the 1080p latent (meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = SimpleGVR.from_config("wan2.1-1.3b", device="meta")
    with FlopCounterMode(display=False) as fc:
        model.upsampler(torch.empty(1, 16, *GPU_LR, device="meta"), size=GPU_HR)
    return fc.get_total_flops()


def cpu_report(steps: dict, kernels: list[dict], latent_thw) -> str:
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [f"CPU ratios ({machine}; process CPU seconds, so a shared machine's other jobs do not count):", "",
             f"- 1 step vs 50 steps, whole upscale of the `tiny` config (LR 5x16x24 -> 5x32x48, cfg 1): "
             f"{steps['one']:.3f} s vs {steps['fifty']:.3f} s, ratio {steps['one'] / steps['fifty']:.3f} "
             f"({steps['fifty'] / steps['one']:.1f}x faster).", "",
             f"One forward of the small DiT (dim 256, 4 layers, 4 heads, units of 5 frames, 12x9 blocks), latent "
             f"{latent_thw[0]}x{latent_thw[1]}x{latent_thw[2]}, median seconds:", ""]
    compiled = "compiled" in kernels[0]
    head = "| attention | kernel | eager s | flex / sdpa (eager) |"
    if compiled:
        head += " compiled s | compile time s | eager / compiled |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    ref = {r["mode"]: r for r in kernels if r["kernel"] == "sdpa"}
    for r in kernels:
        row = f"| {r['mode']} | {r['kernel']} | {r['eager']:.3f} | {r['eager'] / ref[r['mode']]['eager']:.2f} |"
        if compiled:
            row += f" {r['compiled']:.3f} | {r['compile_s']:.0f} | {r['eager'] / r['compiled']:.2f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-small", action="store_true", help="small DiT on the CPU (automatic without CUDA)")
    ap.add_argument("--cpu-ratios", action="store_true", help="the CPU ratios and the FLOP projection for BENCHMARKS.md")
    ap.add_argument("--latent", default="10x18x48", help="--cpu-ratios: latent TxHxW of the kernel comparison")
    ap.add_argument("--no-compile", action="store_true", help="--cpu-ratios: skip torch.compile")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="update the gpu_throughput section of BENCHMARKS.md")
    args = ap.parse_args(argv)
    parts = ["## One-step throughput (`benchmarks/gpu_throughput.py`)", ""]
    if args.cpu_ratios:
        thw = tuple(int(v) for v in args.latent.split("x"))
        parts += [projection(), cpu_report(steps_ratio(max(args.repeats, 3)),
                                           kernel_ratios(thw, max(args.repeats, 3), not args.no_compile), thw)]
    elif args.cpu_small or not torch.cuda.is_available():
        model, lr = cpu_model()
        rows = throughput(model, lr, CPU_HR, "cpu", args.repeats)
        parts.append(table(rows, f"CPU, small DiT (float32), LR latent {CPU_LR} -> {CPU_HR}, 1 step, cfg 1 (frames/s "
                                 f"counts {OUTPUT_FRAMES} output frames):"))
    else:
        model, lr = gpu_model("cuda")
        rows = throughput(model.to("cuda"), lr, GPU_HR, "cuda", args.repeats)
        parts.append(table(rows, f"{torch.cuda.get_device_name()}, `wan2.1-1.3b` at random weights, bf16, LR latent "
                                 f"{GPU_LR} -> 1080p latent {GPU_HR}, {OUTPUT_FRAMES} output frames, 1 step, cfg 1, "
                                 "VAE excluded:"))
    text = "\n".join(parts)
    print(text)
    if args.write:
        update_section(ROOT / "BENCHMARKS.md", "gpu_throughput", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
