"""Train SimpleGVR (paper §4.3-4.4, §5.1): one CPU, one GPU, or many GPUs and nodes with `accelerate launch`.

    python training/train.py --config training/configs/cpu_smoke.toml [section.key=value ...]
        [--resume] [--export OUT [--overwrite]]
    accelerate launch training/train.py --config training/configs/stage1_classic_17f.toml
    accelerate launch --multi_gpu --num_processes 8 training/train.py --config ... train.fsdp=true train.grad_accum=2

The loop, in the paper's terms: condition noise s ~ U[0.3, 0.6] on the LR latent before the upsampler,
σ from the configured timestep sampler, x_σ = (1-σ) x0 + σ ε, flow-matching loss ||(ε - x0) - v||²,
null prompt 10% of the time, AdamW (lr 5e-5), gradient clipping, EMA of the weights.

Many processes compute what one process computes with the same global batch
(train.batch_size x processes x train.grad_accum): every sample of the run, its clip and all its random draws
are a pure function of (seed, its run-wide index j) (`training.data.StepSampler`, `sample_draws`), the loss is
the mean over the global batch, and DDP (default) or FSDP2 (`train.fsdp = true`, `training/distributed.py`)
average the gradients over the ranks.

Checkpoints (every `log.checkpoint_every` steps) hold the full model, its EMA, optimizer, LR scheduler, step
and RNG states, gathered from every rank and written by rank 0 to a temporary folder that is renamed when
complete; `--resume` continues exactly where the run stopped, with any number of processes.
`--export OUT` writes the EMA weights as the safetensors checkpoint the nodes and `upscale` load; an
existing OUT is refused before training starts (and again at the rename) unless `--overwrite`. The
run deletes nothing but its own temporaries and checkpoint folders (`simplegvr_core.files`); a step
that cannot fit in memory is refused before the first one (`training.budget`); every error is one
line and exit code 2 (`--debug`: the traceback).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from simplegvr_core import SimpleGVR, get_config, import_wan, load_checkpoint, save_checkpoint, seeding  # noqa: E402
from simplegvr_core.console import one_line, sigterm_as_interrupt  # noqa: E402
from simplegvr_core.files import (  # noqa: E402
    CHECKPOINT_RE,
    MAX_TEXT_VALUE,
    check_output,
    clean_stale_temporaries,
    commit_folder,
    explain_write_error,
    remove_checkpoint_folder,
    remove_temporary,
    short,
    temp_path,
)
from simplegvr_core.weights import read_safetensors, read_torch_file  # noqa: E402
from simplegvr_core.sampling import add_condition_noise, noise_latent  # noqa: E402
from simplegvr_core.timesteps import TimestepSampler  # noqa: E402
from training import distill  # noqa: E402

DEFAULTS: dict = {
    "model": {"config": "", "overrides": {}, "init": "", "wan": "", "wan_num_heads": 0, "attention": "",
              "upsampler": "learned"},
    "data": {"kind": "videos", "path": "", "captions": "captions.jsonl", "frames": 17, "hr_size": [128, 128],
             "lr_size": [64, 64], "degradation": "classic", "val_count": 1, "num_workers": 0,
             "synthesize": 0, "scan": "decode"},
    "vae": {"kind": "tiny", "path": "", "seed": 0},
    "text": {"kind": "byte", "path": "", "cache": ""},
    "train": {"steps": 100, "batch_size": 1, "lr": 5e-5, "weight_decay": 0.0, "betas": [0.9, 0.999],
              "warmup_steps": 0, "grad_clip": 1.0, "ema_decay": 0.999, "null_prompt_prob": 0.1,
              "noise_level": [0.3, 0.6], "timestep_sampler": "uniform", "logit_mean": 0.0, "logit_std": 1.0,
              "detail_curve": "", "mixed_precision": "bf16", "gradient_checkpointing": False, "seed": 0,
              "overfit": False, "stop_at_step": 0, "grad_accum": 1, "fsdp": False, "upsampler_weight": 0.0,
              "pixel_metric": "", "ssim_weight": 0.0, "freeze": [], "check_memory": True},
    "log": {"output_dir": "runs/simplegvr", "tracker": "tensorboard", "log_every": 10, "checkpoint_every": 500,
            "keep_checkpoints": 3, "validate_every": 500, "val_steps": 10},
    "distill": dict(distill.DEFAULTS),  # the distillation stage (training/distill.py); method '' = flow training
}


# --- config ------------------------------------------------------------------------------------
MAX_LISTED = 5  # names a config message lists; the rest are counted


def listed(names) -> str:
    """At most MAX_LISTED names of `names`, each cut with files.short, then how many more: for
    messages about what a user may have made huge (a million unknown keys)."""
    names = list(names)
    text = ", ".join(short(n, 60) for n in names[:MAX_LISTED])
    return text + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _merge(base: dict, new: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    unknown = [k for k in new if k not in base]
    if unknown:
        key = short(f"{where}{unknown[0]}", 80)
        more = f" (and {len(unknown) - 1} more unknown keys)" if len(unknown) > 1 else ""
        raise ValueError(f"unknown config key {key}{more}: expected one of {sorted(base)}")
    for k, v in new.items():
        if isinstance(base[k], dict) and k != "overrides":
            if not isinstance(v, dict):
                raise ValueError(f"config key {where}{k}={short(v)} must be a table")
            out[k] = _merge(base[k], v, f"{where}{k}.")
        elif k == "overrides" and isinstance(base[k], dict) and isinstance(v, dict):
            out[k] = _merge_free(base[k], v)  # model.overrides.dit.dim=... adds to the file's table, not replace it
        else:
            out[k] = v
    return out


def _merge_free(base: dict, new: dict) -> dict:
    """Deep merge of a free-form table (model.overrides: any config field); `new` wins at the leaves."""
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _merge_free(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


MAX_KEY_PARTS = 8  # section.key...: model.overrides.dit.sparse_block is the deepest key (4 parts)


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict:
    """DEFAULTS <- the TOML file <- `section.key=value` overrides (values in TOML syntax, bare
    strings allowed). ValueError naming the file or the override for TOML that is malformed, not
    UTF-8 or nested too deeply."""
    from simplegvr_core.files import check_input_file

    cfg = copy.deepcopy(DEFAULTS)
    if path:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"config {str(p)!r} does not exist")
        check_input_file(p, "config")
        try:
            cfg = _merge(cfg, tomllib.loads(p.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config {str(p)!r} is not valid TOML: {e}") from None
        except UnicodeDecodeError:
            raise ValueError(f"config {str(p)!r} is not UTF-8 text (a TOML file)") from None
        except RecursionError:
            raise ValueError(f"config {str(p)!r} is TOML nested too deeply to be read") from None
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {short(item)}: expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) > MAX_KEY_PARTS:
            raise ValueError(f"override {short(key)}: {len(parts)} dotted parts, expected at most "
                             f"{MAX_KEY_PARTS}")
        node: dict = {}
        cur = node
        for part in parts[:-1]:
            cur[part] = {}
            cur = cur[part]
        try:
            cur[parts[-1]] = _parse_value(value.strip())
            cfg = _merge(cfg, node)
        except RecursionError:
            raise ValueError(f"override {short(key)}: its value is nested too deeply to be "
                             "read") from None
    return validate_config(cfg)


MIXED_PRECISION = ("no", "fp16", "bf16")
DATA_KINDS = ("videos", "shards")
SCANS = ("decode", "probe")
_INT_RANGES = {  # key: (lo, hi); every int must lie in its range
    "model.wan_num_heads": (0, 256), "data.frames": (1, 10_000), "data.val_count": (0, 1_000_000),
    "data.num_workers": (0, 64), "data.synthesize": (0, 1_000_000), "vae.seed": (0, 2**64 - 1),
    "train.steps": (1, 10**9), "train.batch_size": (1, 1024), "train.warmup_steps": (0, 10**9),
    "train.seed": (0, 2**64 - 1), "train.stop_at_step": (0, 10**9), "train.grad_accum": (1, 128),
    "log.log_every": (1, 10**9),
    "log.checkpoint_every": (1, 10**9), "log.keep_checkpoints": (0, 10**6), "log.validate_every": (0, 10**9),
    "log.val_steps": (1, 10_000), **distill.INT_RANGES,
}
_FLOAT_RANGES = {  # key: (lo, hi, lo open?)
    "train.lr": (0.0, 1.0, True), "train.weight_decay": (0.0, 10.0, False), "train.grad_clip": (0.0, 1e6, False),
    "train.ema_decay": (0.0, 1.0, False), "train.null_prompt_prob": (0.0, 1.0, False),
    "train.logit_mean": (-10.0, 10.0, False), "train.logit_std": (0.0, 10.0, True),
    "train.upsampler_weight": (0.0, 100.0, False), "train.ssim_weight": (0.0, 100.0, False), **distill.FLOAT_RANGES,
}


MAX_SAMPLES_PER_STEP = 4096  # train.batch_size x train.grad_accum: what a process draws a step
MAX_FREEZE = 256  # prefixes in train.freeze
MAX_OVERRIDE_DEPTH = 3  # tables below [model]: model.overrides.dit is 2 deep, a 3rd is no field


def _check_sizes(cfg: dict) -> None:
    """Every string of the config (values, and the keys of model.overrides) at most
    files.MAX_TEXT_VALUE characters (a name or a path; the key and the length are named, never the
    value), and model.overrides at most MAX_OVERRIDE_DEPTH tables deep. Iterative: a hostile nesting
    cannot exhaust the stack."""
    todo = [(k, v, 0) for section, values in cfg.items() if isinstance(values, dict)
            for k, v in ((f"{section}.{k}", v) for k, v in values.items())]
    while todo:
        key, v, depth = todo.pop()
        if isinstance(v, str) and len(v) > MAX_TEXT_VALUE:
            raise ValueError(f"config key {key}: a string of {len(v):,} characters, expected at "
                             f"most "
                             f"{MAX_TEXT_VALUE:,} (a name or a path)")
        if isinstance(v, dict):
            if depth >= MAX_OVERRIDE_DEPTH:
                raise ValueError(f"config key {short(key, 120)}: tables nested deeper than "
                                 f"{MAX_OVERRIDE_DEPTH} levels (model.overrides holds config "
                                 "fields, e.g. model.overrides.dit.dim)")
            for k, x in v.items():
                if len(str(k)) > MAX_TEXT_VALUE:
                    raise ValueError(f"config key {short(key, 120)} has a key of {len(str(k)):,} "
                                     f"characters, expected "
                                     f"at most {MAX_TEXT_VALUE:,}")
                todo.append((f"{key}.{k}", x, depth + 1))
        elif isinstance(v, list):
            todo += [(f"{key}[{i}]", x, depth) for i, x in enumerate(v[:MAX_FREEZE + 1])]


def _check_overrides(overrides: dict) -> None:
    """model.overrides names only fields of the model config (`simplegvr_core.config`): ValueError
    listing at most a few of the unknown ones."""
    import dataclasses

    from simplegvr_core.config import DiTConfig, SimpleGVRConfig, UpsamplerConfig

    tables = {"dit": DiTConfig, "upsampler": UpsamplerConfig}
    top = {f.name for f in dataclasses.fields(SimpleGVRConfig)}
    unknown = [k for k in overrides if k not in top]
    for name, cls in tables.items():
        sub = overrides.get(name)
        if sub is not None and not isinstance(sub, dict):
            raise ValueError(f"config key model.overrides.{name}={short(sub)}: expected a table of "
                             f"{name} fields")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown += [f"{name}.{k}" for k in (sub or {}) if k not in fields]
    if unknown:
        raise ValueError(f"config key model.overrides has {len(unknown):,} unknown field(s): "
                         f"{listed(unknown)} (expected fields of the model config, e.g. dit.dim, "
                         "upsampler.hidden, prediction)")


def _finite(v) -> bool:
    """math.isfinite for a number that may be an int too large for a float (a TOML int of 3,000
    digits)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def validate_config(cfg: dict) -> dict:
    """Refuse, with one message naming the key, what would crash mid-run or train nothing: a wrong
    type (each key has its default's type), an int or float out of range, a size that is not two
    positive ints, an unknown choice, a string longer than files.MAX_TEXT_VALUE, unknown
    model.overrides fields, more samples a step than MAX_SAMPLES_PER_STEP. Values in messages are
    cut (files.short), lists of names capped (`listed`)."""
    def fail(key, value, expected):
        raise ValueError(f"config key {key}={short(value)}: expected {expected}")

    _check_sizes(cfg)

    for section, values in DEFAULTS.items():
        for k, default in values.items():
            key, v = f"{section}.{k}", cfg[section][k]
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    fail(key, v, "true or false")
            elif isinstance(default, int):
                lo, hi = _INT_RANGES.get(key, (0, 2**63))
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    fail(key, v, f"an integer in [{lo}, {hi}]")
            elif isinstance(default, float):
                lo, hi, open_lo = _FLOAT_RANGES[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v) or \
                        not (v > lo if open_lo else v >= lo) or v > hi:
                    fail(key, v, f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}]")
            elif isinstance(default, str):
                if not isinstance(v, str):
                    fail(key, v, "a string")
            elif isinstance(default, dict):
                if not isinstance(v, dict):
                    fail(key, v, "a table")
    for key in ("data.hr_size", "data.lr_size"):
        section, k = key.split(".")
        v = cfg[section][k]
        if not isinstance(v, list) or len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or not 2 <= x <= 16384
                                                         for x in v):
            fail(key, v, "[height, width] in pixels, two integers in [2, 16384]")
    hr, lr = cfg["data"]["hr_size"], cfg["data"]["lr_size"]
    if lr[0] > hr[0] or lr[1] > hr[1]:
        fail("data.lr_size", lr, f"a size no larger than data.hr_size={hr} (SimpleGVR upscales)")
    t = cfg["train"]
    for key, n in (("train.betas", 2), ("train.noise_level", 2)):
        v = t[key.split(".")[1]]
        if not isinstance(v, list) or len(v) != n or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                         or not _finite(x) for x in v):
            fail(key, v, f"a list of {n} numbers")
    if not isinstance(t["freeze"], list) or len(t["freeze"]) > MAX_FREEZE or \
            not all(isinstance(x, str) and x for x in t["freeze"]):
        fail("train.freeze", t["freeze"],
             f'a list of at most {MAX_FREEZE} parameter-name prefixes, e.g. ["upsampler"]')
    if t["batch_size"] * t["grad_accum"] > MAX_SAMPLES_PER_STEP:
        fail("train.grad_accum", t["grad_accum"],
             f"train.batch_size x train.grad_accum ({t['batch_size']} x "
             f"{t['grad_accum']}) at most {MAX_SAMPLES_PER_STEP} samples a process draws a step")
    _check_overrides(cfg["model"]["overrides"])
    if t["ssim_weight"] and not t["pixel_metric"]:
        fail("train.ssim_weight", t["ssim_weight"], "0, or a train.pixel_metric codec to decode the frames SSIM is measured on")
    if not all(0 <= b < 1 for b in t["betas"]):
        fail("train.betas", t["betas"], "two numbers in [0, 1)")
    lo, hi = t["noise_level"]
    if not 0 <= lo <= hi <= 1:
        fail("train.noise_level", t["noise_level"], "[lo, hi] with 0 <= lo <= hi <= 1")
    if t["mixed_precision"] not in MIXED_PRECISION:
        fail("train.mixed_precision", t["mixed_precision"], f"one of {MIXED_PRECISION}")
    if cfg["data"]["kind"] not in DATA_KINDS:
        fail("data.kind", cfg["data"]["kind"], f"one of {DATA_KINDS}")
    if cfg["data"]["scan"] not in SCANS:
        fail("data.scan", cfg["data"]["scan"], f"one of {SCANS}")
    from simplegvr_core.degrade import check_modes

    check_modes(cfg["data"]["degradation"])
    from simplegvr_core.text import TEXT_KINDS
    from simplegvr_core.vae import VAE_CHOICES

    if cfg["vae"]["kind"] not in VAE_CHOICES:
        fail("vae.kind", cfg["vae"]["kind"], f"one of {VAE_CHOICES}")
    if cfg["text"]["kind"] not in TEXT_KINDS:
        fail("text.kind", cfg["text"]["kind"], f"one of {tuple(TEXT_KINDS)}")
    if t["timestep_sampler"] == "detail_aware" and not t["detail_curve"]:
        fail("train.detail_curve", t["detail_curve"], "a curve file (simplegvr analyze-detail) "
             "for train.timestep_sampler='detail_aware'")
    distill.check(cfg)
    return cfg


# --- model, EMA ----------------------------------------------------------------------------------
def model_config(mcfg: dict):
    """The SimpleGVRConfig the [model] table describes, without building the model (a checkpoint's
    header is read): what `build_model` builds; None for `model.wan`, whose shape comes from the
    weights."""
    from simplegvr_core.checkpoint import checkpoint_config

    if mcfg["init"]:
        config = get_config(checkpoint_config(mcfg["init"]).to_dict())
    elif mcfg["wan"]:
        return None
    else:
        cfg = get_config(mcfg["config"] or "tiny").to_dict()
        for section, values in (mcfg.get("overrides") or {}).items():
            if section in ("dit", "upsampler"):
                cfg[section].update(values)
            else:
                cfg[section] = values
        cfg["upsampler"]["mode"] = mcfg["upsampler"]
        config = get_config(cfg)
    if mcfg["attention"]:
        config.dit.attention = mcfg["attention"]
    return config


def build_model(mcfg: dict, device=None) -> SimpleGVR:
    """From a named config (+ overrides), a SimpleGVR checkpoint (previous stage) or Wan T2V weights
    (into `model.config` when it names one, e.g. wan2.2-ti2v-5b or cogvideox-1.3b; else the shape is
    inferred). device="meta": the model's shape only, nothing allocated or read but a header (not
    for `model.wan`)."""
    if device == "meta":
        config = model_config(mcfg)
        if config is None:
            raise ValueError("model.wan: the shape of imported Wan weights is known only once "
                             "they are read")
        model = SimpleGVR.from_config(config, device="meta")
    elif mcfg["init"]:
        model = load_checkpoint(mcfg["init"])
    elif mcfg["wan"]:
        model = import_wan(mcfg["wan"], config=mcfg["config"] or None, upsampler=mcfg["upsampler"],
                           num_heads=mcfg["wan_num_heads"] or None)
        model = model.float()
    else:
        model = SimpleGVR.from_config(model_config(mcfg))
    if mcfg["attention"]:
        model.dit.set_attention(mcfg["attention"])
        model.config.dit.attention = mcfg["attention"]
    return model


def freeze(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Stop training every parameter whose name starts with one of `prefixes` (e.g. "upsampler" keeps a fitted
    upsampler as it is); ValueError for a prefix that names no parameter."""
    names = [n for n, _ in model.named_parameters()]
    for pre in prefixes:
        if not any(n == pre or n.startswith(pre.rstrip(".") + ".") for n in names):
            raise ValueError(f"config key train.freeze names {pre!r}, which matches no parameter of the model "
                             f"(expected a prefix such as 'upsampler', 'upsampler.base' or 'dit.blocks.0')")
    for n, p in model.named_parameters():
        if any(n == pre or n.startswith(pre.rstrip(".") + ".") for pre in prefixes):
            p.requires_grad_(False)


class EMA:
    """Exponential moving average of the trainable weights (float32 shadow, sharded like the parameters under FSDP),
    with the usual warm-up."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in model.named_parameters():
            self.shadow[k].mul_(d).add_(p.detach().float(), alpha=1 - d)


def plain_model(config, state: dict[str, torch.Tensor]) -> SimpleGVR:
    """A single-process SimpleGVR (float32, CPU) holding `state`, a full state dict such as the gathered EMA."""
    model = SimpleGVR.from_config(config, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float()


# --- data --------------------------------------------------------------------------------------
class Data:
    """Turns batch keys into model-space (hr, lr, context) tensors on the device."""

    def __init__(self, cfg: dict, model: SimpleGVR, device, log):
        from training import data as D

        self.cfg, self.device, self.fmt = cfg, device, model.latent_format
        dcfg = cfg["data"]
        self.kind = dcfg["kind"]
        self.skipped: list[str] = []
        text_dim = model.config.dit.text_dim
        if self.kind == "shards":
            self.dataset = D.PairShards(dcfg["path"])
            n_val = min(int(dcfg["val_count"]), len(self.dataset) - 1)
            self.train_idx = list(range(len(self.dataset) - n_val))
            self.val_idx = list(range(len(self.dataset) - n_val, len(self.dataset)))
            self.vae = self.text = None
        elif self.kind == "videos":
            from simplegvr_core.text import TextCache, make_text_encoder
            from simplegvr_core.vae import VideoVAE

            if int(dcfg["synthesize"]) and not (Path(dcfg["path"]) / dcfg["captions"]).exists():
                log(f"writing {dcfg['synthesize']} procedural clips to {dcfg['path']} (data.synthesize)")
                D.make_synthetic_videos(dcfg["path"], int(dcfg["synthesize"]), int(dcfg["frames"]) + 4,
                                        tuple(dcfg["hr_size"]), seed=int(cfg["train"]["seed"]))
            items = D.read_captions(dcfg["path"], dcfg["captions"])
            items, skipped = D.scan_videos(items, int(dcfg["frames"]), decode=dcfg["scan"] == "decode")
            self.skipped += skipped
            for s in skipped:
                log(f"skipping: {s}")
            if len(items) < 2:
                raise ValueError(f"{dcfg['path']!r}: {len(items)} usable videos (skipped {len(skipped)}); need at least 2")
            self.dataset = D.VideoPairs(items, int(dcfg["frames"]), dcfg["hr_size"], dcfg["lr_size"], dcfg["degradation"])
            n_val = min(int(dcfg["val_count"]), len(items) - 1)
            self.train_idx = list(range(len(items) - n_val))
            self.val_idx = list(range(len(items) - n_val, len(items)))
            self.vae = VideoVAE.load(cfg["vae"]["kind"], cfg["vae"]["path"] or None, device=device, seed=cfg["vae"]["seed"])
            self.vae.check_format(self.fmt)  # the VAE of the model's latent family
            r = self.vae.spatial_ratio
            for key in ("hr_size", "lr_size"):
                if any(v % r for v in dcfg[key]):
                    raise ValueError(f"config key data.{key}={dcfg[key]!r}: the {self.vae.family} VAE needs multiples of {r}")
            tcfg = cfg["text"]
            enc = make_text_encoder(tcfg["kind"], text_dim, tcfg["path"] or None, device=device, family=self.fmt.family)
            cache = tcfg["cache"] or str(Path(cfg["log"]["output_dir"]) / "text_cache.safetensors")
            self.text = TextCache(cache, enc, f"{tcfg['kind']}:{text_dim}")
            n = self.text.encode_all([c for _, c in items])
            log(f"text features: {n} captions encoded, {len(self.text.features)} cached")
        else:
            raise ValueError(f"data.kind {self.kind!r}: expected 'videos' or 'shards'")

    def loader(self, keys_iter):
        from torch.utils.data import DataLoader

        from training import data as D

        workers = int(self.cfg["data"]["num_workers"])
        dataset = D.ResampleBroken(self.dataset, self.train_idx)  # full batches on every rank, always
        return iter(DataLoader(dataset, batch_sampler=keys_iter, collate_fn=D.collate, num_workers=workers,
                               persistent_workers=workers > 0))

    def to_model_space(self, batch: dict):
        """(hr, lr, context list) in model space; None when no sample of the batch was usable."""
        for e in batch.get("errors", []):
            self.skipped.append(e)
        if "hr" not in batch and "hr_latent" not in batch:
            return None
        if self.kind == "shards":
            return batch["hr_latent"].to(self.device), batch["lr_latent"].to(self.device), batch["context"]
        hr = self.fmt.normalise(self.vae.encode(batch["hr"]))
        lr = self.fmt.normalise(self.vae.encode(batch["lr"]))
        ctx = [self.text[c] if c else torch.zeros(1, self.text.encoder.dim) for c in batch["caption"]]
        return hr.to(self.device), lr.to(self.device), ctx


def pad_contexts(contexts: list[torch.Tensor], dim: int, device, text_len: int) -> torch.Tensor:
    """Caption features [L_i, dim] -> one [B, text_len, dim] batch, as `pipeline.prepare_context` pads them."""
    from simplegvr_core.pipeline import pad_text

    if not contexts:
        return torch.zeros(0, text_len, dim, device=device)
    return torch.cat([pad_text(c[None].float(), text_len) for c in contexts]).to(device)


# --- the loss ------------------------------------------------------------------------------------
def sample_draws(seed: int, j: int, hr_shape, lr_shape, tcfg: dict, sampler: TimestepSampler) -> dict:
    """The random draws of sample j of the run, from its own stream: condition noise level s and noise, σ, the flow
    noise ε and the null-prompt coin. A pure function of (seed, j), so whichever process, micro-batch or resumed run
    trains sample j draws the same."""
    g = seeding.torch_generator(seed, seeding.TRAIN_SAMPLE, j)
    lo, hi = tcfg["noise_level"]
    s = torch.rand(1, generator=g) * (hi - lo) + lo
    cond_eps = torch.randn(tuple(lr_shape), generator=g)
    sigma = sampler.sample(1, g)
    eps = torch.randn(tuple(hr_shape), generator=g)
    drop = torch.rand(1, generator=g) < tcfg["null_prompt_prob"]
    return {"s": s, "cond_eps": cond_eps, "sigma": sigma, "eps": eps, "drop": drop}


class PixelMetric:
    """Squared error of model-space latents measured in pixels, through a linear codec's decoder
    (`vae.LappedVideoCodec`, the demo's): `train.pixel_metric = <codec file>`. Plain latent MSE weighs every
    normalised channel alike, while a decoder turns some channels into far more pixel energy than others; a loss
    that counts errors as the decoded frames would spends the model on what PSNR sees. The flow target does not
    change (any such quadratic loss is minimised by the same E[v | x_σ]); only where the capacity goes does.
    Scaled so that a unit normal error scores 1, as plain MSE does."""

    def __init__(self, path: str, latent_format, device):
        from simplegvr_core.vae import LappedVideoCodec, VideoVAE

        codec = VideoVAE.load("file", path).vae
        if not isinstance(codec, LappedVideoCodec):
            raise ValueError(f"train.pixel_metric={path!r} is a {type(codec).__name__}: expected a linear lapped codec "
                             "file (the demo's, training/train_vae.py), whose decoder is a linear map")
        if latent_format.mean is None or latent_format.channels != codec.z_dim:
            raise ValueError(f"train.pixel_metric needs a {codec.z_dim}-channel latent format with per-channel statistics, "
                             f"got {latent_format.describe()}")
        self.codec = codec.to(device).eval()
        for q in self.codec.parameters():
            q.requires_grad_(False)
        std = torch.tensor(latent_format.std, dtype=torch.float32, device=device)
        self.fmt = latent_format
        self.gain = (std / self.codec.scale.to(device)).view(1, -1, 1, 1, 1)  # model-space unit -> code unit
        g = torch.Generator().manual_seed(0)
        self.norm = 1.0
        self.norm = float(self(torch.randn(2, codec.z_dim, 3, 8, 8, generator=g).to(device)).mean())

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space latents [B, C, T, h, w] -> the codec's decoded frames [B, 3, T', H, W] in [0, 1]."""
        return ((self.codec.decode(self.fmt.denormalise(x.float())) + 1) / 2).clamp(0, 1)

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def blur_matrix(n: int) -> torch.Tensor:
        """[n, n] matrix of `metrics.ssim`'s Gaussian blur along one axis (window 11, sigma 1.5, OpenCV's
        BORDER_REFLECT: the edge sample repeated, ...cba|abc...): B @ z blurs z's first axis. As a matmul it runs
        at full speed on CPU, where a 1-channel 1x11 convolution (and its backward) was the slowest op of a step."""
        g = torch.exp(-0.5 * ((torch.arange(11, dtype=torch.float64) - 5) / 1.5) ** 2)
        g = (g / g.sum()).tolist()
        b = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for k in range(11):
                j = i + k - 5
                while not 0 <= j < n:  # reflect about the edges (more than once when n < 6)
                    j = -j - 1 if j < 0 else 2 * n - 1 - j
                b[i][j] += g[k]
        return torch.tensor(b, dtype=torch.float32)

    def ssim(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample mean SSIM [B] of the decoded frames of two model-space latents, as `metrics.ssim` measures it
        (Gaussian window 11, sigma 1.5, reflected borders, per RGB channel and frame); differentiable in `pred`."""
        a, b = self.frames(pred), self.frames(target)
        n, ch, t, h, w = a.shape
        a, b = (z.permute(0, 2, 1, 3, 4).reshape(n * t * ch, h, w) for z in (a, b))
        bh, bw = self.blur_matrix(h).to(a.device), self.blur_matrix(w).t().to(a.device)

        def blur(z):
            return bh @ z @ bw

        c1, c2 = 0.01**2, 0.03**2
        ma, mb = blur(a), blur(b)
        va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
        s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
        return s.view(n, -1).mean(1)

    def __call__(self, err: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared pixel error [B] of a model-space latent error [B, C, T, h, w]."""
        w = self.codec.decoder_weight()
        px = torch.nn.functional.conv_transpose3d(err.float() * self.gain, w)  # the decoder without its bias
        return px.pow(2).flatten(1).mean(1) / self.norm


def flow_loss(model, hr, lr, ctx, draws: list[dict], upsampler_weight: float = 0.0, metric=None,
              ssim_weight: float = 0.0) -> torch.Tensor:
    """Per-sample training losses [B]: noise-augmented condition, flow target, null-prompt dropout, with sample i's
    draws `draws[i]` (`sample_draws`). With `upsampler_weight` > 0, plus that weight times the squared error of the
    upsampler's condition c against HR: c is a latent at HR size, and this asks it to be the best guess of HR from
    the LR latent (the upsampler learns latent super-resolution directly, not only through the DiT's gradients).
    `metric` (a `PixelMetric`): how a latent error is scored (default: mean square over the latent). With
    `ssim_weight` > 0 (and a metric), plus that weight times 1 - SSIM of the decoded x0 estimate x_σ - σ v against
    the decoded HR latent: a loss on local structure, which mean-square errors let a model blur or ring away."""
    dev = hr.device
    s = torch.cat([d["s"] for d in draws]).to(dev)
    cond_eps = torch.stack([d["cond_eps"] for d in draws]).to(dev)
    sigma = torch.cat([d["sigma"] for d in draws]).to(dev)
    eps = torch.stack([d["eps"] for d in draws]).to(dev)
    drop = torch.cat([d["drop"] for d in draws]).to(dev)
    c_s = add_condition_noise(lr, s, noise=cond_eps)  # c_s = (1-s) c0 + s ε, before the upsampler
    x = noise_latent(hr, eps, sigma)  # x_σ = (1-σ) x0 + σ ε
    ctx = ctx * (~drop).view(-1, 1, 1).to(ctx.dtype)
    score = metric or (lambda e: e.float().pow(2).flatten(1).mean(1))
    v, c = model(x, c_s, sigma * 1000.0, ctx, s, return_condition=True)  # SimpleGVR.forward: upsampler + DiT
    loss = score(v.float() - (eps - hr).float())
    if upsampler_weight:
        loss = loss + upsampler_weight * score(c.float() - hr.float())
    if ssim_weight:
        x0 = x.float() - sigma.view(-1, *[1] * (x.dim() - 1)) * v.float()
        loss = loss + ssim_weight * (1 - metric.ssim(x0, hr))
    return loss


# --- checkpoints ---------------------------------------------------------------------------------
def _ckpt_dirs(out: Path) -> list[Path]:
    """The complete checkpoint folders of a run (`step-NNNNNNN` holding state.pt), oldest first."""
    d = out / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if CHECKPOINT_RE.match(p.name) and p.is_dir()
                  and not p.is_symlink() and (p / "state.pt").is_file())


def save_training_state(out: Path, step: int, model, ema: EMA, optimizer, scheduler, cfg: dict,
                        keep: int, world: int = 1, log=print) -> Path | None:
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
        state = {"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "config": json.dumps(cfg),
                 "batch": {"batch_size": int(cfg["train"]["batch_size"]), "processes": int(world),
                           "grad_accum": int(cfg["train"]["grad_accum"])}}
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
        raise ValueError(f"{str(path)!r} was trained with another model config: cannot resume this run from it")
    shadow, _ = read_safetensors(path / "ema.safetensors")
    if set(shadow) != set(ema.shadow):
        raise ValueError(f"{str(path)!r}: EMA weights do not match the model")
    state = read_torch_file(path / "state.pt", "training state")
    missing = [k for k in ("step", "optimizer", "scheduler", "torch_rng")
               if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{str(path / 'state.pt')!r} is not a training state of this trainer (no "
                         f"{missing[0]!r})")
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
        raise ValueError(f"{str(path)!r}: its state.pt records the global batch as "
                         f"{short(recorded)}: expected "
                         "batch_size, processes and grad_accum") from None
    g_old, g_new = math.prod(old), math.prod(batch)
    if g_old == g_new:
        return
    bs, world, _ = batch
    fix = (f"set train.grad_accum={g_old // (bs * world)}" if g_old % (bs * world) == 0 else
           f"choose train.batch_size x processes x train.grad_accum = {g_old}")

    def says(b):
        return f"{b[0]} x {b[1]} process{'es' if b[1] != 1 else ''} x grad_accum {b[2]}"

    raise ValueError(f"checkpoint {str(path)!r} trained with global batch {g_old} ({says(old)}); "
                     f"this run's is {g_new} ({says(batch)}): {fix} to resume it (each step's "
                     "samples depend on the global batch)")


def load_training_state(path: Path, model, ema: EMA, optimizer, scheduler,
                        batch: tuple[int, int, int] | None = None) -> int:
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
    small = D.broadcast_object({k: v for k, v in state.items() if k != "optimizer"} if state else None)
    scheduler.load_state_dict(small["scheduler"])
    torch.set_rng_state(small["torch_rng"])
    if "cuda_rng" in small and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(small["cuda_rng"])
    return int(small["step"])


def export_ema(config, ema_state: dict[str, torch.Tensor], path: str | os.PathLike, step: int,
               student: tuple | None = None, *, replace: bool = False) -> Path:
    """The (full, gathered) EMA weights as a node/pipeline checkpoint; a distilled student's carries
    its sampling recipe and method (`student`: what `distill.student_recipe` returns). replace=False
    (no --overwrite): an existing `path`, or one that appears while it is written, is left as it is
    (`files.OutputExistsError`)."""
    recipe, extra = student or (None, {})
    return save_checkpoint(plain_model(config, ema_state), path, extra_metadata={"trained_steps": str(step), **extra},
                           sampling=recipe, replace=replace)


# --- validation ----------------------------------------------------------------------------------
@torch.no_grad()
def validate(config, ema_state: dict[str, torch.Tensor], data: Data, cfg: dict, device) -> dict:
    """Upscale the held-out samples with the (full, gathered) EMA weights; latent PSNR against their HR latents."""
    from simplegvr_core.pipeline import build_condition, sample
    from training.data import collate

    model = net = plain_model(config, ema_state).to(device).eval()
    seed = cfg["train"]["seed"]
    batch = collate([data.dataset[(i, seed + 1000 + i)] for i in data.val_idx])
    triple = data.to_model_space(batch)
    if triple is None:
        return {}
    hr, lr, ctx = triple
    fmt = model.latent_format
    psnr, psnr_interp = [], []
    for i in range(hr.shape[0]):
        ctx_i = pad_contexts([ctx[i]], model.config.dit.text_dim, device, model.config.dit.text_len)
        cond = build_condition(net, fmt.denormalise(lr[i:i + 1].cpu()), width=hr.shape[-1] * fmt.spatial_ratio,
                               height=hr.shape[-2] * fmt.spatial_ratio, seed=seed)
        out = sample(net, cond, context=ctx_i, steps=int(cfg["log"]["val_steps"]), cfg=1.0, seed=seed)
        x0 = fmt.normalise(out.to(device))
        interp = torch.nn.functional.interpolate(lr[i:i + 1], size=tuple(hr.shape[2:]), mode="trilinear")
        rng = float(hr[i].max() - hr[i].min())
        psnr.append(10 * math.log10(rng**2 / float(((x0 - hr[i:i + 1]) ** 2).mean())))
        psnr_interp.append(10 * math.log10(rng**2 / float(((interp - hr[i:i + 1]) ** 2).mean())))
    return {"val/psnr_latent": sum(psnr) / len(psnr), "val/psnr_latent_interp": sum(psnr_interp) / len(psnr_interp)}


# --- main ----------------------------------------------------------------------------------------
def input_paths(cfg: dict) -> list[Path]:
    """The files and folders a run of `cfg` reads (and the files it writes in log.output_dir): what
    --export must not be."""
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    paths = [m["init"], m["wan"], d["path"], cfg["vae"]["path"], cfg["text"]["path"],
             cfg["text"]["cache"], t["detail_curve"], t["pixel_metric"], cfg["distill"]["teacher"]]
    out = [Path(p) for p in paths if p]
    if d["path"]:
        out.append(Path(d["path"]) / d["captions"])
    logdir = Path(cfg["log"]["output_dir"])
    return out + [logdir / "text_cache.safetensors", logdir / "losses.jsonl"]


def train(cfg: dict, resume: str | None = None, export: str | None = None, progress: bool = True,
          overwrite: bool = False) -> dict:
    """Run (or resume) training; returns {"losses": [(step, loss), ...], "step": last step,
    "skipped": [...]}.

    Under `accelerate launch` / torchrun every process calls this; the losses are the means over the
    global batch (the same on every rank), checkpoints and logs come from rank 0. `export`: write
    the EMA weights there at the end; an existing file is refused before training starts, and again
    at the rename, unless `overwrite`; a path that is one of the run's inputs is refused. Before the
    first step, the memory of a step is estimated (`training.budget`) and a run that cannot fit is
    refused (ValueError with the numbers)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from tqdm.auto import tqdm

    from simplegvr_core.files import check_output_folder
    from training import budget
    from training import distributed as D
    from training.data import StepSampler

    validate_config(cfg)
    if export:
        check_output(export, overwrite=overwrite, inputs=input_paths(cfg), what="--export")
    out = check_output_folder(cfg["log"]["output_dir"], "log.output_dir")
    tcfg = cfg["train"]
    use_cuda = torch.cuda.is_available()
    tracker = cfg["log"]["tracker"] if cfg["log"]["tracker"] not in ("", "none", None) else None
    if tracker == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                tracker = None
    accelerator = Accelerator(mixed_precision=tcfg["mixed_precision"] if use_cuda else "no", cpu=not use_cuda,
                              log_with=tracker, project_dir=str(out))
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError("accelerate's FSDP config is not used here: set train.fsdp=true and launch without --use_fsdp "
                         "(e.g. accelerate launch --multi_gpu --num_processes 8 ...); the trainer shards every DiT block "
                         "with torch's fully_shard itself, the same way on CPU and GPU")
    device, world, main = accelerator.device, accelerator.num_processes, accelerator.is_main_process
    log = accelerator.print
    torch.manual_seed(tcfg["seed"])

    if tcfg["check_memory"]:  # before anything big is allocated: a run that cannot fit is refused
        imported = cfg["model"]["wan"] and not cfg["model"]["init"]  # its shape is in its weights
        probe = build_model(cfg["model"], device=None if imported else "meta").float()
        freeze(probe, tcfg["freeze"])
        already = sum(p.numel() * 4 for p in probe.parameters()) if imported else 0
        error = budget.memory_error(cfg, probe, device, world=world, already=already,
                                    processes_here=budget.local_processes(world))
        error = D.first_error(error)
        if error:
            raise ValueError(error)
        model = probe if imported else None
        del probe
    else:
        model = None
    if model is None:
        model = build_model(cfg["model"]).float()  # the same weights on every rank (same seed)
    model.dit.gradient_checkpointing = bool(tcfg["gradient_checkpointing"])
    freeze(model, tcfg["freeze"])
    model.to(device).train()
    fsdp = bool(tcfg["fsdp"])
    if fsdp:
        D.shard_model(model, device)
    ema = EMA(model, tcfg["ema_decay"])  # after sharding: the shadow is sharded like the weights
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tcfg["lr"], betas=tuple(tcfg["betas"]), weight_decay=tcfg["weight_decay"])
    warm = max(1, int(tcfg["warmup_steps"]))
    # Stepped here once per optimizer step: accelerate's prepared scheduler would step once per process.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warm))
    if cfg["distill"]["method"]:  # a student is trained only at the sigmas its sampler visits
        sampler = distill.StudentSchedule(int(cfg["distill"]["steps"]), float(cfg["distill"]["shift"]))
    else:
        sampler = TimestepSampler(tcfg["timestep_sampler"], logit_mean=tcfg["logit_mean"], logit_std=tcfg["logit_std"],
                                  curve=tcfg["detail_curve"] or None)
    teacher = distill.load_teacher(cfg, device)
    metric = PixelMetric(tcfg["pixel_metric"], model.latent_format, device) if tcfg["pixel_metric"] else None
    export_meta = distill.student_recipe(cfg)
    if fsdp:
        net, optimizer = model, accelerator.prepare(optimizer)
    else:
        net, optimizer = accelerator.prepare(model, optimizer)  # DDP over the processes (a no-op for one)
    torch_optimizer = getattr(optimizer, "optimizer", optimizer)

    if main:
        for d in (out, out / "checkpoints"):
            for p in clean_stale_temporaries(d):
                log(f"removed {p.name}, left by an interrupted run")
    start = 0
    if resume:
        ck = None
        if main:
            ck = _ckpt_dirs(out)[-1] if resume == "auto" and _ckpt_dirs(out) else (Path(resume) if resume != "auto" else None)
        ck = D.broadcast_object(str(ck) if ck is not None else None)
        if ck is not None:
            batch = (int(tcfg["batch_size"]), world, int(tcfg["grad_accum"]))
            start = load_training_state(Path(ck), model, ema, torch_optimizer, scheduler, batch)
            log(f"resumed from {ck} at step {start}")
        else:
            log(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
    total = int(tcfg["steps"])
    if export and start >= total:
        ema_state = D.full_tensors(ema.shadow)
        if main:
            path = export_ema(model.config, ema_state, export, start, export_meta,
                              replace=overwrite)
            log(f"exported EMA weights of step {start} to {path}")
        return {"losses": [], "step": start, "skipped": []}

    with accelerator.main_process_first():  # rank 0 writes synthetic clips and the text cache, the others read them
        data = Data(cfg, model, device, log)
    if tracker:
        accelerator.init_trackers("simplegvr", config={k: json.dumps(v) for k, v in cfg.items()})
    bs, accum = int(tcfg["batch_size"]), int(tcfg["grad_accum"])
    keys = StepSampler(len(data.train_idx), bs, int(tcfg["seed"]), start, world, accelerator.process_index,
                       bool(tcfg["overfit"]), accum)
    global_batch = keys.global_batch
    batches = data.loader(_MapKeys(keys, data.train_idx))
    losses = []
    bar = tqdm(range(start, total), initial=start, total=total, disable=not (progress and main), desc="training")
    t0 = time.time()
    for step in bar:
        loss_sum = torch.zeros((), dtype=torch.float64)
        for micro in range(accum):
            batch = next(batches)
            triple = data.to_model_space(batch)
            usable = 0 if triple is None else triple[0].shape[0]
            if usable != bs:
                raise ValueError(f"step {step + 1}: {bs - usable} of {bs} samples found no readable clip "
                                 f"({batch['errors'][-1] if batch['errors'] else 'no reason given'})")
            hr, lr, ctx_list = triple
            ctx = pad_contexts(ctx_list, model.config.dit.text_dim, device, model.config.dit.text_len)
            draws = [sample_draws(tcfg["seed"], j, hr.shape[1:], lr.shape[1:], tcfg, sampler)
                     for j in keys.sample_indices(step, micro)]
            with D.no_sync(net, micro < accum - 1):
                with accelerator.autocast():
                    target = distill.targets(cfg, teacher, hr, lr, ctx, draws)  # HR, or a teacher's solution
                    per_sample = flow_loss(net, target, lr, ctx, draws, float(tcfg["upsampler_weight"]),
                                           metric, float(tcfg["ssim_weight"]))  # through the DDP wrapper / FSDP hooks
                # The loss of the step is the mean over the global batch; DDP and FSDP average gradients over ranks.
                accelerator.backward(per_sample.sum() * (world / global_batch))
            loss_sum += per_sample.detach().double().sum().cpu()
        if tcfg["grad_clip"]:
            accelerator.clip_grad_norm_(net.parameters(), tcfg["grad_clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, step)
        value = float(accelerator.reduce(loss_sum.to(device), "sum")) / global_batch
        losses.append((step + 1, value))
        bar.set_postfix(loss=f"{value:.4f}")
        done = step + 1
        if done % int(cfg["log"]["log_every"]) == 0 or done == total:
            logs = {"train/loss": value, "train/lr": scheduler.get_last_lr()[0], "data/skipped": len(data.skipped),
                    "time/steps_per_s": (done - start) / max(1e-9, time.time() - t0)}
            if tracker:
                accelerator.log(logs, step=done)
        if int(cfg["log"]["validate_every"]) and done % int(cfg["log"]["validate_every"]) == 0:
            ema_state = D.full_tensors(ema.shadow)
            if main:
                vals = validate(model.config, ema_state, data, cfg, device)
                log(f"step {done}: " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items()))
                if tracker and vals:
                    accelerator.log(vals, step=done)
        if done % int(cfg["log"]["checkpoint_every"]) == 0 or done == total:
            save_training_state(out, done, model, ema, torch_optimizer, scheduler, cfg,
                                int(cfg["log"]["keep_checkpoints"]), world=world, log=log)
        accelerator.wait_for_everyone()
        if tcfg["stop_at_step"] and done >= int(tcfg["stop_at_step"]):
            break  # a deliberate interruption (tests and time-boxed jobs); resume continues from here
    if data.skipped:
        log(f"skipped {len(data.skipped)} broken or short samples/videos")
    if export:
        ema_state = D.full_tensors(ema.shadow)
        if main:
            last = losses[-1][0] if losses else start
            path = export_ema(model.config, ema_state, export, last, export_meta, replace=overwrite)
            log(f"exported EMA weights to {path}")
    if tracker:
        accelerator.end_training()
    if main:
        with open(out / "losses.jsonl", "a") as f:
            for s, v in losses:
                f.write(json.dumps({"step": s, "loss": v}) + "\n")
    return {"losses": losses, "step": losses[-1][0] if losses else start, "skipped": list(data.skipped)}


class _MapKeys:
    """Batch sampler: StepSampler positions -> dataset indices of the training split."""

    def __init__(self, keys, train_idx: list[int]):
        self.keys, self.train_idx = keys, train_idx

    def __iter__(self):
        for batch in self.keys:
            yield [(self.train_idx[i], s) for i, s in batch]


def error_line(e: BaseException) -> str:
    """One line for any error out of a training run: cli.one_line for ours; an allocator failure
    (torch raises it as RuntimeError) as out of memory, a full disk as the disk-full line, anything
    else with its type."""
    if isinstance(e, (ValueError, OSError, MemoryError)):
        return one_line(e)
    if isinstance(e, RuntimeError):
        if explain_write_error(e, "") is not e:  # torch's zip writer on a full disk: unexpected pos
            return ("no space left on the device (or over a file size limit) writing a file of "
                    "this run; free some space and continue with --resume")
        text = str(e).lower()
        if isinstance(e, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in text or \
                "can't allocate memory" in text or "failed to allocate" in text:
            return one_line(MemoryError(one_line(e)))
    return f"{type(e).__name__}: {one_line(e)} (--debug shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="TOML config (training/configs/*.toml)")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=200 log.output_dir=runs/x")
    ap.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="continue from the latest checkpoint in log.output_dir (or from the given checkpoint folder)")
    ap.add_argument("--export", default=None,
                    help="write the EMA weights to this .safetensors when done (an existing "
                    "file is refused before training starts, unless --overwrite)")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --export replace an existing file")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg, resume=args.resume, export=args.export, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("train: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error is one line and exit 2; --debug: traceback
        if args.debug:
            raise
        print(f"train: error: {error_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
