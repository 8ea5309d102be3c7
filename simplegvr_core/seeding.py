"""The one seeding policy of SimpleGVR: what a seed is, and how every random stream is derived from
it.

A seed is an int in [0, 2**64 - 1] (ComfyUI's seed widgets go up to 0xffffffffffffffff), and every
bit of it counts: two seeds that differ anywhere give different streams. Each use of randomness
draws from its own stream, `SeedSequence(seed, spawn_key=(stream, ...))`, so for example the
condition noise and the sampling noise of one seed are independent, and the flow-guided and classic
stages of a degradation do not shift each other's draws when one of them is switched off.

Streams are named here once; hosts (CLI, nodes, training) never invent their own offsets.
"""

from __future__ import annotations

import numpy as np

SEED_MAX = 2**64 - 1

# Stream ids: the first element of a SeedSequence's spawn key.
CONDITION_NOISE = 1  # c_s = (1 - s) c0 + s eps before the upsampler
SAMPLING_NOISE = 2  # the initial x_1 of flow sampling
FLOW_DEGRADE = 3  # flow-guided degradation
CLASSIC_DEGRADE = 4  # classic (RealBasicVSR) degradation
DEGRADE_MODE = 5  # which mode of a 'a,b,...' degradation list a clip gets
FILE = 6  # per-file seeds of a folder run, keyed by the file's relative path
# the draws of training sample j of a run (noise levels, noise, null prompt), keyed by j
TRAIN_SAMPLE = 7
MODEL_GUIDED = 8  # SDEdit noise of model-guided pairs


def check_seed(seed, what: str = "seed") -> int:
    """`seed` as an int in [0, SEED_MAX]; ValueError naming `what` otherwise (bools and floats
    refused)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{what}={seed!r}: expected an integer in [0, 2**64 - 1]")
    seed = int(seed)
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(
            f"{what}={seed}: expected an integer in [0, 2**64 - 1] (every bit of the seed is used, "
            "so larger values cannot be honoured)"
        )
    return seed


def seed_sequence(seed, *stream: int) -> np.random.SeedSequence:
    """The SeedSequence of `stream` (a tuple of non-negative ints) under `seed`."""
    return np.random.SeedSequence(check_seed(seed), spawn_key=tuple(int(s) for s in stream))


def numpy_rng(seed, *stream: int) -> np.random.Generator:
    """A numpy Generator for `stream` under `seed`."""
    return np.random.default_rng(seed_sequence(seed, *stream))


def derive_seed(seed, *stream: int) -> int:
    """A 64-bit seed for `stream` under `seed` (for APIs that take an int, such as
    torch.Generator)."""
    return int(seed_sequence(seed, *stream).generate_state(1, np.uint64)[0])


def torch_generator(seed, *stream: int):
    """A CPU torch.Generator for `stream` under `seed` (draw on the CPU: the same noise on every
    device)."""
    import torch

    return torch.Generator().manual_seed(derive_seed(seed, *stream))
