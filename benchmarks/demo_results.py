"""The demo's figures for RESULTS.md: the committed demo weights on the test split of the real AIGC clips.

    python benchmarks/demo_results.py [--no-write]

Runs `simplegvr demo`'s evaluation on the 14 test clips: with the sampling settings the manifest chose on the
validation split (`demo.tune`), with the paper's generative setting (20 Euler steps), and in the paper's degradation
setting (LR with flow-guided T2V artefacts). Every margin comes with its 95% paired bootstrap interval over clips.
Writes the `demo` section of RESULTS.md and records the measured margins in the manifest (`test_margins`, which
tests/test_demo.py checks the committed weights against).
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simplegvr_core import demo  # noqa: E402
from simplegvr_core.bench import update_section  # noqa: E402
from simplegvr_core.clips import split_files  # noqa: E402
from simplegvr_core.files import atomic_write  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    model, vae, m = demo.load_assets()
    clips, _ = demo.load_clips(split_files("test"))
    kw = dict(progress=False, keep_videos=False)
    tuned = demo.evaluate(model, vae, clips, steps=m["steps"], shift=m["shift"], noise_level=m["noise_level"], **kw)
    gen = demo.evaluate(model, vae, clips, steps=20, shift=m["shift"], noise_level=m["noise_level"], **kw)
    flow = demo.evaluate(model, vae, clips, steps=m["steps"], shift=m["shift"], noise_level=m["noise_level"],
                         lr_mode="flow", **kw)
    s = tuned["summary"]
    text = "\n".join([
        "## Demo (`benchmarks/demo_results.py`, the committed weights)", "",
        f"The test split: {len(clips)} real AI-generated clips (`simplegvr_core/clips.py`, 11 generator families), each "
        f"its centred 17 frames, centre-cropped and area-downscaled to {demo.HR_SIZE}x{demo.HR_SIZE} (HR); the LR is HR "
        f"area-downscaled 2x to {demo.LR_SIZE}x{demo.LR_SIZE}, upscaled back in latent space. Codec: "
        f"{s['vae_ceiling']['psnr']:.2f} dB / SSIM {s['vae_ceiling']['ssim']:.3f} / blockiness "
        f"{s['vae_ceiling']['blockiness']:.3f} on these clips (HR through the codec: the ceiling of every method). "
        f"Weights rebuilt by `simplegvr demo --retrain` in {m.get('seconds', 0) / 60:.0f} min on 2 CPU cores "
        "(commands in `simplegvr_core/assets/demo_manifest.json`).", "",
        f"Sampling chosen on the validation split: {m['steps']} Euler steps, shift {m['shift']}, noise level "
        f"{m['noise_level']}:", "", demo.format_table(tuned), "",
        "SimpleGVR minus each baseline, mean over the test clips with its 95% paired bootstrap interval:", "",
        demo.format_comparisons(tuned), "",
        "The paper's generative setting, 20 Euler steps:", "", demo.format_table(gen), "", demo.format_comparisons(gen), "",
        f"The paper's degradation setting (LR with flow-guided T2V artefacts, {m['steps']} steps):", "",
        demo.format_table(flow), "", demo.format_comparisons(flow), ""])
    print(text)
    if args.no_write:
        return
    update_section(ROOT / "RESULTS.md", "demo", text)
    m["test_margins"] = {b: {k: round(tuned["comparisons"][b][k]["diff"], 4) for k in ("psnr", "ssim")}
                         for b in demo.BASELINES}
    atomic_write(demo.ASSETS / demo.MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(m, indent=1)))


if __name__ == "__main__":
    main()
