"""The model a run trains: built from its [model] table (`build_model`, `model_config` for its shape
alone), the parameters it keeps fixed (`freeze`), the EMA of the weights, and the plain
single-process model the gathered weights make (`plain_model`, `export_ema`: the checkpoint the
nodes and `upscale` load)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core import (  # noqa: E402
    SimpleGVR,
    get_config,
    import_wan,
    load_checkpoint,
    save_checkpoint,
)


def model_config(model_table: dict):
    """The SimpleGVRConfig the [model] table describes, without building the model (a checkpoint's
    header is read): what `build_model` builds; None for `model.wan`, whose shape comes from the
    weights."""
    from simplegvr_core.checkpoint import checkpoint_config

    if model_table["init"]:
        config = get_config(checkpoint_config(model_table["init"]).to_dict())
        if model_table["upsampler"] and model_table["upsampler"] != config.upsampler.mode:
            raise ValueError(
                f"config key model.upsampler={model_table['upsampler']!r}: "
                f"{model_table['init']!r} has a {config.upsampler.mode!r} upsampler, whose "
                f"weights it keeps; leave model.upsampler out"
            )
    elif model_table["wan"]:
        return None
    else:
        d = get_config(model_table["config"] or "tiny").to_dict()
        for section, values in (model_table.get("overrides") or {}).items():
            if section in ("dit", "upsampler"):
                d[section].update(values)
            else:
                d[section] = values
        if model_table["upsampler"]:
            d["upsampler"]["mode"] = model_table["upsampler"]
        config = get_config(d)
    if model_table["attention"]:
        config.dit.attention = model_table["attention"]
    return config


def build_model(model_table: dict, device=None) -> SimpleGVR:
    """From a named config (+ overrides), a SimpleGVR checkpoint (previous stage) or Wan T2V weights
    (into `model.config` when it names one, e.g. wan2.2-ti2v-5b or cogvideox-1.3b; else the shape is
    inferred). device="meta": the model's shape only, nothing allocated or read but a header (not
    for `model.wan`)."""
    if device == "meta":
        config = model_config(model_table)
        if config is None:
            raise ValueError(
                "model.wan: the shape of imported Wan weights is known only once they are read"
            )
        model = SimpleGVR.from_config(config, device="meta")
    elif model_table["init"]:
        model = load_checkpoint(model_table["init"])
    elif model_table["wan"]:
        model = import_wan(
            model_table["wan"],
            config=model_table["config"] or None,
            upsampler=model_table["upsampler"] or None,
            num_heads=model_table["wan_num_heads"] or None,
        )
        model = model.float()
    else:
        model = SimpleGVR.from_config(model_config(model_table))
    if model_table["attention"]:
        model.dit.set_attention(model_table["attention"])
        model.config.dit.attention = model_table["attention"]
    return model


def freeze(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Stop training every parameter whose name starts with one of `prefixes` (e.g. "upsampler"
    keeps a fitted upsampler as it is); ValueError for a prefix that names no parameter."""
    names = [n for n, _ in model.named_parameters()]
    for pre in prefixes:
        if not any(n == pre or n.startswith(pre.rstrip(".") + ".") for n in names):
            raise ValueError(
                f"config key train.freeze names {pre!r}, which matches no parameter of the model "
                f"(expected a prefix such as 'upsampler', 'upsampler.base' or 'dit.blocks.0')"
            )
    for n, p in model.named_parameters():
        if any(n == pre or n.startswith(pre.rstrip(".") + ".") for pre in prefixes):
            p.requires_grad_(False)


class EMA:
    """Exponential moving average of the trainable weights (float32 shadow, sharded like the
    parameters under FSDP), with the usual warm-up."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in model.named_parameters():
            self.shadow[k].mul_(d).add_(p.detach().float(), alpha=1 - d)


# what an exported model carries over from model.init's file
LINEAGE_KEYS = ("origin", "license", "trained_on")


def lineage(model_table: dict) -> dict[str, str]:
    """Metadata the export keeps from the weights it started from: the run's `init` file (its name
    as `init`) and that file's origin, license and training data, as `init_origin`, `license` (the
    terms derived weights inherit: Ultra Flash's Apache-2.0) and `init_trained_on`; {} for a run
    from Wan or from scratch."""
    from simplegvr_core.weights import read_metadata

    if not model_table["init"]:
        return {}
    meta = read_metadata(model_table["init"])
    out = {"init": Path(model_table["init"]).name}
    for key in LINEAGE_KEYS:
        if meta.get(key):
            out["license" if key == "license" else f"init_{key}"] = meta[key]
    return out


def plain_model(config, state: dict[str, torch.Tensor]) -> SimpleGVR:
    """A single-process SimpleGVR (float32, CPU) holding `state`, a full state dict such as the
    gathered EMA."""
    model = SimpleGVR.from_config(config, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float()


def export_ema(
    config,
    ema_state: dict[str, torch.Tensor],
    path: str | os.PathLike,
    step: int,
    student: tuple | None = None,
    *,
    replace: bool = False,
) -> Path:
    """The (full, gathered) EMA weights as a node/pipeline checkpoint; a distilled student's carries
    its sampling recipe and method (`student`: what `distill.student_recipe` returns). replace=False
    (no --overwrite): an existing `path`, or one that appears while it is written, is left as it is
    (`files.OutputExistsError`)."""
    recipe, extra = student or (None, {})
    return save_checkpoint(
        plain_model(config, ema_state),
        path,
        extra_metadata={"trained_steps": str(step), **extra},
        sampling=recipe,
        replace=replace,
    )
