"""How much memory one training step needs, estimated from the config before anything is built.

`training_memory(config, model)` adds up what a process of `training/train.py` holds at its peak
(the first step):

- the model state in float32: weights, their gradients, AdamW's two moments and the EMA shadow
  (gradients and moments of the trainable parameters only), split over the ranks under FSDP; a
  distillation teacher's weights;
- the activations autograd keeps for the backward pass: every DiT layer's (per token, ~ACT_LAYER_DIM
  x dim + ACT_LAYER_FFN x ffn_dim numbers, plus its cross-attention's keys and values over the text
  tokens), or with gradient checkpointing each layer's input and one layer's recomputation; the
  tokens' embedding and head outside the layers; the learned upsampler's residual blocks at the
  time-expanded target size; the latents of the loss;
- the data of a micro-batch: the decoded uint8 HR and LR clips (with the loader's prefetched
  batches), their float copies and the VAE encode of the HR clip (`vae_width`: the width of the
  VAE's first layer), or the pair shards, which are read into memory whole; and RUN_OVERHEAD for the
  rest (the loader, decoders, text cache).

The coefficients were calibrated against the peak RSS of CPU runs (fp32, glibc returning freed
blocks at once): forward + backward of `flow_loss` with dim 256-512 / ffn 512-1024 / 2-4 layers /
320-2880 tokens, the tiny Wan and CogVideoX VAEs' encode, and whole tiny `train()` runs
(`tests/test_training_safety.py`). They are an estimate (the source videos are decoded at their own
size, which the config does not know; a GPU adds its allocator's slack): the point is to refuse a
run that cannot fit before its first step, with the numbers, instead of ending in an allocator
traceback - and `train.check_memory = false` runs anyway."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from simplegvr_core.memory import available_memory, format_bytes

# float32 numbers kept for the backward pass:
ACT_LAYER_DIM = 20  # per token and DiT layer, of width dim
ACT_LAYER_FFN = 2  # ... of width ffn_dim (the FFN's hidden activation and its GELU)
ACT_TEXT = 4  # per text token and layer, of width dim (cross-attention keys, values, their norms)
ACT_OUTSIDE_DIM = 8  # per token outside the layers: patch embedding, its copy, the head
LATENT_TENSORS = 24  # HR-latent-sized tensors of the loss: x0, ε, x_σ, the condition, v, targets
UPSAMPLER_TENSORS = 10  # hidden-wide ones at the target size in the learned upsampler
# the data:
VAE_FRAMES = 6  # frames a causal video VAE holds at once (Wan: chunks of 4 and a 2-frame cache)
VAE_PX_BYTES = 64  # VAE encode bytes per frame pixel, fixed ...
VAE_WIDTH_BYTES = 16  # ... and per channel of its first layer
RUN_OVERHEAD = 64 * 2**20  # the rest of a run: the loader, the video decoders' buffers, text cache
MIXED_ACTIVATIONS = 0.625  # bf16 / fp16 autocast: matmuls in 2 bytes, norms and modulation float32


def vae_width(vcfg: dict) -> int:
    """The width of the first layer of the VAE `vcfg` (the config's [vae] table) names, from its
    config alone (the tiny kinds' dicts, a diffusers folder's config.json, a file's metadata); 128
    when it cannot be told."""
    from simplegvr_core.files import parse_json
    from simplegvr_core.vae import VAE_KINDS

    kind, path = vcfg.get("kind", ""), vcfg.get("path", "")
    conf = None
    try:
        if kind in VAE_KINDS and VAE_KINDS[kind].tiny is not None:
            conf = VAE_KINDS[kind].tiny
        elif kind == "file" and path:
            from simplegvr_core.weights import read_metadata

            meta = read_metadata(path)
            conf = parse_json(meta.get("vae_config", "null"), "vae_config") or {}
            if conf.get("arch") == "lapped":  # a linear codec: one strided convolution, no more
                return int(conf.get("z_dim", 16))
        elif path:
            p = Path(path)
            sub = p / "vae" if (p / "vae").is_dir() else p
            conf = parse_json((sub / "config.json").read_text(), "VAE config")
    except (OSError, ValueError):
        conf = None
    if isinstance(conf, dict):
        width = conf.get("base_dim") or (conf.get("block_out_channels") or [None])[0]
        if isinstance(width, int) and width > 0:
            return width
    return 128


def _params(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def training_memory(
    config: dict, model, *, world: int = 1, width: int | None = None, shard_bytes: int | None = None
) -> dict[str, int]:
    """Bytes one process needs at the peak of a training step of `config` (a validated config) on
    `model` (a SimpleGVR, on the meta device is enough: only its config and parameter counts are
    read; its train.freeze applied), with `world` processes. `width`: the VAE's first-layer width
    (`vae_width`); `shard_bytes`: the size of the pair shards (data.kind = 'shards'). Returns
    {"model", "activations", "data", "total", "parameters", "tokens"}."""
    t, d = config["train"], config["data"]
    c = model.config
    dit, up, fmt = c.dit, c.upsampler, model.latent_format
    fsdp = bool(t["fsdp"]) and world > 1
    total_p, trainable = _params(model)
    # weights and EMA of every parameter; gradients and AdamW's two moments of the trainable ones
    state = 4 * (2 * total_p + 3 * trainable)
    if fsdp:  # a shard of each, and one block gathered at a time
        block = max((sum(p.numel() for p in b.parameters()) for b in model.dit.blocks), default=0)
        state = math.ceil(state / world) + 4 * block
    elif world > 1:
        state += 4 * trainable  # DDP's gradient buckets
    if config["distill"]["method"] == "regress_teacher":
        state += 4 * total_p  # the teacher (the student's shape, as a rule)
    bs = int(t["batch_size"])
    frames = int(d["frames"])
    (H, W), (h, w) = d["hr_size"], d["lr_size"]
    r = fmt.spatial_ratio
    lt, lh, lw = fmt.latent_frames(frames), H // r, W // r
    pt, ph, pw = dit.patch_size
    tokens = math.ceil(lt / pt) * math.ceil(lh / ph) * math.ceil(lw / pw)
    layer = (
        ACT_LAYER_DIM * dit.dim + ACT_LAYER_FFN * dit.ffn_dim
    ) * tokens + ACT_TEXT * dit.text_len * dit.dim
    if t["gradient_checkpointing"]:  # each layer's input, and one layer recomputed
        blocks = dit.num_layers * tokens * dit.dim + layer
    else:
        blocks = dit.num_layers * layer
    act = blocks + ACT_OUTSIDE_DIM * tokens * dit.dim + LATENT_TENSORS * fmt.channels * lt * lh * lw
    if up.mode != "interp":
        up_frames = 1 + up.temporal_factor * (lt - 1) if up.mode == "learned" else lt
        act += UPSAMPLER_TENSORS * up.hidden * up_frames * lh * lw
    act *= 4 * bs
    if t["mixed_precision"] != "no" and torch.cuda.is_available():
        act = int(act * MIXED_ACTIVATIONS)
    if d["kind"] == "shards":
        data = int(shard_bytes or 0)
    else:
        workers = int(d["num_workers"])
        px_hr, px_lr = frames * H * W, frames * h * w
        # uint8 samples, the collated batch, the prefetched batches
        clips = bs * 3 * (px_hr + px_lr) * (2 + 2 * workers)
        floats = bs * 3 * px_hr * 4 * 2  # the HR clip in float for the VAE, and its normalised copy
        per_px = VAE_PX_BYTES + VAE_WIDTH_BYTES * (width or 128)
        vae = bs * min(frames, VAE_FRAMES) * H * W * per_px
        data = clips + floats + vae
    if t["pixel_metric"]:  # the codec decodes the loss's latents to frames (SSIM: a dozen)
        data += bs * 3 * fmt.pixel_frames(lt) * H * W * 4 * (12 if t["ssim_weight"] else 3)
    data += RUN_OVERHEAD
    return {
        "model": int(state),
        "activations": int(act),
        "data": int(data),
        "total": int(state + act + data),
        "parameters": int(total_p),
        "tokens": int(tokens),
    }


def shard_folder_bytes(folder) -> int:
    """Bytes of the pair shards (*.safetensors) in `folder`: PairShards reads them all in."""
    try:
        return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors") if f.is_file())
    except OSError:
        return 0


def memory_error(
    config: dict, model, device, *, world: int = 1, processes_here: int = 1, already: int = 0
) -> str | None:
    """None when the estimate of a step (`training_memory`) fits in what `device` has available now,
    else the one-line reason naming the settings and the numbers. `processes_here`: processes of
    this run sharing the host's memory (on the CPU); `already`: bytes of the estimate that are
    allocated already (weights of a model imported before the check)."""
    d = config["data"]
    width = vae_width(config["vae"]) if d["kind"] == "videos" else None
    shard = shard_folder_bytes(d["path"]) if d["kind"] == "shards" else None
    est = training_memory(config, model, world=world, width=width, shard_bytes=shard)
    dev = torch.device(device)
    share = processes_here if dev.type == "cpu" else 1
    need = max(0, est["total"] - already) * share
    have = available_memory(dev)
    if need <= have:
        return None
    t = config["train"]
    millions = est["parameters"] / 1e6
    parts = (
        f"model state {format_bytes(est['model'])} ({millions:.1f} M parameters in float32 "
        f"with gradients, AdamW and EMA), activations {format_bytes(est['activations'])} "
        f"(batch {t['batch_size']} x {est['tokens']:,} tokens x {model.config.dit.num_layers} "
        f"layers), data {format_bytes(est['data'])}"
    )
    where = f" for {share} processes on this host" if share > 1 else ""
    fixes = "lower train.batch_size, data.frames or data.hr_size"
    if not t["gradient_checkpointing"]:
        fixes += ", set train.gradient_checkpointing=true"
    return (
        f"a training step needs about {format_bytes(need)}{where} ({parts}) but "
        f"{format_bytes(have)} is available on {dev}: {fixes}, use a smaller model or a larger "
        f"device (train.check_memory=false runs anyway); settings: "
        f"train.batch_size={t['batch_size']}, data.frames={d['frames']}, "
        f"data.hr_size={d['hr_size']}"
    )


def local_processes(world: int) -> int:
    """Processes of this run on this host (torchrun / accelerate set LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    except ValueError:
        return max(1, world)
