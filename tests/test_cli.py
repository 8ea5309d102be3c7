import subprocess
import sys

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

from simplegvr_core import SimpleGVR, load_checkpoint, save_checkpoint
from simplegvr_core.app import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "simplegvr_core.app", *args], capture_output=True, text=True
    )


def test_import_wan_cli_writes_a_loadable_checkpoint(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=48,
        num_layers=1,
    )
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "wan.safetensors")
    )
    out = tmp_path / "gvr.safetensors"
    rc = main(
        [
            "import-wan",
            "--wan",
            str(tmp_path / "wan.safetensors"),
            "--out",
            str(out),
            "--num-heads",
            "2",
            "--upsampler",
            "interp",
        ]
    )
    assert rc == 0 and out.is_file()
    m = load_checkpoint(out)
    assert m.config.upsampler.mode == "interp" and m.config.dit.in_dim == 32
    from simplegvr_core.weights import read_metadata

    assert read_metadata(out)["trained_steps"] == "0"  # marked untrained


def test_import_wan_marks_the_checkpoint_untrained_and_an_export_is_not(tmp_path, capsys):
    """An import-wan checkpoint computes the T2V model: its metadata says it was never trained, and
    `info` warns; a trained export records its steps and gets no warning."""
    from simplegvr_core.checkpoint import IMPORTED_METADATA, untrained_warning
    from simplegvr_core.weights import read_metadata

    m = randomize_(SimpleGVR.from_config("tiny"), std=0.05)
    imported, trained = tmp_path / "imported.safetensors", tmp_path / "trained.safetensors"
    save_checkpoint(m, imported, extra_metadata=IMPORTED_METADATA)
    save_checkpoint(m, trained, extra_metadata={"trained_steps": "2400"})
    warning = untrained_warning(read_metadata(imported), "imported.safetensors")
    assert warning and "untrained" in warning and "generates a new video" in warning
    assert untrained_warning(read_metadata(trained)) is None
    assert (
        untrained_warning(
            read_metadata(tmp_path / "imported.safetensors") | {"trained_steps": "10"}
        )
        is None
    )
    assert main(["info", str(imported)]) == 0
    captured = capsys.readouterr()
    assert (
        "trained steps: 0" in captured.out
        and "warning: imported.safetensors is an untrained SimpleGVR" in captured.err
    )
    assert main(["info", str(trained)]) == 0
    assert "trained steps: 2400" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path):
    r = run_cli(
        "import-wan",
        "--wan",
        str(tmp_path / "nope.safetensors"),
        "--out",
        str(tmp_path / "o.safetensors"),
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "nope.safetensors" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "o.safetensors").exists()
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    r = run_cli("info", str(tmp_path / "bad.safetensors"))
    assert (
        r.returncode == 2
        and "not a readable safetensors file" in r.stderr
        and "Traceback" not in r.stderr
    )
    r = run_cli("--debug", "info", str(tmp_path / "bad.safetensors"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_info_prints_config(tmp_path, capsys):
    path = save_checkpoint(randomize_(SimpleGVR.from_config("tiny")), tmp_path / "t.safetensors")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"name": "tiny"' in out and "total" in out


def test_bench_reports_flops_per_attention_mode(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["bench", "--no-cpu", "--latent", "5", "16", "24", "--out", str(out)]) == 0
    text = out.read_text()
    for mode in ("full", "temporal_units", "sparse_local"):
        assert f"| {mode} |" in text
    assert torch.get_num_threads() >= 1


def test_temporal_unit_flops_match_the_unit_arithmetic():
    from simplegvr_core.bench import dit_flops

    t, h, w, text_len = 20, 18, 24, 512  # 9x12 tokens a frame: one sparse block
    flops = dit_flops("wan2.1-1.3b", (t, h, w), text_len=text_len)
    hw, dim, layers = (h // 2) * (w // 2), 1536, 30
    L = t * hw
    cross = layers * 2 * 2 * L * text_len * dim  # QK^T and AV against 512 text tokens
    full_self = layers * 2 * 2 * L * L * dim
    assert flops["full"]["bmm"] == full_self + cross
    unshifted = sum((5 * hw) ** 2 for _ in range(4))  # units 5,5,5,5
    shifted = sum((n * hw) ** 2 for n in (2, 5, 5, 5, 3))  # shifted by half a unit, edges 2 and 3
    expected = (layers // 2) * 2 * 2 * dim * (unshifted + shifted) + cross
    assert flops["temporal_units"]["bmm"] == expected
    assert (
        flops["sparse_local"]["total"] < flops["temporal_units"]["total"] < flops["full"]["total"]
    )
    # Everything but self-attention costs the same in every mode.
    assert (
        flops["full"]["total"] - flops["full"]["bmm"]
        == flops["temporal_units"]["total"] - flops["temporal_units"]["bmm"]
    )


# --- downloads run only on their own command; argument handling is checked with the hub replaced
@pytest.fixture
def fake_hub(monkeypatch):
    """Replace huggingface_hub.snapshot_download: record the calls, touch nothing on the network."""
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    def snapshot_download(repo_id, local_dir, allow_patterns):
        calls.append({"repo_id": repo_id, "local_dir": local_dir, "allow_patterns": allow_patterns})
        return local_dir

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    return calls


@pytest.mark.parametrize(
    "argv, repo, parts",
    [
        (
            ["download-wan", "--out", "w21"],
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            ["vae", "text_encoder", "tokenizer", "transformer"],
        ),
        (
            ["download-wan", "--out", "w22", "--model", "wan2.2-ti2v-5b"],
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            ["vae", "text_encoder", "tokenizer", "transformer"],
        ),
        (
            ["download-wan", "--out", "w22", "--model", "wan2.2-ti2v-5b", "--parts", "vae"],
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            ["vae"],
        ),
        (
            ["download-cogvideox", "--out", "cog"],
            "THUDM/CogVideoX-5b",
            ["vae", "text_encoder", "tokenizer"],
        ),
        (
            [
                "download-cogvideox",
                "--out",
                "cog",
                "--model",
                "cogvideox-2b",
                "--parts",
                "vae",
                "transformer",
            ],
            "THUDM/CogVideoX-2b",
            ["vae", "transformer"],
        ),
        (
            ["download-cogvideox", "--out", "cog", "--repo", "me/my-cogvideox"],
            "me/my-cogvideox",
            ["vae", "text_encoder", "tokenizer"],
        ),
    ],
)
def test_download_commands_fetch_the_named_repository_parts(fake_hub, argv, repo, parts, capsys):
    assert main(argv) == 0
    assert fake_hub == [
        {
            "repo_id": repo,
            "local_dir": argv[2],
            "allow_patterns": ["model_index.json"] + [f"{p}/*" for p in parts],
        }
    ]
    assert f"wrote {argv[2]}" in capsys.readouterr().out


def test_download_arguments_are_checked_before_anything_is_fetched(fake_hub, capsys):
    assert main(["download-cogvideox", "--out", "cog", "--parts", "vae", "unet"]) == 2
    assert (
        "--parts unet: expected subfolders among vae text_encoder tokenizer transformer scheduler"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as e:  # argparse: an unknown model is a usage error
        main(["download-wan", "--out", "w", "--model", "wan2.2-14b"])
    assert e.value.code == 2 and "invalid choice: 'wan2.2-14b'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["download-cogvideox"])  # --out is required
    assert fake_hub == []


def test_nothing_imports_the_hub_or_downloads_at_import_time():
    code = (
        "import sys, simplegvr_core, simplegvr_core.app, simplegvr_core.vae, simplegvr_core.text; "
        "print('huggingface_hub' in sys.modules, 'diffusers' in sys.modules, 'transformers' in "
        "sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "False", "False"], r.stdout + r.stderr


def test_convert_cogvideox_writes_comfyui_key_names(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    from simplegvr_core.weights import read_safetensors, read_weights

    torch.manual_seed(0)
    ref = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        time_embed_dim=32,
        text_embed_dim=32,
        num_layers=2,
        use_rotary_positional_embeddings=True,
    )
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    folder = tmp_path / "transformer"  # sharded, as the hub stores the 5b
    folder.mkdir()
    names = sorted(sd)
    half = {"a": names[: len(names) // 2], "b": names[len(names) // 2 :]}
    for shard, keys in half.items():
        save_file(
            {k: sd[k] for k in keys}, str(folder / f"diffusion_pytorch_model-{shard}.safetensors")
        )
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        __import__("json").dumps(
            {
                "weight_map": {
                    k: f"diffusion_pytorch_model-{s}.safetensors"
                    for s, ks in half.items()
                    for k in ks
                }
            }
        )
    )
    assert read_weights(folder).keys() == sd.keys()
    out = tmp_path / "cogvideox_tiny.safetensors"
    assert (
        main(
            [
                "convert-cogvideox",
                "--transformer",
                str(folder),
                "--out",
                str(out),
                "--dtype",
                "bf16",
            ]
        )
        == 0
    )
    conv, meta = read_safetensors(out)
    assert meta["converted_by"] == "simplegvr convert-cogvideox"
    assert len(conv) == len(sd) and all(v.dtype == torch.bfloat16 for v in conv.values())
    assert not any(k.startswith(("transformer_blocks.", "time_embedding.")) for k in conv)
    pairs = {
        "transformer_blocks.1.attn1.to_q.weight": "blocks.1.q.weight",
        "transformer_blocks.0.attn1.norm_k.bias": "blocks.0.norm_k.bias",
        "transformer_blocks.1.attn1.to_out.0.weight": "blocks.1.attn_out.weight",
        "transformer_blocks.0.ff.net.0.proj.weight": "blocks.0.ff_proj.weight",
        "transformer_blocks.0.ff.net.2.bias": "blocks.0.ff_out.bias",
        "transformer_blocks.1.norm2.linear.weight": "blocks.1.norm2.linear.weight",
        "time_embedding.linear_2.weight": "time_embedding_linear_2.weight",
        "patch_embed.text_proj.weight": "patch_embed.text_proj.weight",
        "norm_out.linear.bias": "norm_out.linear.bias",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(conv[ours], sd[theirs].to(torch.bfloat16)), ours
    # no silent overwrite
    assert main(["convert-cogvideox", "--transformer", str(folder), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (
        main(
            [
                "convert-cogvideox",
                "--transformer",
                str(out),
                "--out",
                str(tmp_path / "again.safetensors"),
            ]
        )
        == 2
    )
    assert "already has ComfyUI's key names" in capsys.readouterr().err


def test_import_wan_cli_fills_a_named_config_and_refuses_the_wrong_one(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.WanTransformer3DModel(  # tiny-wan22's shape: Wan 2.2 TI2V's 48 channels
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=16,
        in_channels=48,
        out_channels=48,
        text_dim=32,
        freq_dim=32,
        ffn_dim=128,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    )
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        str(tmp_path / "wan22.safetensors"),
    )
    out = tmp_path / "gvr.safetensors"
    assert (
        main(
            [
                "import-wan",
                "--wan",
                str(tmp_path / "wan22.safetensors"),
                "--out",
                str(out),
                "--config",
                "tiny-wan22",
            ]
        )
        == 0
    )
    assert "config tiny-wan22, wan22 latents" in capsys.readouterr().out
    assert load_checkpoint(out).config.name == "tiny-wan22"
    assert (
        main(
            [
                "import-wan",
                "--wan",
                str(tmp_path / "wan22.safetensors"),
                "--out",
                str(tmp_path / "x.safetensors"),
                "--config",
                "tiny-cogvideox",
            ]
        )
        == 2
    )
    assert (
        "do not have the shape of config 'tiny-cogvideox': out_dim=48 (config: 16)"
        in capsys.readouterr().err
    )
