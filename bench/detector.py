"""Detection micro-model benchmark on BCCD, printed as Markdown and written to bench/out/detector.md.

For 10, 25, 50 and 100 images of BCCD's train split (a seeded order; each subset holds the
smaller ones), train Sieve's detector (`core.detector`, from scratch) and, for the same wall
time, the detector a user would otherwise pick in torchvision: Faster R-CNN with a MobileNetV3
FPN backbone at 320 px (`fasterrcnn_mobilenet_v3_large_320_fpn`, weights=None,
weights_backbone=None: nothing pretrained can be downloaded here). Both are scored on BCCD's
test split (72 images): mAP@0.5 overall and per class by Sieve's implementation, with
pycocotools' COCOeval AP50 beside it as a check, training seconds, and inference images per
second (decoded pictures in memory, batch 8, torch threads as given).

Run: .venv/bin/python bench/detector.py [--sizes 10,25,50,100] [--seconds 90] [--threads 2]
     [--skip-baseline]
Timings are wall seconds on this machine; the load average is printed with them, since other
work on a shared machine slows every number down (both models alike: compare the ratios).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import detector as det  # noqa: E402
from core.config import shared_data_dir  # noqa: E402

CLASSES = ("RBC", "WBC", "Platelets")
OUT = Path(__file__).resolve().parent / "out" / "detector.md"


def _boxes(root: Path, stems: list[str]) -> pd.DataFrame:
    """image (index into stems), class, x, y, w, h from the VOC files (as Sieve's VOC reader
    takes them: x = xmin, w = xmax - xmin)."""
    rows = []
    for i, stem in enumerate(stems):
        for obj in ET.parse(root / "annotations" / f"{stem}.xml").getroot().iter("object"):
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            rows.append((i, CLASSES.index(obj.findtext("name").strip()), x0, y0, x1 - x0, y1 - y0))
    return pd.DataFrame(rows, columns=det.BOX_COLUMNS)


def _split(root: Path, name: str) -> list[str]:
    return (root / "splits" / f"{name}.txt").read_text().split()


def _cocoeval_ap50(truth: pd.DataFrame, proposals: pd.DataFrame, n_images: int) -> float:
    """AP50 by pycocotools' COCOeval (NaN when it is not installed)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        return float("nan")
    import contextlib
    import io

    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(n_images)],
                  "categories": [{"id": k} for k in range(len(CLASSES))],
                  "annotations": [{"id": j + 1, "image_id": int(r.image), "category_id": int(r[2]),
                                   "bbox": [r.x, r.y, r.w, r.h], "area": r.w * r.h, "iscrowd": 0}
                                  for j, r in enumerate(truth.itertuples())]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        found = gt.loadRes([{"image_id": int(r.image), "category_id": int(r[2]),
                             "bbox": [r.x, r.y, r.w, r.h], "score": r.score}
                            for r in proposals.itertuples()]) if len(proposals) else None
        if found is None:
            return 0.0
        evaluation = COCOeval(gt, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])


# ---------------------------------------------------------------- Sieve's detector


def _sieve(train, train_boxes, test, seconds: float, threads: int, seed: int):
    config = det.DetectorConfig(classes=CLASSES, seconds=seconds, steps=100_000, threads=threads,
                                seed=seed, vflip=True)
    trained = det.train_detector(train, train_boxes, config=config)
    started = time.monotonic()
    proposals = det.detect_boxes(trained.model, test)
    speed = len(test) / (time.monotonic() - started)
    steps = len(trained.history) * det.LOG_EVERY
    return proposals, trained.seconds, speed, f"{steps} steps"


# ---------------------------------------------------------------- torchvision's Faster R-CNN


def _tv_targets(pictures, boxes: pd.DataFrame, index) -> tuple[list, list]:
    images, targets = [], []
    for i in index:
        p = pictures[i]
        mine = boxes[(boxes["image"] == i) & (boxes["w"] > 0) & (boxes["h"] > 0)]
        xyxy = mine[["x", "y", "w", "h"]].to_numpy(np.float32) * p.scale
        xyxy[:, 2:] += xyxy[:, :2]
        image = torch.from_numpy(np.ascontiguousarray(p.pixels.transpose(2, 0, 1))).float() / 255
        xyxy = torch.from_numpy(xyxy)
        if torch.rand(1).item() < 0.5:  # the same flips Sieve's detector trains with
            image, xyxy = image.flip(2), torch.stack([image.shape[2] - xyxy[:, 2], xyxy[:, 1],
                                                      image.shape[2] - xyxy[:, 0], xyxy[:, 3]], 1)
        images.append(image)
        targets.append({"boxes": xyxy.reshape(-1, 4),
                        "labels": torch.from_numpy(mine["class"].to_numpy() + 1).long()})
    return images, targets


def _baseline(train, train_boxes, test, seconds: float, threads: int, seed: int):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=len(CLASSES) + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    started, steps = time.monotonic(), 0
    model.train()
    while time.monotonic() - started < seconds:
        share = (time.monotonic() - started) / seconds
        for group in optimizer.param_groups:  # warm-up, then cosine to 0 at the time limit
            group["lr"] = 0.02 * min(1, (steps + 1) / 50) * 0.5 * (1 + np.cos(np.pi * share))
        images, targets = _tv_targets(train, train_boxes, rng.choice(len(train), min(4, len(train)),
                                                                    replace=False))
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        steps += 1
    trained_seconds = time.monotonic() - started
    model.eval()
    started, rows = time.monotonic(), []
    with torch.no_grad():
        for start in range(0, len(test), 8):
            chunk = test[start:start + 8]
            images = [torch.from_numpy(np.ascontiguousarray(p.pixels.transpose(2, 0, 1))).float()
                      / 255 for p in chunk]
            for k, out in enumerate(model(images)):
                xyxy = out["boxes"].numpy() / chunk[k].scale
                for (x0, y0, x1, y1), label, score in zip(xyxy, out["labels"].tolist(),
                                                          out["scores"].tolist()):
                    rows.append((start + k, label - 1, score, x0, y0, x1 - x0, y1 - y0))
    speed = len(test) / (time.monotonic() - started)
    proposals = pd.DataFrame(rows, columns=["image", "class", "score", "x", "y", "w", "h"])
    return proposals, trained_seconds, speed, f"{steps} steps"


# ---------------------------------------------------------------- report


def _row(name: str, n: int, result, test_boxes: pd.DataFrame, n_test: int) -> dict:
    proposals, seconds, speed, steps = result
    evaluation = det.mean_average_precision(test_boxes, proposals, classes=CLASSES,
                                            images=range(n_test))
    ap = dict(zip(evaluation.per_class["class"], evaluation.per_class["ap"]))
    return {"train images": n, "model": name, "mAP@0.5": evaluation.map,
            "COCOeval AP50": _cocoeval_ap50(test_boxes, proposals, n_test),
            **{f"AP {c}": ap[c] for c in CLASSES}, "train s": seconds, "steps": steps,
            "infer img/s": speed}


def _load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,25,50,100")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    root = shared_data_dir() / "bccd"
    load_before = _load_text()
    train_stems = _split(root, "train")
    order = np.random.default_rng(args.seed).permutation(len(train_stems))
    test_stems = _split(root, "test")
    size = det.DetectorConfig(classes=CLASSES).image_size
    test = det.load_pictures([root / "images" / f"{s}.jpg" for s in test_stems], size=size)
    test_boxes = _boxes(root, test_stems)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        stems = [train_stems[i] for i in order[:n]]
        train = det.load_pictures([root / "images" / f"{s}.jpg" for s in stems], size=size)
        boxes = _boxes(root, stems)
        rows.append(_row("Sieve detector", n, _sieve(train, boxes, test, args.seconds,
                                                      args.threads, args.seed), test_boxes, len(test)))
        print(rows[-1], file=sys.stderr, flush=True)
        if not args.skip_baseline:
            rows.append(_row("Faster R-CNN MobileNetV3-320 (scratch)", n, _baseline(
                train, boxes, test, args.seconds, args.threads, args.seed), test_boxes, len(test)))
            print(rows[-1], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    text = "\n".join([
        "## Detection micro-model on BCCD (mAP@0.5 on the test split, 72 images)", "",
        f"Command: `.venv/bin/python bench/detector.py {' '.join(argv or sys.argv[1:])}`  ",
        f"Training: {args.seconds:.0f} s wall per model, torch threads {args.threads}, seed "
        f"{args.seed}; images resized to {size} px on the long side for Sieve's detector, "
        "Faster R-CNN's own transform (320 px) for the baseline.  ",
        f"Load average (1/5/15 min) before: {load_before}; after: {_load_text()}.", "",
        table.to_markdown(index=False, floatfmt=".3f"), ""])
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
