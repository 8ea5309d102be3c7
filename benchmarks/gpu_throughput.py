"""1-step throughput of SimpleGVR at 1080p x 81 frames per attention mode and kernel, on one GPU
(issue 14).

    python benchmarks/gpu_throughput.py                 # CUDA: wan2.1-1.3b, bf16, random weights (<
        5 min, H100/H200)
    python benchmarks/gpu_throughput.py --cpu-small     # the same measurement at a small size on
        the CPU (CI)
    python benchmarks/gpu_throughput.py --cpu-ratios    # CPU ratios + the FLOP projection ->
        BENCHMARKS.md

GPU run: the `wan2.1-1.3b` config at random weights in bf16; an LR latent of 21 x 60 x 107 (480p, 81
frames) is upsampled by the learned upsampler to the 1080p latent 21 x 135 x 240
(`pipeline.build_condition`), then one Euler step (cfg 1: one DiT pass) runs on the whole clip
(`pipeline.sample`). Per attention mode (full, temporal_units, sparse_local) and kernel (sdpa:
gathered windows; flex: FlexAttention block masks; full attention has one kernel) it reports the
seconds of the DiT step, of the upsampler, output frames per second (81 / both) and peak memory. The
VAE is not part of it. Each case runs once to warm up (flex compiles there) and is timed on the
second run. Without CUDA (or with --cpu-small) the same cases run on a small DiT on the CPU in
float32.

--cpu-ratios measures on the CPU what BENCHMARKS.md reports without a GPU: 1-step vs 50-step wall
time of the tiny config, FlexAttention vs gathered-window SDPA (eager and compiled), torch.compile
of the DiT, and the FLOP-based projection for the 1-step 1.3B DiT on an H100 at an assumed MFU;
--write puts them and (on a GPU) the table into the `gpu_throughput` section of BENCHMARKS.md.

Ultra Flash (issue 31), run by a CUDA run beside the modes above, or alone with --ultraflash:

    python benchmarks/gpu_throughput.py --ultraflash [--write]               # CUDA: the real size
    python benchmarks/gpu_throughput.py --ultraflash --cpu-small             # no GPU: small CPU run
    python benchmarks/gpu_throughput.py --ultraflash --measure-density 2     # + the measured
        selection

Their published one-step SR model at random weights as `weights.import_ultraflash` builds it (Wan
2.1 1.3B over cat[noisy, condition] in block_sparse_causal attention, their v1 memory upsampler) in
bf16: LR latent 21 x 60 x 104
-> HR 21 x 120 x 208 (960x1664, 81 frames), the DiT streaming in their groups of 6/6/6/3 latent
frames with the K/V caches, and the TAEHV tiny decoder decoding in the same groups. Per stage
(upsampler, DiT, tiny decoder) the seconds and the peak of torch.cuda.max_memory_allocated,
end-to-end frames per second, after one warm-up run (flex compiles its kernels there). Every run
also counts the FLOPs of each stage at the real size on `meta` (the block-sparse self-attention from
its selected blocks: the top-k rule's count, the whole window as the bound, and, with
--measure-density, what a random-weight model at the real grid selects on the CPU) and projects
frames per second on an H100 and a B200 at ASSUMED_MFU; without CUDA the measured table is a small
CPU run of the same code.
--write puts it into the `ultraflash_throughput` section of BENCHMARKS.md.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simplegvr_core import SimpleGVR, get_config  # noqa: E402
from simplegvr_core.bench import dit_flops, update_section  # noqa: E402
from simplegvr_core.models import block_sparse  # noqa: E402
from simplegvr_core.models.attention import flex_available  # noqa: E402
from simplegvr_core.models.dit import CausalStream  # noqa: E402
from simplegvr_core.models.tiny_decoder import TinyDecoder  # noqa: E402
from simplegvr_core.pipeline import build_condition, pad_text, sample  # noqa: E402
from simplegvr_core.plan import plan_sampling  # noqa: E402
from simplegvr_core.weights import ULTRAFLASH_RECIPE, ultraflash_config  # noqa: E402

OUTPUT_FRAMES = 81  # 21 latent frames
GPU_LR, GPU_HR = (21, 60, 107), (135, 240)  # latent (T, H, W) of 480p and (H, W) of 1080p
# --cpu-small: tokens 7 x 10 x 12 (units 5+2, 2 x 1 blocks a frame)
CPU_LR, CPU_HR = (7, 5, 6), (20, 24)
H100_BF16_FLOPS = 989e12  # dense bf16 peak of an H100 SXM
# a well-tuned bf16 DiT forward (large GEMMs, flash attention) reaches 35-50 % of peak
ASSUMED_MFU = 0.4


def small_config(**dit) -> dict:
    """The small DiT of `bench.cpu_times` (dim 256, 4 layers, Wan's 5-frame units and 12x9
    blocks)."""
    cfg = get_config("tiny").to_dict()
    cfg["dit"].update(
        dim=256,
        ffn_dim=1024,
        num_heads=4,
        num_layers=4,
        text_dim=64,
        text_len=64,
        unit_frames=5,
        sparse_block=(9, 12),
        **dit,
    )
    return cfg


def cases(flex: bool) -> list[tuple[str, str]]:
    """(attention mode, kernel) pairs: full has one kernel; the windowed modes have sdpa and, where
    present, flex."""
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


def run_case(
    model: SimpleGVR, lr: torch.Tensor, hr_hw, mode: str, kernel: str, device, steps: int = 1
) -> dict:
    """Seconds of build_condition (the upsampler) and of `steps` Euler steps, and peak bytes, of one
    upscale."""
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
    return {
        "mode": mode,
        "kernel": kernel,
        "upsampler_s": t1 - t0,
        "step_s": (t2 - t1) / steps,
        "peak": _peak(device),
    }


def throughput(model, lr, hr_hw, device, repeats: int = 1) -> list[dict]:
    """Every case of `cases`: warm-up run, then the median of `repeats` timed runs."""
    rows = []
    for mode, kernel in cases(flex_available()):
        # warm-up (flex compiles its kernel here on a GPU)
        run_case(model, lr, hr_hw, mode, kernel, device)
        runs = [run_case(model, lr, hr_hw, mode, kernel, device) for _ in range(repeats)]
        row = dict(
            runs[-1],
            step_s=statistics.median(r["step_s"] for r in runs),
            upsampler_s=statistics.median(r["upsampler_s"] for r in runs),
        )
        row["fps"] = OUTPUT_FRAMES / (row["step_s"] + row["upsampler_s"])
        rows.append(row)
        print(
            f"{mode:15s} {kernel:5s} step {row['step_s']:.3f} s  upsampler "
            f"{row['upsampler_s']:.3f} s  {row['fps']:.1f} frames/s"
            + (f"  peak {row['peak'] / 2**30:.1f} GiB" if row["peak"] else ""),
            flush=True,
        )
    return rows


def table(rows: list[dict], title: str) -> str:
    lines = [
        title,
        "",
        "| attention | kernel | s / DiT step | upsampler s | output frames / s | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r['peak'] / 2**30:.1f} GiB" if r["peak"] else "-"
        lines.append(
            f"| {r['mode']} | {r['kernel']} | {r['step_s']:.3f} | {r['upsampler_s']:.3f} | "
            f"{r['fps']:.1f} | {peak} |"
        )
    return "\n".join(lines) + "\n"


def gpu_model(device) -> tuple[SimpleGVR, torch.Tensor]:
    torch.manual_seed(0)
    model = (
        SimpleGVR.from_config("wan2.1-1.3b", device=device, dtype=torch.bfloat16)
        .eval()
        .requires_grad_(False)
    )
    return model, torch.randn(1, 16, *GPU_LR)


def cpu_model(seed: int = 0) -> tuple[SimpleGVR, torch.Tensor]:
    torch.manual_seed(seed)
    model = SimpleGVR.from_config(small_config()).eval().requires_grad_(False)
    return model, torch.randn(1, 16, *CPU_LR)


# --- CPU ratios and the FLOP projection (BENCHMARKS.md without a GPU) -----------------------------
def _median_time(fn, repeats: int) -> float:
    """Median CPU seconds of this process over `repeats` calls after a warm-up. With one thread
    (OMP_NUM_THREADS=1) that is the wall time of an idle machine, and it does not count the time a
    shared machine spends on other jobs."""
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
    """One DiT forward of the small DiT per windowed mode and kernel, eager and (optionally)
    torch.compile'd."""
    torch.manual_seed(0)
    model = SimpleGVR.from_config(small_config()).eval()
    x, ctx, t = torch.randn(1, 16, *latent_thw), torch.randn(1, 64, 64), torch.tensor([500.0])
    rows = []
    for mode in ("full", "temporal_units", "sparse_local"):
        for kernel in ("sdpa", "flex") if mode != "full" else ("sdpa",):
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
    """FLOPs of one 1.3B DiT pass at 1080p x 81 frames per mode (meta device) and the time they take
    at the MFU."""
    flops = dit_flops("wan2.1-1.3b", (GPU_LR[0], *GPU_HR))
    up = upsampler_flops()
    lines = [
        f"FLOPs counted with `torch.utils.flop_counter` on `meta` (`bench.dit_flops`): "
        f"`wan2.1-1.3b`, latent {GPU_LR[0]}x{GPU_HR[0]}x{GPU_HR[1]} (1080p x {OUTPUT_FRAMES} "
        f"frames), 512 text tokens, one step at cfg 1, plus the learned upsampler "
        f"({up / 1e12:.1f} TFLOPs). Projected for one H100 SXM at {H100_BF16_FLOPS / 1e12:.0f} "
        f"TFLOP/s dense bf16 and an **assumed MFU of {ASSUMED_MFU:.0%}** (the kernels' share of "
        f"the attention FLOPs they skip is what block-sparse kernels must realise; FlexAttention "
        f"visits only the selected tiles).",
        "",
        "| attention | DiT TFLOPs / step | projected s / step | projected output frames / s (1 "
        "step + upsampler) |",
        "|---|---|---|---|",
    ]
    rate = H100_BF16_FLOPS * ASSUMED_MFU
    for mode, f in flops.items():
        s = f["total"] / rate
        lines.append(
            f"| {mode} | {f['total'] / 1e12:.1f} | {s:.2f} | "
            f"{OUTPUT_FRAMES / (s + up / rate):.1f} |"
        )
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
    lines = [
        f"CPU ratios ({machine}; process CPU seconds, so a shared machine's other jobs "
        f"do not count):",
        "",
        f"- 1 step vs 50 steps, whole upscale of the `tiny` config (LR 5x16x24 -> 5x32x48, cfg "
        f"1): {steps['one']:.3f} s vs {steps['fifty']:.3f} s, ratio "
        f"{steps['one'] / steps['fifty']:.3f} ({steps['fifty'] / steps['one']:.1f}x faster).",
        "",
        f"One forward of the small DiT (dim 256, 4 layers, 4 heads, units of 5 frames, 12x9 "
        f"blocks), latent {latent_thw[0]}x{latent_thw[1]}x{latent_thw[2]}, median seconds:",
        "",
    ]
    compiled = "compiled" in kernels[0]
    head = "| attention | kernel | eager s | flex / sdpa (eager) |"
    if compiled:
        head += " compiled s | compile time s | eager / compiled |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    ref = {r["mode"]: r for r in kernels if r["kernel"] == "sdpa"}
    for r in kernels:
        row = (
            f"| {r['mode']} | {r['kernel']} | {r['eager']:.3f} | "
            f"{r['eager'] / ref[r['mode']]['eager']:.2f} |"
        )
        if compiled:
            row += (
                f" {r['compiled']:.3f} | {r['compile_s']:.0f} | {r['eager'] / r['compiled']:.2f} |"
            )
        lines.append(row)
    return "\n".join(lines) + "\n"


# --- Ultra Flash: their one-step streaming cascade (issue 31) -------------------------------------
UF_LR, UF_HR = (21, 60, 104), (120, 208)  # 832x480 x 81 frames -> 1664x960, their "1K" (HxW latent)
UF_SMALL_LR = (21, 2, 4)  # --cpu-small: the same 21 latent frames (groups 6/6/6/3), 32x64 px out
UF_REAL = dict(
    dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, text_dim=4096, hidden=128, blocks=8
)  # their files: Wan 2.1 1.3B (in_dim 32), v1 upsampler 128 wide, 8 blocks
UF_SMALL = dict(dim=128, ffn_dim=256, num_heads=2, num_layers=2, text_dim=64, hidden=16, blocks=2)
B200_BF16_FLOPS = 2.25e15  # dense bf16 peak of a B200 (HGX B200 datasheet, without sparsity)
GPUS = (("H100 SXM", H100_BF16_FLOPS), ("B200", B200_BF16_FLOPS))
UF_PUBLISHED_FPS = 30.0  # their README: "1K video at ~30 FPS" on one GPU, generator included


def ultraflash_model(
    device=None, dtype=None, small: bool = False, size: dict | None = None, **dit
) -> SimpleGVR:
    """Ultra Flash's model as `weights.import_ultraflash` builds it, at random weights: the config
    is `weights.ultraflash_config` of the shapes of their two files (UF_REAL, UF_SMALL, or `size`
    with the same keys), `dit` overrides (e.g. num_layers) applied after, and the recipe is theirs
    (one step at t = 1000, condition noise 0, no CFG)."""
    size = {**(UF_SMALL if small else UF_REAL), **(size or {})}
    shapes = get_config("wan2.1-1.3b").to_dict()
    shapes["dit"].update(
        {k: size[k] for k in ("dim", "ffn_dim", "num_heads", "num_layers", "text_dim")},
        noise_level_embed=False,
    )
    shapes["upsampler"] = dict(
        mode="memory", hidden=size["hidden"], memory_blocks=size["blocks"], memory_scale=2
    )
    with torch.device("meta"):
        files = SimpleGVR(get_config(shapes))  # tensors of their layout, no memory
    up_sd = {k.removeprefix("memory."): v for k, v in files.upsampler.state_dict().items()}
    config = ultraflash_config(files.dit.state_dict(), up_sd, num_heads=size["num_heads"]).to_dict()
    config["dit"].update(dit)
    model = SimpleGVR.from_config(config, device=device, dtype=dtype).eval().requires_grad_(False)
    model.sampling = ULTRAFLASH_RECIPE
    return model


def cascade(model: SimpleGVR, decoder: TinyDecoder, lr, context, device) -> dict:
    """One upscale as Ultra Flash runs it, timed stage by stage (CUDA synchronised around each):
    the memory upsampler on the whole clip (`build_condition`, its native 2x, condition noise 0:
    one pass, the FLOPs of their group-by-group stream), the DiT group after group (`sample` with
    the causal plan: 6/6/6/3 latent frames, one step each, K/V caches of the last 3 temporal
    blocks), the tiny decoder in the same groups. Peaks are max_memory_allocated (weights in)."""
    row = {}
    _sync(device)
    _peak_reset(device)
    t0 = time.perf_counter()
    cond = build_condition(model, lr, chunk_frames=None)
    _sync(device)
    t1 = time.perf_counter()
    row["upsampler_peak"] = _peak(device)
    _peak_reset(device)
    plan = plan_sampling(model, tuple(cond.c.shape))
    hr = sample(model, cond, plan, context=context, seed=0)
    _sync(device)
    t2 = time.perf_counter()
    row["dit_peak"] = _peak(device)
    _peak_reset(device)
    frames = decoder.decode(model.latent_format.normalise(hr), chunk_frames=plan.window_shape[0])
    _sync(device)
    t3 = time.perf_counter()
    row["decode_peak"] = _peak(device)
    if not torch.isfinite(frames).all():
        raise RuntimeError("ultraflash: the decoded frames have NaN or Inf")
    row.update(
        upsampler_s=t1 - t0,
        dit_s=t2 - t1,
        decode_s=t3 - t2,
        frames=frames.shape[2],
        groups=[e - s for s, e in plan.t_windows],
        out=tuple(frames.shape),
    )
    return row


def ultraflash_throughput(model, decoder, lr, context, device, repeats: int = 1) -> dict:
    """`cascade` once to warm up (flex compiles its kernel for every group shape there on a GPU),
    then the median of `repeats` timed runs per stage; frames/s = output frames / their sum."""
    cascade(model, decoder, lr, context, device)
    runs = [cascade(model, decoder, lr, context, device) for _ in range(max(1, repeats))]
    row = dict(runs[-1])
    for key in ("upsampler_s", "dit_s", "decode_s"):
        row[key] = statistics.median(r[key] for r in runs)
    row["total_s"] = row["upsampler_s"] + row["dit_s"] + row["decode_s"]
    row["fps"] = row["frames"] / row["total_s"]
    return row


def ultraflash_table(row: dict, title: str) -> str:
    def gib(b):
        return f"{b / 2**30:.2f} GiB" if b else "-"

    lines = [
        title,
        "",
        "| stage | seconds | share | peak memory (weights in) |",
        "|---|---|---|---|",
    ]
    for name, key, peak in (
        ("latent upsampler (memory, 2x)", "upsampler_s", "upsampler_peak"),
        (f"DiT, groups {'/'.join(map(str, row['groups']))}, 1 step", "dit_s", "dit_peak"),
        ("tiny decoder, same groups", "decode_s", "decode_peak"),
    ):
        lines.append(
            f"| {name} | {row[key]:.3f} | {row[key] / row['total_s']:.0%} | {gib(row[peak])} |"
        )
    lines.append(
        f"| **end to end** | **{row['total_s']:.3f}** | | "
        f"{gib(max(row[k] or 0 for k in ('upsampler_peak', 'dit_peak', 'decode_peak')))}"
        " |"
    )
    lines += [
        "",
        f"{row['frames']} output frames {tuple(row['out'][-2:])} in "
        f"{row['total_s']:.3f} s: **{row['fps']:.2f} frames/s** (measured).",
    ]
    return "\n".join(lines) + "\n"


def ultraflash_gpu(repeats: int) -> tuple[str, dict]:
    """The real size on CUDA: the 1.3B model and the tiny decoder at random weights in bf16."""
    torch._dynamo.reset()  # the modes above compiled flex for their shapes: a fresh recompile limit
    torch.manual_seed(0)
    model = ultraflash_model(device="cuda", dtype=torch.bfloat16)
    decoder = TinyDecoder(16).to("cuda", torch.bfloat16).eval().requires_grad_(False)
    lr, ctx = torch.randn(1, 16, *UF_LR), torch.randn(1, 64, 4096)
    row = ultraflash_throughput(model, decoder, lr, ctx, "cuda", repeats)
    text = ultraflash_table(
        row,
        f"**Measured**, {torch.cuda.get_device_name()}: Ultra Flash 1.3B "
        f"(random weights, bf16), LR latent {UF_LR} -> {UF_HR} "
        "(960x1664 px), tiny decoder bf16, median of "
        f"{max(1, repeats)} run(s) after a warm-up run:",
    )
    return text, row


def achieved(row: dict, fl: dict) -> str:
    """Counted FLOPs over measured seconds per stage (the DiT's at the top-k rule's density)."""
    dit = sum(fl["dit_dense"]) + sum(fl["attention"]["rule"])
    lines = [
        "Achieved on this GPU (counted FLOPs / measured seconds; the DiT's self-attention at "
        "the top-k rule's density):",
        "",
        "| stage | TFLOPs (counted) | seconds (measured) | TFLOP/s |",
        "|---|---|---|---|",
    ]
    for name, flops, secs in (
        ("latent upsampler", fl["upsampler"], row["upsampler_s"]),
        ("DiT", dit, row["dit_s"]),
        ("tiny decoder", fl["decoder"], row["decode_s"]),
    ):
        lines.append(f"| {name} | {flops / 1e12:.1f} | {secs:.3f} | {flops / secs / 1e12:.0f} |")
    return "\n".join(lines) + "\n"


def ultraflash_cpu_small(repeats: int) -> tuple[str, dict]:
    """The same cascade at a small size on the CPU (float32): the code path, not a speed."""
    torch.manual_seed(0)
    model = ultraflash_model(small=True)
    decoder = TinyDecoder(16).eval().requires_grad_(False)
    lr, ctx = torch.randn(1, 16, *UF_SMALL_LR), torch.randn(1, 8, UF_SMALL["text_dim"])
    row = ultraflash_throughput(model, decoder, lr, ctx, "cpu", repeats)
    d = model.config.dit
    text = ultraflash_table(
        row,
        f"**Measured**, CPU ({torch.get_num_threads()} threads), the same "
        f"cascade at a small size to prove the code path (not a speed): "
        f"Ultra Flash-shaped DiT dim {d.dim}, {d.num_layers} layers, "
        f"upsampler {UF_SMALL['hidden']} wide x {UF_SMALL['blocks']} "
        f"blocks, float32, LR latent {UF_SMALL_LR} -> "
        f"{tuple(2 * v for v in UF_SMALL_LR[1:])}:",
    )
    return text, row


# FLOPs at the real size. The block-sparse selection depends on the data, so the self-attention is
# counted from the number of selected (query block, key block) pairs; all else by FlopCounterMode.
def _no_self_attention(q, k, v, grid, settings=None, cache=None, kernel=None):
    """Stand-in for `block_sparse_attention` while counting on `meta` (counted apart)."""
    return torch.empty_like(q), None, None


def group_geometry(model: SimpleGVR, hr_thw) -> list[dict]:
    """Per streaming group of the causal plan: frames, token grid, query temporal blocks TQ,
    spatial blocks S, cached temporal blocks C (the last kv_blocks of the groups before), top-k."""
    s = model.dit.block_sparse
    pt, ph, pw = model.config.dit.patch_size
    t, h, w = hr_thw
    out, cached = [], 0
    for a, e in plan_sampling(model, (1, 16, t, h, w)).t_windows:
        grid = ((e - a) // pt, h // ph, w // pw)
        tq, bh, bw = block_sparse.block_grid(grid, s.block)
        out.append(
            dict(
                frames=e - a,
                grid=grid,
                tq=tq,
                spatial=(bh, bw),
                cached=cached,
                top_k=block_sparse.sparse_top_k(grid, s),
            )
        )
        cached = cached + tq if s.kv_blocks is None else min(s.kv_blocks, cached + tq)
    return out


def rule_density(model: SimpleGVR, g: dict) -> dict:
    """Key blocks per query block the top-k rule selects in group g: per (head, query temporal
    block) the slab keeps its k + 1 largest scores or, when the window allows fewer, all of them;
    ties, empty rows' fallback block and the forced diagonal are not counted (they add)."""
    s = model.dit.block_sparse
    n = g["spatial"][0] * g["spatial"][1]
    allowed = block_sparse.allowed_blocks(g["tq"], g["cached"], g["spatial"], s.local_range)
    per_slab = allowed.reshape(g["tq"], n, -1).sum((1, 2))
    k = g["top_k"]
    chosen = per_slab if k == 0 else per_slab.clamp(max=k + 1)
    return {
        "rule": float(chosen.sum()) / (g["tq"] * n),
        "window": float(allowed.sum()) / (g["tq"] * n),
    }


def measure_density(layers: int = 2, dtype=torch.bfloat16, hr_thw=(21, *UF_HR)) -> list[dict]:
    """Selected key blocks per query block, measured: the real widths (dim 1536, 12 heads) with
    `layers` layers at random weights, on the real grid, every group with its caches, on the CPU.
    Inputs: normal noise and a normal condition (what a random upsampler gives is no better)."""
    torch.manual_seed(0)
    model = ultraflash_model(dtype=dtype, num_layers=layers)
    geom = group_geometry(model, hr_thw)
    x, c = torch.randn(1, 16, *hr_thw), torch.randn(1, 16, *hr_thw)
    ctx = pad_text(torch.randn(1, 32, model.config.dit.text_dim), model.config.dit.text_len)
    stream = CausalStream(layers, record_masks=True)
    start, out = 0, []
    for g in geom:
        t0 = time.perf_counter()
        with torch.no_grad():
            sl = slice(start, start + g["frames"])
            model.dit(
                x[:, :, sl], c[:, :, sl], torch.tensor([1000.0]), ctx.to(dtype), None, stream=stream
            )
        start += g["frames"]
        per_layer = [float(m.sum()) / (m.shape[1] * m.shape[2]) for m in stream.masks[-1]]
        out.append({"layers": per_layer, "mean": statistics.mean(per_layer)})
        print(
            f"density {str(dtype)[6:]} group {len(out)}: {per_layer} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return out


def attention_flops(model: SimpleGVR, g: dict, density: float) -> int:
    """Self-attention FLOPs of group g over all layers and heads: every selected pair of 128-token
    blocks costs Q K^T and P V (4 T^2 d), the block scores 2 Qb Kb d (softmax and means not
    counted)."""
    d, s = model.config.dit, model.dit.block_sparse
    n = g["spatial"][0] * g["spatial"][1]
    qb, kb, t = g["tq"] * n, (g["tq"] + g["cached"]) * n, s.block_tokens
    per_head = density * qb * 4 * t * t * d.head_dim + 2 * qb * kb * d.head_dim
    return int(per_head * d.num_heads * d.num_layers)


def ultraflash_flops(densities: dict[str, list[float]] | None = None) -> dict:
    """FLOPs of every stage of the real-size cascade, counted on `meta`: the upsampler (21 frames),
    the DiT per group without its self-attention plus that from `attention_flops` at each density
    (`rule_density`'s and any measured ones given), the tiny decoder in the same groups."""
    from torch.utils.flop_counter import FlopCounterMode

    from simplegvr_core.models import dit as dit_module

    model = ultraflash_model(device="meta")
    t = UF_LR[0]
    geom = group_geometry(model, (t, *UF_HR))
    for g in geom:
        g.update(rule_density(model, g))
    dens = {
        "rule": [g["rule"] for g in geom],
        "window": [g["window"] for g in geom],
        **(densities or {}),
    }
    out = {"geometry": geom, "densities": dens}
    with FlopCounterMode(display=False) as fc:
        model.upsampler(torch.empty(1, 16, *UF_LR, device="meta"), size=UF_HR)
    out["upsampler"] = fc.get_total_flops()
    ctx = torch.empty(1, model.config.dit.text_len, model.config.dit.text_dim, device="meta")
    dense = []
    with mock.patch.object(dit_module, "block_sparse_attention", _no_self_attention):
        for g in geom:
            x = torch.empty(1, 16, g["frames"], *UF_HR, device="meta")
            with FlopCounterMode(display=False) as fc:
                model.dit(x, x, torch.empty(1, device="meta"), ctx, None)
            dense.append(fc.get_total_flops())
    out["dit_dense"] = dense
    out["attention"] = {
        name: [attention_flops(model, g, v) for g, v in zip(geom, vals)]
        for name, vals in dens.items()
    }
    with torch.device("meta"):
        decoder = TinyDecoder(16)
    with FlopCounterMode(display=False) as fc:
        decoder.decode(torch.empty(1, 16, t, *UF_HR, device="meta"), chunk_frames=geom[0]["frames"])
    out["decoder"] = fc.get_total_flops()
    out["frames"] = decoder.output_frames(t)
    return out


DENSITY_LABELS = {
    "rule": "top-k rule (k + 1 per slab)",
    "window": "whole window (top-k not biting)",
}


def ultraflash_projection(fl: dict, mfu: float = ASSUMED_MFU) -> str:
    """The counted FLOPs per stage and group, and the frames/s they project to at `mfu`."""
    geom, dens, n = fl["geometry"], fl["densities"], fl["frames"]
    tf = 1e12
    dense, att = sum(fl["dit_dense"]), {k: sum(v) for k, v in fl["attention"].items()}
    rest = fl["upsampler"] + dense + fl["decoder"]

    def secs(flops, peak):
        return flops / (peak * mfu)

    lines = [
        "**Counted** with `torch.utils.flop_counter` on `meta` at the real size: Ultra Flash 1.3B "
        f"(`weights.ultraflash_config` of their files' shapes), LR latent {UF_LR} -> {UF_HR}, "
        f"{n} frames of 960x1664, 512 text tokens, one step, no CFG. The DiT is counted per group "
        "without its self-attention; the block-sparse self-attention, whose selection depends on "
        "the data, is counted as what the selected blocks cost: 4 T^2 d per selected (query "
        "block, key block) pair and head (Q K^T and P V, T = 128 tokens, d = 128), plus the block "
        "scores. Each query block's selected key blocks (the density) per group:",
        "",
        "| group | latent frames | token grid | query blocks (TQ x S) | cached temporal blocks | "
        "key blocks | top-k per slab | "
        + " | ".join(DENSITY_LABELS.get(k, k) for k in dens)
        + " |",
        "|" + "---|" * (7 + len(dens)),
    ]
    for i, g in enumerate(geom):
        s = g["spatial"][0] * g["spatial"][1]
        lines.append(
            f"| {i + 1} | {g['frames']} | {'x'.join(map(str, g['grid']))} | "
            f"{g['tq']} x {s} | {g['cached']} | {(g['tq'] + g['cached']) * s} | "
            f"{g['top_k']} | " + " | ".join(f"{v[i]:.1f}" for v in dens.values()) + " |"
        )
    peaks = ", ".join(f"{name} {p / tf:.0f} TFLOP/s" for name, p in GPUS)
    lines += [
        "",
        f"**Projected** at an **assumed MFU of {mfu:.0%}** for every stage, dense bf16 "
        f"peaks {peaks}; DiT self-attention at the top-k rule's density:",
        "",
        "| stage | TFLOPs (counted) | " + " | ".join(f"{g} s (projected)" for g, _ in GPUS) + " |",
        "|---|---|" + "---|" * len(GPUS),
    ]
    stages = [
        ("latent upsampler (memory, 2x, 21 latent frames)", fl["upsampler"]),
        (f"DiT without self-attention ({len(geom)} groups, 30 layers)", dense),
        ("DiT block-sparse self-attention (top-k rule)", att["rule"]),
        (f"tiny decoder ({n} frames, the same groups)", fl["decoder"]),
    ]
    for name, f in stages + [("**total**", rest + att["rule"])]:
        lines.append(
            f"| {name} | {f / tf:.1f} | " + " | ".join(f"{secs(f, p):.3f}" for _, p in GPUS) + " |"
        )
    lines += [
        "",
        "Frames/s of the whole cascade (upsampler + DiT + tiny decoder) at each density "
        f"of the self-attention; the last column is the MFU a B200 would need for "
        f"{UF_PUBLISHED_FPS:.0f} frames/s:",
        "",
        "| self-attention selection | key blocks / query block (mean) | attention TFLOPs | "
        "total TFLOPs | "
        + " | ".join(f"{g} frames/s (projected)" for g, _ in GPUS)
        + f" | B200 MFU for {UF_PUBLISHED_FPS:.0f} frames/s |",
        "|---|---|---|---|" + "---|" * len(GPUS) + "---|",
    ]
    for name, vals in dens.items():
        total = rest + att[name]
        q = [g["tq"] * g["spatial"][0] * g["spatial"][1] for g in geom]
        mean = sum(v * k for v, k in zip(vals, q)) / sum(q)
        need = total * UF_PUBLISHED_FPS / n / B200_BF16_FLOPS
        lines.append(
            f"| {DENSITY_LABELS.get(name, name)} | {mean:.1f} | {att[name] / tf:.1f} | "
            f"{total / tf:.1f} | "
            + " | ".join(f"{n / secs(total, p):.0f}" for _, p in GPUS)
            + f" | {need:.1%} |"
        )
    return "\n".join(lines) + "\n"


def ultraflash_section(args, on_gpu: bool) -> str:
    """The `ultraflash_throughput` section: the measured table (GPU, or the small CPU run), the
    counted FLOPs and the projection, and what the projection leaves out."""
    parts = [
        "## Ultra Flash one-step streaming cascade (`benchmarks/gpu_throughput.py --ultraflash`)",
        "",
    ]
    row = None
    if on_gpu:
        text, row = ultraflash_gpu(args.repeats)
        parts.append(text)
    else:
        parts += [
            "No GPU was available for this run: the real-size table comes from "
            "`python benchmarks/gpu_throughput.py --ultraflash` on one CUDA GPU. Below: "
            "counted FLOPs and a projection at the real size, and a measured small-size CPU "
            "run of the same code path.",
            "",
            ultraflash_cpu_small(args.repeats)[0],
        ]
    measured = {}
    for layers, dtype in (
        (args.measure_density, torch.bfloat16),
        (args.measure_density, torch.float32),
    ):
        if layers:
            rows = measure_density(layers, dtype)
            measured[f"measured, random weights, {str(dtype)[6:]}, {layers} layers"] = [
                r["mean"] for r in rows
            ]
    fl = ultraflash_flops(measured)
    if row is not None:
        parts.append(achieved(row, fl))
    parts.append(ultraflash_projection(fl))
    parts.append(ULTRAFLASH_NOTES)
    return "\n".join(parts)


ULTRAFLASH_NOTES = (
    "What the projection does not include: the 480p generator. Ultra Flash's "
    f'~{UF_PUBLISHED_FPS:.0f} frames/s at 1K (their README: "1K video at ~30 FPS" on a single '
    "GPU; B200 among the GPUs tested) is for the whole pipeline, the Self-Forcing 4-step 480p "
    "generator included, so it is not the same quantity as these SR-only figures: the SR cascade "
    "alone has to run well above it. Their fast path also compiles the SR DiT "
    "(`--compile_sr_dit`, max-autotune-no-cudagraphs) and by default shrinks the SR K/V window "
    "for later groups (DCM: 3 -> 2 temporal blocks for the 4th group of 21 frames); here the "
    "library's fixed 3-block cache is counted. The tiny decoder's convolutions (64-256 channels "
    "at up to 960x1664) are unlikely to reach the DiT's MFU. The MFU is an assumption, not a "
    "measurement.\n"
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--cpu-small", action="store_true", help="small DiT on the CPU (automatic without CUDA)"
    )
    ap.add_argument(
        "--cpu-ratios",
        action="store_true",
        help="the CPU ratios and the FLOP projection for BENCHMARKS.md",
    )
    ap.add_argument(
        "--latent", default="10x18x48", help="--cpu-ratios: latent TxHxW of the kernel comparison"
    )
    ap.add_argument("--no-compile", action="store_true", help="--cpu-ratios: skip torch.compile")
    ap.add_argument(
        "--ultraflash",
        action="store_true",
        help="only the Ultra Flash cascade (CUDA: real size; else small CPU + FLOPs)",
    )
    ap.add_argument(
        "--measure-density",
        type=int,
        default=0,
        metavar="LAYERS",
        help="--ultraflash: measure the block selection at the real grid with LAYERS "
        "layers on the CPU (bf16 and fp32; ~minutes per layer and group)",
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--write",
        action="store_true",
        help="update the gpu_throughput / ultraflash_throughput sections of BENCHMARKS.md",
    )
    args = ap.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.cpu_small
    parts = ["## One-step throughput (`benchmarks/gpu_throughput.py`)", ""]
    if args.ultraflash:
        parts = None
    elif args.cpu_ratios:
        thw = tuple(int(v) for v in args.latent.split("x"))
        parts += [
            projection(),
            cpu_report(
                steps_ratio(max(args.repeats, 3)),
                kernel_ratios(thw, max(args.repeats, 3), not args.no_compile),
                thw,
            ),
        ]
    elif not on_gpu:
        model, lr = cpu_model()
        rows = throughput(model, lr, CPU_HR, "cpu", args.repeats)
        parts.append(
            table(
                rows,
                f"CPU, small DiT (float32), LR latent {CPU_LR} -> {CPU_HR}, 1 step, cfg 1 "
                f"(frames/s counts {OUTPUT_FRAMES} output frames):",
            )
        )
    else:
        model, lr = gpu_model("cuda")
        rows = throughput(model.to("cuda"), lr, GPU_HR, "cuda", args.repeats)
        parts.append(
            table(
                rows,
                f"{torch.cuda.get_device_name()}, `wan2.1-1.3b` at random weights, bf16, LR latent "
                f"{GPU_LR} -> 1080p latent {GPU_HR}, {OUTPUT_FRAMES} output frames, 1 step, cfg 1, "
                "VAE excluded:",
            )
        )
        del model
        torch.cuda.empty_cache()
    sections = {}
    if parts is not None:
        sections["gpu_throughput"] = "\n".join(parts)
    if args.ultraflash or on_gpu:  # a GPU run measures Ultra Flash beside the modes above
        sections["ultraflash_throughput"] = ultraflash_section(args, on_gpu)
    for name, text in sections.items():
        print(text)
        if args.write:
            update_section(ROOT / "BENCHMARKS.md", name, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
