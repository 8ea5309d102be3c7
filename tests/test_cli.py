import subprocess
import sys

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

from simplegvr_core import SimpleGVR, load_checkpoint, save_checkpoint
from simplegvr_core.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "simplegvr_core.cli", *args], capture_output=True, text=True)


def test_import_wan_cli_writes_a_loadable_checkpoint(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=16, ffn_dim=48, num_layers=1)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "wan.safetensors"))
    out = tmp_path / "gvr.safetensors"
    rc = main(["import-wan", "--wan", str(tmp_path / "wan.safetensors"), "--out", str(out), "--num-heads", "2",
               "--upsampler", "interp"])
    assert rc == 0 and out.is_file()
    m = load_checkpoint(out)
    assert m.config.upsampler.mode == "interp" and m.config.dit.in_dim == 32
    from simplegvr_core.checkpoint import read_metadata

    assert read_metadata(out)["trained_steps"] == "0"  # marked untrained


def test_import_wan_marks_the_checkpoint_untrained_and_an_export_is_not(tmp_path, capsys):
    """An import-wan checkpoint computes the T2V model: its metadata says it was never trained, and `info` warns;
    a trained export records its steps and gets no warning."""
    from simplegvr_core.checkpoint import IMPORTED_METADATA, read_metadata, untrained_warning

    m = randomize_(SimpleGVR.from_config("tiny"), std=0.05)
    imported, trained = tmp_path / "imported.safetensors", tmp_path / "trained.safetensors"
    save_checkpoint(m, imported, extra_metadata=IMPORTED_METADATA)
    save_checkpoint(m, trained, extra_metadata={"trained_steps": "2400"})
    warning = untrained_warning(read_metadata(imported), "imported.safetensors")
    assert warning and "untrained" in warning and "generates a new video" in warning
    assert untrained_warning(read_metadata(trained)) is None
    assert untrained_warning(read_metadata(tmp_path / "imported.safetensors") | {"trained_steps": "10"}) is None
    assert main(["info", str(imported)]) == 0
    captured = capsys.readouterr()
    assert "trained steps: 0" in captured.out and "warning: imported.safetensors is an untrained SimpleGVR" in captured.err
    assert main(["info", str(trained)]) == 0
    assert "trained steps: 2400" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path):
    r = run_cli("import-wan", "--wan", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o.safetensors"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "nope.safetensors" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "o.safetensors").exists()
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    r = run_cli("info", str(tmp_path / "bad.safetensors"))
    assert r.returncode == 2 and "not a readable safetensors file" in r.stderr and "Traceback" not in r.stderr
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
    assert flops["sparse_local"]["total"] < flops["temporal_units"]["total"] < flops["full"]["total"]
    # Everything but self-attention costs the same in every mode.
    assert flops["full"]["total"] - flops["full"]["bmm"] == flops["temporal_units"]["total"] - flops["temporal_units"]["bmm"]
