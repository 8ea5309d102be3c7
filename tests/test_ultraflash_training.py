"""Training from Ultra Flash's published weights (training/configs/ultraflash_finetune_1k.toml): the
training forward streams the clip as their code does, and a fine-tune lowers its loss, resumes
exactly and exports a model that samples as it was trained (one step, noise 0, guidance 1) and keeps
their origin and license."""

from pathlib import Path

import numpy as np
import pytest
import torch
import ultraflash_tiny as uft
from safetensors.torch import load_file
from test_ultraflash import FIXTURE, TOL, imported, inputs, weights

from simplegvr_core import load_checkpoint
from simplegvr_core.app import main
from simplegvr_core.checkpoint import checkpoint_sampling
from simplegvr_core.pipeline import pad_text, upscale
from simplegvr_core.sampling import SamplingRecipe
from simplegvr_core.weights import read_metadata

pytest.importorskip("accelerate")

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "training" / "configs" / "ultraflash_finetune_1k.toml"


def _forward(model, inp, checkpointing: bool):
    model.dit.gradient_checkpointing = checkpointing
    noise = inp["noise"]
    ctx = pad_text(inp["context"], model.config.dit.text_len)
    v = model(noise, inp["lr"], torch.full((1,), 1000.0), ctx, torch.zeros(1))
    return noise - v


def test_the_training_forward_streams_the_clip_as_their_code_does():
    """SimpleGVR.forward in the causal mode (what the trainer calls) on 13 latent frames: one call
    per group of 6 with the K/V of the groups before, so x0 = noise - v equals their streaming
    output (groups 6, 6, 1) - the model trains on what it runs. Gradient checkpointing recomputes
    the same thing: the same output and gradients."""
    model = imported("shipped")
    inp = inputs(uft.tiny_configs()["shipped"])
    with torch.no_grad():
        x0 = _forward(model, inp, checkpointing=False)
    torch.testing.assert_close(x0, FIXTURE["shipped/x0"], rtol=0, atol=TOL)

    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        out = _forward(model.train(), inp, checkpointing)
        out.square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        torch.testing.assert_close(out.detach(), x0, rtol=0, atol=TOL)
    assert grads[0].keys() == grads[1].keys() and "blocks.1.self_attn.q.weight" in {
        k[4:] for k in grads[0]
    }
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny Ultra Flash weights as their .pth files, imported by the CLI (as a user does), and
    procedural clips of 25 frames: 7 latent frames, two streaming groups (6, 1)."""
    from training.data import make_synthetic_videos

    root = tmp_path_factory.mktemp("uf_train")
    case, dit_sd, up_sd = weights("shipped")
    torch.save(dit_sd, root / "sr_dit_sparse.pth")
    torch.save(up_sd, root / "latent_upsampler.pth")
    init = root / "ultraflash.safetensors"
    assert (
        main(
            [
                "import-ultraflash",
                "--dit",
                str(root / "sr_dit_sparse.pth"),
                "--upsampler",
                str(root / "latent_upsampler.pth"),
                "--num-heads",
                "2",
                "--out",
                str(init),
            ]
        )
        == 0
    )
    clips = make_synthetic_videos(root / "clips", 3, 25, (64, 128), seed=0)
    return init, clips


def stage(out: Path, setup, extra=()):
    """The shipped stage config, with only the sizes, files and run length made tiny: its recipe is
    what runs."""
    from training.config import load_config

    init, clips = setup
    return load_config(
        STAGE,
        [
            f"model.init={init}",
            f"data.path={clips}",
            "data.frames=25",
            "data.hr_size=[64, 128]",
            "data.lr_size=[32, 64]",
            "data.degradation=classic",
            "data.val_count=1",
            "data.num_workers=0",
            "vae.kind=tiny",
            "text.kind=byte",
            "text.cache=",
            "train.mixed_precision=no",
            "train.gradient_checkpointing=false",
            "train.fsdp=false",
            "train.lr=2e-3",
            "train.warmup_steps=0",
            "train.ema_decay=0.9",
            "log.tracker=none",
            f"log.output_dir={out / 'run'}",
            "log.validate_every=0",
            "log.checkpoint_every=1000",
            *extra,
        ],
    )


def test_the_stage_config_is_their_recipe():
    from training.config import load_config

    c = load_config(STAGE)
    assert c["distill"]["method"] == "regress_hr" and (
        c["distill"]["steps"],
        c["distill"]["shift"],
    ) == (1, 1.0)
    assert c["train"]["noise_level"] == [0.0, 0.0] and c["train"]["null_prompt_prob"] == 0.0
    assert (c["data"]["hr_size"], c["data"]["lr_size"], c["vae"]["kind"]) == (
        [960, 1664],
        [480, 832],
        "wan21",
    )
    assert (c["data"]["frames"] - 1) // 4 + 1 == 12  # two streaming groups of 6 latent frames


def test_finetuning_their_weights_lowers_the_loss_and_exports_their_recipe(tmp_path, setup):
    c = stage(tmp_path, setup, ["train.steps=40", "train.overfit=true"])
    out = train_run(c, tmp_path / "export.safetensors")
    losses = [v for _, v in out["losses"]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), (losses[:3], losses[-5:])

    export = tmp_path / "export.safetensors"
    assert checkpoint_sampling(export) == SamplingRecipe(
        steps=1, shift=1.0, guidance=1.0, noise_level=0.0
    )
    meta = read_metadata(export)
    assert meta["license"].startswith("apache-2.0") and "UltraFlash" in meta["init_origin"]
    assert meta["init"] == "ultraflash.safetensors" and meta["distill_method"] == "regress_hr"
    model = load_checkpoint(export)
    assert (
        model.config.dit.attention == "block_sparse_causal"
        and model.config.upsampler.mode == "memory"
    )
    lr, ctx = torch.randn(1, 16, 7, 4, 8), torch.randn(1, 3, model.config.dit.text_dim)
    auto = upscale(model, lr, context=ctx)  # every setting auto: the recipe it was trained with
    trained = upscale(model, lr, context=ctx, steps=1, shift=1.0, cfg=1.0, noise_level=0.0, scale=2)
    assert auto.shape == (1, 16, 7, 8, 16) and torch.isfinite(auto).all()
    torch.testing.assert_close(auto, trained, rtol=0, atol=1e-6)
    # the hosts' defaults, had it recorded none
    defaults = upscale(model, lr, context=ctx, cfg=5.0, noise_level=0.4)
    assert (defaults - auto).abs().max() > 1e-3


def train_run(config, export=None):
    from training.train import train

    return train(config, export=str(export) if export else None, progress=False)


def test_finetuning_resumes_exactly(tmp_path, setup):
    extra = ["train.steps=4", "log.checkpoint_every=2"]
    a = train_run(stage(tmp_path / "a", setup, extra))
    b_config = stage(tmp_path / "b", setup, [*extra, "train.stop_at_step=2"])
    b1 = train_run(b_config)
    b_config["train"]["stop_at_step"] = 0
    from training.train import train

    b2 = train(b_config, resume="auto", progress=False)
    assert b1["losses"] + b2["losses"] == a["losses"]
    for name in ("model.safetensors", "ema.safetensors"):
        wa = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "step-0000004" / name))
        wb = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "step-0000004" / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
