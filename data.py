"""Data sets as uint8 tensors, and a device-resident batch iterator with random crop + flip.

Images are kept as uint8 NCHW tensors (4x smaller than float) and turned into float [0, 1] batches on
the target device. Augmentation (random crop with zero padding, horizontal flip) is one gather over the
whole batch: no PIL and no worker processes in the training loop.

    data = load_data("npz", "data", train_npz="cifar10_train.npz", test_npz="cifar10_test.npz")
    for x, y in Batches(data.train, 128, "cuda", shuffle=True, augment=True, seed=0):
        ...
"""
import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("cifar10", "cifar100", "svhn", "tinyimagenet", "npz", "synthetic")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "tinyimagenet": 200, "synthetic": 10}
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"  # the official zip (CS231n)
TINYIMAGENET_PER_CLASS = {"train": 500, "val": 50}  # images per class in the official zip (a check of its unzipping)
TINYIMAGENET_ORDER_SEED = 0  # the fixed order the Tiny-ImageNet cache keeps its images in (not class by class)
CROP_PADDING = 4  # random crop with 4-pixel zero padding, as in TRADES and the authors' code
VAL_SIZE = 1000  # training images held out for checkpoint selection by default (train.py's --val-size)
# Images in each published split (Tiny-ImageNet's "test" is its labelled val folder) and their side in pixels
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "svhn": (73_257, 26_032),
               "tinyimagenet": (100_000, 10_000)}
IMAGE_SIDE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "tinyimagenet": 64}


def default_train_images(name: str) -> int:
    """Images a run trains on by default: the training split less the VAL_SIZE held out (49,000 on CIFAR-10)."""
    return SPLIT_SIZES[name][0] - VAL_SIZE


class DataError(ValueError):
    """A data set that is unknown, missing or malformed."""


@dataclass
class Split:
    """One split: images (N, 3, H, W) uint8 and labels (N,) int64, both on the CPU."""
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)

    def take(self, index) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    num_classes: int


def split_from_arrays(images_nhwc: np.ndarray, labels: np.ndarray) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.from_numpy(np.asarray(labels).astype(np.int64)))


def load_npz(path: str, num_classes: int = None) -> Split:
    """Read an npz with `image` (N, H, W, 3) uint8 and `label` (N,) integers, checking both."""
    if not os.path.isfile(path):
        raise DataError(f"npz file not found: {path}")
    try:
        with np.load(path) as f:
            missing = {"image", "label"} - set(f.files)
            if missing:
                raise DataError(f"{path} lacks key(s) {sorted(missing)}; it needs 'image' (N,H,W,3) uint8 "
                                f"and 'label' (N,)")
            image, label = f["image"], f["label"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read npz {path}: {e}") from None
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[3] != 3:
        raise DataError(f"{path}: 'image' must be uint8 (N, H, W, 3), got {image.dtype} {image.shape}")
    if label.ndim != 1 or len(label) != len(image) or not np.issubdtype(label.dtype, np.integer):
        raise DataError(f"{path}: 'label' must be integers of shape ({len(image)},), got {label.dtype} "
                        f"{label.shape}")
    if len(image) == 0:
        raise DataError(f"{path} holds zero images")
    if label.min() < 0 or (num_classes is not None and label.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), got [{label.min()}, {label.max()}]")
    return split_from_arrays(image, label)


def synthetic_split(n: int, seed: int, num_classes: int = 10, size: int = 32) -> Split:
    """A small learnable data set for smoke runs and tests: one smooth colour pattern per class + noise."""
    g = torch.Generator().manual_seed(10_000)  # the class patterns are the same for every split
    patterns = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=g), size=size, mode="bilinear")
    g.manual_seed(seed)
    labels = torch.arange(n) % num_classes
    x = 0.6 * patterns[labels] + 0.4 * torch.rand(n, 3, size, size, generator=g)
    return Split((x * 255).round().to(torch.uint8), labels)


def _torchvision_split(name: str, data_dir: str, train: bool) -> Split:
    import torchvision.datasets as tvd
    try:
        if name == "svhn":
            ds = tvd.SVHN(data_dir, split="train" if train else "test", download=True)
            return Split(torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels.astype(np.int64)))
        ds = (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(data_dir, train=train, download=True)
    except Exception as e:  # no network, bad archive, ...
        raise DataError(f"could not load {name} into {data_dir} ({type(e).__name__}: {e}); "
                        f"download it there or use --dataset npz") from None
    return split_from_arrays(ds.data, np.asarray(ds.targets))


def _tinyimagenet_split(data_dir: str, train: bool) -> Split:
    """Tiny-ImageNet from its official zip; the val folder (our test split) is sorted into classes once,
    and the decoded images are cached as npz beside it (written to a temporary file, then renamed, so a
    killed run never leaves a broken cache), in one fixed random order: read class by class, "the first N
    test points" (--n-examples) or training images (--train-subset) would hold only the first classes."""
    cache = os.path.join(data_dir, f"tinyimagenet_{'train' if train else 'test'}_shuffled.npz")
    if os.path.isfile(cache):
        return load_npz(cache, NUM_CLASSES["tinyimagenet"])
    root = os.path.join(data_dir, "tiny-imagenet-200")
    if not os.path.isdir(root):
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(TINYIMAGENET_URL, data_dir)
        except Exception as e:
            raise DataError(f"could not download Tiny-ImageNet ({type(e).__name__}: {e}); unzip "
                            f"{os.path.basename(TINYIMAGENET_URL)} into {data_dir}") from None
    _sort_tinyimagenet_val(root)
    with open(os.path.join(root, "wnids.txt")) as f:
        wnids = sorted(line.strip() for line in f if line.strip())
    folder = os.path.join(root, "train" if train else "val")
    images, labels = [], []
    for k, wnid in enumerate(wnids):
        class_dir = os.path.join(folder, wnid, "images") if train else os.path.join(folder, wnid)
        names = sorted(os.listdir(class_dir)) if os.path.isdir(class_dir) else []
        expected = TINYIMAGENET_PER_CLASS["train" if train else "val"]
        if len(names) != expected:  # an unzip cut off halfway is read once and cached for good otherwise
            raise DataError(f"Tiny-ImageNet in {root} is incomplete: {class_dir} holds {len(names)} of {expected} "
                            f"images; remove {root} (and a damaged {os.path.basename(TINYIMAGENET_URL)}) and run again")
        for name in names:
            images.append(_read_rgb(os.path.join(class_dir, name)))
            labels.append(k)
    order = np.random.default_rng(TINYIMAGENET_ORDER_SEED).permutation(len(images))
    image, label = np.stack(images)[order], np.asarray(labels, np.int64)[order]
    np.savez(cache + ".tmp.npz", image=image, label=label)
    os.replace(cache + ".tmp.npz", cache)
    return split_from_arrays(image, label)


def _sort_tinyimagenet_val(root: str) -> None:
    """Move val/images/*.JPEG into val/<wnid>/ as val_annotations.txt says. Resumable: a file already in
    its class folder is skipped, so a run killed halfway through is finished by the next one."""
    val = os.path.join(root, "val")
    if not os.path.isdir(os.path.join(val, "images")):
        return
    with open(os.path.join(val, "val_annotations.txt")) as f:
        for line in f:
            name, wnid = line.split("\t")[:2]
            source, target = os.path.join(val, "images", name), os.path.join(val, wnid, name)
            if os.path.exists(target) and not os.path.exists(source):
                continue  # moved by an earlier, interrupted run
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
    os.rmdir(os.path.join(val, "images"))


def _read_rgb(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_split(name: str, data_dir: str, train: bool, npz: str = None, seed: int = 0) -> Split:
    """The train or test split of a named data set (uint8 NCHW)."""
    if name == "npz":
        if npz is None:
            raise DataError(f"--dataset npz needs --{'train' if train else 'test'}-npz")
        return load_npz(npz)
    if name == "synthetic":
        return synthetic_split(600 if train else 200, seed=1 if train else 2)
    if name == "tinyimagenet":
        return _tinyimagenet_split(data_dir, train)
    if name in ("cifar10", "cifar100", "svhn"):
        return _torchvision_split(name, data_dir, train)
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def split_of_run(run_args: dict, train: bool, data_dir: str = None, npz: str = None, num_classes: int = None) -> Split:
    """The train or test split of the data set a train.py run used (its stored args, e.g. a checkpoint's
    "args"); `data_dir` overrides the stored folder, and an `npz` replaces the data set, whatever it was.
    With `num_classes` (the checkpoint's model), labels the model cannot output are refused."""
    if not run_args or "dataset" not in run_args:
        raise DataError("the checkpoint does not record its data set (it was not written by train.py)")
    if npz:  # deviation: an explicit npz replaces the run's data set, whatever it was
        split = load_npz(npz)
    else:
        npz = run_args.get("train_npz" if train else "test_npz")
        split = load_split(run_args["dataset"], data_dir or run_args.get("data_dir", "data"), train, npz)
    if num_classes is not None and int(split.labels.max()) >= num_classes:
        raise DataError(f"{npz or run_args['dataset']} has labels up to {int(split.labels.max())}, but the checkpoint's "
                        f"model has {num_classes} classes (a checkpoint for another data set?)")
    return split


def load_data(name: str, data_dir: str = "data", train_npz: str = None, test_npz: str = None,
              val_npz: str = None, val_size: int = VAL_SIZE, train_subset: int = None, seed: int = 0,
              balanced: bool = False) -> Data:
    """Train / validation / test splits.

    The validation split is `val_npz`, or `val_size` images held out of the training set at random
    (fixed by `seed`); it is what checkpoints are selected on. The test set is never used for that.
    `val_size=0` (and no `val_npz`) trains on every image and leaves the validation split empty.
    `train_subset` keeps the first N of the remaining training images; with `balanced`, the first N / K of
    each of the K classes (in the split's order), so that every class has the same share.
    """
    train = load_split(name, data_dir, True, train_npz)
    test = load_split(name, data_dir, False, test_npz)
    if val_npz is not None:
        val = load_npz(val_npz)
    else:  # deviation: a held-out part of the training set, where the authors used a generated npz (--val-npz)
        if not 0 <= val_size < len(train):
            raise DataError(f"--val-size must lie in [0, {len(train) - 1}] for {len(train)} training images")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        val = train.take(order[:val_size].sort().values)
        train = train.take(order[val_size:].sort().values)
    num_classes = NUM_CLASSES.get(name) or int(max(s.labels.max() for s in (train, val, test) if len(s))) + 1
    missing = sorted(set(range(num_classes)) - set(torch.unique(train.labels).tolist())) if len(train) else []
    if missing:  # e.g. labels 1..K (SVHN's raw 10 for the digit 0), or test labels the training set never has
        raise DataError(f"the training labels must be the classes 0..{num_classes - 1} (the largest label of any "
                        f"split + 1); class(es) {', '.join(map(str, missing[:5]))} have no training image")
    if train_subset is not None and train_subset > len(train):
        raise DataError(f"--train-subset {train_subset} is more than the {len(train)} training images left")
    if train_subset is not None:
        train = train.take(balanced_subset(train.labels, train_subset, num_classes) if balanced else slice(0, train_subset))
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        if split_name == "val" and len(split) == 0 and val_npz is None:
            continue  # --val-size 0: no validation split
        if len(split) == 0 or split.labels.min() < 0 or split.labels.max() >= num_classes:
            raise DataError(f"{split_name} split is empty or has labels outside [0, {num_classes})")
        if split.images.shape[1:] != train.images.shape[1:]:
            raise DataError(f"{split_name} images are {tuple(split.images.shape[1:])}, train images "
                            f"{tuple(train.images.shape[1:])}")
    return Data(train, val, test, num_classes)


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """Indices of the first n / num_classes images of each class, in the split's order (sorted)."""
    if n % num_classes:
        raise DataError(f"a class-balanced subset of {n} images needs a multiple of the {num_classes} classes")
    per_class = n // num_classes
    chosen = [(labels == k).nonzero().squeeze(1)[:per_class] for k in range(num_classes)]
    short = [k for k, c in enumerate(chosen) if len(c) < per_class]
    if short:
        raise DataError(f"a class-balanced subset of {n} images needs {per_class} per class; class {short[0]} has "
                        f"{len(chosen[short[0]])}")
    return torch.cat(chosen).sort().values


def crop_flip(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor,
              pad: int = CROP_PADDING) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip of a whole batch, as one gather.

    images (B, C, H, W); dx, dy (B,) offsets in [0, 2 pad]; flip (B,) bool. Pixel (i, j) of output b is
    padded[b, :, dy_b + i, dx_b + j], with j reversed where flip_b.
    """
    B, C, H, W = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    return crop_padded(padded, torch.arange(B, device=images.device), dx, dy, flip, (H, W))


def crop_padded(padded: torch.Tensor, index: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                flip: torch.Tensor, size: tuple) -> torch.Tensor:
    """Crops of size (H, W) at offsets (dy, dx) of the padded images `index`, flipped where `flip`:
    one `take` from the flat (N, C, H+2p, W+2p) tensor, without copying the batch first."""
    (H, W), (C, Hp, Wp), device = size, padded.shape[1:], padded.device
    rows = dy[:, None] + torch.arange(H, device=device)
    cols = dx[:, None] + torch.arange(W, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    flat = ((index[:, None, None, None] * C + torch.arange(C, device=device)[None, :, None, None]) * Hp
            + rows[:, None, :, None]) * Wp + cols[:, None, None, :]
    return padded.view(-1).take(flat)


# The 256 values i / 255, divided on the CPU: a gather from this table gives every device the same bits (CUDA's
# torch.div by a scalar multiplies by its reciprocal, which differs from the division in the last bit).
UNIT_VALUES = torch.arange(256, dtype=torch.float32) / 255


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] on their own device, the same bits on every device (UNIT_VALUES)."""
    return UNIT_VALUES.to(images.device)[images.long()]


class Batches:
    """(x, y) batches of a split: x float in [0, 1] on `device`, y int64.

    Shuffling and augmentation draw from a CPU generator seeded by (seed, epoch): call `set_epoch`
    before each epoch, and a resumed run replays exactly the same batches. The random numbers of an
    epoch are moved to the device once, so the loop does no host-device copies when the images live on
    the device (`resident`, the default). Where they do not fit, they stay in pinned host memory and each
    batch is gathered there and copied asynchronously.

    Under torchrun, rank r of w takes every w-th image of the epoch's order (a disjoint shard, the same
    length on every rank) in batches of batch_size // w; each image keeps the crop and flip it would get
    in a single process. `augment`: random crops with `pad`-pixel zero padding and flips (pad 0: flips
    alone).
    """

    def __init__(self, split: Split, batch_size: int, device, shuffle=False, augment=False, seed=0,
                 drop_last=False, rank=0, world=1, resident=True, with_index=False, pad=CROP_PADDING):
        self.device = torch.device(device)
        images = F.pad(split.images, (pad,) * 4) if augment else split.images  # padded once
        host = images.pin_memory() if not resident and self.device.type == "cuda" else images
        self.images = images.to(device) if resident else host
        self.size = tuple(split.images.shape[2:])
        self.labels = split.labels.to(device)
        self.batch_size, self.n = batch_size // world, len(split.labels) // world
        self.shuffle, self.augment, self.pad, self.seed, self.drop_last = shuffle, augment, pad, seed, drop_last
        self.rank, self.world, self.resident, self.epoch = rank, world, resident, 0
        self.with_index = with_index  # also yield each image's index in the split (a CPU tensor)
        self.to_unit = UNIT_VALUES.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        n, b = self.n, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order[self.rank:self.n * self.world:self.world]  # this rank's shard
        if self.augment:
            shifts = torch.randint(0, 2 * self.pad + 1, (2, n), generator=g).to(self.device)
            flips = (torch.rand(n, generator=g) < 0.5).to(self.device)
        order_here = order.to(self.device)
        for i in range(len(self)):
            batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
            index = order_here[batch]
            if self.resident:
                images, where = self.images, index
            else:  # gather the batch in (pinned) host memory, then copy it
                images = self.images[order[batch]].to(self.device, non_blocking=True)
                where = torch.arange(len(images), device=self.device)
            if self.augment:
                x = crop_padded(images, where, shifts[0, index], shifts[1, index], flips[index], self.size)
            else:
                x = images[where]
            x = self.to_unit[x.long()]  # uint8 -> float32 in [0, 1], one gather
            yield (x, self.labels[index], order[batch]) if self.with_index else (x, self.labels[index])


def fits_on_device(split: Split, device) -> bool:
    """Whether a split's uint8 images take under half the free memory of a CUDA device (always on CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return split.images.numel() < free / 2
