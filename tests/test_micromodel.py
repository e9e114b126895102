"""core.micromodel: training learns a tiny made-for-purpose task in seconds, checkpoints round
trip exactly, seeds reproduce, images are read and resized, and bad input says what is wrong."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core import micromodel as mm
from tests.fixtures import BROKEN, write_broken_images

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
CLASSES = tuple(COLOURS)

# Small enough to train in about a second per model on two cores.
FAST = {
    "patches": dict(atoms=16, iterations=20),
    "cnn": dict(width=8, epochs=4, batch_size=8, seconds=600),
}


def colour_images(per_class: int, *, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 noisy images, each mostly one colour of COLOURS, and their
    class indices: a task any model must learn from a handful of examples."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(COLOURS)), per_class)
    base = np.array(list(COLOURS.values()), float)[labels][:, None, None, :]  # (N, 1, 1, 3)
    noise = rng.normal(0, 30, (len(labels), size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels


def config(arch: str = "patches", **overrides) -> mm.MicroConfig:
    return mm.MicroConfig(classes=CLASSES, arch=arch, **{**FAST[arch], **overrides})


@pytest.fixture(scope="module")
def data():
    train, train_labels = colour_images(6, seed=1)
    test, test_labels = colour_images(10, seed=2)
    return train, train_labels, test, test_labels


@pytest.mark.parametrize("arch", ["patches", "cnn"])
def test_train_micromodel_learns_colours(data, arch):
    train, train_labels, test, test_labels = data
    seen = []
    trained = mm.train_micromodel(train, train_labels, config=config(arch), on_epoch=seen.append)
    probs = mm.predict_proba(trained.model, test)
    assert probs.shape == (30, 3)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == test_labels).mean() >= 0.9
    assert [r.epoch for r in seen] == list(range(1, len(seen) + 1)) and seen == trained.history
    assert not trained.stopped_by_time


@pytest.mark.parametrize("arch", ["patches", "cnn"])
def test_save_load_gives_identical_predictions(data, tmp_path, arch):
    train, train_labels, test, _ = data
    model = mm.train_micromodel(train, train_labels, config=config(arch)).model
    path = mm.save_micromodel(model, tmp_path / "models" / "run-1.pt")
    loaded = mm.load_micromodel(path)
    assert loaded.config == model.config
    assert np.array_equal(mm.predict_proba(loaded, test), mm.predict_proba(model, test))


def test_seeded_patch_model_is_reproducible(data):
    train, train_labels, test, _ = data
    first = mm.train_micromodel(train, train_labels, config=config(seed=3)).model
    second = mm.train_micromodel(train, train_labels, config=config(seed=3)).model
    other = mm.train_micromodel(train, train_labels, config=config(seed=4)).model
    assert np.array_equal(mm.predict_proba(first, test), mm.predict_proba(second, test))
    assert not np.array_equal(mm.predict_proba(first, test), mm.predict_proba(other, test))


def test_seeded_cnn_is_reproducible_up_to_float_rounding(data):
    # the CPU convolution kernels may sum in another order from one run to the next
    train, train_labels, test, _ = data
    runs = [mm.predict_proba(mm.train_micromodel(train, train_labels, config=config("cnn", seed=3))
                             .model, test) for _ in range(2)]
    assert np.allclose(runs[0], runs[1], atol=1e-4)
    assert np.array_equal(runs[0].argmax(1), runs[1].argmax(1))


def test_training_sets_two_threads_by_default(data):
    train, train_labels, _, _ = data
    torch.set_num_threads(1)
    mm.train_micromodel(train, train_labels, config=config(iterations=10))
    assert torch.get_num_threads() == 2


def test_unlabelled_images_shape_the_patch_dictionary(data):
    train, train_labels, test, _ = data
    alone = mm.train_micromodel(train, train_labels, config=config()).model
    helped = mm.train_micromodel(train, train_labels, config=config(), unlabelled=test).model
    assert not torch.equal(alone.features[0].filters, helped.features[0].filters)


def test_labels_spread_to_unlabelled_training_images_and_survive_a_round_trip(data, tmp_path):
    train, train_labels, test, test_labels = data
    unlabelled, _ = colour_images(20, seed=3)
    model = mm.train_micromodel(train, train_labels, config=config(), unlabelled=unlabelled).model
    assert model.neighbours.fitted and len(model.neighbours.points) == 18 + 60
    spread = model.neighbours.labels
    assert torch.allclose(spread.sum(dim=1), torch.ones(len(spread)))
    assert (spread[:18].argmax(1).numpy() == train_labels).all()  # people's labels hold
    probs = mm.predict_proba(model, test)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == test_labels).mean() >= 0.9
    # each image's probabilities depend on that image alone, not on what is scored with it
    one_by_one = np.concatenate([mm.predict_proba(model, test[k:k + 1]) for k in range(5)])
    assert np.allclose(one_by_one, probs[:5], atol=1e-6)
    loaded = mm.load_micromodel(mm.save_micromodel(model, tmp_path / "spread.pt"))
    assert np.array_equal(mm.predict_proba(loaded, test), probs)


def test_spreading_changes_predictions_and_can_be_turned_off(data):
    train, train_labels, test, _ = data
    unlabelled, _ = colour_images(20, seed=3)
    spread = mm.train_micromodel(train, train_labels, config=config(), unlabelled=unlabelled).model
    off = mm.train_micromodel(train, train_labels, config=config(spread=0.0),
                              unlabelled=unlabelled).model
    assert not off.neighbours.fitted
    assert not np.allclose(mm.predict_proba(spread, test), mm.predict_proba(off, test))
    # the same dictionary and head: only the spreading differs
    assert torch.equal(spread.head.weight, off.head.weight)


def test_spreading_samples_large_sets(data, monkeypatch):
    train, train_labels, _, _ = data
    unlabelled, _ = colour_images(20, seed=3)
    monkeypatch.setattr(mm, "MAX_SPREAD_IMAGES", 12)
    model = mm.train_micromodel(train, train_labels, config=config(), unlabelled=unlabelled).model
    assert len(model.neighbours.points) == 12 + 12


def test_cnn_pseudo_labels_train_on_unlabelled_images(data):
    train, train_labels, test, test_labels = data
    trained = mm.train_micromodel(train, train_labels, unlabelled=test,
                                  config=config("cnn", pseudo_label=0.5))
    assert (mm.predict_proba(trained.model, test).argmax(1) == test_labels).mean() >= 0.9


def test_cross_val_proba_never_sees_the_label(data):
    train, train_labels, _, _ = data
    probs = mm.cross_val_proba(train, train_labels, config=config(), folds=3)
    assert probs.shape == (18, 3)
    assert (probs.argmax(1) == train_labels).mean() >= 0.9
    folds = mm.stratified_folds(train_labels, 3, seed=0)
    assert np.bincount(folds * 3 + train_labels).tolist() == [2] * 9  # 2 per class and fold


def test_augment_batch_is_seeded_and_stays_in_range(data):
    pixels = torch.from_numpy(data[0][:4].transpose(0, 3, 1, 2)).float() / 255
    a = mm.augment_batch(pixels, generator=torch.Generator().manual_seed(0))
    b = mm.augment_batch(pixels, generator=torch.Generator().manual_seed(0))
    assert a.shape == pixels.shape and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, pixels)


def test_load_images_resizes_and_converts(tmp_path):
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "large_64x48.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "grey_16x16.png")
    pixels = mm.load_images([tmp_path / "large_64x48.png", tmp_path / "grey_16x16.png"], size=32)
    assert pixels.shape == (2, 32, 32, 3) and pixels.dtype == np.uint8
    assert pixels[0, 5, 5].tolist() == [10, 20, 30] and pixels[1, 5, 5].tolist() == [128] * 3


def test_load_images_names_every_unreadable_file(tmp_path):
    broken = write_broken_images(tmp_path)
    with pytest.raises(mm.MicroModelError, match="5 image") as err:
        mm.load_images(sorted(broken.values()))
    for name in BROKEN:
        assert name in str(err.value)


def test_too_few_labels_for_a_class_is_named(data):
    train, train_labels, _, _ = data
    keep = np.r_[np.arange(12), 12]  # one 'blue' image only
    with pytest.raises(mm.MicroModelError, match=r"too few labelled images for class 'blue' \(1\)"):
        mm.train_micromodel(train[keep], train_labels[keep], config=config())


def test_a_single_class_is_refused(data):
    train, _, _, _ = data
    with pytest.raises(mm.MicroModelError, match="at least two classes"):
        mm.train_micromodel(train[:6], np.zeros(6, int), config=mm.MicroConfig(classes=("red",)))


def test_wrong_image_size_says_how_to_load(data):
    train, train_labels, _, _ = data
    with pytest.raises(mm.MicroModelError, match="load_images"):
        mm.train_micromodel(train, train_labels, config=config(image_size=64))


def test_missing_weights_file_is_named(data, tmp_path):
    train, train_labels, _, _ = data
    missing = tmp_path / "no-such-backbone.pt"
    with pytest.raises(mm.MicroModelError, match="no-such-backbone.pt does not exist"):
        mm.train_micromodel(train, train_labels, config=config(), weights=missing)
    with pytest.raises(mm.MicroModelError, match="does not exist"):
        mm.load_micromodel(missing)


def test_weights_file_that_is_not_a_checkpoint_is_refused(data, tmp_path):
    train, train_labels, _, _ = data
    (tmp_path / "notes.pt").write_text("not torch")
    with pytest.raises(mm.MicroModelError, match="not a torch checkpoint"):
        mm.train_micromodel(train, train_labels, config=config(), weights=tmp_path / "notes.pt")


def test_backbone_from_an_earlier_micromodel(data, tmp_path):
    train, train_labels, test, test_labels = data
    first = mm.train_micromodel(train, train_labels, config=config()).model
    path = mm.save_micromodel(first, tmp_path / "first.pt")
    second = mm.train_micromodel(train, train_labels, config=config(seed=9), weights=path).model
    assert torch.equal(second.features[0].filters, first.features[0].filters)
    with pytest.raises(mm.MicroModelError, match="holds a 'patches' micro-model"):
        mm.train_micromodel(train, train_labels, config=config("cnn"), weights=path)


def test_resnet18_backbone_from_a_torchvision_state_dict(data, tmp_path):
    from torchvision.models import resnet18

    train, train_labels, test, _ = data
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    cfg = mm.MicroConfig(classes=CLASSES, arch="resnet18", iterations=10)
    model = mm.train_micromodel(train, train_labels, config=cfg, weights=tmp_path / "resnet18.pth").model
    assert mm.predict_proba(model, test).shape == (30, 3)
    with pytest.raises(mm.MicroModelError, match="needs a pretrained weights file"):
        mm.train_micromodel(train, train_labels, config=cfg)


def test_unknown_architecture_is_named():
    with pytest.raises(mm.MicroModelError, match="'vit'"):
        mm.MicroNet(mm.MicroConfig(classes=CLASSES, arch="vit"))
