"""Train SimpleGVR (paper §4.3-4.4, §5.1): one CPU, one GPU, or many GPUs and nodes with `accelerate
launch`.

    python training/train.py --config training/configs/cpu_smoke.toml [section.key=value ...]
        [--resume] [--export OUT [--overwrite]]
    accelerate launch training/train.py --config training/configs/stage1_classic_17f.toml
    accelerate launch --multi_gpu --num_processes 8 training/train.py --config ... train.fsdp=true
        train.grad_accum=2

The loop, in the paper's terms: condition noise s ~ U[0.3, 0.6] on the LR latent before the
upsampler, σ from the configured timestep sampler, x_σ = (1-σ) x0 + σ ε, flow-matching loss ||(ε -
x0) - v||², null prompt 10% of the time, AdamW (lr 5e-5), gradient clipping, EMA of the weights.

Many processes compute what one process computes with the same global batch
(train.batch_size x processes x train.grad_accum): every sample of the run, its clip and all its
random draws are a pure function of (seed, its run-wide index j) (`training.data.StepSampler`,
`sample_draws`), the loss is the mean over the global batch, and DDP (default) or FSDP2 (`train.fsdp
= true`, `training/distributed.py`) average the gradients over the ranks.

Checkpoints (every `log.checkpoint_every` steps) hold the full model, its EMA, optimizer, LR
scheduler, step and RNG states, gathered from every rank and written by rank 0 to a temporary folder
that is renamed when complete; `--resume` continues exactly where the run stopped, with any number
of processes. `--export OUT` writes the EMA weights as the safetensors checkpoint the nodes and
`upscale` load; an existing OUT is refused before training starts (and again at the rename) unless
`--overwrite`. The run deletes nothing but its own temporaries and checkpoint folders
(`simplegvr_core.files`); a step that cannot fit in memory is refused before the first one
(`training.budget`); every error is one line and exit code 2 (`--debug`: the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core.console import exit_process, one_line, sigterm_as_interrupt  # noqa: E402
from simplegvr_core.files import check_output, clean_stale_temporaries  # noqa: E402
from simplegvr_core.timesteps import TimestepSampler  # noqa: E402
from training import distill  # noqa: E402
from training.checkpoints import _ckpt_dirs, load_training_state, save_training_state  # noqa: E402
from training.config import input_paths, load_config, validate_config  # noqa: E402
from training.data import CODEC_KEY, Data, declared_codec, pad_contexts  # noqa: E402
from training.losses import PixelMetric, flow_loss, sample_draws  # noqa: E402
from training.models import EMA, build_model, export_ema, freeze, lineage, plain_model  # noqa: E402


@torch.no_grad()
def validate(
    model_config, ema_state: dict[str, torch.Tensor], data: Data, config: dict, device
) -> dict:
    """Upscale the held-out samples with the (full, gathered) EMA weights; latent PSNR against their
    HR latents."""
    from simplegvr_core.pipeline import build_condition, sample
    from training.data import collate

    model = net = plain_model(model_config, ema_state).to(device).eval()
    seed = config["train"]["seed"]
    batch = collate([data.dataset[(i, seed + 1000 + i)] for i in data.val_idx])
    triple = data.to_model_space(batch)
    if triple is None:
        return {}
    hr, lr, ctx = triple
    fmt = model.latent_format
    psnr, psnr_interp = [], []
    for i in range(hr.shape[0]):
        ctx_i = pad_contexts([ctx[i]], model.config.dit.text_dim, device, model.config.dit.text_len)
        cond = build_condition(
            net,
            fmt.denormalise(lr[i : i + 1].cpu()),
            width=hr.shape[-1] * fmt.spatial_ratio,
            height=hr.shape[-2] * fmt.spatial_ratio,
            seed=seed,
        )
        out = sample(
            net, cond, context=ctx_i, steps=int(config["log"]["val_steps"]), cfg=1.0, seed=seed
        )
        x0 = fmt.normalise(out.to(device))
        interp = torch.nn.functional.interpolate(
            lr[i : i + 1], size=tuple(hr.shape[2:]), mode="trilinear"
        )
        rng = float(hr[i].max() - hr[i].min())
        psnr.append(10 * math.log10(rng**2 / float(((x0 - hr[i : i + 1]) ** 2).mean())))
        psnr_interp.append(10 * math.log10(rng**2 / float(((interp - hr[i : i + 1]) ** 2).mean())))
    return {
        "val/psnr_latent": sum(psnr) / len(psnr),
        "val/psnr_latent_interp": sum(psnr_interp) / len(psnr_interp),
    }


def train(
    config: dict,
    resume: str | None = None,
    export: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Run (or resume) training; returns {"losses": [(step, loss), ...], "step": last step,
    "skipped": [...]}.

    Under `accelerate launch` / torchrun every process calls this; the losses are the means over the
    global batch (the same on every rank), checkpoints and logs come from rank 0. `export`: write
    the EMA weights there at the end; an existing file is refused before training starts, and again
    at the rename, unless `overwrite`; a path that is one of the run's inputs is refused. Before the
    first step, the memory of a step is estimated (`training.budget`) and a run that cannot fit is
    refused (ValueError with the numbers)."""
    from tqdm.auto import tqdm

    from simplegvr_core.files import check_output_folder
    from training import distributed as D
    from training.data import StepSampler

    # set-up: the run's folder, the devices, the model (if it fits), its optimizer and what the loss
    # needs
    validate_config(config)
    if export:
        check_output(export, overwrite=overwrite, inputs=input_paths(config), what="--export")
    out = check_output_folder(config["log"]["output_dir"], "log.output_dir")
    tc = config["train"]
    accelerator, tracker = _accelerator(config, out)
    device, world, main = accelerator.device, accelerator.num_processes, accelerator.is_main_process
    log = accelerator.print
    torch.manual_seed(tc["seed"])
    # the same weights on every rank (same seed)
    model = _model_within_budget(config, device, world)
    model.dit.gradient_checkpointing = bool(tc["gradient_checkpointing"])
    freeze(model, tc["freeze"])
    model.to(device).train()
    if tc["fsdp"]:
        D.shard_model(model, device)
    ema = EMA(model, tc["ema_decay"])  # after sharding: the shadow is sharded like the weights
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=tc["lr"],
        betas=tuple(tc["betas"]),
        weight_decay=tc["weight_decay"],
    )
    warm = max(1, int(tc["warmup_steps"]))
    # Stepped here once per optimizer step: accelerate's prepared scheduler would step once per
    # process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warm))
    loss_kit = _LossKit(config, model, device)
    if tc["fsdp"]:
        net, optimizer = model, accelerator.prepare(optimizer)
    else:
        # DDP over the processes (a no-op for one)
        net, optimizer = accelerator.prepare(model, optimizer)
    torch_optimizer = getattr(optimizer, "optimizer", optimizer)

    # resume, or export what was already trained
    if main:
        for d in (out, out / "checkpoints"):
            for p in clean_stale_temporaries(d):
                log(f"removed {p.name}, left by an interrupted run")
    start = (
        _resume(resume, out, model, ema, torch_optimizer, scheduler, config, world, log)
        if resume
        else 0
    )
    total = int(tc["steps"])
    if export and start >= total:
        _export(model, ema, export, start, loss_kit.export_meta, overwrite, main, log)
        return {"losses": [], "step": start, "skipped": []}

    # data: every sample of the run is a pure function of (seed, its index)
    # rank 0 writes synthetic clips and the text cache, the others read them
    with accelerator.main_process_first():
        data = Data(config, model, device, log)
    if tracker:
        accelerator.init_trackers("simplegvr", config={k: json.dumps(v) for k, v in config.items()})
    keys = StepSampler(
        len(data.train_idx),
        int(tc["batch_size"]),
        int(tc["seed"]),
        start,
        world,
        accelerator.process_index,
        bool(tc["overfit"]),
        int(tc["grad_accum"]),
    )
    batches = data.loader(_MapKeys(keys, data.train_idx))

    # the loop
    losses, t0 = [], time.time()
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        disable=not (progress and main),
        desc="training",
    )
    for step in bar:
        loss = _train_step(net, model, data, batches, keys, step, loss_kit, accelerator)
        if tc["grad_clip"]:
            accelerator.clip_grad_norm_(net.parameters(), tc["grad_clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, step)
        done = step + 1
        losses.append((done, loss))
        bar.set_postfix(loss=f"{loss:.4f}")
        if tracker and (done % int(config["log"]["log_every"]) == 0 or done == total):
            accelerator.log(
                {
                    "train/loss": loss,
                    "train/lr": scheduler.get_last_lr()[0],
                    "data/skipped": len(data.skipped),
                    "time/steps_per_s": (done - start) / max(1e-9, time.time() - t0),
                },
                step=done,
            )
        if (
            int(config["log"]["validate_every"])
            and done % int(config["log"]["validate_every"]) == 0
        ):
            ema_state = D.full_tensors(ema.shadow)
            if main:
                vals = validate(model.config, ema_state, data, config, device)
                log(f"step {done}: " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items()))
                if tracker and vals:
                    accelerator.log(vals, step=done)
        if done % int(config["log"]["checkpoint_every"]) == 0 or done == total:
            save_training_state(
                out,
                done,
                model,
                ema,
                torch_optimizer,
                scheduler,
                config,
                int(config["log"]["keep_checkpoints"]),
                world=world,
                log=log,
            )
        accelerator.wait_for_everyone()
        if tc["stop_at_step"] and done >= int(tc["stop_at_step"]):
            # a deliberate interruption (tests and time-boxed jobs); resume continues from here
            break

    # the end: what was skipped, the export, the losses
    if data.skipped:
        log(f"skipped {len(data.skipped)} broken or short samples/videos")
    if export:
        _export(
            model,
            ema,
            export,
            losses[-1][0] if losses else start,
            loss_kit.export_meta,
            overwrite,
            main,
            log,
        )
    if tracker:
        accelerator.end_training()
    if main:
        with open(out / "losses.jsonl", "a") as f:
            for s, v in losses:
                f.write(json.dumps({"step": s, "loss": v}) + "\n")
    return {
        "losses": losses,
        "step": losses[-1][0] if losses else start,
        "skipped": list(data.skipped),
    }


def _accelerator(config: dict, out: Path):
    """(accelerate's Accelerator for this process, the tracker name or None): CUDA when there is
    one, the configured mixed precision there, our own FSDP (train.fsdp) instead of accelerate's."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    use_cuda = torch.cuda.is_available()
    tracker = (
        config["log"]["tracker"] if config["log"]["tracker"] not in ("", "none", None) else None
    )
    if tracker == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                tracker = None
    accelerator = Accelerator(
        mixed_precision=config["train"]["mixed_precision"] if use_cuda else "no",
        cpu=not use_cuda,
        log_with=tracker,
        project_dir=str(out),
    )
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError(
            "accelerate's FSDP config is not used here: set train.fsdp=true and launch without "
            "--use_fsdp (e.g. accelerate launch --multi_gpu --num_processes 8 ...); the trainer "
            "shards every DiT block with torch's fully_shard itself, the same way on CPU and GPU"
        )
    return accelerator, tracker


def _model_within_budget(config: dict, device, world: int):
    """The model to train, in float32, built only once the memory of a step is known to fit
    (`training.budget`, every rank agreeing; train.check_memory=false skips the estimate)."""
    from training import budget
    from training import distributed as D

    tc = config["train"]
    if not tc["check_memory"]:
        return build_model(config["model"]).float()
    imported = config["model"]["wan"] and not config["model"]["init"]  # its shape is in its weights
    probe = build_model(config["model"], device=None if imported else "meta").float()
    freeze(probe, tc["freeze"])
    already = sum(p.numel() * 4 for p in probe.parameters()) if imported else 0
    error = D.first_error(
        budget.memory_error(
            config,
            probe,
            device,
            world=world,
            already=already,
            processes_here=budget.local_processes(world),
        )
    )
    if error:
        raise ValueError(error)
    return probe if imported else build_model(config["model"]).float()


class _LossKit:
    """What the loss of a step needs besides the batch: where σ is drawn (the timestep sampler, or a
    student's schedule), a teacher (distillation), the pixel metric, and the weights of its
    terms."""

    def __init__(self, config: dict, model, device):
        tc, dc = config["train"], config["distill"]
        self.config = config
        if dc["method"]:  # a student is trained only at the sigmas its sampler visits
            self.sampler = distill.StudentSchedule(int(dc["steps"]), float(dc["shift"]))
        else:
            self.sampler = TimestepSampler(
                tc["timestep_sampler"],
                logit_mean=tc["logit_mean"],
                logit_std=tc["logit_std"],
                curve=tc["detail_curve"] or None,
            )
        self.teacher = distill.load_teacher(config, device)
        self.metric = (
            PixelMetric(tc["pixel_metric"], model.latent_format, device)
            if tc["pixel_metric"]
            else None
        )
        recipe, extra = distill.student_recipe(config) or (None, {})
        codec = declared_codec(config)  # the demo codec says what it is: the checkpoint says it too
        self.export_meta = (
            recipe,
            {**lineage(config["model"]), **extra, **({CODEC_KEY: codec} if codec else {})},
        )


def _train_step(net, model, data, batches, keys, step: int, kit: _LossKit, accelerator) -> float:
    """One optimizer step's forward and backward passes over its grad_accum micro-batches; returns
    the step's loss, the mean over the global batch (the same on every rank)."""
    from training import distributed as D

    tc, device, world = kit.config["train"], accelerator.device, accelerator.num_processes
    bs, accum = int(tc["batch_size"]), int(tc["grad_accum"])
    loss_sum = torch.zeros((), dtype=torch.float64)
    for micro in range(accum):
        batch = next(batches)
        triple = data.to_model_space(batch)
        usable = 0 if triple is None else triple[0].shape[0]
        if usable != bs:
            raise ValueError(
                f"step {step + 1}: {bs - usable} of {bs} samples found no readable clip "
                f"({batch['errors'][-1] if batch['errors'] else 'no reason given'})"
            )
        hr, lr, ctx_list = triple
        ctx = pad_contexts(ctx_list, model.config.dit.text_dim, device, model.config.dit.text_len)
        draws = [
            sample_draws(tc["seed"], j, hr.shape[1:], lr.shape[1:], tc, kit.sampler)
            for j in keys.sample_indices(step, micro)
        ]
        with D.no_sync(net, micro < accum - 1):
            with accelerator.autocast():
                # HR, or a teacher's solution
                target = distill.targets(kit.config, kit.teacher, hr, lr, ctx, draws)
                per_sample = flow_loss(
                    net,
                    target,
                    lr,
                    ctx,
                    draws,
                    float(tc["upsampler_weight"]),
                    kit.metric,
                    # through the DDP wrapper / FSDP hooks
                    float(tc["ssim_weight"]),
                )
            # The loss of the step is the mean over the global batch; DDP and FSDP average gradients
            # over ranks.
            accelerator.backward(per_sample.sum() * (world / keys.global_batch))
        loss_sum += per_sample.detach().double().sum().cpu()
    return float(accelerator.reduce(loss_sum.to(device), "sum")) / keys.global_batch


def _resume(
    resume: str, out: Path, model, ema, optimizer, scheduler, config: dict, world: int, log
) -> int:
    """The step to continue from: `resume` "auto" takes the latest checkpoint in the run's folder
    (step 0 when there is none), else the checkpoint folder it names."""
    from training import distributed as D

    ck = None
    if D.rank() == 0:
        found = _ckpt_dirs(out)
        ck = (found[-1] if found else None) if resume == "auto" else Path(resume)
    ck = D.broadcast_object(str(ck) if ck is not None else None)
    if ck is None:
        log(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
        return 0
    batch = (int(config["train"]["batch_size"]), world, int(config["train"]["grad_accum"]))
    start = load_training_state(Path(ck), model, ema, optimizer, scheduler, batch)
    log(f"resumed from {ck} at step {start}")
    return start


def _export(model, ema, path: str, step: int, meta, overwrite: bool, main: bool, log) -> None:
    """The gathered EMA weights as the checkpoint the nodes and `upscale` load (rank 0 writes
    it)."""
    from training import distributed as D

    ema_state = D.full_tensors(ema.shadow)
    if main:
        log(
            f"exported EMA weights of step {step} to "
            f"{export_ema(model.config, ema_state, path, step, meta, replace=overwrite)}"
        )


class _MapKeys:
    """Batch sampler: StepSampler positions -> dataset indices of the training split."""

    def __init__(self, keys, train_idx: list[int]):
        self.keys, self.train_idx = keys, train_idx

    def __iter__(self):
        for batch in self.keys:
            yield [(self.train_idx[i], s) for i, s in batch]


def _leave_process_group() -> None:
    """Every rank leaves the process group together after a finished run, while the interpreter
    is whole (the process then ends through `console.exit_process`)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", required=True, help="TOML config (training/configs/*.toml)")
    ap.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value overrides, e.g. train.steps=200 log.output_dir=runs/x",
    )
    ap.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from the latest checkpoint in log.output_dir (or from the given "
        "checkpoint folder)",
    )
    ap.add_argument(
        "--export",
        default=None,
        help="write the EMA weights to this .safetensors when done (an existing "
        "file is refused before training starts, unless --overwrite)",
    )
    ap.add_argument(
        "--overwrite", action="store_true", help="let --export replace an existing file"
    )
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()
    try:
        config = load_config(args.config, args.overrides)
        train(config, resume=args.resume, export=args.export, overwrite=args.overwrite)
        _leave_process_group()
    except KeyboardInterrupt:
        print("train: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error is one line and exit 2; --debug: traceback
        if args.debug:
            raise
        print(f"train: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_process(main())  # launched as N processes, each ends cleanly (console.exit_process)
