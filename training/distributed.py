"""Training on many processes: FSDP2 sharding of SimpleGVR and the full state of a sharded or
replicated run.

One code path serves one process, DDP and FSDP (on CPU with gloo as on GPUs with NCCL):

- `shard_model` applies torch's FSDP2 (`fully_shard`) to every DiT block, the upsampler and the root
  module, so parameters, gradients and optimizer state are split across ranks. accelerate cannot do
  FSDP on CPU (its FSDP type requires GPUs), so the trainer shards with torch's own API; the same
  call runs on GPUs.
- `full_model_state` / `full_optimizer_state` / `full_tensors` gather the full, unsharded state onto
  rank 0 (collectives: every rank calls them, only rank 0 gets the tensors), for checkpoints, the
  exported EMA and validation. `load_full_state` / `load_full_tensors` do the reverse: rank 0 reads
  a checkpoint, every rank receives its part (broadcast, or its shard), so checkpoints need not be
  on every node's disk.
- Without a process group every function is the plain single-process operation.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(model: torch.nn.Module) -> bool:
    """True when `model` was sharded by `shard_model` (FSDP2)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """FSDP2 over all ranks: each DiT block and the upsampler are one unit (all-gathered for their
    forward and backward only), the root unit holds the embeddings and the head. Module names, and
    so the checkpoint keys, are unchanged. In place; returns the model."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not is_distributed():
        raise ValueError(
            "train.fsdp = true needs several processes: launch with `accelerate launch "
            "--num_processes N` (add --cpu without GPUs) or torchrun"
        )
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.dit.blocks:
        fully_shard(block, mesh=mesh)
    if any(True for _ in model.upsampler.parameters()):
        fully_shard(model.upsampler, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def no_sync(model: torch.nn.Module, active: bool):
    """Skip DDP's gradient all-reduce for the micro-batches of a step but the last (gradient
    accumulation); FSDP reduce-scatters every micro-batch, which keeps its gradients sharded."""
    from torch.nn.parallel import DistributedDataParallel

    if active and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict (CPU) on rank 0, {} on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The full optimizer state (keyed by parameter name, CPU) on rank 0, {} on the other ranks.
    Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_full_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict | None,
    optimizer_state: dict | None,
) -> None:
    """Load full states that rank 0 read (the other ranks pass None) into a plain, DDP or FSDP model
    and its optimizer. Collective. An optimizer state saved by `optimizer.state_dict()` (integer
    keys, checkpoints of earlier versions) is loaded as such."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    distributed = is_distributed()
    opts = _options(broadcast_from_rank0=True) if distributed else _options()
    set_model_state_dict(model, model_state or {}, options=opts)
    legacy = broadcast_object(
        bool(optimizer_state) and all(isinstance(k, int) for k in optimizer_state["state"])
    )
    if legacy:
        if is_sharded(model):
            raise ValueError(
                "this checkpoint's optimizer state is in the old per-index format, which cannot be "
                "sharded: resume it once without train.fsdp, then continue with FSDP"
            )
        optimizer.load_state_dict(broadcast_object(optimizer_state))
        return
    set_optimizer_state_dict(model, optimizer, optimizer_state or {}, options=opts)


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full CPU copies of a dict of (possibly sharded) tensors on rank 0, {} on the other ranks.
    Collective."""
    out = {}
    me = rank()
    for k, t in tensors.items():
        full = t.full_tensor() if _is_dtensor(t) else t
        if me == 0:
            out[k] = full.detach().cpu().clone()
    return out


def load_full_tensors(
    target: dict[str, torch.Tensor], full: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """`target`'s tensors (sharded like the parameters, or replicated) with the values of `full`,
    which only rank 0 has (None elsewhere). Collective. Returns the new dict."""
    from torch.distributed.tensor import distribute_tensor

    out = {}
    me = rank()
    for k, t in target.items():
        if _is_dtensor(t):
            src = (
                full[k].to(t.device, t.dtype)
                if me == 0
                else torch.empty(t.shape, dtype=t.dtype, device=t.device)
            )
            out[k] = distribute_tensor(src, t.device_mesh, t.placements, src_data_rank=0)
        else:
            v = full[k].to(t.device, t.dtype) if me == 0 else torch.empty_like(t)
            if is_distributed():
                dist.broadcast(v, 0)
            out[k] = v
    return out


def broadcast_object(obj):
    """`obj` of rank 0 on every rank (pickled over the process group; only our own objects are
    sent)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def first_error(error: str | None) -> str | None:
    """The first rank's error of those that have one, on every rank (None when none has): a check
    whose result may differ between ranks (free memory) then stops all of them, so that none waits
    for the others in a collective."""
    if not is_distributed():
        return error
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, error)
    return next((e for e in out if e), None)
