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

from deepslim.data import DatasetInfo, Split, TensorImages, adapt_channels, normalize, stratified_split
from deepslim.errors import DatasetError
from deepslim.spec import InputSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


# --- ImageFolder ------------------------------------------------------------------------------

class ImageFolderSource:
    """``root/class_x/img.png`` split 70/15/15, or ``root/train`` (+ ``val``/``test`` folders if present).

    With split folders, labels follow the train folder's class list in every split; a
    missing val split is carved from train (10%, stratified) so the test split is never
    used for model selection; a missing test split is the val folder.
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
        self.info = DatasetInfo(str(root), tuple(self.classes), 3, IMAGENET_MEAN, IMAGENET_STD)
        for name, folder in self.folders.items():
            unknown = sorted(set(folder.classes) - set(self.classes))
            if unknown:
                raise DatasetError(f"Dataset {root / name} has classes the train folder lacks: {', '.join(unknown)}.")
        self.plan = self._plan(np.array(first.targets))

    def _plan(self, targets: np.ndarray) -> dict[str, tuple[str, list[int] | None]]:
        """For each split: which folder and which of its indices (None: all)."""
        if "all" in self.folders:
            idx = stratified_split(targets, (0.7, 0.15, 0.15), name=str(self.root))
            return {s: ("all", idx[s].tolist()) for s in ("train", "val", "test")}
        plan: dict[str, tuple[str, list[int] | None]] = {"train": ("train", None)}
        if "val" not in self.folders:
            idx = stratified_split(targets, (0.9, 0.1, 0.0), name=str(self.root / "train"))
            plan["train"], plan["val"] = ("train", idx["train"].tolist()), ("train", idx["val"].tolist())
        else:
            plan["val"] = ("val", None)
        plan["test"] = ("test", None) if "test" in self.folders else ("val", None)
        if plan["test"][0] not in self.folders:
            raise DatasetError(f"Dataset {self.root} has a train folder but neither val nor test.")
        return plan

    def split(self, name: Split, input_spec: InputSpec, *, augment: bool = False) -> Dataset:
        folder_name, idx = self.plan[name]
        folder = self.folders[folder_name]
        ds = _FolderImages(folder, input_spec, augment, [self.classes.index(c) for c in folder.classes])
        return Subset(ds, idx) if idx is not None else ds


class _FolderImages(Dataset):
    def __init__(self, folder, spec: InputSpec, augment: bool, label_map: list[int]) -> None:
        from torchvision.transforms import v2
        self.folder, self.spec, self.label_map = folder, spec, label_map
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
        self.info = DatasetInfo(f"cifar10:{self.root}", tuple(names), 3, CIFAR_MEAN, CIFAR_STD, (32, 32))

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
            keep = torch.as_tensor(stratified_split(labels.numpy(), (0.9, 0.1, 0.0), name=str(self.root))[name])
            images, labels = images[keep], labels[keep]
        return TensorImages(images, labels, input_spec, _cifar_augment if augment else None)


def _cifar_augment(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad), mode="reflect")
    top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    image = padded[..., top:top + h, left:left + w]
    return image.flip(-1) if torch.rand(1).item() < 0.5 else image
