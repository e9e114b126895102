"""Detection micro-models: a small CenterNet-style box detector trained from scratch on the CPU
in a minute or two from a few dozen images people boxed, that proposes boxes with scores.

Entry points: `train_detector(pictures, boxes, config=...)` returns a trained `DetNet`;
`detect_boxes(model, pictures)` its proposals; `save_detector` / `load_detector` (weights saved
with their config); `mean_average_precision(truth, proposals, classes=...)` scores proposals
against people's boxes (COCO-style AP at IoU 0.5, the figure COCOeval reports as AP50).
Images of any size are resized, aspect ratio kept, so their long side is `config.image_size`
(`load_pictures`); boxes go in and come out in the original image's pixels.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from core.box_agreement import iou_matrix
from core.micromodel import (MicroModelError, _Batches, _read_checkpoint, augment_batch,
                             read_files)

CHECKPOINT_FORMAT = 1
STRIDE = 4  # the heatmap has one cell per STRIDE x STRIDE input pixels
PAD_TO = 32  # inputs are padded to a multiple of the coarsest stage
LOG_EVERY = 20  # optimiser steps per recorded training 'epoch'
READ_CHUNK = 200  # images read between progress reports
WARMUP = 5  # optimiser steps whose learning rate ramps up linearly (steps only, not time)
BOX_COLUMNS = ["image", "class", "x", "y", "w", "h"]  # image and class are indices


class DetectorError(MicroModelError):
    """Input a detector cannot be trained or run on; the message names the bad value."""


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detection micro-model and how it was trained."""

    classes: tuple[str, ...]  # output order: heatmap channel k finds classes[k]
    image_size: int = 256  # long side of every image after resizing (aspect ratio kept)
    crop: int = 192  # side of the square training crops taken from the resized images
    width: int = 16  # channels of the first stage; doubled per stage up to 8x
    neck: int = 48  # channels of the feature pyramid and the shared head
    seed: int = 0  # initial weights, batch order, augmentation
    threads: int = 2  # torch CPU threads
    seconds: float = 90.0  # wall-clock training limit; the learning rate anneals to it
    steps: int = 3000  # optimiser steps at most (fewer when `seconds` runs out)
    batch_size: int = 8
    lr: float = 3e-3  # peak AdamW learning rate, cosine-annealed to 0
    weight_decay: float = 1e-4
    scale_jitter: float = 0.25  # training images rescaled by a factor in [1 - j, 1 + j]
    hflip: bool = True  # random left-right flips
    vflip: bool = False  # random up-down flips (right for microscopy and aerial images)
    colour: float = 0.2  # brightness, contrast, saturation jitter
    min_visible: float = 0.3  # a cropped box keeps at least this share of its area, else dropped
    max_boxes: int = 100  # proposals kept per image (top heatmap peaks)
    min_score: float = 0.05  # proposals below this score are dropped

    def __post_init__(self):
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))


@dataclass(frozen=True)
class Picture:
    """One image resized for the detector: (h, w, 3) uint8 pixels whose long side is the
    config's image_size, and `scale` = resized / original size."""

    pixels: np.ndarray
    scale: float
    name: str = ""


@dataclass(frozen=True)
class StepRecord:
    """LOG_EVERY optimiser steps of training: their mean loss and the time since the start."""

    epoch: int
    loss: float
    seconds: float


@dataclass(frozen=True)
class TrainedDetector:
    model: DetNet
    history: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by_time: bool = False  # `seconds` ran out before `steps`


# ---------------------------------------------------------------- images


def _read_picture(path: str | Path, size: int) -> Picture:
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = size / max(image.size)
        resized = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if resized != image.size:
            image = image.resize(resized, Image.Resampling.BILINEAR, reducing_gap=3.0)
        return Picture(np.asarray(image, dtype=np.uint8), scale, str(path))


def load_pictures(paths: Sequence[str | Path], *, size: int = 256, workers: int = 4,
                  progress: Callable | None = None) -> list[Picture]:
    """The files as Pictures whose long side is `size` (EXIF-rotated, RGB, aspect kept).
    Raises DetectorError naming every file that cannot be read, with the reason."""
    return read_files(paths, lambda path: _read_picture(path, size), workers=workers,
                      progress=progress, error=DetectorError, chunk=READ_CHUNK)


# ---------------------------------------------------------------- the network


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DetNet(nn.Module):
    """Five stride-2 stages (1/2 .. 1/32), a top-down feature pyramid merged at 1/4, and a shared
    head with three outputs per heatmap cell: per-class centre logits (K), log width and height
    in cells (2), and the centre's offset within the cell (2).
    (N, 3, H, W) uint8, H and W multiples of 32 -> three maps of (N, *, H/4, W/4)."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        if not config.classes:
            raise DetectorError("a detector needs at least one class")
        if config.crop % PAD_TO or config.crop < PAD_TO:
            raise DetectorError(f"crop must be a multiple of {PAD_TO} pixels, got {config.crop}")
        self.config = config
        w, n = config.width, config.neck
        channels = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        cins = [3] + channels[:-1]
        self.stages = nn.ModuleList(nn.Sequential(_conv(a, b, 2), _conv(b, b))
                                    for a, b in zip(cins, channels))
        self.lateral = nn.ModuleList(nn.Conv2d(c, n, 1) for c in channels[1:])  # 1/4 .. 1/32
        self.smooth = _conv(n, n)
        self.heatmap = nn.Conv2d(n, len(config.classes), 1)
        self.size = nn.Conv2d(n, 2, 1)
        self.offset = nn.Conv2d(n, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # a prior of 0.1 on every cell: stable start
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))

    def normalise(self, floats: torch.Tensor) -> torch.Tensor:
        return (floats - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`x`: (N, 3, H, W) normalised floats."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        merged = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2:0:-1]):
            merged = lateral(feature) + F.interpolate(merged, size=feature.shape[2:], mode="nearest")
        shared = self.smooth(merged)  # (N, neck, H/4, W/4)
        return self.heatmap(shared), self.size(shared), self.offset(shared)


# ---------------------------------------------------------------- checkpoints


def save_detector(model: DetNet, path: str | Path) -> Path:
    """Write weights and config to `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "detector", "config": asdict(model.config),
                "state": model.state_dict()}, path)
    return path


def _read_detector_file(path: str | Path) -> dict:
    try:
        saved = _read_checkpoint(path)
    except MicroModelError as err:
        raise DetectorError(str(err)) from err
    if not isinstance(saved, dict) or saved.get("kind") != "detector" or "state" not in saved:
        raise DetectorError(f"{path} is not a Sieve detector checkpoint (no detector config/state)")
    return saved


def load_detector(path: str | Path) -> DetNet:
    """The detector saved at `path`, in eval mode."""
    saved = _read_detector_file(path)
    model = DetNet(DetectorConfig(**saved["config"]))
    model.load_state_dict(saved["state"])
    return model.eval()


def _start_from(model: DetNet, path: str | Path) -> None:
    """Start from an earlier detector's weights: every tensor whose name and shape match (the
    heatmap layer is kept fresh when the classes differ)."""
    state = _read_detector_file(path)["state"]
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not all(k in fitting for k in own if k.startswith("stages.")):
        raise DetectorError(f"weights file {path} does not fit this detector (saved with "
                            "another width)")
    model.load_state_dict(fitting, strict=False)


# ---------------------------------------------------------------- training targets


def _check_boxes(pictures: Sequence[Picture], boxes: pd.DataFrame, k: int) -> pd.DataFrame:
    missing = [c for c in BOX_COLUMNS if c not in boxes.columns]
    if missing:
        raise DetectorError(f"boxes need columns {BOX_COLUMNS}; missing {missing}")
    if not len(pictures):
        raise DetectorError("no training images")
    boxes = boxes[BOX_COLUMNS].astype({"image": np.int64, "class": np.int64})
    if len(boxes) and not boxes["image"].between(0, len(pictures) - 1).all():
        raise DetectorError(f"box image indices must lie in 0..{len(pictures) - 1}")
    if len(boxes) and not boxes["class"].between(0, k - 1).all():
        raise DetectorError(f"box classes must be class indices 0..{k - 1}")
    boxes = boxes[(boxes["w"] > 0) & (boxes["h"] > 0)]
    if boxes.empty:
        raise DetectorError("the training images hold no boxes (of non-zero size): a detector "
                            "learns from people's boxes; box some images first")
    return boxes


def _gaussians(cx: torch.Tensor, cy: torch.Tensor, w: torch.Tensor, h: torch.Tensor,
               height: int, width: int) -> torch.Tensor:
    """(B, height, width) elliptic Gaussians peaking at 1 on each box's centre cell, spread in
    proportion to its size (TTFNet's alpha 0.54), at least half a cell."""
    sx = (0.54 * w / 6).clamp_min(0.5)[:, None, None]
    sy = (0.54 * h / 6).clamp_min(0.5)[:, None, None]
    ys = torch.arange(height, dtype=torch.float32)[None, :, None]
    xs = torch.arange(width, dtype=torch.float32)[None, None, :]
    return torch.exp(-((xs - cx[:, None, None]) ** 2 / (2 * sx ** 2)
                       + (ys - cy[:, None, None]) ** 2 / (2 * sy ** 2)))


@dataclass
class _Targets:
    heatmap: torch.Tensor  # (B, K, H/4, W/4) Gaussian peaks, 1 at object centres
    where: torch.Tensor  # (P, 3) batch index, row, column of each object's centre cell
    size: torch.Tensor  # (P, 2) log width and height in cells
    offset: torch.Tensor  # (P, 2) centre minus its cell, in cells


def _targets(batch_boxes: list[np.ndarray], k: int, side: int) -> _Targets:
    """Targets for square crops of `side` pixels; each array is (n, 5): class, x, y, w, h."""
    cells = side // STRIDE
    heatmap = torch.zeros(len(batch_boxes), k, cells, cells)
    where, size, offset = [], [], []
    for b, rows in enumerate(batch_boxes):
        if not len(rows):
            continue
        t = torch.from_numpy(rows.astype(np.float32))
        w, h = t[:, 3] / STRIDE, t[:, 4] / STRIDE
        cx, cy = t[:, 1] / STRIDE + w / 2, t[:, 2] / STRIDE + h / 2
        col, row = cx.floor().clamp(0, cells - 1), cy.floor().clamp(0, cells - 1)
        blobs = _gaussians(col, row, w, h, cells, cells)
        for c in t[:, 0].long().unique():
            chosen = t[:, 0].long() == c
            heatmap[b, c] = torch.maximum(heatmap[b, c], blobs[chosen].amax(dim=0))
        where.append(torch.stack([torch.full_like(col, b), row, col], dim=1).long())
        size.append(torch.stack([w.log(), h.log()], dim=1))
        offset.append(torch.stack([cx - col, cy - row], dim=1))
    if not where:
        return _Targets(heatmap, torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 2),
                        torch.zeros(0, 2))
    return _Targets(heatmap, torch.cat(where), torch.cat(size), torch.cat(offset))


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), per object centre."""
    positive = target.eq(1).float()
    p = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos = (log_p * (1 - p) ** 2 * positive).sum()
    neg = (log_not_p * p ** 2 * (1 - target) ** 4 * (1 - positive)).sum()
    return -(pos + neg) / positive.sum().clamp_min(1)


def _loss(model: DetNet, x: torch.Tensor, targets: _Targets) -> torch.Tensor:
    heatmap, size, offset = model(x)
    loss = focal_loss(heatmap, targets.heatmap)
    if len(targets.where):
        b, r, c = targets.where.T
        loss = loss + F.l1_loss(size[b, :, r, c], targets.size) \
            + F.l1_loss(offset[b, :, r, c], targets.offset)
    return loss


# ---------------------------------------------------------------- augmentation


def _crop_sample(picture: torch.Tensor, rows: np.ndarray, config: DetectorConfig,
                 generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """A rescaled, cropped, flipped copy of one (3, h, w) float picture on a square canvas of
    `config.crop` (the rest left at NaN, filled later), and its boxes (n, 5) clipped to it."""
    side = config.crop
    u = torch.rand(5, generator=generator).tolist()
    factor = 1 + config.scale_jitter * (2 * u[0] - 1)
    h, w = (max(1, round(d * factor)) for d in picture.shape[1:])
    scaled = F.interpolate(picture[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    left, top = round(u[1] * max(0, w - side)), round(u[2] * max(0, h - side))
    canvas = torch.full((3, side, side), float("nan"))
    part = scaled[:, top:top + side, left:left + side]
    canvas[:, :part.shape[1], :part.shape[2]] = part
    boxes = rows.astype(np.float64).copy()
    boxes[:, 1:] *= factor
    x0, y0 = boxes[:, 1] - left, boxes[:, 2] - top
    x1, y1 = x0 + boxes[:, 3], y0 + boxes[:, 4]
    cx0, cy0 = np.clip(x0, 0, part.shape[2]), np.clip(y0, 0, part.shape[1])
    cx1, cy1 = np.clip(x1, 0, part.shape[2]), np.clip(y1, 0, part.shape[1])
    area = (cx1 - cx0) * (cy1 - cy0)
    keep = (cx1 - cx0 >= 1) & (cy1 - cy0 >= 1) & (area >= config.min_visible * boxes[:, 3] * boxes[:, 4])
    boxes = np.stack([boxes[:, 0], cx0, cy0, cx1 - cx0, cy1 - cy0], axis=1)[keep]
    if config.hflip and u[3] < 0.5:
        canvas, boxes[:, 1] = canvas.flip(2), side - boxes[:, 1] - boxes[:, 3]
    if config.vflip and u[4] < 0.5:
        canvas, boxes[:, 2] = canvas.flip(1), side - boxes[:, 2] - boxes[:, 4]
    return canvas, boxes


def _batch(model: DetNet, pictures: list[torch.Tensor], rows: list[np.ndarray], index,
           generator: torch.Generator) -> tuple[torch.Tensor, _Targets]:
    config = model.config
    samples = [_crop_sample(pictures[i], rows[i], config, generator) for i in index.tolist()]
    x = torch.stack([canvas for canvas, _ in samples])  # (B, 3, crop, crop), NaN outside
    x = torch.where(x.isnan(), model.mean.expand_as(x), x)
    if config.colour:
        x = augment_batch(x, generator=generator, hflip=False, shift=0.0, scale=0.0,
                          colour=config.colour)
    return model.normalise(x), _targets([b for _, b in samples], len(config.classes), config.crop)


# ---------------------------------------------------------------- training


def _float_pictures(pictures: Sequence[Picture]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(p.pixels.transpose(2, 0, 1))).float() / 255
            for p in pictures]


def _rows_per_picture(pictures: Sequence[Picture], boxes: pd.DataFrame) -> list[np.ndarray]:
    """(n, 5) class, x, y, w, h in resized pixels for each picture."""
    out = []
    groups = dict(tuple(boxes.groupby("image")))
    for i, picture in enumerate(pictures):
        group = groups.get(i)
        if group is None:
            out.append(np.zeros((0, 5)))
            continue
        geometry = group[["x", "y", "w", "h"]].to_numpy(np.float64) * picture.scale
        out.append(np.column_stack([group["class"].to_numpy(np.float64), geometry]))
    return out


def _new_detector(config: DetectorConfig, floats: list[torch.Tensor],
                  weights: str | Path | None) -> DetNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DetNet(config)
    if weights is not None:
        _start_from(model, weights)
    flat = torch.cat([f.reshape(3, -1) for f in floats], dim=1)  # (3, all pixels)
    model.mean.copy_(flat.mean(dim=1).reshape(1, 3, 1, 1))
    model.std.copy_(flat.std(dim=1).clamp_min(1e-3).reshape(1, 3, 1, 1))
    return model


def train_detector(pictures: Sequence[Picture], boxes: pd.DataFrame, *, config: DetectorConfig,
                   weights: str | Path | None = None, progress: Callable | None = None,
                   on_epoch: Callable[[StepRecord], None] | None = None) -> TrainedDetector:
    """Train on `pictures` and their `boxes` (columns image (index into pictures), class (index
    into config.classes), x, y, w, h in the original image's pixels). `weights`: an earlier
    detector checkpoint to start from. `progress(done, total, message)` is called as training
    advances; `on_epoch(record)` every LOG_EVERY steps."""
    torch.set_num_threads(config.threads)
    boxes = _check_boxes(pictures, boxes, len(config.classes))
    started = time.monotonic()
    floats = _float_pictures(pictures)
    rows = _rows_per_picture(pictures, boxes)
    generator = torch.Generator().manual_seed(config.seed)
    model = _new_detector(config, floats, weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    batches = _Batches(len(floats), min(config.batch_size, len(floats)), generator)
    history, losses, step = [], [], 0
    model.train()
    while step < config.steps and time.monotonic() - started < config.seconds:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step, started)
        x, targets = _batch(model, floats, rows, batches.next(), generator)
        loss = _loss(model, x, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % LOG_EVERY == 0 or step == config.steps:
            history.append(_record(len(history) + 1, losses, started, progress, on_epoch, config))
            losses = []
    model.eval()
    return TrainedDetector(model, history, time.monotonic() - started,
                           stopped_by_time=step < config.steps)


def _share_done(config: DetectorConfig, step: int, started: float) -> float:
    """How far training is, for the learning rate: the step share, or the time share once it
    is ahead (after the warm-up, so runs the step budget binds are reproducible to the bit)."""
    steps = step / max(config.steps, 1)
    if step < WARMUP:
        return steps
    return max(steps, (time.monotonic() - started) / max(config.seconds, 1e-9))


def _learning_rate(config: DetectorConfig, step: int, started: float) -> float:
    """Linear warm-up over WARMUP steps, then cosine annealing to 0 as training ends."""
    warm = min(1.0, (step + 1) / WARMUP)
    done = min(_share_done(config, step, started), 1.0)
    return config.lr * warm * 0.5 * (1 + math.cos(math.pi * done))


def _record(epoch: int, losses: list[float], started: float, progress, on_epoch,
            config: DetectorConfig) -> StepRecord:
    record = StepRecord(epoch, float(np.mean(losses)), time.monotonic() - started)
    total = math.ceil(config.steps / LOG_EVERY)
    if progress:
        progress(min(epoch, total), total, f"step {epoch * LOG_EVERY}: loss {record.loss:.3f}")
    if on_epoch:
        on_epoch(record)
    return record


# ---------------------------------------------------------------- proposals


def _padded(model: DetNet, picture: Picture) -> torch.Tensor:
    """(3, H, W) normalised floats, padded at the bottom and right (with the mean colour) to
    multiples of PAD_TO."""
    h, w = picture.pixels.shape[:2]
    floats = torch.from_numpy(np.ascontiguousarray(picture.pixels.transpose(2, 0, 1))).float() / 255
    height, width = math.ceil(h / PAD_TO) * PAD_TO, math.ceil(w / PAD_TO) * PAD_TO
    canvas = model.mean[0].expand(3, height, width).clone()
    canvas[:, :h, :w] = floats
    return model.normalise(canvas[None])[0]


def _decode(model: DetNet, heatmap: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
            picture: Picture) -> np.ndarray:
    """(n, 6) class, score, x, y, w, h in original pixels from one image's (K|2, h, w) maps:
    heatmap peaks (3x3 max-pool suppression), the best max_boxes above min_score."""
    config = model.config
    heat = torch.sigmoid(heatmap)
    peaks = heat * (F.max_pool2d(heat[None], 3, stride=1, padding=1)[0] == heat)
    cells = heat.shape[1] * heat.shape[2]
    scores, index = peaks.flatten().topk(min(config.max_boxes, peaks.numel()))
    keep = scores >= config.min_score
    scores, index = scores[keep], index[keep]
    cls, pixel = index // cells, index % cells
    row, col = pixel // heat.shape[2], pixel % heat.shape[2]
    cx = (col + offset[0, row, col]) * STRIDE
    cy = (row + offset[1, row, col]) * STRIDE
    w, h = size[0, row, col].exp() * STRIDE, size[1, row, col].exp() * STRIDE
    height, width = (d / picture.scale for d in picture.pixels.shape[:2])
    x0 = ((cx - w / 2) / picture.scale).clamp(0, width)
    y0 = ((cy - h / 2) / picture.scale).clamp(0, height)
    x1 = ((cx + w / 2) / picture.scale).clamp(0, width)
    y1 = ((cy + h / 2) / picture.scale).clamp(0, height)
    return torch.stack([cls.float(), scores, x0, y0, x1 - x0, y1 - y0], dim=1).numpy()


@torch.no_grad()
def detect_boxes(model: DetNet, pictures: Sequence[Picture], *, batch_size: int = 8,
                 progress: Callable | None = None) -> pd.DataFrame:
    """Proposals for each picture. Columns: image (index into pictures), class (index into
    config.classes), score, x, y, w, h (original pixels) — by image, best score first."""
    torch.set_num_threads(model.config.threads)
    model.eval()
    shapes: dict[tuple, list[int]] = {}
    for i, picture in enumerate(pictures):
        shapes.setdefault(picture.pixels.shape, []).append(i)
    found, done = {}, 0
    for members in shapes.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            x = torch.stack([_padded(model, pictures[i]) for i in chunk])
            heatmap, size, offset = model(x)
            for j, i in enumerate(chunk):
                found[i] = _decode(model, heatmap[j], size[j], offset[j], pictures[i])
            done += len(chunk)
            if progress:
                progress(done, len(pictures), "detecting")
    parts = [pd.DataFrame(found[i], columns=["class", "score", "x", "y", "w", "h"]).assign(image=i)
             for i in range(len(pictures))]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["class", "score", "x", "y", "w", "h", "image"])
    frame = frame.astype({"class": np.int64, "image": np.int64})
    return frame[["image", "class", "score", "x", "y", "w", "h"]]


# ---------------------------------------------------------------- evaluation

RECALL_STEPS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points


@dataclass(frozen=True)
class DetectionEvaluation:
    """mAP at IoU `iou` over the classes with at least one true box; `per_class`: class, ap
    (NaN without true boxes), boxes (true boxes), proposals."""

    iou: float
    map: float
    per_class: pd.DataFrame
    images: int

    def to_json(self) -> dict:
        return {"iou": self.iou, "map": self.map, "images": self.images,
                "per_class": self.per_class.to_dict("list")}

    @staticmethod
    def from_json(data: dict) -> DetectionEvaluation:
        return DetectionEvaluation(data["iou"], data["map"], pd.DataFrame(data["per_class"]),
                                   data["images"])


def _match_image(truth: np.ndarray, proposals: np.ndarray, iou: float) -> np.ndarray:
    """(n,) True where a proposal (sorted by score, best first) matched a still unmatched true
    box at IoU >= `iou`, taking the best-overlapping one (COCOeval's greedy rule)."""
    hits = np.zeros(len(proposals), bool)
    if not len(truth) or not len(proposals):
        return hits
    overlap = iou_matrix(proposals, truth)  # (n, m)
    taken = np.zeros(len(truth), bool)
    for d in range(len(proposals)):
        candidates = np.where(taken, -1.0, overlap[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= min(iou, 1 - 1e-10):
            taken[best], hits[d] = True, True
    return hits


def _average_precision(scores: np.ndarray, hits: np.ndarray, n_true: int) -> float:
    """COCO's 101-point interpolated AP of ranked proposals against `n_true` true boxes."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / n_true
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    at = np.searchsorted(recall, RECALL_STEPS, side="left")
    return float(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)],
                          0.0).mean()) if len(precision) else 0.0


def _class_ap(truth: pd.DataFrame, proposals: pd.DataFrame, *, images, iou: float,
              max_boxes: int) -> tuple[float, int, int]:
    """(AP, true boxes, proposals) of one class over `images`."""
    true_by, prop_by = dict(tuple(truth.groupby("image"))), dict(tuple(proposals.groupby("image")))
    scores, hits = [], []
    for image in sorted(images):  # COCOeval's order: it decides ties between equal scores
        mine = prop_by.get(image)
        if mine is None:
            continue
        mine = mine.iloc[np.argsort(-mine["score"].to_numpy(), kind="mergesort")[:max_boxes]]
        theirs = true_by.get(image)
        boxes = theirs[["x", "y", "w", "h"]].to_numpy(float) if theirs is not None else np.zeros((0, 4))
        hits.append(_match_image(boxes, mine[["x", "y", "w", "h"]].to_numpy(float), iou))
        scores.append(mine["score"].to_numpy(float))
    n_true, n_prop = len(truth), int(sum(len(s) for s in scores))
    if not n_true:
        return float("nan"), 0, n_prop
    if not n_prop:
        return 0.0, n_true, 0
    return _average_precision(np.concatenate(scores), np.concatenate(hits), n_true), n_true, n_prop


def mean_average_precision(truth: pd.DataFrame, proposals: pd.DataFrame, *, classes: Sequence[str],
                           images: Sequence | None = None, iou: float = 0.5,
                           max_boxes: int = 100) -> DetectionEvaluation:
    """Average precision per class at IoU `iou`, and their mean over the classes with true
    boxes, as COCOeval computes AP50 (101 recall points, greedy matching by score, at most
    `max_boxes` proposals per image and class, area range 'all', no crowd boxes).
    `truth`: image, class, x, y, w, h; `proposals`: the same plus score; `images`: the images
    evaluated (default: every image in either frame)."""
    if images is None:
        images = sorted(set(truth["image"]) | set(proposals["image"]))
    images = list(images)
    chosen = set(images)
    truth, proposals = truth[truth["image"].isin(chosen)], proposals[proposals["image"].isin(chosen)]
    rows = []
    for k, name in enumerate(classes):
        ap, n_true, n_prop = _class_ap(truth[truth["class"] == k], proposals[proposals["class"] == k],
                                       images=images, iou=iou, max_boxes=max_boxes)
        rows.append({"class": name, "ap": ap, "boxes": n_true, "proposals": n_prop})
    per_class = pd.DataFrame(rows, columns=["class", "ap", "boxes", "proposals"])
    valid = per_class["ap"].dropna()
    return DetectionEvaluation(iou, float(valid.mean()) if len(valid) else float("nan"),
                               per_class, len(images))
