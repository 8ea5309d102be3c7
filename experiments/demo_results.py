"""The demo's figures for RESULTS.md: the committed demo weights on the test split of the real AIGC
clips.

    python experiments/demo_results.py [--no-write]

Runs `simplegvr demo`'s evaluation on the 14 test clips: the model `simplegvr demo` runs by default
(the one-step model the manifest names, with its sampling), on clean LR and in the paper's
degradation setting (LR with flow-guided T2V artefacts); then the teacher (`--teacher`) with the
sampling the manifest chose on the validation split (`lab.tune`) and in the paper's generative
setting (20 Euler steps). Every margin comes with its 95% paired bootstrap interval over clips.
Writes the `demo` section of RESULTS.md and records the default model's margins in the manifest
(`lab.record_test_margins`: `test_margins`, which tests/test_demo.py checks the committed weights
against).
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simplegvr_core import demo  # noqa: E402
from simplegvr_core.bench import update_section  # noqa: E402
from simplegvr_core.demo.clips import split_files  # noqa: E402
from training import demo as lab  # noqa: E402


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    default, vae, chosen = demo.load_model()
    teacher, _, m = demo.load_assets()
    clips, _ = demo.load_clips(split_files("test"))
    kw = dict(progress=False, keep_videos=False)
    own = dict(
        steps=chosen["steps"],
        shift=chosen["shift"],
        noise_level=chosen["noise_level"],
        role=chosen["model"],
    )
    main_run = demo.evaluate(default, vae, clips, **own, **kw)
    main_flow = demo.evaluate(default, vae, clips, lr_mode="flow", **own, **kw)
    t_kw = dict(shift=m["shift"], noise_level=m["noise_level"], **kw)
    tuned = demo.evaluate(teacher, vae, clips, steps=m["steps"], **t_kw)
    gen = demo.evaluate(teacher, vae, clips, steps=20, **t_kw)
    s = main_run["summary"]
    name = "the one-step model" if chosen["model"] == "student" else "the teacher"
    text = "\n".join(
        [
            "## Demo (`experiments/demo_results.py`, the committed weights)",
            "",
            f"The test split: {len(clips)} real AI-generated clips "
            f"(`simplegvr_core/demo/clips.py`, 11 generator families), each its centred 17 "
            f"frames, centre-cropped and area-downscaled to {demo.HR_SIZE}x{demo.HR_SIZE} (HR); "
            f"the LR is HR area-downscaled 2x to {demo.LR_SIZE}x{demo.LR_SIZE}, upscaled back in "
            f"latent space. Codec: {s['vae_ceiling']['psnr']:.2f} dB / SSIM "
            f"{s['vae_ceiling']['ssim']:.3f} / blockiness {s['vae_ceiling']['blockiness']:.3f} on "
            f"these clips (HR through the codec: the ceiling of every method). Codec, teacher and "
            f"one-step model rebuilt by `simplegvr demo --retrain` in "
            f"{m.get('seconds', 0) / 60:.0f} min on 2 CPU cores (commands in "
            f"`simplegvr_core/demo/assets/demo_manifest.json`).",
            "",
            f"What `simplegvr demo` runs, {name} ({chosen['steps']} step(s), shift "
            f"{chosen['shift']}, noise level {chosen['noise_level']}; chosen on the "
            f"validation split):",
            "",
            demo.format_table(main_run),
            "",
            "SimpleGVR minus each baseline, mean over the test clips with its 95% paired "
            "bootstrap interval:",
            "",
            demo.format_comparisons(main_run),
            "",
            "The same model in the paper's degradation setting (LR with flow-guided "
            "T2V artefacts):",
            "",
            demo.format_table(main_flow),
            "",
            demo.format_comparisons(main_flow),
            "",
            f"The teacher (`simplegvr demo --teacher`: the multi-step flow model of "
            f"`training/configs/demo.toml`), sampling chosen on the validation split: "
            f"{m['steps']} Euler steps, shift {m['shift']}, noise level {m['noise_level']}:",
            "",
            demo.format_table(tuned),
            "",
            demo.format_comparisons(tuned),
            "",
            "The teacher in the paper's generative setting, 20 Euler steps:",
            "",
            demo.format_table(gen),
            "",
            demo.format_comparisons(gen),
            "",
        ]
    )
    print(text)
    if args.no_write:
        return
    update_section(ROOT / "RESULTS.md", "demo", text)
    lab.record_test_margins(main_run, chosen["model"])


if __name__ == "__main__":
    main()
