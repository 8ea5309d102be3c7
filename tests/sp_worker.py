"""Run by tests/test_sequence_parallel.py under torchrun (2 processes, gloo): the sequence-parallel
DiT against the one-process DiT on the same weights and inputs, and the bytes it sends against
`parallel.bytes_per_forward`. Writes one JSON line per case to the file given as argv[1] (rank
0)."""

import json
import sys

import torch
from helpers import randomize_

from simplegvr_core import SimpleGVR, parallel
from simplegvr_core.parallel import SEQUENCE_PARALLEL_MODES

parallel.init_process_group("cpu")
model = randomize_(SimpleGVR.from_config("tiny"), seed=1, std=0.2).eval()
g = torch.Generator().manual_seed(0)
# 3x3x5 = 45 tokens
x, c = torch.randn(2, 16, 3, 6, 10, generator=g), torch.randn(2, 16, 3, 6, 10, generator=g)
ctx, t = torch.randn(2, 7, 32, generator=g), torch.tensor([300.0, 700.0])
rows = []
for dtype in (torch.float32, torch.bfloat16):
    m = model.to(dtype)
    for mode in SEQUENCE_PARALLEL_MODES:
        with torch.no_grad():
            parallel.enable(m.dit, None)
            ref = m.dit(x.to(dtype), c.to(dtype), t, ctx.to(dtype), 0.4, attention=mode)
            sp = parallel.SequenceParallel()
            parallel.enable(m.dit, sp)
            out = m.dit(x.to(dtype), c.to(dtype), t, ctx.to(dtype), 0.4, attention=mode)
        sent = torch.tensor([sp.sent_bytes])
        torch.distributed.all_reduce(sent)
        cfg = m.config.dit
        formula = sum(
            parallel.bytes_per_forward(
                45, cfg.dim, cfg.num_layers, 16 * 4, 2, batch=2, element_size=out.element_size()
            )
            for _ in range(2)
        )
        rows.append(
            {
                "dtype": str(dtype),
                "mode": mode,
                "diff": float((out.float() - ref.float()).abs().max()),
                "scale": float(ref.float().abs().max()),
                "sent": int(sent),
                "formula": formula,
                "bounds": sp.bounds(45),
            }
        )
if torch.distributed.get_rank() == 0:
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
torch.distributed.destroy_process_group()
