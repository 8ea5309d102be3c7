"""Every T2V family the pack promises, in training: Wan 2.1, Wan 2.2 TI2V-5B (48 channels, /16) and
CogVideoX.

Each family's VAE and text encoder (tiny random versions of the real classes), its configs, and a
tiny training run that encodes with them and exports a checkpoint that upscales a latent of that
family.
"""

import json
from pathlib import Path

import pytest
import torch

from simplegvr_core import load_checkpoint
from simplegvr_core.latent_formats import COGVIDEOX_2B, WAN21, WAN22, get_format
from simplegvr_core.pipeline import prepare_context, upscale

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {  # family: (tiny config, tiny VAE, tiny text encoder, latent format)
    "Wan 2.1": ("tiny", "tiny", "tiny_umt5", WAN21),
    "Wan 2.2": ("tiny-wan22", "tiny_wan22", "tiny_umt5", WAN22),
    "CogVideoX": ("tiny-cogvideox", "tiny_cogvideox", "tiny_t5", COGVIDEOX_2B),
}


def frames(t=9, h=32, w=32, seed=0):
    return torch.randint(
        0, 256, (1, t, h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


# --- VAEs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, cls, channels, ratio",
    [
        ("tiny", "AutoencoderKLWan", 16, 8),
        ("tiny_wan22", "AutoencoderKLWan", 48, 16),
        ("tiny_cogvideox", "AutoencoderKLCogVideoX", 16, 8),
    ],
)
def test_tiny_vaes_have_their_familys_latent_contract(kind, cls, channels, ratio):
    from simplegvr_core.vae import VideoVAE

    vae = VideoVAE.load(kind, seed=3)
    assert type(vae.vae).__name__ == cls and (vae.channels, vae.spatial_ratio) == (channels, ratio)
    x = frames(9, 32, 32)
    z = vae.encode(x)
    assert z.shape == (1, channels, 3, 32 // ratio, 32 // ratio) and torch.isfinite(z).all()
    # 3 latent frames (odd): 9 frames back, for CogVideoX too
    assert vae.decode(z).shape == (1, 9, 32, 32, 3)
    torch.testing.assert_close(VideoVAE.load(kind, seed=3).encode(x), z)  # seeded
    assert not torch.equal(VideoVAE.load(kind, seed=4).encode(x), z)


def test_cogvideox_vae_decodes_an_even_latent_count_to_4t_frames():
    from simplegvr_core.vae import VideoVAE

    vae = VideoVAE.load("tiny_cogvideox")
    z = vae.encode(frames(13, 16, 16))  # 4 latent frames
    # CogVideoX's VAE itself: 4T, not 1 + 4(T-1) = 13
    assert z.shape[2] == 4 and vae.decode(z).shape[1] == 16


def test_vae_family_is_checked_against_the_models_latent_format(tmp_path):
    from simplegvr_core.vae import VideoVAE

    VideoVAE.load("tiny_wan22").check_format(WAN22)
    # one VAE for 2b and 5b
    VideoVAE.load("tiny_cogvideox").check_format(get_format("cogvideox_5b"))
    with pytest.raises(
        ValueError,
        match=r"the Wan 2\.1 VAE makes 16-channel latents at /8, but the model works in "
        r"'cogvideox_2b' \(CogVideoX VAE.*set vae.kind to.*cogvideox, tiny_cogvideox",
    ):
        VideoVAE.load("tiny").check_format(COGVIDEOX_2B)
    with pytest.raises(
        ValueError, match="frames of 40x40 px: the Wan 2.2 VAE needs multiples of 16"
    ):
        VideoVAE.load("tiny_wan22").encode(frames(5, 40, 40))
    with pytest.raises(
        ValueError, match=r"VAE kind 'wan23': expected one of \['wan21', 'wan22', 'cogvideox'"
    ):
        VideoVAE.load("wan23")
    with pytest.raises(
        ValueError, match=r"no CogVideoX VAE at .*run `simplegvr download-cogvideox --out"
    ):
        VideoVAE.load("cogvideox", tmp_path / "nothing")


def test_a_downloaded_vae_folder_loads_as_its_kind_and_is_refused_as_another(tmp_path):
    """The folder layout download-wan / download-cogvideox write (DIR/vae/config.json + weights)."""
    from simplegvr_core.vae import TINY_WAN22_VAE, VideoVAE

    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(**TINY_WAN22_VAE).eval()
    ref.save_pretrained(tmp_path / "wan22" / "vae")
    cfg_path = tmp_path / "wan22" / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # the published Wan 2.2 config carries a key diffusers >= 0.35 no longer takes
    cfg["clip_output"] = False
    cfg_path.write_text(json.dumps(cfg))
    vae = VideoVAE.load("wan22", tmp_path / "wan22")
    x = frames(5, 32, 32)
    with torch.no_grad():
        expected = ref.encode(x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1).latent_dist.mode()
    torch.testing.assert_close(vae.encode(x), expected)
    with pytest.raises(
        ValueError,
        match=r"holds a AutoencoderKLWan with 48-channel latents at /16, but vae.kind='wan21' "
        r"is the Wan 2\.1 VAE",
    ):
        VideoVAE.load("wan21", tmp_path / "wan22")


# --- text encoders --------------------------------------------------------------------------------
def test_t5_for_cogvideox_pads_to_226_tokens_unmasked_and_umt5_for_wan_keeps_the_real_length():
    from simplegvr_core.text import make_text_encoder

    t5 = make_text_encoder("tiny_t5", 32, family="CogVideoX")
    f = t5("a red fox")
    assert f.shape == (226, 32) and torch.isfinite(f).all()
    tok = t5.tokenizer(
        "a red fox", max_length=226, padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():  # diffusers' CogVideoX pipeline: text_encoder(ids)[0], no attention mask
        torch.testing.assert_close(f, t5.model(tok.input_ids)[0][0])
    # the padding positions are real T5 outputs, not zeros
    assert not torch.equal(f[20], torch.zeros(32))
    assert t5("x" * 1000).shape == (226, 32)  # cut at 226, as diffusers does
    umt5 = make_text_encoder("tiny_umt5", 32, family="Wan 2.2")
    g = umt5("a red fox")
    # its bytes + </s>; the pipeline zero-pads to text_len
    assert g.shape == (len("a red fox") + 1, 32)
    assert not torch.equal(
        make_text_encoder("tiny_umt5", 32)("a red fox"),
        make_text_encoder("tiny_umt5", 32)("a red cat"),
    )
    torch.testing.assert_close(make_text_encoder("tiny_t5", 32)("a red fox"), f)  # seeded


def test_text_encoder_family_and_paths_are_checked():
    from simplegvr_core.text import make_text_encoder

    with pytest.raises(
        ValueError,
        match=r"text.kind='umt5' is the text encoder of Wan 2.1 / Wan 2.2, but the model works "
        r"in CogVideoX latents: use 't5' or 'tiny_t5'",
    ):
        make_text_encoder("umt5", 4096, "weights", family="CogVideoX")
    with pytest.raises(ValueError, match="text.kind = 't5' needs text.path .*download-cogvideox"):
        make_text_encoder("t5", 4096, None, family="CogVideoX")
    with pytest.raises(
        ValueError, match=r"lacks text_encoder/ and tokenizer/: run `simplegvr download-wan"
    ):
        make_text_encoder("umt5", 4096, "/nonexistent", family="Wan 2.1")
    with pytest.raises(ValueError, match="text encoder kind 'clip'"):
        make_text_encoder("clip", 4096)
    # byte: any family
    assert make_text_encoder("byte", 32, family="CogVideoX")("x").shape == (2, 32)


# --- configs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", sorted((REPO / "training" / "configs").glob("*.toml")), ids=lambda p: p.name
)
def test_each_training_config_uses_its_familys_vae_and_text_encoder(path):
    from simplegvr_core import get_config
    from simplegvr_core.text import TEXT_KINDS
    from simplegvr_core.vae import VAE_KINDS
    from training.config import load_config

    cfg = load_config(path)
    if cfg["data"]["kind"] != "videos":
        return  # pair shards were encoded by make_pairs
    name = cfg["model"]["config"] or ("wan2.1-1.3b" if cfg["model"]["wan"] else "tiny")
    fmt = get_format(get_config(name).latent_format)
    assert VAE_KINDS[cfg["vae"]["kind"]].family == fmt.family
    assert fmt.family in TEXT_KINDS[cfg["text"]["kind"]].families or cfg["text"]["kind"] == "byte"
    assert all(v % fmt.spatial_ratio == 0 for v in cfg["data"]["hr_size"] + cfg["data"]["lr_size"])


def test_every_family_has_stage_configs():
    names = {p.name for p in (REPO / "training" / "configs").glob("*.toml")}
    for prefix in ("", "wan22_", "cogvideox_"):
        assert {f"{prefix}stage1_classic_17f.toml", f"{prefix}stage2_dual_17f.toml"} <= names
    assert {
        "stage3_units_77f.toml",
        "wan22_stage3_units_77f.toml",
        "cogvideox_stage3_units_49f.toml",
        "cpu_smoke_wan22.toml",
        "cpu_smoke_cogvideox.toml",
    } <= names


# --- a tiny training run per family ---------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from training.data import make_synthetic_videos

    return make_synthetic_videos(tmp_path_factory.mktemp("clips"), 3, 9, (32, 32), seed=0)


def family_cfg(tmp_path, clips, family, **over):
    from training.config import load_config

    config, vae, text, fmt = FAMILIES[family]
    hr = 32
    return load_config(
        None,
        [
            f"model.config={config}",
            "data.kind=videos",
            f"data.path={clips}",
            "data.frames=9",
            f"data.hr_size=[{hr}, {hr}]",
            f"data.lr_size=[{hr // 2}, {hr // 2}]",
            "data.degradation=none",
            f"vae.kind={vae}",
            f"text.kind={text}",
            "train.batch_size=2",
            "train.steps=3",
            "train.lr=1e-3",
            "train.mixed_precision=no",
            f"log.output_dir={tmp_path / 'run'}",
            "log.tracker=none",
            "log.validate_every=3",
            "log.val_steps=2",
            "log.checkpoint_every=1000",
            *[f"{k}={v}" for k, v in over.items()],
        ],
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_training_encodes_with_the_familys_vae_and_text_and_exports_an_upscaler_of_its_latents(
    tmp_path, clips, family
):
    from training.train import train

    config, vae_kind, text_kind, fmt = FAMILIES[family]
    out = train(
        family_cfg(tmp_path, clips, family),
        export=str(tmp_path / "gvr.safetensors"),
        progress=False,
    )
    assert [s for s, _ in out["losses"]] == [1, 2, 3] and all(v == v for _, v in out["losses"])
    from safetensors import safe_open

    # captions went through its encoder
    with safe_open(str(tmp_path / "run" / "text_cache.safetensors"), "pt") as f:
        assert f.metadata()["encoder"] == f"{text_kind}:32"
        widths = {f.get_slice(k).get_shape()[1] for k in f.keys()}
        lengths = {f.get_slice(k).get_shape()[0] for k in f.keys()}
    assert widths == {32} and (lengths == {226} if family == "CogVideoX" else max(lengths) < 226)
    model = load_checkpoint(tmp_path / "gvr.safetensors")
    assert model.latent_format is fmt and model.config.name == config
    g = torch.Generator().manual_seed(0)
    lr = torch.randn(1, fmt.channels, 3, 2, 3, generator=g)
    hr = upscale(
        model,
        lr,
        width=6 * fmt.spatial_ratio,
        height=4 * fmt.spatial_ratio,
        steps=2,
        cfg=1.0,
        seed=0,
    )
    assert hr.shape == (1, fmt.channels, 3, 4, 6) and torch.isfinite(hr).all()


def test_a_vae_or_text_encoder_of_another_family_is_refused_before_training(tmp_path, clips):
    from training.train import train

    with pytest.raises(
        ValueError,
        match=r"the Wan 2\.1 VAE makes 16-channel latents at /8, but the model works in 'wan22'",
    ):
        train(family_cfg(tmp_path, clips, "Wan 2.2", **{"vae.kind": "tiny"}), progress=False)
    with pytest.raises(
        ValueError,
        match=r"text.kind='tiny_umt5' is the text encoder of Wan 2\.1 / Wan 2\.2, but the model "
        r"works in CogVideoX latents",
    ):
        train(
            family_cfg(tmp_path, clips, "CogVideoX", **{"text.kind": "tiny_umt5"}), progress=False
        )
    with pytest.raises(
        ValueError, match=r"data.hr_size=\[24, 24\]: the Wan 2\.2 VAE needs multiples of 16"
    ):
        train(
            family_cfg(
                tmp_path,
                clips,
                "Wan 2.2",
                **{"data.hr_size": "[24, 24]", "data.lr_size": "[16, 16]"},
            ),
            progress=False,
        )


# --- the nodes' glue: the checkpoint's latent format decides --------------------------------------
def _tiny_gvr(name, seed=0):
    from helpers import randomize_

    from simplegvr_core import SimpleGVR

    return randomize_(SimpleGVR.from_config(name), seed=seed, std=0.05).eval()


def _core_latent(fmt, t=3, h=6, w=8, seed=0):
    """A LR latent as ComfyUI's own sampler of that family hands it on: [B,C,T,H,W], raw VAE
    scale."""
    z = torch.randn(1, fmt.channels, t, h, w, generator=torch.Generator().manual_seed(seed))
    return fmt.denormalise(z) if fmt.mean is not None else z * fmt.raw_std


@pytest.mark.parametrize("family", ["Wan 2.2", "CogVideoX"])
def test_node_glue_upscales_a_core_latent_of_the_checkpoints_family(family):
    from nodes import glue
    from simplegvr_core.pipeline import build_condition, sample

    config, _, _, fmt = FAMILIES[family]
    m = _tiny_gvr(config)
    x = _core_latent(fmt)
    lr = glue.read_video_latent({"samples": x}, m.latent_format, "auto")
    assert (lr.layout, lr.scale) == ("BCTHW", "raw")
    size = {"width": 16 * fmt.spatial_ratio, "height": 12 * fmt.spatial_ratio}
    out = glue.upsample_latent(m, lr, size=size, noise_level=0.4, seed=3)
    info = glue.condition_from_latent(out, m)
    ref = build_condition(m, x, noise_level=0.4, seed=3, **size)
    torch.testing.assert_close(info.condition.c, ref.c)
    hr = glue.to_output(
        sample(m, info.condition, steps=2, cfg=1.0, seed=1),
        m.latent_format,
        info.layout,
        info.scale,
    )
    # that family's channels, the pixel size at its ratio
    assert hr.shape == (1, fmt.channels, 3, 12, 16)


def test_node_glue_names_the_mismatch_of_latent_and_checkpoint():
    from nodes import glue

    with pytest.raises(
        ValueError, match=r"48 channels \(a wan22 latent\?\).*'wan21' latents with 16 channels"
    ):
        glue.read_video_latent(
            {"samples": _core_latent(WAN22)}, _tiny_gvr("tiny").latent_format, "auto", "LR latent"
        )
    with pytest.raises(
        ValueError,
        match=r"LR latent of shape \(1, 16, 3, 6, 8\) looks like a raw CogVideoX latent.*"
        r"works in 'wan21' \(Wan 2\.1 VAE",
    ):
        glue.read_video_latent({"samples": _core_latent(COGVIDEOX_2B)}, WAN21, "auto", "LR latent")
    with pytest.raises(
        ValueError,
        match=r"looks like a raw Wan 2\.1 latent.*works in 'cogvideox_2b' \(CogVideoX VAE",
    ):
        glue.read_video_latent(
            {"samples": _core_latent(WAN21)}, _tiny_gvr("tiny-cogvideox").latent_format, "auto"
        )
    with pytest.raises(
        ValueError, match=r"16 channels \(a wan21 / cogvideox_2b / cogvideox_5b latent\?\).*'wan22'"
    ):
        glue.read_video_latent({"samples": _core_latent(COGVIDEOX_2B)}, WAN22, "auto")
    with pytest.raises(ValueError, match="T5-XXL for CogVideoX: width 4096"):
        prepare_context(
            _tiny_gvr("tiny-cogvideox"),
            glue.conditioning_to_context([[torch.zeros(1, 226, 4096), {}]]),
            1,
        )
