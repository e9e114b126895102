"""ImageFolder: one subfolder per class (optionally below split folders: train/cat/x.png).

Entry point: `read(source, labels)`; images directly in `source` are ingested unlabelled, and
noted as such when class folders stand beside them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.formats import SPLIT_NAMES, Annotations, labels_frame, problem, scan_images


def read(source: Path, labels: Path | None = None) -> Annotations:
    paths = scan_images(source)
    top = {p.split("/")[0] for p in paths if "/" in p}
    by_split = bool(top) and top <= SPLIT_NAMES and all(p.count("/") >= 2 for p in paths
                                                        if p.split("/")[0] in top)
    rows, splits, loose = [], [], []
    for path in paths:
        parts = path.split("/")
        if by_split:
            splits.append({"path": path, "split": parts[0]})
            parts = parts[1:]
        if len(parts) >= 2:
            rows.append({"path": path, "kind": "class", "class_name": parts[-2],
                         "label_file": path, "location": "folder name"})
        else:
            loose.append(path)
    frame = labels_frame(rows)
    classes = sorted(frame["class_name"].unique()) if len(frame) else None
    # images alone are an unlabelled folder; beside class folders, likely a file out of place
    problems = [problem(source / path, "not in a class folder: ingested without a label",
                        action="noted") for path in loose] if rows else []
    return Annotations(frame, classes=classes, images=paths, problems=problems,
                       splits=pd.DataFrame(splits, columns=["path", "split"]) if by_split else None)
