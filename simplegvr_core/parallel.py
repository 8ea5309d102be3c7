"""Sequence-parallel inference on torch.distributed: the DiT's tokens split across N processes,
Ulysses-style.

    torchrun --nproc_per_node=N -m simplegvr_core upscale --checkpoint ... --latent in.latent --out
        out.latent

Every process holds 1/N of the token sequence (contiguous frame-major ranges, sizes differing by at
most one, so any latent size splits). Everything per token - modulation, norms, q/k/v/o projections,
RoPE, text cross-attention, the FFN and the head - runs on the local tokens only. Around
self-attention one `all_to_all` exchanges sequence shards for head shards: each process then holds
the WHOLE sequence for num_heads/N heads and runs the unchanged attention of any mode (`full`,
`temporal_units`, `sparse_local` are per head, so each head sees exactly what it sees in one
process), and a second `all_to_all` brings the output back to sequence shards. The head's output (C
x patch values a token, far less than `dim`) is all-gathered once per forward. The latent upsampler,
the patch embedding, the text and time embeddings and the ODE update run on every process: they are
a small part of the work (the upsampler runs once a run, the rest is per-token or tiny), and
computing them everywhere needs no communication and gives every process the same condition and
noise.

Only `num_heads % N == 0` splits the heads evenly; other N are refused (`check_world`). gloo (CPU)
and NCCL (GPU) run the same code. Inference only: the collectives carry no gradient.

The DiT's hooks are two lines in `models/dit.py` (`SimpleGVRDiT.sequence_parallel`, set by
`enable`); this module owns the rest, so other attention backends can be added to
`models/attention.py` without touching it.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from .config import ATTENTION_MODES, CAUSAL_MODE

# The attention modes a split sequence runs: every one but Ultra Flash's streaming mode, whose
# groups run one after another with the K/V of the groups before (its memory does not grow with the
# clip; it runs in one process).
SEQUENCE_PARALLEL_MODES = tuple(m for m in ATTENTION_MODES if m != CAUSAL_MODE)


def env_world() -> int:
    """The number of processes a launcher (torchrun, accelerate) started, from the environment; 1
    without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def valid_worlds(num_heads: int) -> list[int]:
    return [n for n in range(1, num_heads + 1) if num_heads % n == 0]


def check_world(num_heads: int, world: int) -> None:
    """ValueError unless `world` processes can split `num_heads` attention heads evenly."""
    if world < 1 or num_heads % world:
        raise ValueError(
            f"sequence parallelism over {world} processes needs the model's {num_heads} attention "
            f"heads to split evenly: use --nproc_per_node in {valid_worlds(num_heads)}"
        )


def check_mode(mode: str, world: int) -> None:
    """ValueError when `world` > 1 processes are asked to split the attention `mode` that does not
    split."""
    if world > 1 and mode not in SEQUENCE_PARALLEL_MODES:
        raise ValueError(
            f"the {mode!r} attention mode does not run sequence-parallel (it streams groups of "
            f"frames, so its memory does not grow with the clip): run it in one process, or use "
            f"one of {list(SEQUENCE_PARALLEL_MODES)} with --attention"
        )


def split_sizes(n: int, world: int) -> list[int]:
    """Token counts of the N contiguous shards of a sequence of n tokens (as torch.tensor_split
    cuts)."""
    q, r = divmod(n, world)
    return [q + (1 if i < r else 0) for i in range(world)]


def init_process_group(device: str, timeout_s: float = 1800.0):
    """Join the process group a launcher set up (NCCL for CUDA, gloo otherwise); returns (rank,
    world)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


class SequenceParallel:
    """The process group a DiT's tokens are split over, and the collectives of the split.
    `sent_bytes` counts what this process sent (benchmarks/sequence_parallel.py reads the same
    formula, `bytes_per_forward`)."""

    def __init__(self, group=None):
        import torch.distributed as dist

        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.sent_bytes = 0

    # --- token shards ----------------------------------------------------------------------------
    def bounds(self, n: int) -> tuple[int, int]:
        sizes = split_sizes(n, self.world)
        start = sum(sizes[: self.rank])
        return start, start + sizes[self.rank]

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This process's contiguous part of `x` along `dim` (the token axis)."""
        s, e = self.bounds(x.shape[dim])
        return x.narrow(dim, s, e - s).contiguous()

    def gather(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """[B, n_local, D] shards of every process -> the full [B, n, D] (all_to_all_single with
        uneven splits: every process receives every shard)."""
        sizes = split_sizes(n, self.world)
        b, _, d = x.shape
        send = x.contiguous().reshape(1, -1).expand(self.world, -1).contiguous().flatten()
        out = torch.empty(b * n * d, dtype=x.dtype, device=x.device)
        _all_to_all(out, send, [b * s * d for s in sizes], [x.numel()] * self.world, self.group)
        self.sent_bytes += x.numel() * x.element_size() * (self.world - 1)
        parts = out.split([b * s * d for s in sizes])
        return torch.cat([p.view(b, s, d) for p, s in zip(parts, sizes)], dim=1)

    # --- attention --------------------------------------------------------------------------------
    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid, attn_kwargs: dict
    ) -> torch.Tensor:
        """Self-attention of local tokens q, k, v: [B, n_local, H, d] (RoPE applied) over the whole
        sequence; returns [B, n_local, H, d]."""
        from .models.attention import attention

        b, n_local, h, d = q.shape
        n = grid[0] * grid[1] * grid[2]
        qkv = self._to_heads(torch.stack([q, k, v]), n)  # [3, B, n, H/N, d]
        kw = {key: val for key, val in attn_kwargs.items() if key != "sequence_parallel"}
        o = attention(
            qkv[0].transpose(1, 2), qkv[1].transpose(1, 2), qkv[2].transpose(1, 2), grid, **kw
        )
        return self._to_sequence(o.transpose(1, 2), n)  # [B, n_local, H, d]

    def _to_heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """[..., n_local, H, d] sequence shards -> [..., n, H/N, d] head shards (one all_to_all)."""
        lead = x.shape[:-3]
        n_local, h, d = x.shape[-3:]
        hn = h // self.world
        sizes = split_sizes(n, self.world)
        # send buffer: for each destination p, my tokens of p's heads
        send = x.reshape(*lead, n_local, self.world, hn, d).movedim(-3, 0).contiguous()
        out = torch.empty(x.numel() // n_local * n // self.world, dtype=x.dtype, device=x.device)
        per = [int(torch.Size(lead).numel()) * s * hn * d for s in sizes]
        _all_to_all(out, send.flatten(), per, [send[0].numel()] * self.world, self.group)
        self.sent_bytes += send[0].numel() * x.element_size() * (self.world - 1)
        parts = out.split(per)
        return torch.cat([p.view(*lead, s, hn, d) for p, s in zip(parts, sizes)], dim=-3)

    def _to_sequence(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """[B, n, H/N, d] head shards -> [B, n_local, H, d] sequence shards (one all_to_all)."""
        b, _, hn, d = x.shape
        sizes = split_sizes(n, self.world)
        n_local = sizes[self.rank]
        out = torch.empty(self.world * b * n_local * hn * d, dtype=x.dtype, device=x.device)
        send = torch.cat([t.contiguous().flatten() for t in x.split(sizes, dim=1)])
        _all_to_all(
            out,
            send,
            [b * n_local * hn * d] * self.world,
            [b * s * hn * d for s in sizes],
            self.group,
        )
        self.sent_bytes += (send.numel() - b * n_local * hn * d) * x.element_size()
        return (
            out.view(self.world, b, n_local, hn, d)
            .permute(1, 2, 0, 3, 4)
            .reshape(b, n_local, self.world * hn, d)
        )


def _all_to_all(
    out: torch.Tensor, send: torch.Tensor, out_splits: list[int], in_splits: list[int], group
) -> None:
    """all_to_all_single of 1-D tensors, moved as bytes: gloo does not move every float type (bf16),
    and data that is only moved, never reduced, arrives bit for bit."""
    import torch.distributed as dist

    es = send.element_size()
    dist.all_to_all_single(
        out.view(torch.uint8),
        send.view(torch.uint8),
        [n * es for n in out_splits],
        [n * es for n in in_splits],
        group=group,
    )


def enable(dit, sp: SequenceParallel | None) -> None:
    """Split `dit`'s tokens over `sp`'s processes (None: back to one process). ValueError when the
    heads do not split."""
    if sp is not None:
        check_world(dit.config.num_heads, sp.world)
    dit.sequence_parallel = sp


def bytes_per_forward(
    tokens: int,
    dim: int,
    num_layers: int,
    out_patch: int,
    world: int,
    batch: int = 1,
    element_size: int = 2,
) -> int:
    """Bytes one process sends in one DiT forward under `world`-way sequence parallelism: per block,
    q, k, v (3 x tokens/N x dim) out and the attention output (tokens/N x dim) back, each (N-1)/N of
    it to other processes; then the head output (tokens/N x out_patch) to every other process."""
    if world == 1:
        return 0
    local = tokens / world
    per_block = 4 * local * dim * (world - 1) / world
    head = local * out_patch * (world - 1)
    return int(batch * element_size * (num_layers * per_block + head))
