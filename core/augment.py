"""Augmentation: flips, crops, rotations and colour changes applied to an image together with its
boxes and polygons (torchvision.transforms.v2 on tv_tensors), for previews and for oversampling
minority classes at export.

Entry points: `augment_sample(image, objects, AugmentConfig(...), seed=...)` → `Augmented`, and
`plan_oversampling(labels, target=..., seed=...)`, the extra copies that reach a target class
distribution. Polygon vertices travel as zero-size boxes, so they follow exactly the geometry the
boxes follow; boxes and polygons are then clipped to the new image.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

# torch and torchvision are imported where used: they take seconds to load, and exports that
# augment nothing (or the CLI's other commands) should not wait for them.

CLIPPED = "clipped to the image by augmentation"
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990"]


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True                       # horizontal flip with p = 0.5
    crop: bool = True                       # random crop, resized back to the image size
    rotation: float = 10.0                  # degrees: uniform in [-rotation, rotation]; 0: none
    colour: bool = True                     # brightness, contrast, saturation ± 0.3, hue ± 0.05
    crop_scale: tuple[float, float] = (0.6, 1.0)  # share of the image area a crop keeps
    min_visibility: float = 0.3             # an object keeps at least this share of its area


@dataclass(frozen=True)
class Augmented:
    """`objects`: the input rows that survived, geometry replaced (x, y, w, h, points as JSON);
    `masks`: the input masks transformed along, (K, H, W) uint8, or None."""
    image: Image.Image
    objects: pd.DataFrame
    masks: np.ndarray | None


def make_transform(config: AugmentConfig, size: tuple[int, int]):
    """The torchvision.transforms.v2 pipeline for an image of `size` (height, width)."""
    from torchvision.transforms import v2

    height, width = size
    steps = []
    if config.flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if config.crop:
        aspect = width / height
        steps.append(v2.RandomResizedCrop(size, scale=config.crop_scale,
                                          ratio=(aspect * 0.8, aspect * 1.25), antialias=True))
    if config.rotation:
        steps.append(v2.RandomRotation(config.rotation))
    if config.colour:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    return v2.Compose(steps) if steps else v2.Identity()


@contextlib.contextmanager
def seeded(seed: int):
    """torch's random state set to `seed` inside, restored after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def copy_seed(seed: int, image_id: int, copy: int) -> int:
    """The seed of one augmented copy: stable per (seed, image, copy)."""
    entropy = [seed, int(image_id) & 0xFFFFFFFF, copy]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _points(value) -> list | None:
    if isinstance(value, str):
        return json.loads(value)
    return value if isinstance(value, list) else None


def _as_boxes(objects: pd.DataFrame, size):
    """(tv_tensors.BoundingBoxes: the objects' boxes (XYXY), then each polygon vertex as a
    zero-size box, unclamped; vertex count per object)."""
    import torch
    from torchvision import tv_tensors

    rows, counts = [], []
    for obj in objects.itertuples(index=False):
        rows.append([obj.x, obj.y, obj.x + obj.w, obj.y + obj.h])
    for obj in objects.itertuples(index=False):
        ring = _points(obj.points) if obj.kind == "polygon" else None
        counts.append(len(ring) if ring else 0)
        rows.extend([px, py, px, py] for px, py in (ring or []))
    data = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    boxes = tv_tensors.BoundingBoxes(data, format="XYXY", canvas_size=size, clamping_mode=None)
    return boxes, counts


def _tensor_image(image: Image.Image):
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return tv_tensors.Image(F.pil_to_tensor(image))


def augment_sample(image: Image.Image, objects: pd.DataFrame, config: AugmentConfig, *,
                   seed: int, masks: np.ndarray | None = None) -> Augmented:
    """Transform `image` with its `objects` (columns kind, x, y, w, h, points; others carried)
    and optional `masks` (K, H, W), all with the same random draw."""
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    size = (image.height, image.width)
    boxes, counts = _as_boxes(objects, size)
    sample = {"image": _tensor_image(image), "boxes": boxes}
    if masks is not None:
        sample["masks"] = tv_tensors.Mask(torch.as_tensor(masks))
    with seeded(seed):
        out = make_transform(config, size)(sample)
    new_size = tuple(out["image"].shape[-2:])
    geometry = _clip_objects(objects, out["boxes"].as_subclass(torch.Tensor).double().numpy(),
                             counts, new_size, config.min_visibility)
    kept = objects.iloc[[k for k, g in enumerate(geometry) if g is not None]].copy()
    kept[["x", "y", "w", "h"]] = [g[0] for g in geometry if g is not None] or np.empty((0, 4))
    kept["points"] = [g[1] for g in geometry if g is not None]
    kept["flag"] = [g[2] for g in geometry if g is not None]
    result_masks = out["masks"].numpy() if masks is not None else None
    return Augmented(F.to_pil_image(out["image"]), kept.reset_index(drop=True), result_masks)


def _clip_objects(objects: pd.DataFrame, moved: np.ndarray, counts: list[int], size,
                  min_visibility: float) -> list:
    """Per object: ((x, y, w, h), points JSON or None, flag) clipped to `size`, or None if lost."""
    height, width = size
    start, result = len(objects), []
    for k, obj in enumerate(objects.itertuples(index=False)):
        flag = obj.flag if isinstance(getattr(obj, "flag", None), str) else None
        if obj.kind == "polygon" and counts[k]:
            ring = moved[start:start + counts[k], :2]
            start += counts[k]
            result.append(_clip_polygon_object(ring, width, height, flag, min_visibility))
        else:
            result.append(_clip_box(moved[k], width, height, flag, obj.w * obj.h == 0,
                                    min_visibility))
    return result


def _clip_box(box, width, height, flag, degenerate: bool, min_visibility: float):
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
    if degenerate:  # a flagged zero-area box stays only while its point is inside
        inside = 0 <= x0 <= width and 0 <= y0 <= height
        return ((x0, y0, x1 - x0, y1 - y0), None, flag) if inside else None
    area = (x1 - x0) * (y1 - y0)
    if cx1 - cx0 < 1 or cy1 - cy0 < 1 or (cx1 - cx0) * (cy1 - cy0) < min_visibility * area:
        return None
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    return (cx0, cy0, cx1 - cx0, cy1 - cy0), None, CLIPPED if clipped else flag


def polygon_area(ring) -> float:
    """Shoelace area of a polygon given as [[x, y], ...]."""
    if len(ring) < 3:
        return 0.0
    xs, ys = np.asarray(ring, float).T
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


def clip_polygon(ring, width: float, height: float) -> list[list[float]]:
    """Sutherland–Hodgman: the part of `ring` inside [0, width] x [0, height]."""
    edges = [(0, 0.0, 1), (0, float(width), -1), (1, 0.0, 1), (1, float(height), -1)]
    points = [list(map(float, p)) for p in ring]
    for axis, limit, sign in edges:
        if not points:
            break
        inside = [sign * (p[axis] - limit) >= 0 for p in points]
        clipped = []
        for k, point in enumerate(points):
            prev, prev_in = points[k - 1], inside[k - 1]
            if inside[k] != prev_in:  # the edge crosses the limit: add the crossing
                t = (limit - prev[axis]) / (point[axis] - prev[axis])
                cross = [prev[0] + t * (point[0] - prev[0]), prev[1] + t * (point[1] - prev[1])]
                cross[axis] = limit
                clipped.append(cross)
            if inside[k]:
                clipped.append(point)
        points = clipped
    return points


def _clip_polygon_object(ring, width, height, flag, min_visibility: float):
    full = polygon_area(ring)
    clipped = clip_polygon(ring, width, height)
    area = polygon_area(clipped)
    if len(clipped) < 3 or area < 1 or area < min_visibility * full:
        return None
    xs, ys = [p[0] for p in clipped], [p[1] for p in clipped]
    was_clipped = len(clipped) != len(ring) or not np.allclose(clipped, ring)
    box = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return box, json.dumps(clipped), CLIPPED if was_clipped else flag


def draw_objects(image: Image.Image, objects: pd.DataFrame, *, classes: list[str] | None = None,
                 line: int = 2) -> Image.Image:
    """A copy of `image` (RGB) with boxes and polygons outlined, one colour per class."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    order = classes or sorted(objects["class"].dropna().unique().tolist())
    for obj in objects.to_dict("records"):
        colour = PALETTE[order.index(obj["class"]) % len(PALETTE)] if obj["class"] in order \
            else PALETTE[0]
        ring = _points(obj["points"]) if obj["kind"] == "polygon" else None
        if ring:
            draw.polygon([tuple(p) for p in ring], outline=colour, width=line)
        else:
            draw.rectangle([obj["x"], obj["y"], obj["x"] + obj["w"], obj["y"] + obj["h"]],
                           outline=colour, width=line)
    return canvas


def _target_counts(counts: pd.Series, target: dict | None, max_factor: float) -> pd.Series:
    """Labels wanted per class: the smallest total that reaches the target shares by adding
    only, each class grown to at most `max_factor` times its count."""
    shares = pd.Series(target, dtype=float).reindex(counts.index).fillna(0.0) if target \
        else pd.Series(1.0, index=counts.index)
    if shares.sum() <= 0:
        raise ValueError("the target distribution gives every present class a zero share")
    shares = shares / shares.sum()
    total = max(counts[c] / shares[c] for c in counts.index if shares[c] > 0)
    wanted = (shares * total).apply(math.floor).clip(lower=counts)
    return wanted.clip(upper=counts * max_factor)


def plan_oversampling(labels: pd.DataFrame, *, target: dict | None = None,
                      max_factor: float = 5.0, seed: int = 0) -> pd.DataFrame:
    """Extra augmented copies that bring the classes toward `target` shares (class → share,
    default uniform). `labels`: columns image_id, class, one row per label of the images that
    may be copied. Returns columns image_id, copy (1, 2, ... per image), for_class; copies go to
    the class furthest below its wanted count, cycling through its images in a seeded order."""
    counts = labels.groupby("class").size().astype(float)
    if counts.empty:
        return pd.DataFrame(columns=["image_id", "copy", "for_class"])
    wanted = _target_counts(counts, target, max_factor)
    per_image = labels.groupby("image_id")["class"].apply(list).to_dict()
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(sorted(labels.loc[labels["class"] == c, "image_id"].unique())))
             for c in counts.index}
    have, drawn, copies, plan = counts.copy(), dict.fromkeys(counts.index, 0), {}, []
    while True:
        cls = ((wanted - have) / wanted).idxmax()
        if wanted[cls] - have[cls] < 1:
            return pd.DataFrame(plan, columns=["image_id", "copy", "for_class"])
        image_id = pools[cls][drawn[cls] % len(pools[cls])]
        drawn[cls] += 1
        copies[image_id] = copies.get(image_id, 0) + 1
        plan.append((int(image_id), copies[image_id], cls))
        for label in per_image[image_id]:
            have[label] += 1
