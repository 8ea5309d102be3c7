"""A run's checkpoints: everything needed to resume, gathered from every rank and written by rank 0
to a temporary folder renamed when complete (`save_training_state`); read back on every rank
(`load_training_state`), refusing a checkpoint of another model or another global batch. Only the
trainer's own folders are ever removed (`simplegvr_core.files`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core import load_checkpoint, save_checkpoint  # noqa: E402
from simplegvr_core.files import (  # noqa: E402
    CHECKPOINT_RE,
    commit_folder,
    explain_write_error,
    remove_checkpoint_folder,
    remove_temporary,
    short,
    temp_path,
)
from simplegvr_core.weights import read_safetensors, read_torch_file  # noqa: E402
from training.models import EMA, plain_model  # noqa: E402


def _ckpt_dirs(out: Path) -> list[Path]:
    """The complete checkpoint folders of a run (`step-NNNNNNN` holding state.pt), oldest first."""
    d = out / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(
        p
        for p in d.iterdir()
        if CHECKPOINT_RE.match(p.name)
        and p.is_dir()
        and not p.is_symlink()
        and (p / "state.pt").is_file()
    )


def save_training_state(
    out: Path,
    step: int,
    model,
    ema: EMA,
    optimizer,
    scheduler,
    config: dict,
    keep: int,
    world: int = 1,
    log=print,
) -> Path | None:
    """Everything needed to resume, in full (gathered from every rank: call it on all of them),
    written by rank 0 to a temporary folder that is renamed when complete. Gathering is finished
    before anything is written, so a rank that dies mid-run leaves either a complete checkpoint or
    none (the temporary of a killed writer is removed by the next run). The global batch
    (train.batch_size x `world` processes x train.grad_accum) is recorded, so that a resume with
    another one is refused. Older checkpoints beyond `keep` are removed, only when they hold nothing
    but the trainer's files (`files.remove_checkpoint_folder`; one that holds anything else is kept
    and said so). Returns the folder on rank 0, None on the other ranks."""
    from safetensors.torch import save_file

    from training import distributed as D

    model_state = D.full_model_state(model)
    optimizer_state = D.full_optimizer_state(model, optimizer)
    ema_state = D.full_tensors(ema.shadow)
    if D.rank() != 0:
        return None
    final = out / "checkpoints" / f"step-{step:07d}"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)  # `.step-N.simplegvr-<pid>-<hex>.tmp`: removed by a later run if killed
    tmp.mkdir()
    try:
        save_checkpoint(plain_model(model.config, model_state), tmp / "model.safetensors")
        save_file({k: v.contiguous() for k, v in ema_state.items()}, str(tmp / "ema.safetensors"))
        state = {
            "step": step,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": json.dumps(config),
            "batch": {
                "batch_size": int(config["train"]["batch_size"]),
                "processes": int(world),
                "grad_accum": int(config["train"]["grad_accum"]),
            },
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / "state.pt")
        if final.exists() or final.is_symlink():
            remove_checkpoint_folder(final)  # an earlier run's at this step; refused unless ours
        commit_folder(tmp, final)
    except BaseException as e:
        remove_temporary(tmp)
        err = explain_write_error(e, final)
        if err is not e:
            raise err from None
        raise
    for old in _ckpt_dirs(out)[:-keep] if keep > 0 else []:
        try:
            remove_checkpoint_folder(old)
        except ValueError as e:
            log(f"kept an old checkpoint: {e}")
    return final


def _read_training_state(path: Path, model, ema: EMA, batch: tuple[int, int, int] | None = None):
    if not (path / "state.pt").is_file():
        raise ValueError(f"{str(path)!r} is not a training checkpoint (no state.pt)")
    saved = load_checkpoint(path / "model.safetensors")
    if saved.config.to_dict() != model.config.to_dict():
        raise ValueError(
            f"{str(path)!r} was trained with another model config: cannot resume this run from it"
        )
    shadow, _ = read_safetensors(path / "ema.safetensors")
    if set(shadow) != set(ema.shadow):
        raise ValueError(f"{str(path)!r}: EMA weights do not match the model")
    state = read_torch_file(path / "state.pt", "training state")
    missing = [
        k
        for k in ("step", "optimizer", "scheduler", "torch_rng")
        if not isinstance(state, dict) or k not in state
    ]
    if missing:
        raise ValueError(
            f"{str(path / 'state.pt')!r} is not a training state of this trainer (no "
            f"{missing[0]!r})"
        )
    if batch is not None:
        check_global_batch(state.get("batch"), batch, path)
    return saved.state_dict(), {k: v.float() for k, v in shadow.items()}, state


def check_global_batch(recorded, batch: tuple[int, int, int], path) -> None:
    """Refuse to resume with another global batch than the checkpoint's (`recorded`: its
    {"batch_size", "processes", "grad_accum"}; None for a checkpoint older than the record, which
    resumes as before). `batch`: this run's (batch_size, processes, grad_accum). The message says
    which train.grad_accum keeps the global batch."""
    if recorded is None:
        return
    try:
        old = tuple(int(recorded[k]) for k in ("batch_size", "processes", "grad_accum"))
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{str(path)!r}: its state.pt records the global batch as "
            f"{short(recorded)}: expected "
            "batch_size, processes and grad_accum"
        ) from None
    g_old, g_new = math.prod(old), math.prod(batch)
    if g_old == g_new:
        return
    bs, world, _ = batch
    fix = (
        f"set train.grad_accum={g_old // (bs * world)}"
        if g_old % (bs * world) == 0
        else f"choose train.batch_size x processes x train.grad_accum = {g_old}"
    )

    def says(b):
        return f"{b[0]} x {b[1]} process{'es' if b[1] != 1 else ''} x grad_accum {b[2]}"

    raise ValueError(
        f"checkpoint {str(path)!r} trained with global batch {g_old} ({says(old)}); "
        f"this run's is {g_new} ({says(batch)}): {fix} to resume it (each step's "
        "samples depend on the global batch)"
    )


def load_training_state(
    path: Path, model, ema: EMA, optimizer, scheduler, batch: tuple[int, int, int] | None = None
) -> int:
    """Restore a checkpoint folder into the live objects (plain, DDP or FSDP: call it on every rank;
    rank 0 reads the files and the others receive their part); returns the step to continue from.
    `batch`: this run's (batch_size, processes, grad_accum), refused when its product differs from
    the checkpoint's global batch."""
    from training import distributed as D

    model_state = shadow = state = error = None
    if D.rank() == 0:
        try:
            model_state, shadow, state = _read_training_state(path, model, ema, batch)
        except ValueError as e:
            error = str(e)
    error = D.broadcast_object(error)
    if error:
        raise ValueError(error)  # on every rank, so that none waits for the others
    D.load_full_state(model, optimizer, model_state, state["optimizer"] if state else None)
    ema.shadow = D.load_full_tensors(ema.shadow, shadow)
    small = D.broadcast_object(
        {k: v for k, v in state.items() if k != "optimizer"} if state else None
    )
    scheduler.load_state_dict(small["scheduler"])
    torch.set_rng_state(small["torch_rng"])
    if "cuda_rng" in small and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(small["cuda_rng"])
    return int(small["step"])
