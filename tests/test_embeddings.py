"""core.embeddings: vectors of edited copies sit closer than unrelated images, the exact cosine
search against brute force, identical vectors merged, the cache file beside the catalog."""
import numpy as np
import pytest
from PIL import ImageEnhance

from core import catalog, embeddings
from core.hashsearch import count_pairs, summarise_pairs
from core.ingest import ingest
from tests.fixtures import encode, scene

SMALL = embeddings.EmbeddingConfig(atoms=8, dims=16, fit_images=200)


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB").resize((32, 32))) for im in images])


def test_embed_pixels_unit_vectors_and_edits_stay_closest():
    originals = [scene(32, 32, seed=k) for k in range(40)]
    edited = [ImageEnhance.Brightness(originals[0]).enhance(1.2),
              originals[1].crop((1, 1, 31, 31)).resize((32, 32))]
    vectors = embeddings.embed_pixels(_pixels(originals + edited), config=SMALL)
    assert vectors.shape == (42, 4) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    assert similarity[40].argmax() == 0 and similarity[41].argmax() == 1


def test_embed_pixels_same_seed_same_vectors():
    pixels = _pixels([scene(32, 32, seed=k) for k in range(20)])
    first = embeddings.embed_pixels(pixels, config=SMALL)
    assert np.array_equal(first, embeddings.embed_pixels(pixels, config=SMALL))


def test_embed_pixels_whitens_only_with_enough_images():
    pixels = _pixels([scene(32, 32, seed=k) for k in range(45)])
    assert embeddings.embed_pixels(pixels[:19], config=SMALL).shape == (19, 80)  # 2 x 8 x (4 + 1)
    assert embeddings.embed_pixels(pixels, config=SMALL).shape == (45, 4)  # 45 // 10 components


def test_embed_pixels_identical_images_give_identical_finite_vectors():
    vectors = embeddings.embed_pixels(_pixels([scene(32, 32, seed=4)] * 30), config=SMALL)
    assert np.isfinite(vectors).all() and (vectors == vectors[0]).all()


def test_embed_pixels_fewer_than_two_images():
    assert embeddings.embed_pixels(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 1)
    assert embeddings.embed_pixels(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 1)


def _brute_pairs(vectors: np.ndarray, threshold: float) -> set:
    similarity = vectors.astype(np.float32) @ vectors.astype(np.float32).T
    i, j = np.nonzero(np.triu(similarity >= np.float32(threshold), 1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("block", [1024, 7])
def test_find_pairs_above_equals_brute_force(monkeypatch, block):
    monkeypatch.setattr(embeddings, "SEARCH_BLOCK", block)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    vectors[50:60] = vectors[5]  # ten copies of row 5
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    found = embeddings.find_pairs_above(vectors, min_similarity=0.8)
    assert set(zip(found["i"].tolist(), found["j"].tolist())) == _brute_pairs(vectors, 0.8)
    assert (found["i"] < found["j"]).all() and (found["similarity"] >= 0.8 - 1e-3).all()


def test_search_above_merges_identical_vectors():
    vectors = np.tile(np.array([[0.6, 0.8]], np.float16), (10_000, 1))
    found = embeddings.search_above(vectors, min_similarity=0.99)
    assert found.counts.tolist() == [10_000] and found.a.size == 0
    assert count_pairs(found) == 10_000 * 9_999 // 2
    split = np.r_[np.zeros(9_998, np.int64), [1, 1]]
    summary = summarise_pairs(found, split)
    assert summary.pairs[0, 1] == 2 * 9_998 and summary.with_partner[1, 0] == 2


def test_search_above_rejects_bad_input():
    with pytest.raises(TypeError, match="2-d float array"):
        embeddings.search_above(np.zeros(4, np.float32), min_similarity=0.9)
    with pytest.raises(ValueError, match="min_similarity"):
        embeddings.search_above(np.zeros((2, 2), np.float32), min_similarity=1.5)


def test_dataset_embeddings_cached_beside_the_catalog(tmp_path, monkeypatch):
    folder = tmp_path / "pics"
    folder.mkdir()
    for k in range(12):
        (folder / f"{k:02d}.png").write_bytes(encode(scene(40, 30, seed=k), "PNG"))
    con = catalog.open_catalog(tmp_path / "c.duckdb")
    ingest(con, folder, fmt="imagefolder", dataset="pics", workers=1)
    ds = catalog.find_dataset(con, "pics")
    assert embeddings.cached_embeddings(con, ds, config=SMALL) is None
    seen = []
    first = embeddings.dataset_embeddings(con, ds, config=SMALL, progress=lambda d, t, m: seen.append(t))
    assert first.vectors.shape == (12, 8 * 2 * 5) and first.vectors.dtype == np.float16  # raw: N < 20
    assert seen and seen[-1] == 12
    path = embeddings.cache_file(con, ds, config=SMALL)
    assert path.exists() and path.parent == tmp_path / "c.duckdb.embeddings"
    monkeypatch.setattr(embeddings, "embed_pixels", lambda *a, **k: pytest.fail("not cached"))
    again = embeddings.dataset_embeddings(con, ds, config=SMALL)
    assert np.array_equal(again.vectors, first.vectors)
    (folder / "12.png").write_bytes(encode(scene(40, 30, seed=12), "PNG"))
    ingest(con, folder, fmt="imagefolder", dataset="pics", workers=1)
    assert embeddings.cached_embeddings(con, ds, config=SMALL) is None  # new image: new key
    monkeypatch.undo()
    assert len(embeddings.dataset_embeddings(con, ds, config=SMALL).image_ids) == 13
    assert [p.name for p in path.parent.iterdir()] == [embeddings.cache_file(con, ds, config=SMALL).name]
    con.close()


def test_vectors_for_names_missing_images():
    found = embeddings.Embeddings(np.array([3, 7]), np.eye(2, dtype=np.float16))
    assert embeddings.vectors_for(found, [7, 3]).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match=r"no embedding for images \[9\]"):
        embeddings.vectors_for(found, [9])
