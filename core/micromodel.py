"""Micro-models: small torch image classifiers trained in about a minute on the CPU from a
handful of people's labels for one narrow task, purposely fitted hard, that label the rest.

Entry points: `train_micromodel(images, labels, config=...)` returns a trained `MicroNet`;
`predict_proba(model, images)`; `save_micromodel(model, path)` and `load_micromodel(path)`
(weights saved with their config, rebuilt as `MicroNet(MicroConfig(**saved))`).
Images are (N, H, W, 3) uint8 arrays from `load_images`, which resizes every image to
`image_size` x `image_size` (squashed, aspect ratio not kept, bilinear).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

CHECKPOINT_FORMAT = 1
READ_CHUNK = 1000  # images read between progress reports
ARCHITECTURES = ("patches", "cnn", "resnet18")


class MicroModelError(ValueError):
    """Input a micro-model cannot be trained or run on; the message names the bad value."""


@dataclass(frozen=True)
class MicroConfig:
    """Everything that defines a micro-model and how it was trained."""

    classes: tuple[str, ...]  # output order: unit k predicts classes[k]
    arch: str = "patches"  # 'patches', 'cnn' (both from scratch) or 'resnet18' (a weights file)
    image_size: int = 32  # every image is squashed to image_size x image_size pixels
    hflip: bool = True  # mirrored copies in training and at test time (off for text, digits)
    seed: int = 0  # dictionary patches, initial weights, batch order and augmentation
    threads: int = 2  # torch CPU threads
    seconds: float = 60.0  # wall-clock training limit; training winds down as it nears
    # 'patches': a dictionary of whitened patches learned from all images, labelled or not
    atoms: int = 256  # dictionary size K
    patch: int = 6  # patch side in pixels
    pool: int = 4  # responses averaged over a pool x pool grid, then 2x2 and 1x1 (a pyramid)
    # training copies moved this many pixels up, down, left, right (0: none): on CIFAR-10 with
    # 100 labels per class +1 point of accuracy for 4x the CPU time, so off by default
    shifts: int = 0
    # 'patches' and 'resnet18': frozen features, a linear head fitted by L-BFGS
    l2: float = 0.3  # penalty on the sum of squared head weights
    iterations: int = 50  # L-BFGS iterations, recorded 10 to an 'epoch'
    # 'patches' trained with unlabelled images: label spreading over a graph of the nearest
    # neighbours among all training images (see `NeighbourLabels`); 0 turns it off
    spread: float = 0.5  # weight of the neighbours' labels against the image's own prediction
    neighbours: int = 10  # graph edges per image
    # 'cnn': trained end to end by SGD on augmented batches
    width: int = 24  # channels of the first block; doubled at each of 3 downsamplings
    epochs: int = 60  # passes over the labelled images (fewer when `seconds` runs out)
    batch_size: int = 64
    lr: float = 0.05  # peak SGD learning rate, cosine-annealed to 0
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True  # random flips, crops (shift and scale) and colour jitter
    pseudo_label: float = 0.0  # >0: unlabelled images predicted above this confidence train too
    backbone_file: str | None = None  # pretrained weights the backbone started from (a record)

    def __post_init__(self):
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training: mean loss and accuracy on the (augmented) labelled batches."""

    epoch: int
    loss: float
    accuracy: float
    seconds: float  # since training started


@dataclass(frozen=True)
class TrainedModel:
    model: MicroNet
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by_time: bool = False  # `seconds` ran out before `epochs`


# ---------------------------------------------------------------- images


def _read(path: str | Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(image, dtype=np.uint8)


def read_files(paths: Sequence[str | Path], read: Callable, *, workers: int = 4,
               progress: Callable | None = None, error: type | None = None,
               chunk: int = READ_CHUNK) -> list:
    """`read(path)` of every file, in order, on `workers` threads with progress; raises `error`
    (MicroModelError by default) naming every file that cannot be read, with the reason."""
    def one(path):
        try:
            return read(path), None
        except Exception as err:  # noqa: BLE001 — every failure is reported below
            return None, f"{path} ({type(err).__name__}: {err})"

    paths, results = list(paths), []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(paths), chunk):
            results += pool.map(one, paths[start:start + chunk])
            if progress:
                progress(len(results), len(paths), "reading images")
    bad = [reason for _, reason in results if reason]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise (error or MicroModelError)(
            f"{len(bad)} image(s) could not be read: {shown}. Re-ingest the dataset (unreadable "
            "files are then skipped) or exclude them")
    return [value for value, _ in results]


def load_images(paths: Sequence[str | Path], *, size: int = 32, workers: int = 4,
                progress: Callable | None = None) -> np.ndarray:
    """(N, size, size, 3) uint8 pixels of these files (EXIF-rotated, RGB, squashed to size).
    Raises MicroModelError naming every file that cannot be read, with the reason."""
    pixels = read_files(paths, lambda path: _read(path, size), workers=workers, progress=progress)
    return np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)


# ---------------------------------------------------------------- the network


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _cnn_features(width: int) -> tuple[nn.Module, int]:
    w = width
    layers = nn.Sequential(_block(3, w), nn.MaxPool2d(2), _block(w, 2 * w), nn.MaxPool2d(2),
                           _block(2 * w, 4 * w), nn.MaxPool2d(2), _block(4 * w, 8 * w),
                           nn.AdaptiveMaxPool2d(1), nn.Flatten())
    return layers, 8 * w


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ENCODE_RESPONSES = 51_200  # images x atoms encoded at once: (chunk, K, H', W') about 150 MB
PATCHES_PER_IMAGE = 200  # dictionary patches drawn per image, up to `samples`


class Standardise(nn.Module):
    """Subtract a per-feature mean and divide by a standard deviation, both fitted on the
    labelled images' features and stored with the weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0) + 1e-3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class PatchEncoder(nn.Module):
    """Features learned without labels (Coates and Ng, 2011): every P x P patch, its brightness
    and contrast normalised and then whitened, is compared with K dictionary atoms found by
    spherical k-means on patches of all the images; responses beyond `alpha` are kept with
    their sign (2K channels), averaged over a pool x pool grid and its coarser halvings down
    to the whole image (a spatial pyramid), and square-rooted.
    (N, 3, S, S) floats in [0, 1] -> (N, 2K * (pool^2 + ... + 1))."""

    def __init__(self, atoms: int, patch: int, pool: int, *, alpha: float = 0.25):
        super().__init__()
        self.patch, self.pool, self.alpha = patch, pool, alpha
        self.register_buffer("filters", torch.zeros(atoms, 3, patch, patch))  # whitened atoms
        self.register_buffer("bias", torch.zeros(atoms))  # minus the atoms at the patch mean
        self.dim = 2 * atoms * sum(side * side for side in _pyramid(pool))

    def fit(self, images: torch.Tensor, *, generator: torch.Generator, samples: int = 50_000,
            iterations: int = 10, eps: float = 0.1) -> None:
        """Learn the whitening and the atoms from random patches of (N, 3, S, S) floats."""
        count = min(samples, PATCHES_PER_IMAGE * len(images))
        p = _normalise_patches(_random_patches(images, count, self.patch, generator))
        centre = p.mean(dim=0)
        values, vectors = torch.linalg.eigh(torch.cov((p - centre).T))
        whiten = vectors @ torch.diag(1 / torch.sqrt(values.clamp_min(0) + eps)) @ vectors.T
        z = (p - centre) @ whiten  # (samples, 3PP) whitened patches
        atoms = _spherical_kmeans(z, self.filters.shape[0], iterations, generator)
        combined = atoms @ whiten.T  # (K, 3PP): whitening folded into the filters
        self.filters.copy_(combined.reshape(self.filters.shape))
        self.bias.copy_(-(combined @ centre))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunk = max(1, ENCODE_RESPONSES // len(self.filters))
        return torch.cat([self._encode(x[s:s + chunk]) for s in range(0, len(x), chunk)]) \
            if len(x) else torch.zeros(0, self.dim)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        # written as few passes over the (B, K, H', W') responses as possible: they dominate.
        # Atoms with their mean removed see every patch minus its mean in one convolution.
        n = 3 * self.patch * self.patch
        x = x.contiguous(memory_format=torch.channels_last)
        box = torch.full((1, 3, self.patch, self.patch), 1 / n)
        mean, square = F.conv2d(x, box), F.conv2d(x * x, box)  # (B, 1, H', W') patch moments
        scale = torch.rsqrt((square - mean * mean).clamp_min(0) * n / (n - 1) + 0.01)
        centred = self.filters - self.filters.mean(dim=(1, 2, 3), keepdim=True)
        u = F.conv2d(x, centred).mul_(scale)  # z - bias
        bias = self.bias[None, :, None, None]
        on = F.adaptive_avg_pool2d((u + (bias - self.alpha)).clamp_min_(0), self.pool)
        off = F.adaptive_avg_pool2d(u.add_(bias + self.alpha).clamp_max_(0), self.pool).neg_()
        grid = torch.cat([on, off], dim=1)  # (B, 2K, pool, pool)
        levels = [grid]
        for side in _pyramid(self.pool)[1:]:
            levels.append(F.adaptive_avg_pool2d(levels[-1], side))
        return torch.cat([level.flatten(1) for level in levels], dim=1).sqrt_()


SPREAD_COMPONENTS = 256  # principal components the neighbour graph is built in
SPREAD_WHITEN = 0.5  # components divided by their singular value to this power (1: whitened)
SPREAD_POWER = 3  # edge weight = cosine similarity ** SPREAD_POWER: the closest count most
SPREAD_PRIOR = 0.5  # how much an unlabelled image's own prediction seeds the spreading
SPREAD_STEPS = 30
MAX_SPREAD_IMAGES = 10_000  # labelled, and unlabelled, images in the graph (seeded samples)


class NeighbourLabels(nn.Module):
    """Label spreading (Zhou et al., 2004) over the training images, labelled or not, kept for
    prediction. Training: the frozen features of every training image, projected on their
    principal components, are linked to their `k` most similar (cosine); labels spread along
    the links from the people's labels, each unlabelled image also seeded by the head's own
    prediction: F = spread * S F + (1 - spread) * seeds. Prediction: an image's probabilities
    are those of the same step taken from its `k` nearest training images' spread labels and
    its own prediction. An image that was itself a training image is not its own neighbour.
    Empty (and a no-op) until fitted."""

    def __init__(self, spread: float, k: int):
        super().__init__()
        self.spread, self.k = spread, k
        for name in ("centre", "basis", "points", "labels", "degree"):
            self.register_buffer(name, torch.zeros(0))

    @property
    def fitted(self) -> bool:
        return len(self.points) > 0

    def resize_like(self, state: dict, prefix: str) -> None:
        """Give the buffers the shapes saved in `state` (they depend on the training data)."""
        for name, _ in self.named_buffers():
            if prefix + name in state:
                setattr(self, name, torch.zeros_like(state[prefix + name]))

    def fit(self, features: torch.Tensor, seeds: torch.Tensor, *, seed: int) -> None:
        """(R, D) standardised features and (R, K) seeds: a person's label as one-hot, the
        head's probabilities times SPREAD_PRIOR for an unlabelled image. `seed`: the random
        projections of the principal components."""
        centre = features.mean(dim=0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, values, vectors = torch.svd_lowrank(
                features - centre, q=min(SPREAD_COMPONENTS, *features.shape), niter=3)
        basis = vectors / values.clamp_min(1e-6) ** SPREAD_WHITEN
        points = F.normalize((features - centre) @ basis, dim=1)
        rows, cols, weights = [], [], []
        for start in range(0, len(points), 2048):
            sim = points[start:start + 2048] @ points.T
            sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -1.0
            top, where = sim.topk(min(self.k, len(points) - 1), dim=1)
            rows.append(torch.arange(start, start + len(sim)).repeat_interleave(top.shape[1]))
            cols.append(where.flatten())
            weights.append(top.clamp_min(0).pow(SPREAD_POWER).flatten())
        rows, cols, weights = torch.cat(rows), torch.cat(cols), torch.cat(weights)
        graph = torch.sparse_coo_tensor(torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
                                        torch.cat([weights, weights]), (len(points),) * 2,
                                        check_invariants=True).coalesce()
        degree = torch.sparse.sum(graph, dim=1).to_dense().clamp_min(1e-12)
        scale = degree.rsqrt()
        index = graph.indices()
        graph = torch.sparse_coo_tensor(index, graph.values() * scale[index[0]] * scale[index[1]],
                                        graph.shape, check_invariants=True)
        spread = seeds.clone()
        for _ in range(SPREAD_STEPS):
            spread = self.spread * torch.sparse.mm(graph, spread) + (1 - self.spread) * seeds
        self.centre, self.basis, self.points = centre, basis, points
        self.labels = spread / spread.sum(dim=1, keepdim=True).clamp_min(1e-12)
        self.degree = degree

    def forward(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """(B, K) probabilities of images with (B, D) standardised features, from the head's
        (B, K) `probs` and their neighbours' spread labels."""
        if not self.fitted:
            return probs
        points = F.normalize((features - self.centre) @ self.basis, dim=1)
        sim = points @ self.points.T
        sim[sim > 1 - 1e-5] = -1.0  # the image itself, when it was a training image
        top, where = sim.topk(min(self.k, len(self.points)), dim=1)
        weights = top.clamp_min(0).pow(SPREAD_POWER)
        own = weights.sum(dim=1, keepdim=True)
        steps = weights / (own * self.degree[where]).sqrt().clamp_min(1e-12)
        spread = (self.spread * (steps[..., None] * self.labels[where]).sum(dim=1)
                  + (1 - self.spread) * SPREAD_PRIOR * probs)
        spread = spread / spread.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.where(own > 0, spread, probs)


def _pyramid(pool: int) -> list[int]:
    """Grid sides from `pool` halving while even, ending at 1: 4 -> [4, 2, 1], 3 -> [3, 1]."""
    sides = [pool]
    while sides[-1] % 2 == 0 and sides[-1] > 1:
        sides.append(sides[-1] // 2)
    return sides if sides[-1] == 1 else sides + [1]


def _random_patches(images: torch.Tensor, count: int, size: int,
                    generator: torch.Generator) -> torch.Tensor:
    """(count, 3 * size * size) patches at random images and places."""
    n, _, height, width = images.shape
    which = torch.randint(0, n, (count,), generator=generator)
    top = torch.randint(0, height - size + 1, (count,), generator=generator)
    left = torch.randint(0, width - size + 1, (count,), generator=generator)
    steps = torch.arange(size)
    rows = (top[:, None] + steps)[:, None, :, None]  # (count, 1, size, 1)
    cols = (left[:, None] + steps)[:, None, None, :]  # (count, 1, 1, size)
    channels = torch.arange(3)[None, :, None, None]
    return images[which[:, None, None, None], channels, rows, cols].reshape(count, -1)


def _normalise_patches(p: torch.Tensor) -> torch.Tensor:
    p = p - p.mean(dim=1, keepdim=True)
    return p / torch.sqrt(p.var(dim=1, keepdim=True) + 0.01)


def _spherical_kmeans(z: torch.Tensor, k: int, iterations: int,
                      generator: torch.Generator) -> torch.Tensor:
    """(k, D) unit atoms: each the normalised mean of the points closest to it in angle."""
    atoms = z[torch.randperm(len(z), generator=generator)[:k]]
    atoms = atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-8)
    for _ in range(iterations):
        nearest = (z @ atoms.T).argmax(dim=1)
        summed = torch.zeros_like(atoms).index_add_(0, nearest, z)
        atoms = summed + 1e-3 * atoms  # an atom nobody chose keeps its place
        atoms = atoms / atoms.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return atoms


def _resnet18_features() -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.fc = nn.Identity()
    return net, 512


def _features(config: MicroConfig) -> tuple[nn.Module, int]:
    if config.arch == "cnn":
        return _cnn_features(config.width)
    if config.arch == "patches":
        encoder = PatchEncoder(config.atoms, config.patch, config.pool)
        return nn.Sequential(encoder, Standardise(encoder.dim)), encoder.dim
    trunk, dim = _resnet18_features()
    return nn.Sequential(trunk, Standardise(dim)), dim


class MicroNet(nn.Module):
    """Input normalisation, a feature extractor and a linear head: (N, 3, S, S) uint8 -> (N, K)
    logits."""

    def __init__(self, config: MicroConfig):
        super().__init__()
        if config.arch not in ARCHITECTURES:
            raise MicroModelError(f"unknown architecture {config.arch!r}: choose one of "
                                  f"{', '.join(ARCHITECTURES)}")
        self.config = config
        self.features, dim = _features(config)
        self.head = nn.Linear(dim, len(config.classes))
        self.neighbours = NeighbourLabels(config.spread, config.neighbours)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config.arch == "resnet18" else ((0,) * 3, (1,) * 3)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1))

    @property
    def frozen_features(self) -> bool:
        """Features fixed before the head is fitted (patches, a pretrained backbone)."""
        return self.config.arch != "cnn"

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) uint8 -> (N, D) features."""
        return self.features((pixels.float() / 255 - self.mean) / self.std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(pixels))


# ---------------------------------------------------------------- checkpoints


def save_micromodel(model: MicroNet, path: str | Path) -> Path:
    """Write weights and config to `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(model.config),
                "state": model.state_dict()}, path)
    return path


def _read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MicroModelError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MicroModelError(f"weights file {path} is not a torch checkpoint: {err}") from err


def load_micromodel(path: str | Path) -> MicroNet:
    """The model saved at `path`, in eval mode."""
    saved = _read_checkpoint(path)
    if not isinstance(saved, dict) or "config" not in saved or "state" not in saved:
        raise MicroModelError(f"{path} is not a Sieve micro-model checkpoint (no config/state)")
    model = MicroNet(MicroConfig(**saved["config"]))
    model.neighbours.resize_like(saved["state"], "neighbours.")
    model.load_state_dict({**model.state_dict(), **saved["state"]})  # older files: no spreading
    return model.eval()


def _load_backbone(model: MicroNet, path: str | Path) -> None:
    """Start the features from a file: a Sieve checkpoint of the same architecture (its
    features, not its head), or a torchvision resnet18 state dict (e.g. resnet18-f37072fd.pth)
    for arch 'resnet18'."""
    saved = _read_checkpoint(path)
    if isinstance(saved, dict) and "state" in saved and "config" in saved:
        if saved["config"].get("arch") != model.config.arch:
            raise MicroModelError(f"weights file {path} holds a {saved['config'].get('arch')!r} "
                                  f"micro-model, not {model.config.arch!r}")
        target = model.features
        state = {k[len("features."):]: v for k, v in saved["state"].items()
                 if k.startswith("features.")}
    elif model.config.arch == "resnet18" and isinstance(saved, dict):
        target = model.features[0]
        state = {k: v for k, v in saved.items() if not k.startswith("fc.")}
    else:
        raise MicroModelError(f"weights file {path} is not a Sieve micro-model checkpoint; "
                              "a plain state dict is only read for arch 'resnet18'")
    try:
        missing, unexpected = target.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that do not match
        raise MicroModelError(f"weights file {path} does not fit a {model.config.arch!r} "
                              f"backbone: {str(err).splitlines()[0]}") from err
    if missing or unexpected:
        raise MicroModelError(
            f"weights file {path} does not fit a {model.config.arch!r} backbone: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]})")


# ---------------------------------------------------------------- training


def augment_batch(pixels: torch.Tensor, *, generator: torch.Generator, hflip: bool = True,
                  shift: float = 0.125, scale: float = 0.1, colour: float = 0.2) -> torch.Tensor:
    """Randomly flipped, shifted (up to `shift` of the side), scaled and colour-jittered copies
    of (N, 3, S, S) float images in [0, 1]; borders are reflected."""
    n = pixels.shape[0]
    rand = torch.rand(n, 7, generator=generator)  # (N, 7) uniform draws per image
    flip = torch.where(rand[:, 0] < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    zoom = 1 + scale * (2 * rand[:, 1] - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = zoom * flip, zoom
    theta[:, :, 2] = 2 * shift * (2 * rand[:, 2:4] - 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, padding_mode="reflection", align_corners=False)
    brightness = 1 + colour * (2 * rand[:, 4] - 1)
    contrast = 1 + colour * (2 * rand[:, 5] - 1)
    saturation = 1 + colour * (2 * rand[:, 6] - 1)
    grey = out.mean(dim=1, keepdim=True)  # (N, 1, S, S)
    out = grey + (out - grey) * saturation[:, None, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = mean + (out - mean) * contrast[:, None, None, None]
    return (out * brightness[:, None, None, None]).clamp(0, 1)


def _as_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise MicroModelError(f"images must be an (N, H, W, 3) uint8 array, got {images.shape} "
                              f"{images.dtype}: use load_images")
    if images.shape[1:3] != (size, size):
        raise MicroModelError(f"images are {images.shape[2]}x{images.shape[1]} but the model "
                              f"takes {size}x{size}: load them with load_images(size={size})")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _check_labels(labels, config: MicroConfig, *, min_per_class: int) -> np.ndarray:
    labels = np.asarray(labels)
    k = len(config.classes)
    if k < 2:
        raise MicroModelError(f"a classifier needs at least two classes, got {list(config.classes)}"
                              " (to find more of one class, train it against the rest)")
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise MicroModelError(f"labels must be class indices 0..{k - 1}")
    counts = np.bincount(labels.astype(np.int64), minlength=k)
    few = [f"{config.classes[c]!r} ({counts[c]})" for c in range(k) if counts[c] < min_per_class]
    if few:
        raise MicroModelError(f"too few labelled images for class {', '.join(few)}: at least "
                              f"{min_per_class} per class are needed")
    return labels.astype(np.int64)


def _new_model(config: MicroConfig, x: torch.Tensor, weights: str | Path | None,
               generator: torch.Generator) -> MicroNet:
    """A model ready to train: seeded initial weights, a pretrained backbone or a patch
    dictionary learned from `x` (every image, labelled or not), input statistics of `x`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MicroNet(config)
    if weights is not None:
        _load_backbone(model, weights)
    elif config.arch == "resnet18":
        raise MicroModelError("arch 'resnet18' needs a pretrained weights file (--weights), "
                              "e.g. torchvision's resnet18-f37072fd.pth")
    if config.arch == "cnn":
        floats = x.float() / 255
        model.mean.copy_(floats.mean(dim=(0, 2, 3), keepdim=True))
        model.std.copy_(floats.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))
    elif config.arch == "patches" and weights is None:
        model.features[0].fit(x.float() / 255, generator=generator)
    return model


def train_micromodel(images: np.ndarray, labels, *, config: MicroConfig,
                     unlabelled: np.ndarray | None = None, weights: str | Path | None = None,
                     progress: Callable | None = None,
                     on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainedModel:
    """Train on (N, S, S, 3) uint8 `images` with class indices `labels` (N,).

    `unlabelled` images (M, S, S, 3) help without labels: the patch dictionary is learned from
    them too, and for 'cnn' with `config.pseudo_label` > 0 they train from half-way on,
    labelled by the model itself where it is at least that sure. `weights`: a pretrained
    backbone file. `progress(done, total, message)` is called as training advances,
    `on_epoch(record)` after each epoch.
    """
    torch.set_num_threads(config.threads)
    y = torch.from_numpy(_check_labels(labels, config, min_per_class=MIN_PER_CLASS))
    x = _as_tensor(images, config.image_size)
    u = (_as_tensor(unlabelled, config.image_size) if unlabelled is not None and len(unlabelled)
         else None)
    started = time.monotonic()
    generator = torch.Generator().manual_seed(config.seed)
    model = _new_model(config, x if u is None else torch.cat([x, u]), weights, generator)
    fit = _fit_frozen if model.frozen_features else _train_sgd
    history = fit(model, x, y, u, generator=generator, progress=progress, on_epoch=on_epoch,
                  started=started)
    model.eval()
    planned = math.ceil(config.iterations / HEAD_CHUNK) if model.frozen_features else config.epochs
    return TrainedModel(model, history, time.monotonic() - started,
                        stopped_by_time=len(history) < planned)


HEAD_CHUNK = 10  # L-BFGS iterations per recorded epoch


MAX_TRAIN_VIEWS = 20_000  # shifted training copies only while images x views stay below


def _shifted(x: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """`x` moved `shift` pixels down, up, right and left, the border reflected."""
    s = shift
    padded = F.pad(x.float(), (s, s, s, s), mode="reflect").to(x.dtype)
    h, w = x.shape[2], x.shape[3]
    return [padded[:, :, s + dy:s + dy + h, s + dx:s + dx + w]
            for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s))]


@torch.no_grad()
def _raw_features(model: MicroNet, x: torch.Tensor, *, training: bool = False) -> torch.Tensor:
    """(C, N, D) frozen features of views of `x`: the image and (hflip) its mirror; for
    training also the shifted copies of both (config.shifts), while N x C <= MAX_TRAIN_VIEWS."""
    config = model.config
    views = [x]
    if training and config.shifts and len(x) * 5 * (1 + config.hflip) <= MAX_TRAIN_VIEWS:
        views += _shifted(x, config.shifts)
    if config.hflip:
        views += [v.flip(3) for v in views]
    return torch.stack([model.features[0]((v.float() / 255 - model.mean) / model.std)
                        for v in views])


def _fit_head(model: MicroNet, raw: torch.Tensor, y: torch.Tensor, *, progress=None,
              on_epoch=None, started: float) -> list:
    """Fit the standardisation and the linear head on frozen (C, N, D) features by full-batch
    L-BFGS with an L2 penalty on the weights. `raw` is standardised in place."""
    config = model.config
    chunks = math.ceil(config.iterations / HEAD_CHUNK)
    standardise = model.features[1]
    feats = raw.reshape(-1, raw.shape[-1])
    standardise.fit(feats)
    feats.sub_(standardise.mean).div_(standardise.std)  # in place: `raw` can be gigabytes
    targets = y.repeat(raw.shape[0])
    optimizer = torch.optim.LBFGS(model.head.parameters(), lr=1, max_iter=HEAD_CHUNK,
                                  history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model.head(feats), targets) + config.l2 * model.head.weight.pow(2).sum()
        loss.backward()
        return loss

    history = []
    for epoch in range(1, chunks + 1):
        optimizer.step(closure)
        with torch.no_grad():
            logits = model.head(feats)
            record = EpochRecord(epoch, float(F.cross_entropy(logits, targets)),
                                 float((logits.argmax(1) == targets).float().mean()),
                                 time.monotonic() - started)
        history.append(_report(record, progress, on_epoch, chunks))
        if record.seconds >= config.seconds:
            break
    return history


@torch.no_grad()
def _head_proba(model: MicroNet, raw: torch.Tensor) -> np.ndarray:
    """(N, K) probabilities from (C, N, D) frozen features, averaged over the C views."""
    probs = torch.stack([F.softmax(model.head(model.features[1](view)), dim=1) for view in raw])
    return probs.mean(dim=0).numpy().astype(np.float64)


def _fit_frozen(model: MicroNet, x, y, u, *, generator, progress, on_epoch, started) -> list:
    if progress:
        progress(0, math.ceil(model.config.iterations / HEAD_CHUNK), "features")
    raw = _raw_features(model, x, training=True)
    history = _fit_head(model, raw, y, progress=progress, on_epoch=on_epoch, started=started)
    if u is not None and len(u) and model.config.spread > 0:
        _fit_neighbours(model, raw, y, u, generator=generator, progress=progress, started=started)
    return history


SPREAD_TIME_SHARE = 0.85  # unlabelled images' features stop at this share of config.seconds


def _sample(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` of range(n), seeded, in increasing order."""
    return torch.randperm(n, generator=generator)[:size].sort().values


def _features_and_head(model: MicroNet, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, D) standardised features, (B, K) head probabilities) of uint8 images, each the mean
    over the image and, when the model was trained with flips, its mirror."""
    features = model.embed(chunk)
    probs = F.softmax(model.head(features), dim=1)
    if model.config.hflip:
        mirrored = model.embed(chunk.flip(3))
        features = (features + mirrored) / 2
        probs = (probs + F.softmax(model.head(mirrored), dim=1)) / 2
    return features, probs


@torch.no_grad()
def _fit_neighbours(model: MicroNet, raw: torch.Tensor, y: torch.Tensor, u: torch.Tensor, *,
                    generator, progress, started: float) -> None:
    """Label spreading over up to MAX_SPREAD_IMAGES labelled images (`raw`: their standardised
    training views) and up to as many unlabelled ones (fewer when the time limit comes first).
    The caps bound the graph's cost (tens of seconds) when there are tens of thousands."""
    config = model.config
    views = [0, raw.shape[0] // 2] if config.hflip else [0]  # each image and its mirror
    if len(y) > MAX_SPREAD_IMAGES:
        keep = _sample(len(y), MAX_SPREAD_IMAGES, generator)
        raw, y = raw[:, keep], y[keep]
    labelled = raw[views].mean(dim=0)
    if len(u) > MAX_SPREAD_IMAGES:
        u = u[_sample(len(u), MAX_SPREAD_IMAGES, generator)]
    features, probs = [], []
    for start in range(0, len(u), 500):
        if time.monotonic() - started >= SPREAD_TIME_SHARE * config.seconds:
            break
        plain, prob = _features_and_head(model, u[start:start + 500])
        features.append(plain)
        probs.append(prob)
        if progress:
            progress(min(start + 500, len(u)), len(u), "spreading labels to unlabelled images")
    if not features:
        return
    seeds = torch.cat([F.one_hot(y, len(config.classes)).float(),
                       SPREAD_PRIOR * torch.cat(probs)])
    model.neighbours.fit(torch.cat([labelled, torch.cat(features)]), seeds, seed=config.seed)


def _report(record: EpochRecord, progress, on_epoch, epochs: int) -> EpochRecord:
    if progress:
        progress(record.epoch, epochs, f"epoch {record.epoch}/{epochs}: loss {record.loss:.3f}")
    if on_epoch:
        on_epoch(record)
    return record


MIN_PER_CLASS = 2  # a class with fewer labelled images cannot be learned or evaluated
PSEUDO_WEIGHT = 0.5  # loss weight of a pseudo-labelled image relative to a person's label


@dataclass
class _Schedule:
    """Cosine learning rate over max(step share, time share): deterministic while the step
    budget binds, and annealed to zero in time when the clock binds first."""

    total_steps: int
    seconds: float
    lr: float
    started: float

    def progress(self, step: int) -> float:
        elapsed = time.monotonic() - self.started
        return max(step / max(self.total_steps, 1), elapsed / max(self.seconds, 1e-9))

    def rate(self, step: int) -> float:
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(self.progress(step), 1.0)))


class _Batches:
    """Endless reshuffled batches of indices into a pool, from one seeded generator."""

    def __init__(self, size: int, batch: int, generator: torch.Generator):
        self.size, self.batch, self.generator = size, batch, generator
        self.order, self.at = torch.randperm(size, generator=generator), 0

    def next(self) -> torch.Tensor:
        if self.at + self.batch > self.size:
            self.order, self.at = torch.randperm(self.size, generator=self.generator), 0
        self.at += self.batch
        return self.order[self.at - self.batch:self.at]


def _train_step(model: MicroNet, optimizer, x: torch.Tensor, y: torch.Tensor,
                weight: torch.Tensor, generator: torch.Generator) -> tuple[float, float]:
    config = model.config
    floats = x.float() / 255
    if config.augment:
        floats = augment_batch(floats, generator=generator, hflip=config.hflip)
    logits = model.head(model.features((floats - model.mean) / model.std))
    losses = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing, reduction="none")
    loss = (losses * weight).sum() / weight.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), (logits.detach().argmax(dim=1) == y).float().mean().item()


def _with_pseudo_labels(model: MicroNet, x, y, u) -> tuple[torch.Tensor, ...]:
    """The labelled images plus the unlabelled ones the model is at least
    `config.pseudo_label` sure of, with its class for them at half weight."""
    probs = torch.from_numpy(predict_proba(model, u))
    model.train()
    confidence, predicted = probs.max(dim=1)
    keep = confidence >= model.config.pseudo_label
    weight = torch.cat([torch.ones(len(x)), torch.full((int(keep.sum()),), PSEUDO_WEIGHT)])
    return torch.cat([x, u[keep]]), torch.cat([y, predicted[keep]]), weight


def _train_sgd(model: MicroNet, x, y, u, *, generator, progress, on_epoch, started) -> list:
    """Train the whole network by SGD with momentum on augmented batches."""
    config = model.config
    batch = min(config.batch_size, len(x))
    per_epoch = max(1, len(x) // batch)
    schedule = _Schedule(config.epochs * per_epoch, config.seconds, config.lr, started)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay)
    pool, targets, weight = x, y, torch.ones(len(x))
    batches, history, step = _Batches(len(pool), batch, generator), [], 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        if u is not None and config.pseudo_label > 0 and epoch == config.epochs // 2 + 1:
            pool, targets, weight = _with_pseudo_labels(model, x, y, u)
            batches = _Batches(len(pool), batch, generator)
        sums = np.zeros(2)
        for _ in range(per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = schedule.rate(step)
            index = batches.next()
            sums += _train_step(model, optimizer, pool[index], targets[index], weight[index],
                                generator)
            step += 1
        record = EpochRecord(epoch, sums[0] / per_epoch, sums[1] / per_epoch,
                             time.monotonic() - started)
        history.append(_report(record, progress, on_epoch, config.epochs))
        if schedule.progress(step) >= 1:
            break
    return history


@torch.no_grad()
def predict_proba(model: MicroNet, images, *, batch_size: int = 500) -> np.ndarray:
    """(N, K) class probabilities of (N, S, S, 3) uint8 images (or an (N, 3, S, S) uint8
    tensor), averaged with the mirror image's when the model was trained with flips, then
    spread from the nearest training images when the model learned from unlabelled ones
    (`NeighbourLabels`). Each image's result depends on that image alone, not on the batch."""
    x = images if isinstance(images, torch.Tensor) else _as_tensor(images, model.config.image_size)
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        out.append(model.neighbours(*_features_and_head(model, x[start:start + batch_size])))
    k = len(model.config.classes)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, k))


def stratified_folds(labels, folds: int, *, seed: int) -> np.ndarray:
    """(N,) fold of each image: every class dealt round-robin over `folds` in a seeded order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        fold[rng.permutation(members)] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # the next class starts where this one stopped
    return fold


def cross_val_proba(images: np.ndarray, labels, *, config: MicroConfig, folds: int = 5,
                    unlabelled: np.ndarray | None = None, weights: str | Path | None = None,
                    progress: Callable | None = None) -> np.ndarray:
    """(N, K) out-of-sample probabilities: each image predicted by a model trained on the other
    folds, never on its own label. With frozen features ('patches', 'resnet18') the features
    are computed once (the dictionary learns from pixels, not labels) and one head is fitted
    per fold; a 'cnn' is trained once per fold."""
    if folds < 2:
        raise MicroModelError(f"folds must be 2 or more, got {folds}")
    torch.set_num_threads(config.threads)
    y = torch.from_numpy(_check_labels(labels, config, min_per_class=folds))
    fold = stratified_folds(y.numpy(), folds, seed=config.seed)
    probs = np.zeros((len(y), len(config.classes)))
    if config.arch == "cnn":
        for f in range(folds):
            train, test = fold != f, fold == f
            trained = train_micromodel(images[train], y.numpy()[train], unlabelled=unlabelled,
                                       config=replace(config, seed=config.seed + f), weights=weights)
            probs[test] = predict_proba(trained.model, images[test])
            if progress:
                progress(f + 1, folds, f"fold {f + 1}/{folds}")
        return probs
    x = _as_tensor(images, config.image_size)
    u = _as_tensor(unlabelled, config.image_size) if unlabelled is not None and len(unlabelled) else None
    generator = torch.Generator().manual_seed(config.seed)
    model = _new_model(config, x if u is None else torch.cat([x, u]), weights, generator)
    if progress:
        progress(0, folds, "features")
    raw = _raw_features(model, x)  # (C, N, D)
    for f in range(folds):
        train, test = torch.from_numpy(fold != f), torch.from_numpy(fold == f)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + f)
            model.head.reset_parameters()
        _fit_head(model, raw[:, train], y[train], started=time.monotonic())
        probs[test.numpy()] = _head_proba(model, raw[:, test])
        if progress:
            progress(f + 1, folds, f"fold {f + 1}/{folds}")
    return probs
