import json

import pytest
import torch
from helpers import randomize_
from safetensors.torch import load_file, save_file

from simplegvr_core import SimpleGVR, get_config, import_wan, load_checkpoint, save_checkpoint
from simplegvr_core.weights import import_wan_t2v

diffusers = pytest.importorskip("diffusers")


def tiny_model(seed=0):
    return randomize_(SimpleGVR.from_config("tiny"), seed=seed)


def test_round_trip_is_bit_exact(tmp_path):
    m = tiny_model()
    path = save_checkpoint(m, tmp_path / "m.safetensors")
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed
    m2 = load_checkpoint(path)
    assert m2.config == m.config and m2.latent_format.name == "wan21"
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]) and sd1[k].dtype == sd2[k].dtype, k
    z = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        ctx = torch.randn(1, 3, 32, generator=g)
        assert torch.equal(
            m.dit(z, z, torch.tensor([300.0]), ctx, 0.4),
            m2.dit(z, z, torch.tensor([300.0]), ctx, 0.4),
        )


def _rewrite(path, out, tensors=None, meta=None):
    t = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        m = dict(f.metadata())
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    save_file(t, str(out), metadata=m)
    return out


def test_malformed_checkpoints_raise_clear_errors(tmp_path):
    good = save_checkpoint(tiny_model(), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "trunc.safetensors")
    # a pickle, never unpickled
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x03}q\x00." * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    bad = _rewrite(
        good, tmp_path / "missing_key.safetensors", tensors=lambda t: t.pop("dit.head.head.weight")
    )
    with pytest.raises(ValueError, match=r"missing keys \['dit.head.head.weight'\]"):
        load_checkpoint(bad)
    bad = _rewrite(
        good,
        tmp_path / "extra.safetensors",
        tensors=lambda t: t.update({"dit.lora.weight": torch.ones(2)}),
    )
    with pytest.raises(ValueError, match=r"unexpected keys \['dit.lora.weight'\]"):
        load_checkpoint(bad)
    bad = _rewrite(
        good,
        tmp_path / "shape.safetensors",
        tensors=lambda t: t.update({"dit.head.head.weight": torch.zeros(3, 3)}),
    )
    with pytest.raises(
        ValueError, match=r"dit.head.head.weight has shape \(3, 3\), expected \(64, 64\)"
    ):
        load_checkpoint(bad)
    bad = _rewrite(good, tmp_path / "version.safetensors", meta=lambda m: m.update(version="99"))
    with pytest.raises(ValueError, match="checkpoint version '99'"):
        load_checkpoint(bad)
    bad = _rewrite(good, tmp_path / "notours.safetensors", meta=lambda m: m.update(format="other"))
    with pytest.raises(ValueError, match="is not a SimpleGVR checkpoint"):
        load_checkpoint(bad)
    bad = _rewrite(
        good,
        tmp_path / "cfg.safetensors",
        meta=lambda m: m.update(config=json.dumps({**json.loads(m["config"]), "bogus": 1})),
    )
    with pytest.raises(ValueError, match="unknown keys \\['bogus'\\]"):
        load_checkpoint(bad)


# --- Wan 2.1 import, checked against diffusers' independent implementation ------------------------
def reference_wan(seed=0, channels=16, heads=2, head_dim=12, ffn_dim=48, freq_dim=16):
    torch.manual_seed(seed)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=channels,
        out_channels=channels,
        text_dim=32,
        freq_dim=freq_dim,
        ffn_dim=ffn_dim,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    ).eval()
    return randomize_(ref, seed, std=0.2)


def diffusers_to_wan_names(sd):
    """Rename diffusers keys to the original Wan names, written from the table in reference-facts
    §1."""
    table = {
        "condition_embedder.time_embedder.linear_1": "time_embedding.0",
        "condition_embedder.time_embedder.linear_2": "time_embedding.2",
        "condition_embedder.time_proj": "time_projection.1",
        "condition_embedder.text_embedder.linear_1": "text_embedding.0",
        "condition_embedder.text_embedder.linear_2": "text_embedding.2",
        "proj_out": "head.head",
    }
    block = {
        "attn1.to_q": "self_attn.q",
        "attn1.to_k": "self_attn.k",
        "attn1.to_v": "self_attn.v",
        "attn1.to_out.0": "self_attn.o",
        "attn1.norm_q": "self_attn.norm_q",
        "attn1.norm_k": "self_attn.norm_k",
        "attn2.to_q": "cross_attn.q",
        "attn2.to_k": "cross_attn.k",
        "attn2.to_v": "cross_attn.v",
        "attn2.to_out.0": "cross_attn.o",
        "attn2.norm_q": "cross_attn.norm_q",
        "attn2.norm_k": "cross_attn.norm_k",
        "norm2": "norm3",
        "ffn.net.0.proj": "ffn.0",
        "ffn.net.2": "ffn.2",
    }
    out = {}
    for k, v in sd.items():
        if k == "scale_shift_table":
            out["head.modulation"] = v
            continue
        mod, _, leaf = k.rpartition(".")
        if k.startswith("blocks."):
            _, n, rest = k.split(".", 2)
            if rest == "scale_shift_table":
                out[f"blocks.{n}.modulation"] = v
                continue
            mod = mod.split(".", 2)[2]
            out[f"blocks.{n}.{block[mod]}.{leaf}"] = v
        else:
            out[f"{table.get(mod, mod)}.{leaf}"] = v
    return out


def wan_file(ref, key_format: str, path):
    """`ref`'s weights saved in one of the three key formats import_wan reads."""
    sd = ref.state_dict()
    if key_format == "wan":
        sd = diffusers_to_wan_names(sd)
    elif key_format == "comfyui":
        sd = {f"model.diffusion_model.{k}": v for k, v in diffusers_to_wan_names(sd).items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def assert_t2v_output_for_any_condition(model, ref, shape):
    """The imported DiT gives the T2V model's output whatever the condition and its noise level."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(shape, generator=g)
    ctx = torch.randn(shape[0], 7, 32, generator=g)
    # T2V: one timestep for every token (no first-frame image)
    t = torch.tensor([999.0, 250.0])[: shape[0]]
    with torch.no_grad():
        expected = ref(z, t, ctx, return_dict=False)[0]
        for s in (0.0, 0.45):
            cond = torch.randn(z.shape, generator=g) * 3
            got = model.dit(z, cond, t, ctx, s)
            err = (got - expected).abs().max() / expected.abs().max()
            assert err < 1e-4, f"relative max error {err:.2e}"


@pytest.mark.parametrize("key_format", ["diffusers", "wan", "comfyui"])
def test_imported_dit_equals_the_t2v_model_for_any_condition(key_format, tmp_path):
    ref = reference_wan()
    model = import_wan(wan_file(ref, key_format, tmp_path / "wan.safetensors"), num_heads=2).eval()
    assert model.config.dit.in_dim == 32 and model.config.latent_format == "wan21"
    assert torch.equal(model.dit.patch_embedding.weight[:, 16:], torch.zeros(24, 16, 1, 2, 2))
    assert_t2v_output_for_any_condition(model, ref, (2, 16, 5, 8, 8))


def test_import_infers_dims_and_rejects_non_wan(tmp_path):
    sd = diffusers_to_wan_names(reference_wan().state_dict())
    with pytest.raises(ValueError, match="dim=24 is not a released size"):
        import_wan(sd)  # tiny dims: heads cannot be guessed
    with pytest.raises(ValueError, match="no 'patch_embedding.weight' key"):
        import_wan({"foo.weight": torch.zeros(2)})
    i2v = dict(sd, **{"img_emb.proj.0.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="image-to-video"):
        import_wan(i2v, num_heads=2)
    m = import_wan(sd, num_heads=2, upsampler="channel_only", attention="temporal_units")
    cfg = m.config
    assert (
        cfg.dit.dim,
        cfg.dit.num_layers,
        cfg.dit.ffn_dim,
        cfg.dit.freq_dim,
        cfg.dit.text_dim,
    ) == (24, 2, 48, 16, 32)
    assert cfg.upsampler.mode == "channel_only" and cfg.dit.attention == "temporal_units"
    path = save_checkpoint(m, tmp_path / "gvr.safetensors")
    assert load_checkpoint(path).config == cfg


def test_plain_t2v_import_matches_diffusers():
    ref = reference_wan(seed=3)
    dit = import_wan_t2v(ref.state_dict(), num_heads=2).eval()
    z, ctx = torch.randn(1, 16, 3, 6, 6), torch.randn(1, 5, 32)
    with torch.no_grad():
        expected = ref(z, torch.tensor([400.0]), ctx, return_dict=False)[0]
        torch.testing.assert_close(
            dit(z, None, torch.tensor([400.0]), ctx), expected, rtol=1e-4, atol=1e-4
        )


# --- Wan 2.2 TI2V-5B: 48 channels, the same key format -------------------------------------------
def reference_wan22(seed=0):
    """A tiny diffusers WanTransformer3DModel with Wan 2.2 TI2V's 48 latent channels (tiny-wan22's
    shape)."""
    return reference_wan(seed, channels=48, heads=4, head_dim=16, ffn_dim=128, freq_dim=32)


@pytest.mark.parametrize("key_format", ["diffusers", "wan", "comfyui"])
@pytest.mark.parametrize("config", [None, "tiny-wan22"])
def test_wan22_import_equals_the_t2v_model_at_step_0(key_format, config, tmp_path):
    ref = reference_wan22()
    path = wan_file(ref, key_format, tmp_path / "wan22.safetensors")
    model = import_wan(path, num_heads=None if config else 4, config=config).eval()
    assert model.config.latent_format == "wan22" and model.latent_format.spatial_ratio == 16
    assert model.config.name == (config or "wan-import")
    assert model.config.dit.in_dim == 96 and model.config.upsampler.channels == 48
    assert torch.equal(model.dit.patch_embedding.weight[:, 48:], torch.zeros(64, 48, 1, 2, 2))
    assert_t2v_output_for_any_condition(model, ref, (2, 48, 3, 6, 8))
    saved = load_checkpoint(save_checkpoint(model, tmp_path / "gvr.safetensors"))
    assert saved.config == model.config


def test_import_into_a_named_config_checks_the_shape_and_keeps_the_config():
    sd = reference_wan22().state_dict()
    with pytest.raises(
        ValueError, match=r"do not have the shape of config 'tiny': out_dim=48 \(config: 16\)"
    ):
        import_wan(sd, config="tiny")
    with pytest.raises(
        ValueError, match="latent_format 'wan21' disagrees with config 'tiny-wan22'"
    ):
        import_wan(sd, config="tiny-wan22", latent_format="wan21")
    m = import_wan(sd, config="tiny-wan22", upsampler="interp", attention="sparse_local")
    assert (m.config.upsampler.mode, m.config.dit.attention, m.config.dit.text_len) == (
        "interp",
        "sparse_local",
        512,
    )
    assert all(p.device.type == "cpu" for p in m.parameters())  # nothing left on meta
    assert torch.equal(
        m.dit.noise_level_embedding[2].weight,
        torch.zeros_like(m.dit.noise_level_embedding[2].weight),
    )
    assert torch.equal(m.dit.blocks[0].ffn[0].weight, sd["blocks.0.ffn.net.0.proj.weight"])
    # training the import leaves the caller's tensors alone
    m.dit.blocks[0].ffn[0].weight.data.add_(1.0)
    assert not torch.equal(m.dit.blocks[0].ffn[0].weight, sd["blocks.0.ffn.net.0.proj.weight"])
    a, b, c = (
        import_wan(sd, config="tiny-wan22", seed=s).upsampler.state_dict() for s in (0, 0, 1)
    )
    # new weights: seeded
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


def test_a_cogvideox_config_starts_from_wan21_weights():
    sd = diffusers_to_wan_names(reference_wan(seed=5).state_dict())
    target = get_config("tiny-cogvideox").to_dict()
    target["dit"].update(dim=24, num_heads=2, ffn_dim=48, freq_dim=16)  # reference_wan's tiny shape
    m = import_wan(sd, config=target)
    assert (m.config.latent_format, m.config.dit.text_len) == ("cogvideox_2b", 226)
    assert torch.equal(m.dit.patch_embedding.weight[:, :16], sd["patch_embedding.weight"])


@pytest.mark.parametrize(
    "name, kwargs",
    [
        (
            "wan2.2-ti2v-5b",
            dict(
                num_attention_heads=24,
                attention_head_dim=128,
                in_channels=48,
                out_channels=48,
                ffn_dim=14336,
            ),
        ),
        (
            "cogvideox-1.3b",
            dict(
                num_attention_heads=12,
                attention_head_dim=128,
                in_channels=16,
                out_channels=16,
                ffn_dim=8960,
            ),
        ),
    ],
)
def test_released_wan_shapes_fit_the_named_configs(name, kwargs):
    """The real-size weights' shapes (diffusers' released configs, on meta) are what the named
    config expects."""
    from simplegvr_core.weights import (
        _SHAPE_FIELDS,
        infer_wan_dit_config,
        wan_state_dict_to_original,
    )

    with torch.device("meta"):
        ref = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2),
            text_dim=4096,
            freq_dim=256,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            **kwargs,
        )
    sd, source = wan_state_dict_to_original(ref.state_dict())
    base = infer_wan_dit_config(sd)  # heads from the released sizes
    cfg = get_config(name).dit
    assert source == "diffusers"
    assert (
        all(getattr(base, k) == getattr(cfg, k) for k in _SHAPE_FIELDS)
        and base.num_heads == cfg.num_heads
    )
