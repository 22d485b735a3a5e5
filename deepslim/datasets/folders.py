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

from deepslim.data import DatasetInfo, Split, TensorImages, normalize, resize, adapt_channels, stratified_split
from deepslim.errors import DatasetError
from deepslim.spec import InputSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


# --- ImageFolder ------------------------------------------------------------------------------

class ImageFolderSource:
    """``root/class_x/img.png``; uses ``root/{train,val,test}`` if present, else a 70/15/15 split."""

    def __init__(self, root: Path) -> None:
        from torchvision.datasets import ImageFolder
        self.root = root
        self.per_split = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
        try:
            if "train" in self.per_split:
                self.folders = {s: ImageFolder(str(p)) for s, p in self.per_split.items()}
            else:
                self.folders = {"all": ImageFolder(str(root))}
        except (FileNotFoundError, OSError) as exc:
            raise DatasetError(f"Cannot read dataset directory {root}: {str(exc).splitlines()[0]}") from exc
        first = next(iter(self.folders.values()))
        self.info = DatasetInfo(str(root), tuple(first.classes), 3, IMAGENET_MEAN, IMAGENET_STD)
        if "all" in self.folders:
            self.indices = stratified_split(np.array(first.targets), (0.7, 0.15, 0.15), name=str(root))

    def split(self, name: Split, input_spec: InputSpec, *, augment: bool = False) -> Dataset:
        if "all" in self.folders:
            folder, idx = self.folders["all"], self.indices[name].tolist()
        else:
            fallback = "val" if name == "test" and "test" not in self.folders else name
            fallback = "test" if fallback == "val" and "val" not in self.folders else fallback
            if fallback not in self.folders:
                raise DatasetError(f"Dataset {self.root} has no '{name}' folder.")
            folder, idx = self.folders[fallback], None
        ds = _FolderImages(folder, input_spec, augment)
        return Subset(ds, idx) if idx is not None else ds


class _FolderImages(Dataset):
    def __init__(self, folder, spec: InputSpec, augment: bool) -> None:
        from torchvision.transforms import v2
        self.folder, self.spec = folder, spec
        h, w = spec.size
        crop = [v2.RandomResizedCrop((h, w), scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        center = [v2.Resize(int(round(min(h, w) / 0.875)), antialias=True), v2.CenterCrop((h, w))]
        self.transform = v2.Compose([v2.ToImage(), *(crop if augment else center),
                                     v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.folder.samples[index]
        try:
            image = self.folder.loader(path)
        except OSError as exc:
            raise DatasetError(f"Cannot read image {path}: {exc}") from exc
        image = adapt_channels(self.transform(image), self.spec.channels)
        return normalize(image, self.spec), label


# --- CIFAR-10 ---------------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

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
        self.info = DatasetInfo(f"cifar10:{self.root}", tuple(names), 3, CIFAR_MEAN, CIFAR_STD, (32, 32))
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _arrays(self, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        found = [self.root / f for f in files if (self.root / f).is_file()]
        if not found:
            raise DatasetError(f"CIFAR-10 directory {self.root} has none of {', '.join(files)}.")
        batches = [_read_batch(f) for f in found]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
        return images, torch.from_numpy(labels)

    def split(self, name: Split, input_spec: InputSpec, *, augment: bool = False) -> Dataset:
        if name == "test":
            images, labels = self._arrays(["test_batch"])
        else:
            images, labels = self._arrays(_CIFAR_TRAIN)
            idx = stratified_split(labels.numpy(), (0.9, 0.05, 0.05), name=str(self.root))
            keep = idx["train"] if name == "train" else np.concatenate([idx["val"], idx["test"]])
            images, labels = images[torch.as_tensor(np.sort(keep))], labels[torch.as_tensor(np.sort(keep))]
        return TensorImages(images, labels, input_spec, _cifar_augment if augment else None)


def _cifar_augment(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad), mode="reflect")
    top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    image = padded[..., top:top + h, left:left + w]
    return image.flip(-1) if torch.rand(1).item() < 0.5 else image
