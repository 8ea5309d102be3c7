"""experiments/ablations.py builds each variant's training config from the demo's recipes: one
change per variant."""

import importlib.util
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location(
        "ablations", ROOT / "experiments" / "ablations.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_variant_changes_only_its_setting(ablations, tmp_path):
    from training.config import load_config
    from training.models import build_model

    args = types.SimpleNamespace(steps=7, pairs=str(tmp_path / "pairs"), work=str(tmp_path / "abl"))
    onestep = load_config(ROOT / "training/configs/demo_onestep.toml")["model"]["overrides"]
    flow = load_config(ROOT / "training/configs/demo.toml")["train"]
    variants = {
        "base": ablations.BASE,
        "interp": {**ablations.BASE, "upsampler": "interp"},
        "noise": {**ablations.BASE, "noise": [0.6, 0.9]},
        "u2": {**ablations.BASE, "unit_frames": 2},
        "sparse": {**ablations.BASE, "attention": "sparse_local"},
    }
    cfgs = {k: ablations.variant_config(k, v, args) for k, v in variants.items()}
    base = cfgs["base"]
    # the default model's shape (x0 residual on the fitted linear base), the teacher's flow loss and
    # its sampler
    assert base["model"]["overrides"]["prediction"] == onestep["prediction"] == "residual_x0"
    assert base["model"]["overrides"]["upsampler"]["base"] == "linear"
    assert base["train"]["timestep_sampler"] == flow["timestep_sampler"] == "logit_normal"
    assert base["train"]["noise_level"] == [0.0, 0.3] and base["train"]["upsampler_weight"] == 1
    assert base["train"]["steps"] == 7 and base["data"]["path"] == args.pairs
    assert base["log"]["output_dir"] == str(Path(args.work) / "base")
    assert cfgs["interp"]["model"]["overrides"]["upsampler"]["base"] == "bilinear"
    assert cfgs["interp"]["model"]["upsampler"] == "interp"
    assert cfgs["noise"]["train"]["noise_level"] == [0.6, 0.9]
    assert cfgs["u2"]["model"]["overrides"]["dit"]["unit_frames"] == 2
    assert cfgs["sparse"]["model"]["attention"] == "sparse_local"
    for k, c in cfgs.items():  # nothing else moves
        assert (
            c["train"]["lr"] == base["train"]["lr"]
            and c["train"]["batch_size"] == base["train"]["batch_size"]
        ), k
        model = build_model(c["model"])
        assert model.config.prediction == "residual_x0", k
    assert build_model(cfgs["interp"]["model"]).config.upsampler.base == "bilinear"
    assert build_model(cfgs["base"]["model"]).config.upsampler.base == "linear"


def test_each_variant_starts_from_a_base_fitted_to_its_own_condition_noise(
    ablations, tmp_path, monkeypatch
):
    """train_variant fits the linear base to the condition that variant trains on (the LR noised at
    its train.noise_level) and trains from it; a variant without a linear base is not fitted."""
    import training.fit_upsampler as fu
    import training.train as tt

    calls = []

    def fit_init(cfg, out, noise_level=None, log=None, overwrite=False):
        assert overwrite  # the variant's own init: an interrupted run makes it again
        calls.append(("fit", noise_level, str(out)))

    monkeypatch.setattr(fu, "fit_init", fit_init)
    monkeypatch.setattr(
        tt,
        "train",
        lambda cfg, export, progress: calls.append(
            ("train", cfg["model"].get("init") or None, export)
        ),
    )
    args = types.SimpleNamespace(steps=7, pairs=str(tmp_path / "pairs"), work=str(tmp_path / "abl"))
    for name, rng in (("n03", [0.3, 0.6]), ("n06", [0.6, 0.9])):
        ablations.train_variant(name, {**ablations.BASE, "noise": rng}, args)
    ablations.train_variant("interp", {**ablations.BASE, "upsampler": "interp"}, args)
    init = {n: str(tmp_path / "abl" / n / "init.safetensors") for n in ("n03", "n06")}
    assert calls == [
        ("fit", [0.3, 0.6], init["n03"]),
        ("train", init["n03"], str(tmp_path / "abl/n03/model.safetensors")),
        ("fit", [0.6, 0.9], init["n06"]),
        ("train", init["n06"], str(tmp_path / "abl/n06/model.safetensors")),
        ("train", None, str(tmp_path / "abl/interp/model.safetensors")),
    ]
