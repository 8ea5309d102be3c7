import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from simplegvr_core import load_checkpoint
from simplegvr_core.latent_io import save_latent
from simplegvr_core.pipeline import upscale
from simplegvr_core.timesteps import DetailCurve, TimestepSampler, detail_curve_from_energies
from training.config import load_config
from training.data import StepSampler, make_synthetic_videos
from training.train import train

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

DEGRADATION = "classic"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four procedural clips (13 frames, 32x32) with captions, written once for this module."""
    return make_synthetic_videos(tmp_path_factory.mktemp("clips"), 4, 13, (32, 32), seed=0)


def small_cfg(tmp_path, data, **over):
    cfg = load_config(
        None,
        [
            "model.config=tiny",
            "data.kind=videos",
            f"data.path={data}",
            "data.frames=9",
            "data.hr_size=[32, 32]",
            "data.lr_size=[16, 16]",
            f"data.degradation={DEGRADATION}",
            "vae.kind=tiny",
            "text.kind=byte",
            "train.batch_size=2",
            "train.lr=2e-3",
            "train.mixed_precision=no",
            "train.ema_decay=0.9",
            f"log.output_dir={tmp_path / 'run'}",
            "log.tracker=none",
            "log.validate_every=0",
            "log.checkpoint_every=1000",
        ],
    )
    for k, v in over.items():
        sec, key = k.split("__")
        cfg[sec][key] = v
    return cfg


def test_config_overrides_and_unknown_keys(tmp_path):
    cfg = load_config(
        None,
        [
            "train.steps=7",
            "train.noise_level=[0.2, 0.5]",
            "log.output_dir=runs/x",
            "model.attention=full",
        ],
    )
    assert (
        cfg["train"]["steps"] == 7
        and cfg["train"]["noise_level"] == [0.2, 0.5]
        and cfg["log"]["output_dir"] == "runs/x"
    )
    with pytest.raises(ValueError, match="unknown config key 'train.stepz'"):
        load_config(None, ["train.stepz=3"])
    # model.overrides is free-form and merges: one key from the command line keeps the file's other
    # overrides.
    cfg = load_config(
        "training/configs/demo.toml",
        ['model.overrides.prediction="residual"', "model.overrides.dit.num_layers=6"],
    )
    assert cfg["model"]["overrides"] == {
        "dit": {
            "dim": 128,
            "ffn_dim": 512,
            "num_heads": 4,
            "num_layers": 6,
            "text_dim": 32,
            "text_len": 16,
            "unit_frames": 5,
            "sparse_block": [4, 4],
        },
        "upsampler": {"hidden": 48},
        "prediction": "residual",
    }
    (tmp_path / "bad.toml").write_text("[train]\nsteps = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    for name in ("cpu_smoke", "stage1_classic_17f", "stage2_dual_17f", "stage3_units_77f"):
        cfg = load_config(f"training/configs/{name}.toml")
        assert cfg["train"]["noise_level"] == [0.3, 0.6]


def test_overfit_batch_loss_falls_and_export_upscales(tmp_path, clips):
    cfg = small_cfg(
        tmp_path, clips, train__steps=200, train__overfit=True, train__null_prompt_prob=0.0
    )
    out = train(cfg, export=str(tmp_path / "gvr.safetensors"), progress=False)
    losses = [v for _, v in out["losses"]]
    first, last = np.mean(losses[:3]), np.mean(losses[-10:])
    assert last < 0.3 * first, f"loss {first:.3f} -> {last:.3f}"
    model = load_checkpoint(tmp_path / "gvr.safetensors")
    lr = torch.randn(1, 16, 3, 2, 2)
    hr = upscale(model, lr, scale=2.0, steps=2, cfg=1.0)
    assert hr.shape == (1, 16, 3, 4, 4) and torch.isfinite(hr).all()


def test_freeze_keeps_the_named_parameters_and_trains_the_rest(tmp_path, clips):
    from simplegvr_core import SimpleGVR, save_checkpoint

    init = SimpleGVR.from_config("tiny")
    torch.manual_seed(0)
    for q in init.upsampler.parameters():
        q.data.normal_(0, 0.05)  # a non-zero upsampler, so that a step would move it
    save_checkpoint(init, tmp_path / "init.safetensors")
    cfg = small_cfg(
        tmp_path, clips, train__steps=3, train__freeze=["upsampler"], train__upsampler_weight=1.0
    )
    cfg["model"]["init"] = str(tmp_path / "init.safetensors")
    train(cfg, export=str(tmp_path / "out.safetensors"), progress=False)
    out = load_checkpoint(tmp_path / "out.safetensors")
    for (name, a), b in zip(
        init.upsampler.state_dict().items(), out.upsampler.state_dict().values()
    ):
        assert torch.equal(a, b), f"frozen upsampler.{name} changed"
    assert not torch.equal(init.dit.head.head.weight, out.dit.head.head.weight)
    with pytest.raises(ValueError, match="train.freeze names 'upsamplr'"):
        train(
            small_cfg(tmp_path / "x", clips, train__steps=1, train__freeze=["upsamplr"]),
            progress=False,
        )
    with pytest.raises(ValueError, match="config key train.freeze="):
        load_config(None, ["train.freeze=upsampler"])


def test_resume_equals_uninterrupted(tmp_path, clips):
    a = train(
        small_cfg(tmp_path / "a", clips, train__steps=6, log__checkpoint_every=3), progress=False
    )
    b_cfg = small_cfg(
        tmp_path / "b", clips, train__steps=6, log__checkpoint_every=3, train__stop_at_step=3
    )
    b1 = train(b_cfg, progress=False)  # "killed" right after the step-3 checkpoint
    assert [s for s, _ in b1["losses"]] == [1, 2, 3]
    ckpts = tmp_path / "b" / "run" / "checkpoints"
    # a checkpoint whose writing was interrupted is ignored
    (ckpts / "step-0000004.half.tmp").mkdir()
    b_cfg["train"]["stop_at_step"] = 0
    b2 = train(b_cfg, resume="auto", progress=False)
    assert b1["losses"] + b2["losses"] == a["losses"]  # bit for bit
    for name in ("model.safetensors", "ema.safetensors"):
        wa = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "step-0000006" / name))
        wb = load_file(str(ckpts / "step-0000006" / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_broken_and_short_videos_are_skipped_and_reported(tmp_path, clips):
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    good = (data / "clip_0000.mp4").read_bytes()
    (data / "broken.mp4").write_bytes(good[: len(good) // 3])
    make_synthetic_videos(tmp_path / "short", 1, 5, (32, 32), seed=9)
    shutil.copy(tmp_path / "short" / "clip_0000.mp4", data / "short.mp4")
    with open(data / "captions.jsonl", "a") as f:
        f.write(json.dumps({"video": "broken.mp4", "caption": "x"}) + "\n")
        f.write(json.dumps({"video": "short.mp4", "caption": "y"}) + "\n")
        f.write(json.dumps({"video": "missing.mp4", "caption": "z"}) + "\n")
    out = train(small_cfg(tmp_path, data, train__steps=2), progress=False)
    assert out["step"] == 2
    text = "\n".join(out["skipped"])
    assert (
        "broken.mp4" in text
        and "short.mp4" in text
        and "missing.mp4" in text
        and len(out["skipped"]) == 3
    )


def test_step_sampler_is_a_pure_function_of_the_step():
    full = StepSampler(10, 3, seed=5)
    it = iter(full)
    first = [next(it) for _ in range(8)]
    later = iter(StepSampler(10, 3, seed=5, start_step=5))
    assert [next(later) for _ in range(3)] == first[5:]
    idx = [i for batch in first[:10] for i, _ in batch]
    assert sorted(idx[:10]) == list(range(10))  # one epoch is a permutation of all items
    r0 = next(iter(StepSampler(10, 2, seed=5, world=2, rank=0)))
    r1 = next(iter(StepSampler(10, 2, seed=5, world=2, rank=1)))
    assert not set(r0) & set(r1)


def _ks(samples: torch.Tensor, cdf) -> float:
    x = torch.sort(samples.double()).values
    n = len(x)
    f = cdf(x)
    return float(torch.maximum(torch.arange(1, n + 1) / n - f, f - torch.arange(n) / n).max())


def test_detail_aware_sampler_follows_its_curve():
    from simplegvr_core.sampling import flow_sigmas

    sig = flow_sigmas(50, 5.0)
    # detail appears mid-trajectory
    energy = torch.cumsum(torch.exp(-(((torch.arange(50.0) - 12) / 6) ** 2)), 0)
    curve = detail_curve_from_energies(sig, energy, floor=0.1)
    w = torch.tensor(curve.edges[1:]) - torch.tensor(curve.edges[:-1])
    assert abs(float((torch.tensor(curve.density) * w).sum()) - 1) < 1e-9
    n = 20000
    s = TimestepSampler("detail_aware", curve=curve).sample(n, torch.Generator().manual_seed(0))
    assert _ks(s, curve.cdf) < 1.63 / math.sqrt(n)  # KS test at the 1% level
    uniform = TimestepSampler("uniform").sample(n, torch.Generator().manual_seed(0))
    assert _ks(uniform, curve.cdf) > 5 * 1.63 / math.sqrt(n)  # and it is not just uniform
    ln = TimestepSampler("logit_normal").sample(n, torch.Generator().manual_seed(0))
    assert (
        0 < float(ln.min())
        and float(ln.max()) < 1
        and abs(float(torch.logit(ln.double()).std()) - 1) < 0.05
    )
    with pytest.raises(ValueError, match="needs a curve"):
        TimestepSampler("detail_aware")


def test_analyze_detail_cli_makes_a_valid_density(tmp_path):
    from helpers import randomize_

    from simplegvr_core import SimpleGVR, save_checkpoint

    m = randomize_(SimpleGVR.from_config("tiny"), seed=2, std=0.05)
    ckpt = save_checkpoint(m, tmp_path / "tiny.safetensors")
    (tmp_path / "lat").mkdir()
    for i in range(2):
        save_latent(
            torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(i)),
            tmp_path / "lat" / f"{i}.latent",
        )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "simplegvr_core.app",
            "analyze-detail",
            "--checkpoint",
            str(ckpt),
            "--latents",
            str(tmp_path / "lat"),
            "--steps",
            "8",
            "--scale",
            "2",
            "--out",
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    curve = DetailCurve.load(tmp_path / "c.json")
    assert len(curve.density) == 8 and curve.edges[0] == 0 and curve.edges[-1] == 1
    assert min(curve.density) > 0  # the uniform floor keeps every sigma reachable
    s = TimestepSampler("detail_aware", curve=tmp_path / "c.json").sample(100)
    assert s.shape == (100,) and float(s.min()) > 0 and float(s.max()) < 1


def test_make_pairs_shards_resume_and_train_on_them(tmp_path, clips):
    from training.make_pairs import main as make_pairs

    args = [
        "--videos",
        str(clips),
        "--out",
        str(tmp_path / "pairs"),
        "--per-shard",
        "2",
        "--frames",
        "9",
        "--hr-size",
        "32x32",
        "--lr-size",
        "16x16",
        "--degradation",
        "flow+classic",
        "--vae",
        "tiny",
        "--text",
        "byte",
        "--text-dim",
        "32",
    ]
    assert make_pairs(args + ["--shard", "1/2"]) == 0  # this process makes shard files 1, 3, ...
    assert sorted(p.name for p in (tmp_path / "pairs").glob("pairs-*")) == [
        "pairs-00001.safetensors"
    ]
    before = (tmp_path / "pairs" / "pairs-00001.safetensors").stat().st_mtime_ns
    assert make_pairs(args) == 0  # all shards; finished ones are skipped, not redone
    assert sorted(p.name for p in (tmp_path / "pairs").glob("pairs-*")) == [
        "pairs-00000.safetensors",
        "pairs-00001.safetensors",
    ]
    assert (tmp_path / "pairs" / "pairs-00001.safetensors").stat().st_mtime_ns == before
    from training.data import PairShards

    ds = PairShards(tmp_path / "pairs")
    item = ds[(0, 0)]
    assert (
        len(ds) == 4
        and item["hr_latent"].shape == (16, 3, 4, 4)
        and item["lr_latent"].shape == (16, 3, 2, 2)
    )
    assert item["context"].shape[1] == 32
    cfg = small_cfg(tmp_path, clips, train__steps=3, log__validate_every=3)
    cfg["data"].update(kind="shards", path=str(tmp_path / "pairs"))
    out = train(cfg, progress=False)
    assert out["step"] == 3 and all(math.isfinite(v) for _, v in out["losses"])


def test_model_guided_pairs_use_the_base_t2v_model(tmp_path, clips):
    diffusers = pytest.importorskip("diffusers")
    from safetensors.torch import save_file

    from training.make_pairs import main as make_pairs

    torch.manual_seed(0)
    wan = diffusers.WanTransformer3DModel(
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
        {k: v.contiguous() for k, v in wan.state_dict().items()}, str(tmp_path / "wan.safetensors")
    )
    common = [
        "--videos",
        str(clips),
        "--per-shard",
        "4",
        "--frames",
        "9",
        "--hr-size",
        "32x32",
        "--lr-size",
        "16x16",
        "--vae",
        "tiny",
        "--text",
        "byte",
        "--text-dim",
        "32",
    ]
    assert make_pairs(common + ["--out", str(tmp_path / "plain"), "--degradation", "none"]) == 0
    assert (
        make_pairs(
            common
            + [
                "--out",
                str(tmp_path / "mg"),
                "--degradation",
                "model",
                "--wan",
                str(tmp_path / "wan.safetensors"),
                "--wan-num-heads",
                "2",
                "--mg-steps",
                "3",
            ]
        )
        == 0
    )
    plain = load_file(str(tmp_path / "plain" / "pairs-00000.safetensors"))
    mg = load_file(str(tmp_path / "mg" / "pairs-00000.safetensors"))
    assert torch.equal(plain["hr"], mg["hr"])  # same clips, same HR
    diff = (plain["lr"] - mg["lr"]).abs().mean()
    to_noise = (
        (plain["lr"] - torch.randn(plain["lr"].shape, generator=torch.Generator().manual_seed(0)))
        .abs()
        .mean()
    )
    # SDEdit moved the LR latent, but it stays far nearer its source than noise
    assert 0 < diff < 0.5 * to_noise


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, clips):
    """A real kill -9 in the middle of a run: --resume continues from the last complete
    checkpoint."""
    import os
    import signal
    import time

    common = [
        "--config",
        "training/configs/cpu_smoke.toml",
        "model.config=tiny",
        f"data.path={clips}",
        "data.frames=9",
        "data.hr_size=[32, 32]",
        "data.lr_size=[16, 16]",
        f"data.degradation={DEGRADATION}",
        "data.synthesize=0",
        "train.batch_size=2",
        "train.steps=8",
        "log.tracker=none",
        "log.validate_every=0",
        "log.checkpoint_every=2",
    ]
    script = [sys.executable, "training/train.py"]
    ref = subprocess.run(
        script + common + [f"log.output_dir={tmp_path / 'ref'}"], capture_output=True, text=True
    )
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    p = subprocess.Popen(
        script + common + [f"log.output_dir={run}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while (
        not (run / "checkpoints" / "step-0000004" / "state.pt").exists()
        and time.time() < deadline
        and p.poll() is None
    ):
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    resumed = subprocess.run(
        script + common + [f"log.output_dir={run}", "--resume"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    a = load_file(str(tmp_path / "ref" / "checkpoints" / "step-0000008" / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / "step-0000008" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_degradation_mix_draws_one_mode_per_clip():
    import cv2

    from simplegvr_core.degrade import check_modes, degrade_frames
    from simplegvr_core.procedural import make_clip

    hr = make_clip(5, 9, 32, 32, max_speed=3.0)
    clean = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in hr])
    flow = [degrade_frames(hr, "flow", (16, 16), s) for s in range(12)]
    outs = [degrade_frames(hr, "none,flow", (16, 16), s) for s in range(12)]
    picked_clean = [np.array_equal(o, clean) for o in outs]
    assert 2 <= sum(picked_clean) <= 10  # both modes are drawn over the seeds, about half each
    assert all(o.shape == (9, 16, 16, 3) and o.dtype == np.uint8 for o in outs)
    # the draw is a function of the seed
    assert np.array_equal(degrade_frames(hr, "none,flow", (16, 16), 3), outs[3])
    # a clip drawing 'flow' gets exactly what 'flow' alone gives for that seed
    for s, o in enumerate(outs):
        assert np.array_equal(o, clean) or np.array_equal(o, flow[s])
    assert any(not np.array_equal(f, clean) for f in flow)
    assert check_modes("none, flow+classic") == ["none", "flow+classic"]
    with pytest.raises(ValueError, match="'none,blur'.*joined by commas"):
        degrade_frames(hr, "none,blur", (16, 16), 0)
    from training.data import VideoPairs

    # refused up front, not as every video "broken"
    with pytest.raises(ValueError, match="'flow,'"):
        VideoPairs([], 9, (32, 32), (16, 16), "flow,")
