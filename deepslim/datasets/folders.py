"""Datasets on disk: an ImageFolder tree and a CIFAR-10 python-format directory.

CIFAR-10's python batches are pickles; they are read with a restricted unpickler that
only rebuilds numpy arrays and plain containers, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from deepslim.config import Augment
from deepslim.data import (SPLIT_SEED, SPLITS, DatasetInfo, Split, TensorImages, adapt_channels, image_input_spec,
                           normalize, random_affine, split_augment, stratified_split, tensor_augment)
from deepslim.errors import DatasetError
from deepslim.spec import InputSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


# --- ImageFolder ------------------------------------------------------------------------------

SIZE_PROBES = 16  # images whose size decides the evaluation resize (evenly spaced, so deterministic)


class ImageFolderSource:
    """An ImageFolder tree; no split is ever used both to choose (val) and to report (test):

    - ``root/class_x/img.png``: split 70/15/15 into train/val/test (stratified, seed 0);
    - ``root/train`` only: split 80/10/10 the same way;
    - ``root/train`` + ``root/val``: train as is, val split 50/50 (stratified, seed 0) into val and test;
    - ``root/train`` + ``root/test``: test as is, 10% of train (stratified) carved out as val;
    - ``root/train`` + ``val`` + ``test``: used as they are.

    Labels follow the train folder's class list in every split. Evaluation images are resized
    straight to the model's input when the dataset's images are at or below it, and resized then
    centre-cropped only when they are larger (:meth:`eval_resize`).
    """

    def __init__(self, root: Path) -> None:
        from torchvision.datasets import ImageFolder
        self.root = root
        present = [s for s in ("train", "val", "test") if (root / s).is_dir()]
        try:
            self.folders = ({s: ImageFolder(str(root / s)) for s in present} if "train" in present
                            else {"all": ImageFolder(str(root))})
        except (FileNotFoundError, OSError) as exc:
            raise DatasetError(f"Cannot read dataset directory {root}: {str(exc).splitlines()[0]}") from exc
        first = self.folders.get("train", self.folders.get("all"))
        self.classes = list(first.classes)
        for name, folder in self.folders.items():
            unknown = sorted(set(folder.classes) - set(self.classes))
            if unknown:
                raise DatasetError(f"Dataset {root / name} has classes the train folder lacks: {', '.join(unknown)}.")
        self.plan, split_policy = self._plan()
        self.image_size = _typical_size(first.samples)
        (h, w), short = self.image_size, min(self.image_size)
        self.info = DatasetInfo(str(root), tuple(self.classes), 3, IMAGENET_MEAN, IMAGENET_STD, self.image_size,
                                split_policy=split_policy,
                                preprocess=f"images at {h}x{w}: resized straight to the input size when it is at "
                                           f"least {short} px, else the shorter side resized to input/0.875 (at most "
                                           f"{short}) and centre-cropped to the input size")

    def _labels(self, folder: str) -> np.ndarray:
        return np.array(self.folders[folder].targets)

    def _plan(self) -> tuple[dict[str, tuple[str, list[int] | None]], str]:
        """For each split: which folder and which of its indices (None: all); and that plan in one sentence."""
        seed = f"stratified, seed {SPLIT_SEED}"
        if "all" in self.folders:
            idx = stratified_split(self._labels("all"), (0.7, 0.15, 0.15), name=str(self.root))
            return ({s: ("all", idx[s].tolist()) for s in SPLITS},
                    f"the class folders split 70/15/15 into train/val/test ({seed})")
        has_val, has_test = "val" in self.folders, "test" in self.folders
        if has_val and has_test:
            return {s: (s, None) for s in SPLITS}, "train/, val/ and test/ as they are"
        if has_val:
            val, test = _halves(self._labels("val"), str(self.root / "val"))
            return ({"train": ("train", None), "val": ("val", val), "test": ("val", test)},
                    f"val/ split 50/50 ({seed}) into val and test; train/ as is")
        if has_test:
            idx = stratified_split(self._labels("train"), (0.9, 0.1, 0.0), name=str(self.root / "train"))
            return ({"train": ("train", idx["train"].tolist()), "val": ("train", idx["val"].tolist()),
                     "test": ("test", None)}, f"10% of train/ ({seed}) held out as val; test/ as is")
        idx = stratified_split(self._labels("train"), (0.8, 0.1, 0.1), name=str(self.root / "train"))
        return ({s: ("train", idx[s].tolist()) for s in SPLITS},
                f"train/ split 80/10/10 into train/val/test ({seed}); no val/ or test/ folder")

    def eval_resize(self, input_spec: InputSpec) -> int | None:
        """The shorter side evaluation images are resized to before a centre crop to the input size, or None
        for a straight resize to the input size (images at or below the model's input, so nothing is lost)."""
        input_spec = image_input_spec(input_spec)
        image_short, input_short = min(self.image_size), min(input_spec.size)
        if image_short <= input_short:
            return None
        return min(int(round(input_short / 0.875)), image_short)

    def describe_preprocess(self, input_spec: InputSpec) -> str:
        """The evaluation preprocessing for this model's input, in one phrase."""
        input_spec = image_input_spec(input_spec)
        (h, w), (ih, iw) = self.image_size, input_spec.size
        short = self.eval_resize(input_spec)
        if short is None:
            return f"images at {h}x{w}: resized to the input size {ih}x{iw}, no crop"
        return f"images at {h}x{w}: shorter side resized to {short} then centre-cropped to {ih}x{iw}"

    def split(self, name: Split, input_spec: InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task=None) -> Dataset:
        input_spec = image_input_spec(input_spec)
        folder_name, idx = self.plan[name]
        folder = self.folders[folder_name]
        transform = _folder_transform(input_spec, self.eval_resize(input_spec), split_augment(name, augment))
        ds = _FolderImages(folder, input_spec, transform, [self.classes.index(c) for c in folder.classes])
        return Subset(ds, idx) if idx is not None else ds


def _halves(labels: np.ndarray, name: str) -> tuple[list[int], list[int]]:
    from sklearn.model_selection import train_test_split
    try:
        first, second = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=labels,
                                         random_state=SPLIT_SEED)
    except ValueError as exc:
        raise DatasetError(f"Dataset {name} has too few images per class ({len(labels)} in all) to split them 50/50 "
                           "into val and test; give every class at least 2 images there, or add a test/ folder.") from exc
    return np.sort(first).tolist(), np.sort(second).tolist()


def _typical_size(samples: list[tuple[str, int]]) -> tuple[int, int]:
    """The median (height, width) of up to SIZE_PROBES evenly spaced images (headers only)."""
    from PIL import Image
    picks = np.unique(np.linspace(0, len(samples) - 1, min(SIZE_PROBES, len(samples))).round().astype(int))
    sizes = []
    for i in picks:
        path = samples[int(i)][0]
        try:
            with Image.open(path) as image:
                sizes.append(image.size[::-1])
        except OSError as exc:
            raise DatasetError(f"Cannot read image {path}: {exc}") from exc
    h, w = np.median(np.array(sizes), axis=0)
    return int(h), int(w)


def _folder_transform(spec: InputSpec, eval_short: int | None, policy: Augment):
    from torchvision.transforms import v2
    h, w = spec.size
    if policy is Augment.STANDARD:
        steps = [v2.RandomResizedCrop((h, w), scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    elif eval_short is None:
        steps = [v2.Resize((h, w), antialias=True)]
    else:
        steps = [v2.Resize(eval_short, antialias=True), v2.CenterCrop((h, w))]
    steps = [v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True)]
    if policy is Augment.LIGHT:
        steps.append(v2.Lambda(random_affine))
    return v2.Compose(steps)


class _FolderImages(Dataset):
    def __init__(self, folder, spec: InputSpec, transform, label_map: list[int]) -> None:
        self.folder, self.spec, self.transform, self.label_map = folder, spec, transform, label_map

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.folder.samples[index]
        try:
            image = self.folder.loader(path)
        except OSError as exc:
            raise DatasetError(f"Cannot read image {path}: {exc}") from exc
        image = adapt_channels(self.transform(image), self.spec.channels)
        return normalize(image, self.spec), self.label_map[label]


# --- CIFAR-10 ---------------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> dict:
    try:
        data = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"Cannot read CIFAR-10 batch {path}: {exc}") from exc
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def _cifar_root(path: Path) -> Path:
    return path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path


def is_cifar10_dir(path: Path) -> bool:
    return (_cifar_root(path) / "test_batch").is_file()


class Cifar10Source:
    """CIFAR-10 python batches: train = data_batch_* minus a stratified 10% val; test = test_batch."""

    def __init__(self, path: Path) -> None:
        self.root = _cifar_root(path)
        meta = self.root / "batches.meta"
        names = [n.decode() if isinstance(n, bytes) else n for n in _read_batch(meta)["label_names"]] \
            if meta.is_file() else [str(i) for i in range(10)]
        self.info = DatasetInfo(
            f"cifar10:{self.root}", tuple(names), 3, CIFAR_MEAN, CIFAR_STD, (32, 32),
            split_policy=f"data_batch_1-5 minus 10% (stratified, seed {SPLIT_SEED}) held out as val is train; "
                         "test_batch is test",
            preprocess="images at 32x32: resized to the input size, no crop")

    def _arrays(self, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        found = [self.root / f for f in files if (self.root / f).is_file()]
        if not found:
            raise DatasetError(f"CIFAR-10 directory {self.root} has none of {', '.join(files)}.")
        batches = [_read_batch(f) for f in found]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
        return images, torch.from_numpy(labels)

    def split(self, name: Split, input_spec: InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task=None) -> Dataset:
        input_spec = image_input_spec(input_spec)
        if name == "test":
            images, labels = self._arrays(["test_batch"])
        else:
            images, labels = self._arrays(_CIFAR_TRAIN)
            keep = torch.as_tensor(stratified_split(labels.numpy(), (0.9, 0.1, 0.0), name=str(self.root))[name])
            images, labels = images[keep], labels[keep]
        return TensorImages(images, labels, input_spec, tensor_augment(name, augment, standard=_cifar_augment))


def _cifar_augment(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad), mode="reflect")
    top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    image = padded[..., top:top + h, left:left + w]
    return image.flip(-1) if torch.rand(1).item() < 0.5 else image
