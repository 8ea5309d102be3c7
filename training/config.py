"""The training run's configuration: the [model] [data] [vae] [text] [train] [log] [distill] tables,
read once and validated once (`load_config`: DEFAULTS <- a TOML file <- `section.key=value`
overrides; `validate_config`).

Every value has its default's type and a range; a model setting has one spelling: `model.config` (a
named config), `model.overrides.<dit|upsampler|...>.<field>` for any config field, `model.attention`
(the DiT's attention mode, for a named config, a checkpoint or Wan weights alike) and
`model.upsampler` (its mode, for a named config or Wan weights); `model.overrides.dit.attention` and
`model.overrides.upsampler.mode` are refused in their favour. Messages name the key, list at most a
few names and never repeat a value a user may have made huge.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from simplegvr_core.files import MAX_TEXT_VALUE, short  # noqa: E402
from training import distill  # noqa: E402

DEFAULTS: dict = {
    # attention / upsampler: "" = the named config's (or the checkpoint's, the Wan import's default)
    "model": {
        "config": "",
        "overrides": {},
        "init": "",
        "wan": "",
        "wan_num_heads": 0,
        "attention": "",
        "upsampler": "",
    },
    "data": {
        "kind": "videos",
        "path": "",
        "captions": "captions.jsonl",
        "frames": 17,
        "hr_size": [128, 128],
        "lr_size": [64, 64],
        "degradation": "classic",
        "val_count": 1,
        "num_workers": 0,
        "synthesize": 0,
        "scan": "decode",
    },
    "vae": {"kind": "tiny", "path": "", "seed": 0},
    "text": {"kind": "byte", "path": "", "cache": ""},
    "train": {
        "steps": 100,
        "batch_size": 1,
        "lr": 5e-5,
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "warmup_steps": 0,
        "grad_clip": 1.0,
        "ema_decay": 0.999,
        "null_prompt_prob": 0.1,
        "noise_level": [0.3, 0.6],
        "timestep_sampler": "uniform",
        "logit_mean": 0.0,
        "logit_std": 1.0,
        "detail_curve": "",
        "mixed_precision": "bf16",
        "gradient_checkpointing": False,
        "seed": 0,
        "overfit": False,
        "stop_at_step": 0,
        "grad_accum": 1,
        "fsdp": False,
        "upsampler_weight": 0.0,
        "pixel_metric": "",
        "ssim_weight": 0.0,
        "freeze": [],
        "check_memory": True,
    },
    "log": {
        "output_dir": "runs/simplegvr",
        "tracker": "tensorboard",
        "log_every": 10,
        "checkpoint_every": 500,
        "keep_checkpoints": 3,
        "validate_every": 500,
        "val_steps": 10,
    },
    # the distillation stage (training/distill.py); method '' = flow training
    "distill": dict(distill.DEFAULTS),
}


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
            # model.overrides.dit.dim=... adds to the file's table, not replace it
            out[k] = _merge_free(base[k], v)
        else:
            out[k] = v
    return out


def _merge_free(base: dict, new: dict) -> dict:
    """Deep merge of a free-form table (model.overrides: any config field); `new` wins at the
    leaves."""
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = (
            _merge_free(out[k], v)
            if isinstance(out.get(k), dict) and isinstance(v, dict)
            else copy.deepcopy(v)
        )
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

    config = copy.deepcopy(DEFAULTS)
    if path:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"config {str(p)!r} does not exist")
        check_input_file(p, "config")
        try:
            config = _merge(config, tomllib.loads(p.read_text()))
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
            raise ValueError(
                f"override {short(key)}: {len(parts)} dotted parts, expected at most "
                f"{MAX_KEY_PARTS}"
            )
        node: dict = {}
        cur = node
        for part in parts[:-1]:
            cur[part] = {}
            cur = cur[part]
        try:
            cur[parts[-1]] = _parse_value(value.strip())
            config = _merge(config, node)
        except RecursionError:
            raise ValueError(
                f"override {short(key)}: its value is nested too deeply to be read"
            ) from None
    return validate_config(config)


MIXED_PRECISION = ("no", "fp16", "bf16")

DATA_KINDS = ("videos", "shards")

SCANS = ("decode", "probe")

_INT_RANGES = {  # key: (lo, hi); every int must lie in its range
    "model.wan_num_heads": (0, 256),
    "data.frames": (1, 10_000),
    "data.val_count": (0, 1_000_000),
    "data.num_workers": (0, 64),
    "data.synthesize": (0, 1_000_000),
    "vae.seed": (0, 2**64 - 1),
    "train.steps": (1, 10**9),
    "train.batch_size": (1, 1024),
    "train.warmup_steps": (0, 10**9),
    "train.seed": (0, 2**64 - 1),
    "train.stop_at_step": (0, 10**9),
    "train.grad_accum": (1, 128),
    "log.log_every": (1, 10**9),
    "log.checkpoint_every": (1, 10**9),
    "log.keep_checkpoints": (0, 10**6),
    "log.validate_every": (0, 10**9),
    "log.val_steps": (1, 10_000),
    **distill.INT_RANGES,
}

_FLOAT_RANGES = {  # key: (lo, hi, lo open?)
    "train.lr": (0.0, 1.0, True),
    "train.weight_decay": (0.0, 10.0, False),
    "train.grad_clip": (0.0, 1e6, False),
    "train.ema_decay": (0.0, 1.0, False),
    "train.null_prompt_prob": (0.0, 1.0, False),
    "train.logit_mean": (-10.0, 10.0, False),
    "train.logit_std": (0.0, 10.0, True),
    "train.upsampler_weight": (0.0, 100.0, False),
    "train.ssim_weight": (0.0, 100.0, False),
    **distill.FLOAT_RANGES,
}

MAX_SAMPLES_PER_STEP = 4096  # train.batch_size x train.grad_accum: what a process draws a step

MAX_FREEZE = 256  # prefixes in train.freeze

MAX_OVERRIDE_DEPTH = 3  # tables below [model]: model.overrides.dit is 2 deep, a 3rd is no field


def _check_sizes(config: dict) -> None:
    """Every string of the config (values, and the keys of model.overrides) at most
    files.MAX_TEXT_VALUE characters (a name or a path; the key and the length are named, never the
    value), and model.overrides at most MAX_OVERRIDE_DEPTH tables deep. Iterative: a hostile nesting
    cannot exhaust the stack."""
    todo = [
        (k, v, 0)
        for section, values in config.items()
        if isinstance(values, dict)
        for k, v in ((f"{section}.{k}", v) for k, v in values.items())
    ]
    while todo:
        key, v, depth = todo.pop()
        if isinstance(v, str) and len(v) > MAX_TEXT_VALUE:
            raise ValueError(
                f"config key {key}: a string of {len(v):,} characters, expected at "
                f"most "
                f"{MAX_TEXT_VALUE:,} (a name or a path)"
            )
        if isinstance(v, dict):
            if depth >= MAX_OVERRIDE_DEPTH:
                raise ValueError(
                    f"config key {short(key, 120)}: tables nested deeper than "
                    f"{MAX_OVERRIDE_DEPTH} levels (model.overrides holds config "
                    "fields, e.g. model.overrides.dit.dim)"
                )
            for k, x in v.items():
                if len(str(k)) > MAX_TEXT_VALUE:
                    raise ValueError(
                        f"config key {short(key, 120)} has a key of {len(str(k)):,} "
                        f"characters, expected "
                        f"at most {MAX_TEXT_VALUE:,}"
                    )
                todo.append((f"{key}.{k}", x, depth + 1))
        elif isinstance(v, list):
            todo += [(f"{key}[{i}]", x, depth) for i, x in enumerate(v[: MAX_FREEZE + 1])]


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
            raise ValueError(
                f"config key model.overrides.{name}={short(sub)}: expected a table of {name} fields"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown += [f"{name}.{k}" for k in (sub or {}) if k not in fields]
    if unknown:
        raise ValueError(
            f"config key model.overrides has {len(unknown):,} unknown field(s): "
            f"{listed(unknown)} (expected fields of the model config, e.g. dit.dim, "
            "upsampler.hidden, prediction)"
        )
    for name, field, key in (
        ("dit", "attention", "model.attention"),
        ("upsampler", "mode", "model.upsampler"),
    ):
        if field in (overrides.get(name) or {}):  # one spelling per setting
            raise ValueError(
                f"config key model.overrides.{name}.{field}: set it as {key} (one spelling per "
                "model setting)"
            )


def _finite(v) -> bool:
    """math.isfinite for a number that may be an int too large for a float (a TOML int of 3,000
    digits)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def validate_config(config: dict) -> dict:
    """Refuse, with one message naming the key, what would crash mid-run or train nothing: a wrong
    type (each key has its default's type), an int or float out of range, a size that is not two
    positive ints, an unknown choice, a string longer than files.MAX_TEXT_VALUE, unknown
    model.overrides fields, more samples a step than MAX_SAMPLES_PER_STEP. Values in messages are
    cut (files.short), lists of names capped (`listed`)."""

    def fail(key, value, expected):
        raise ValueError(f"config key {key}={short(value)}: expected {expected}")

    _check_sizes(config)

    for section, values in DEFAULTS.items():
        for k, default in values.items():
            key, v = f"{section}.{k}", config[section][k]
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    fail(key, v, "true or false")
            elif isinstance(default, int):
                lo, hi = _INT_RANGES.get(key, (0, 2**63))
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    fail(key, v, f"an integer in [{lo}, {hi}]")
            elif isinstance(default, float):
                lo, hi, open_lo = _FLOAT_RANGES[key]
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, float))
                    or not _finite(v)
                    or not (v > lo if open_lo else v >= lo)
                    or v > hi
                ):
                    fail(key, v, f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}]")
            elif isinstance(default, str):
                if not isinstance(v, str):
                    fail(key, v, "a string")
            elif isinstance(default, dict):
                if not isinstance(v, dict):
                    fail(key, v, "a table")
    for key in ("data.hr_size", "data.lr_size"):
        section, k = key.split(".")
        v = config[section][k]
        if (
            not isinstance(v, list)
            or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) or not 2 <= x <= 16384 for x in v)
        ):
            fail(key, v, "[height, width] in pixels, two integers in [2, 16384]")
    hr, lr = config["data"]["hr_size"], config["data"]["lr_size"]
    if lr[0] > hr[0] or lr[1] > hr[1]:
        fail("data.lr_size", lr, f"a size no larger than data.hr_size={hr} (SimpleGVR upscales)")
    t = config["train"]
    for key, n in (("train.betas", 2), ("train.noise_level", 2)):
        v = t[key.split(".")[1]]
        if (
            not isinstance(v, list)
            or len(v) != n
            or any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or not _finite(x) for x in v
            )
        ):
            fail(key, v, f"a list of {n} numbers")
    if (
        not isinstance(t["freeze"], list)
        or len(t["freeze"]) > MAX_FREEZE
        or not all(isinstance(x, str) and x for x in t["freeze"])
    ):
        fail(
            "train.freeze",
            t["freeze"],
            f'a list of at most {MAX_FREEZE} parameter-name prefixes, e.g. ["upsampler"]',
        )
    if t["batch_size"] * t["grad_accum"] > MAX_SAMPLES_PER_STEP:
        fail(
            "train.grad_accum",
            t["grad_accum"],
            f"train.batch_size x train.grad_accum ({t['batch_size']} x "
            f"{t['grad_accum']}) at most {MAX_SAMPLES_PER_STEP} samples a process draws a step",
        )
    _check_overrides(config["model"]["overrides"])
    if t["ssim_weight"] and not t["pixel_metric"]:
        fail(
            "train.ssim_weight",
            t["ssim_weight"],
            "0, or a train.pixel_metric codec to decode the frames SSIM is measured on",
        )
    if not all(0 <= b < 1 for b in t["betas"]):
        fail("train.betas", t["betas"], "two numbers in [0, 1)")
    lo, hi = t["noise_level"]
    if not 0 <= lo <= hi <= 1:
        fail("train.noise_level", t["noise_level"], "[lo, hi] with 0 <= lo <= hi <= 1")
    if t["mixed_precision"] not in MIXED_PRECISION:
        fail("train.mixed_precision", t["mixed_precision"], f"one of {MIXED_PRECISION}")
    if config["data"]["kind"] not in DATA_KINDS:
        fail("data.kind", config["data"]["kind"], f"one of {DATA_KINDS}")
    if config["data"]["scan"] not in SCANS:
        fail("data.scan", config["data"]["scan"], f"one of {SCANS}")
    from simplegvr_core.degrade import check_modes

    check_modes(config["data"]["degradation"])
    from simplegvr_core.config import ATTENTION_MODES, UPSAMPLER_MODES

    m = config["model"]
    if m["attention"] not in ("", *ATTENTION_MODES):
        fail("model.attention", m["attention"], f"'' (the model's) or one of {ATTENTION_MODES}")
    if m["upsampler"] not in ("", *UPSAMPLER_MODES):
        fail("model.upsampler", m["upsampler"], f"'' (the config's) or one of {UPSAMPLER_MODES}")
    from simplegvr_core.text import TEXT_KINDS
    from simplegvr_core.vae import VAE_CHOICES

    if config["vae"]["kind"] not in VAE_CHOICES:
        fail("vae.kind", config["vae"]["kind"], f"one of {VAE_CHOICES}")
    if config["text"]["kind"] not in TEXT_KINDS:
        fail("text.kind", config["text"]["kind"], f"one of {tuple(TEXT_KINDS)}")
    if t["timestep_sampler"] == "detail_aware" and not t["detail_curve"]:
        fail(
            "train.detail_curve",
            t["detail_curve"],
            "a curve file (simplegvr analyze-detail) for train.timestep_sampler='detail_aware'",
        )
    distill.check(config)
    return config


def input_paths(config: dict) -> list[Path]:
    """The files and folders a run of `config` reads (and the files it writes in log.output_dir):
    what
    --export must not be."""
    m, d, t = config["model"], config["data"], config["train"]
    paths = [
        m["init"],
        m["wan"],
        d["path"],
        config["vae"]["path"],
        config["text"]["path"],
        config["text"]["cache"],
        t["detail_curve"],
        t["pixel_metric"],
        config["distill"]["teacher"],
    ]
    out = [Path(p) for p in paths if p]
    if d["path"]:
        out.append(Path(d["path"]) / d["captions"])
    logdir = Path(config["log"]["output_dir"])
    return out + [logdir / "text_cache.safetensors", logdir / "losses.jsonl"]
