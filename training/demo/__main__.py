"""`python -m training.demo [--assets DIR] [--work DIR] [--quick]`: rebuild the demo's weights (see
rebuild.py)."""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simplegvr_core.console import report_errors  # noqa: E402
from training.demo.rebuild import retrain  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__)
    ap.add_argument(
        "--assets",
        default=None,
        help="weights folder to rebuild (default: the package's demo assets)",
    )
    ap.add_argument(
        "--work",
        default="runs/demo",
        help="scratch folder for the train list, pairs and checkpoints",
    )
    ap.add_argument(
        "--quick", action="store_true", help="a shortened run (tests; the weights are poor)"
    )
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run():
        manifest = retrain(args.assets, args.work, quick=args.quick)
        print(f"rebuilt the demo weights in {manifest['seconds']:.0f} s")

    return report_errors("training.demo", run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
