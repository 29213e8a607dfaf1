import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
from data import Batches, DataError, Split, crop_flip, load_data, load_npz, load_split


def reference_crop_flip(image, dx, dy, flip, pad=4):
    """One image at a time, the way torchvision's RandomCrop(padding=4) + flip would do it."""
    padded = F.pad(image, (pad, pad, pad, pad))
    H, W = image.shape[1:]
    out = padded[:, dy:dy + H, dx:dx + W]
    return out.flip(2) if flip else out


def test_crop_flip_equals_the_per_image_reference():
    images = torch.randint(0, 256, (6, 3, 8, 10), dtype=torch.uint8)
    dx, dy = torch.tensor([0, 8, 4, 3, 1, 7]), torch.tensor([8, 0, 4, 2, 6, 5])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, dx, dy, flip)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(6):
        assert torch.equal(out[i], reference_crop_flip(images[i], int(dx[i]), int(dy[i]), bool(flip[i])))
    centred = crop_flip(images, torch.full((6,), 4), torch.full((6,), 4), torch.zeros(6, dtype=torch.bool))
    assert torch.equal(centred, images)


def labelled_split(n=50, size=8):
    """Image i has pixel value 20 * label + column + 1: labels and flips can be read from any crop."""
    labels = torch.arange(n) % 10
    columns = torch.arange(size).view(1, 1, 1, size)
    images = (20 * labels.view(n, 1, 1, 1) + columns + 1).expand(n, 3, size, size).to(torch.uint8)
    return Split(images.contiguous(), labels)


def test_batches_shapes_range_labels_follow_images_and_augmentation_happens():
    split = labelled_split()
    batches = Batches(split, 16, "cpu", shuffle=True, augment=True, seed=3)
    seen, flipped, shifted = [], 0, 0
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8) and 0 <= x.min() and x.max() <= 1
        values = (x * 255).round().long()
        for img, label in zip(values, y):
            body = img[img != 0]  # zero padding aside
            assert ((body - 1) // 20 == label).all()  # the label travelled with its image
            row = img[0][img[0] != 0].view(-1)[:2]
            flipped += bool(row[1] < row[0])
            shifted += bool((img == 0).any())
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) == sorted(split.labels.tolist())  # each image once
    assert len(batches) == 4 and 10 < flipped < 40 and shifted > 25


def test_batches_are_fixed_by_seed_and_epoch():
    split = labelled_split()
    def first(seed, epoch):
        b = Batches(split, 16, "cpu", shuffle=True, augment=True, seed=seed)
        b.set_epoch(epoch)
        return next(iter(b))[0]
    assert torch.equal(first(1, 2), first(1, 2))
    assert not torch.equal(first(1, 2), first(1, 3))


def epoch_of(batches, epoch=2):
    batches.set_epoch(epoch)
    return [(x, y) for x, y in batches]


def test_host_resident_batches_equal_device_resident_ones():
    split = labelled_split()
    on_device = epoch_of(Batches(split, 16, "cpu", shuffle=True, augment=True, seed=4))
    on_host = epoch_of(Batches(split, 16, "cpu", shuffle=True, augment=True, seed=4, resident=False))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(on_device, on_host))


def test_rank_shards_are_disjoint_and_keep_each_image_augmentation():
    split = labelled_split(64)
    single = epoch_of(Batches(split, 16, "cpu", shuffle=True, augment=True, seed=4))
    shards = [epoch_of(Batches(split, 16, "cpu", shuffle=True, augment=True, seed=4, rank=r, world=2))
              for r in range(2)]
    assert [len(s) for s in shards] == [4, 4] and all(len(x) == 8 for s in shards for x, _ in s)
    key = lambda x, y: (int(y), tuple((x * 255).round().long().flatten().tolist()))  # noqa: E731
    as_set = lambda batches: sorted(key(x, y) for xb, yb in batches for x, y in zip(xb, yb))  # noqa: E731
    assert sorted(as_set(shards[0]) + as_set(shards[1])) == as_set(single)  # same crops and flips, split in two


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_loading_and_its_errors(tmp_path):
    good = write_npz(tmp_path / "good.npz", image=np.zeros((4, 8, 8, 3), np.uint8), label=np.arange(4))
    split = load_npz(good)
    assert split.images.shape == (4, 3, 8, 8) and split.labels.dtype == torch.int64
    cases = {
        "not found": str(tmp_path / "missing.npz"),
        "lacks key": write_npz(tmp_path / "nolabel.npz", image=np.zeros((4, 8, 8, 3), np.uint8)),
        "must be uint8": write_npz(tmp_path / "float.npz", image=np.zeros((4, 8, 8, 3)), label=np.arange(4)),
        "label": write_npz(tmp_path / "short.npz", image=np.zeros((4, 8, 8, 3), np.uint8), label=np.arange(3)),
        "zero images": write_npz(tmp_path / "empty.npz", image=np.zeros((0, 8, 8, 3), np.uint8),
                                 label=np.zeros(0, np.int64)),
    }
    for message, path in cases.items():
        with pytest.raises(DataError, match=message):
            load_npz(path)
    with pytest.raises(DataError, match="labels must lie"):
        load_npz(good, num_classes=3)


def test_validation_split_is_held_out_fixed_by_seed_and_train_subset_takes_the_first(tmp_path):
    n = 60
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(4, 1).repeat(4, 2).repeat(3, 3)
    train = write_npz(tmp_path / "train.npz", image=images, label=np.arange(n) % 10)
    test = write_npz(tmp_path / "test.npz", image=images[:20], label=np.arange(20) % 10)
    ids = lambda s: s.images[:, 0, 0, 0].tolist()
    a = load_data("npz", train_npz=train, test_npz=test, val_size=12, seed=5)
    b = load_data("npz", train_npz=train, test_npz=test, val_size=12, seed=5)
    c = load_data("npz", train_npz=train, test_npz=test, val_size=12, seed=6)
    assert ids(a.val) == ids(b.val) and ids(a.val) != ids(c.val)
    assert len(a.val) == 12 and not set(ids(a.val)) & set(ids(a.train)) and len(a.train) == 48
    assert a.num_classes == 10 and len(a.test) == 20
    sub = load_data("npz", train_npz=train, test_npz=test, val_size=12, seed=5, train_subset=10)
    assert ids(sub.train) == ids(a.train)[:10]


def test_unknown_dataset_and_missing_npz_flag():
    with pytest.raises(DataError, match="unknown dataset"):
        load_split("mnist", "data", True)
    with pytest.raises(DataError, match="needs --train-npz"):
        load_split("npz", "data", True)


# --- Tiny-ImageNet: the official layout, and runs killed while sorting or caching (issue 16) ------------

WNIDS = ("n01443537", "n01629819", "n01641577")  # listed out of order in wnids.txt below: labels follow the sorted ids
COLOURS = {"n01443537": (250, 10, 10), "n01629819": (10, 250, 10), "n01641577": (10, 10, 250)}


def fake_tinyimagenet(root):
    """A tiny tree in the official layout: wnids.txt, train/<wnid>/images/*.JPEG (two per class), and
    val/images/*.JPEG with val_annotations.txt (two per class, interleaved); one solid colour per class."""
    from PIL import Image
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(WNIDS)) + "\n")
    save = lambda path, wnid: Image.new("RGB", (64, 64), COLOURS[wnid]).save(path)  # noqa: E731
    for wnid in WNIDS:
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", wnid)
    lines = []
    for i in range(6):
        wnid = WNIDS[i % 3]
        save(base / "val" / "images" / f"val_{i}.JPEG", wnid)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def check_labels(split):
    """Labels follow the sorted wnids, and each image has its class's colour."""
    assert split.images.shape[1:] == (3, 64, 64)
    for image, label in zip(split.images, split.labels):
        colour = torch.tensor(COLOURS[WNIDS[int(label)]], dtype=torch.float32)
        assert (image.float().mean(dim=(1, 2)) - colour).abs().max() < 8  # JPEG keeps solid colours within a few levels


def test_tinyimagenet_loader_reads_both_splits_of_the_official_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "TINYIMAGENET_PER_CLASS", {"train": 2, "val": 2})
    fake_tinyimagenet(tmp_path)
    train, test = (data.load_split("tinyimagenet", str(tmp_path), is_train) for is_train in (True, False))
    assert sorted(train.labels.tolist()) == [0, 0, 1, 1, 2, 2] and sorted(test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    # kept in one fixed random order, not class by class: "the first N" points hold every class
    order = np.random.default_rng(data.TINYIMAGENET_ORDER_SEED).permutation(6)
    assert train.labels.tolist() == [[0, 0, 1, 1, 2, 2][i] for i in order] != [0, 0, 1, 1, 2, 2]
    check_labels(train)
    check_labels(test)
    assert (tmp_path / "tinyimagenet_test_shuffled.npz").exists()
    assert not (tmp_path / "tiny-imagenet-200" / "val" / "images").exists()


def test_tinyimagenet_survives_a_kill_while_sorting_and_while_caching(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "TINYIMAGENET_PER_CLASS", {"train": 2, "val": 2})
    base = fake_tinyimagenet(tmp_path)
    real_replace, moved = os.replace, {"n": 0}

    def killed_after_two_moves(source, target):
        if moved["n"] == 2:
            raise KeyboardInterrupt  # the run dies halfway through sorting val/
        moved["n"] += 1
        real_replace(source, target)

    monkeypatch.setattr(data.os, "replace", killed_after_two_moves)
    with pytest.raises(KeyboardInterrupt):
        data.load_split("tinyimagenet", str(tmp_path), False)
    assert len(os.listdir(base / "val" / "images")) == 4  # two moved, four left
    monkeypatch.setattr(data.os, "replace", real_replace)
    real_savez = np.savez

    def killed_while_writing(path, **arrays):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(data.np, "savez", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        data.load_split("tinyimagenet", str(tmp_path), False)  # the sort finishes, the cache write dies
    assert not (tmp_path / "tinyimagenet_test_shuffled.npz").exists()  # only a temporary file was touched
    monkeypatch.setattr(data.np, "savez", real_savez)
    test = data.load_split("tinyimagenet", str(tmp_path), False)
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    check_labels(test)
    again = data.load_split("tinyimagenet", str(tmp_path), False)  # from the cache now
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_batches_and_to_unit_turn_uint8_into_the_same_floats_as_a_division_on_the_cpu():
    """Every value i / 255 exactly as torch.div computes it on the CPU (the batches come from a lookup table,
    so that every device gets these bits)."""
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    split = Split(images, torch.zeros(2, dtype=torch.long))
    x, _ = next(iter(Batches(split, 2, "cpu")))
    assert torch.equal(x, torch.div(split.images, 255))
    assert torch.equal(data.to_unit(split.images), x)  # what evaluate.py and analysis.py read their points with


@pytest.mark.parametrize("train_labels,test_labels,missing", [
    (np.arange(1, 11), np.arange(1, 11), "class(es) 0 have no training image"),  # labels 1..10
    (np.arange(10), np.arange(1, 11), "class(es) 10 have no training image"),  # SVHN's raw 10 in the test set only
])
def test_npz_labels_must_be_the_classes_0_to_k_minus_1(tmp_path, train_labels, test_labels, missing):
    def npz(name, labels):
        np.savez(tmp_path / name, image=np.zeros((len(labels) * 3, 8, 8, 3), np.uint8), label=np.repeat(labels, 3))
        return str(tmp_path / name)
    with pytest.raises(data.DataError, match=re.escape(missing)):
        data.load_data("npz", train_npz=npz("train.npz", train_labels), test_npz=npz("test.npz", test_labels), val_size=3)


def test_a_train_subset_larger_than_the_training_set_is_refused():
    with pytest.raises(data.DataError, match="--train-subset 1000 is more than the 500 training images left"):
        data.load_data("synthetic", val_size=100, train_subset=1000)


def test_a_tinyimagenet_cut_off_while_unzipping_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "TINYIMAGENET_PER_CLASS", {"train": 2, "val": 2})
    base = fake_tinyimagenet(tmp_path)
    os.remove(base / "train" / WNIDS[2] / "images" / f"{WNIDS[2]}_1.JPEG")  # the unzip died before the last file
    with pytest.raises(DataError, match=f"incomplete: .*{WNIDS[2]}.* holds 1 of 2 images"):
        data.load_split("tinyimagenet", str(tmp_path), True)
    assert not list(tmp_path.glob("tinyimagenet_*.npz"))
