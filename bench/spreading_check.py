"""Label spreading on data its defaults were not tuned on.

The spreading parameters of core.micromodel (SPREAD_* and MicroConfig.spread / neighbours) were
chosen on cached features of the label-efficiency split (CIFAR-10 test, 100 labels per class,
seed 0). This check trains the default micro-model with spreading off and on, on the first
10,000 CIFAR-10 train images (JPEG) with 100 labels per class drawn with another seed, and
scores the other 9,000: accuracy and coverage at 90% / 95% precision.

Run: .venv/bin/python bench/spreading_check.py [--seed 1] [--seconds 60]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import micromodel as mm  # noqa: E402
from core import modeleval  # noqa: E402
from core.config import shared_data_dir  # noqa: E402
from micromodel import CLASSES, _labelled_split, _load  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    pixels, labels = _load(shared_data_dir(), "cifar10-train", "jpg", indices=list(range(10_000)))
    chosen, rest = _labelled_split(labels, 100, args.seed)
    truth = labels[rest]
    print("| spread | accuracy | coverage@90% | coverage@95% | train wall s |\n|---:|---:|---:|---:|---:|")
    for spread in (0.0, mm.MicroConfig(classes=CLASSES).spread):
        config = mm.MicroConfig(classes=CLASSES, seconds=args.seconds, seed=args.seed,
                                spread=spread)
        started = time.monotonic()
        trained = mm.train_micromodel(pixels[chosen], labels[chosen], config=config,
                                      unlabelled=pixels[rest])
        seconds = time.monotonic() - started
        probs = mm.predict_proba(trained.model, pixels[rest])
        print(f"| {spread} | {(probs.argmax(1) == truth).mean():.3f} | "
              f"{modeleval.coverage_at_precision(truth, probs, 0.90):.3f} | "
              f"{modeleval.coverage_at_precision(truth, probs, 0.95):.3f} | {seconds:.1f} |",
              flush=True)
    print(f"\nCommand: .venv/bin/python bench/spreading_check.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
