"""Image embeddings for near duplicates that perceptual hashes miss (re-crops, small shifts,
colour and contrast edits): unsupervised patch features learned on the dataset itself, reduced
and whitened by PCA, L2-normalised, and searched exactly by cosine similarity.

Entry points: `dataset_embeddings(con, dataset)` (computed once per dataset and image content,
cached in a file beside the catalog), `embed_pixels(pixels)`, and the search
`search_above(vectors, min_similarity=...)` → `hashsearch.ValuePairs` / `find_pairs_above`.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core import catalog
from core.hashsearch import ValuePairs, expand_pairs
from core.micromodel import PatchEncoder, load_images

CACHE_FORMAT = 1
ENCODE_BATCH = 1000  # images encoded between progress reports
IMAGES_PER_DIM = 10  # images needed per whitened PCA dimension
SEARCH_BLOCK = 1024  # rows per similarity block: a (1024, N) float32 block, 245 MB at N = 60,000


@dataclass(frozen=True)
class EmbeddingConfig:
    """How vectors are made; part of the cache key, so changing a field recomputes them."""

    atoms: int = 32  # dictionary atoms of the patch encoder (2 * atoms channels)
    patch: int = 6  # patch side in pixels
    pool: int = 2  # responses pooled over a pool x pool grid and the whole image
    dims: int = 64  # PCA dimensions kept, each scaled to unit variance (whitened)
    image_size: int = 32  # every image squashed to image_size x image_size first
    fit_images: int = 10_000  # images the dictionary and the PCA are learned from
    seed: int = 0


@dataclass(frozen=True)
class Embeddings:
    """One L2-normalised vector per readable image of a dataset (excluded ones included)."""

    image_ids: np.ndarray  # (N,) int64 catalog image ids
    vectors: np.ndarray  # (N, D) float16 unit vectors


# ---------------------------------------------------------------- vectors


@torch.no_grad()
def embed_pixels(pixels: np.ndarray, *, config: EmbeddingConfig = EmbeddingConfig(),
                 progress: Callable | None = None) -> np.ndarray:
    """(N, D) float32 unit vectors of (N, S, S, 3) uint8 images. The encoder and the PCA are
    fitted on these images (at most `config.fit_images` of them, drawn with `config.seed`)."""
    n = len(pixels)
    if n < 2:
        return np.ones((n, 1), np.float32)  # nothing to tell apart
    generator = torch.Generator().manual_seed(config.seed)
    sample = np.sort(np.random.default_rng(config.seed).permutation(n)[:config.fit_images])
    encoder = PatchEncoder(config.atoms, config.patch, config.pool)
    encoder.fit(_as_floats(pixels[sample]), generator=generator)
    raw = torch.cat([_encode(encoder, pixels, start, n, progress)
                     for start in range(0, n, ENCODE_BATCH)])  # (N, F)
    projection = _whitening(raw[torch.from_numpy(sample)], config.dims)
    return torch.nn.functional.normalize(projection(raw), dim=1).numpy()


def _as_floats(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S)


def _encode(encoder: PatchEncoder, pixels: np.ndarray, start: int, n: int, progress) -> torch.Tensor:
    features = encoder(_as_floats(pixels[start:start + ENCODE_BATCH]))
    if progress:
        progress(min(start + ENCODE_BATCH, n), n, "embedding images")
    return features


def _whitening(features: torch.Tensor, dims: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> its top-`dims` principal components of `features`, each divided by its standard
    deviation: every direction of variation counts alike in the cosine. Components need about
    IMAGES_PER_DIM images each (whitened on too few, any N images sit at equal distances); with
    fewer than 2 * IMAGES_PER_DIM images the raw features are kept."""
    keep = min(dims, len(features) // IMAGES_PER_DIM, features.shape[1])
    if keep < 2:
        return lambda x: x
    centre = features.mean(dim=0)
    values, vectors = torch.linalg.eigh(torch.cov((features - centre).T.double()))
    if values[-1] <= 1e-12:  # all images alike: nothing to whiten
        return lambda x: x
    values, vectors = values[-keep:].clamp_min(values[-1] * 1e-6), vectors[:, -keep:]
    scale = (vectors / values.sqrt()).float()  # (F, keep)
    return lambda x: (x - centre) @ scale


# ---------------------------------------------------------------- per dataset, cached


def dataset_embeddings(con, dataset: catalog.Dataset, *, config: EmbeddingConfig = EmbeddingConfig(),
                       workers: int = 2, progress: Callable | None = None) -> Embeddings:
    """The dataset's embeddings: read from the cache file when the images are unchanged,
    else computed (reading every image: about a minute for 60,000 CIFAR images) and saved."""
    cached = cached_embeddings(con, dataset, config=config)
    if cached is not None:
        return cached
    table = catalog.hash_table(con, dataset.dataset_id, include_excluded=True)
    paths = [os.path.join(dataset.root, p) for p in table["path"]]
    pixels = load_images(paths, size=config.image_size, workers=workers, progress=progress)
    found = Embeddings(table["image_id"].to_numpy(np.int64),
                       embed_pixels(pixels, config=config, progress=progress).astype(np.float16))
    _save(cache_file(con, dataset, config=config, table=table), found)
    return found


def cached_embeddings(con, dataset: catalog.Dataset, *,
                      config: EmbeddingConfig = EmbeddingConfig()) -> Embeddings | None:
    """The saved embeddings of the dataset's current images, or None if not computed yet."""
    path = cache_file(con, dataset, config=config)
    if path is None or not path.exists():
        return None
    with np.load(path) as saved:
        return Embeddings(saved["image_ids"], saved["vectors"])


def cache_file(con, dataset: catalog.Dataset, *, config: EmbeddingConfig = EmbeddingConfig(),
               table: pd.DataFrame | None = None) -> Path | None:
    """`<catalog>.embeddings/dataset-<id>-<key>.npz`, the key a digest of the images (ids and
    content sha256) and the config; None for an in-memory catalog."""
    where = catalog.catalog_file(con)
    if not where:
        return None
    table = catalog.hash_table(con, dataset.dataset_id, include_excluded=True) if table is None else table
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, asdict(config)]).encode())
    digest.update(table["image_id"].to_numpy(np.int64).tobytes())
    digest.update("\n".join(table["sha256"].astype(str)).encode())
    return Path(f"{where}.embeddings") / f"dataset-{dataset.dataset_id}-{digest.hexdigest()[:16]}.npz"


def _save(path: Path | None, found: Embeddings) -> None:
    """Write atomically (a reader never sees half a file) and drop the dataset's older files;
    a read-only folder means no cache."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, image_ids=found.image_ids, vectors=found.vectors)
        os.replace(partial, path)
        prefix = path.name.rsplit("-", 1)[0]  # dataset-<id>
        for older in path.parent.glob(f"{prefix}-*.npz"):
            if older != path:
                older.unlink(missing_ok=True)
    except OSError:
        pass


def vectors_for(found: Embeddings, image_ids) -> np.ndarray:
    """(len(image_ids), D) vectors of these images, in that order."""
    position = pd.Index(found.image_ids).get_indexer(np.asarray(image_ids, dtype=np.int64))
    if (position < 0).any():
        missing = np.asarray(image_ids)[position < 0][:5].tolist()
        raise ValueError(f"no embedding for images {missing}: recompute the dataset's embeddings")
    return found.vectors[position]


# ---------------------------------------------------------------- search


def search_above(vectors: np.ndarray, *, min_similarity: float) -> ValuePairs:
    """Every pair of distinct rows of `vectors` ((N, D) unit vectors) with cosine similarity >=
    `min_similarity`, as pairs of unique vectors: identical rows are merged first, so 10,000
    copies of one image cost one vector. Exact: blocked matrix products over the upper triangle."""
    vectors = _check_vectors(vectors)
    if not -1.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be in -1..1, got {min_similarity}")
    inverse = pd.factorize(pd.Series([row.tobytes() for row in vectors], dtype=object))[0]  # equal bytes
    first = np.unique(inverse, return_index=True)[1]  # (U,) first row of each distinct vector
    values, counts = vectors[first].astype(np.float32), np.bincount(inverse)
    parts = [_block_pairs(values, start, min_similarity) for start in range(0, len(values), SEARCH_BLOCK)]
    a, b = (np.concatenate(p) for p in zip(*parts)) if parts else (np.empty(0, np.int64),) * 2
    return ValuePairs(a, b, inverse.reshape(-1).astype(np.int64), counts.astype(np.int64))


def _block_pairs(values: np.ndarray, start: int, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b), a < b, between values[start:start + SEARCH_BLOCK] and values[start:]."""
    block = values[start:start + SEARCH_BLOCK]
    similarity = block @ values[start:].T  # (rows, U - start)
    rows, cols = np.nonzero(similarity >= np.float32(min_similarity))
    keep = cols > rows
    return rows[keep].astype(np.int64) + start, cols[keep].astype(np.int64) + start


def find_pairs_above(vectors: np.ndarray, *, min_similarity: float) -> pd.DataFrame:
    """Every pair of rows with cosine similarity >= `min_similarity`, each once. Columns: `i`,
    `j` (int64 row positions, i < j, sorted), `similarity` (float32)."""
    vectors = _check_vectors(vectors)
    i, j = expand_pairs(search_above(vectors, min_similarity=min_similarity))
    return pd.DataFrame({"i": i, "j": j, "similarity": pair_similarity(vectors, i, j)})


def pair_similarity(vectors: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(T,) float32 cosine similarity of rows i[k] and j[k] of unit `vectors`, in batches."""
    out = np.empty(i.size, np.float32)
    for lo in range(0, i.size, 1 << 18):
        hi = lo + (1 << 18)
        a, b = vectors[i[lo:hi]].astype(np.float32), vectors[j[lo:hi]].astype(np.float32)
        out[lo:hi] = np.einsum("kd,kd->k", a, b)
    return out


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.dtype.kind != "f":
        described = f"a {vectors.ndim}-d {vectors.dtype} array" if isinstance(vectors, np.ndarray) \
            else type(vectors).__name__
        raise TypeError(f"vectors must be a 2-d float array (N, D), got {described}")
    return vectors
