"""Datasets: built-in ``digits`` / ``digits-c`` / ``mnist`` and scikit-learn tables (``breast-cancer``,
``wine``, ``diabetes``), ImageFolder, CIFAR-10 (python format), CSV / Parquet tables, ``file.py:fn``.

Every source yields ``(inputs, target)`` prepared for the model: images resized to its input
size, adapted to its channel count and normalised with its mean/std; features standardised with
the statistics its signature records; targets checked by its task (the model's
:class:`~deepslim.signature.Signature` and :class:`~deepslim.tasks.Task` decide; the dataset only
proposes inputs, statistics and a task for new models).

A dataset reference is one string that reopens from anywhere: a name, a path, or
``path/file.py:fn``, with options after ``?`` (``data.csv?label=y&features=a,b&task=regression``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from deepslim.config import Augment, augment_policy
from deepslim.errors import ConfigError, DatasetError
from deepslim.signature import Signature, TensorSpec
from deepslim.spec import InputSpec
from deepslim.tasks import Task

Split = Literal["train", "val", "test"]
SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # the fixed seed of every built-in split


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: tuple[int, int] | None = None
    split_policy: str = ""  # one sentence: where train, val and test come from
    preprocess: str = ""  # one sentence: how an image becomes the model's input (before normalisation)
    task: Task | None = None  # None: classification over ``classes``
    inputs: tuple[TensorSpec, ...] = ()  # what a new model takes; (): one image (channels, mean, std, size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def task_of(self) -> Task:
        return self.task if self.task is not None else Task.classification(self.classes)

    @property
    def is_image(self) -> bool:
        """The data gives one image per sample (the sources before signatures)."""
        return not self.inputs


class DataSource(Protocol):
    info: DatasetInfo

    def split(self, name: Split, spec: Signature | InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task: Task | None = None) -> Dataset: ...


BUILTIN_DATASETS = ("digits", "digits-c", "mnist", "breast-cancer", "wine", "diabetes")
QUERY_KEYS = ("label", "features", "task", "text")


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``data.csv?label=y&task=regression`` -> (``data.csv``, {label: y, task: regression})."""
    if "?" not in spec:
        return spec, {}
    base, _, query = spec.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or key not in QUERY_KEYS:
            raise ConfigError(f"Dataset option '{part}' in '{spec}' is not one of {', '.join(QUERY_KEYS)} (key=value).")
        options[key] = value
    if options.get("task") not in (None, "classification", "multilabel", "regression"):
        raise ConfigError(f"--task must be classification, multilabel or regression, got '{options['task']}'.")
    return base, options


def with_options(spec: str, **options: str | None) -> str:
    """``spec`` with the options that are set added to its ``?`` part (sorted, so a reference is canonical)."""
    base, have = split_options(spec)
    have.update({k: v for k, v in options.items() if v})
    return base + ("?" + "&".join(f"{k}={have[k]}" for k in sorted(have)) if have else "")


def open_dataset(spec: str, *, severity: int = 3) -> DataSource:
    """Open a dataset by name (:data:`BUILTIN_DATASETS`), directory, table file, or ``path/file.py:fn``."""
    base, options = split_options(spec)
    if options and base in ("digits", "digits-c", "mnist"):
        raise ConfigError(f"Dataset options ({', '.join(options)}) apply to tables and file datasets, not {base}.")
    if base in ("digits", "digits-c"):
        if base == "digits-c" and not 1 <= severity <= 5:
            raise ConfigError(f"--severity must be between 1 and 5, got {severity}.")
        from deepslim.datasets.digits import DigitsSource
        return DigitsSource(severity=severity) if base == "digits-c" else DigitsSource()
    if base == "mnist":
        from deepslim.datasets.mnist import MnistSource
        return MnistSource()
    if base in ("breast-cancer", "wine", "diabetes"):
        from deepslim.datasets.sklearn_tables import open_sklearn
        return open_sklearn(base, options)
    if ":" in base and base.rsplit(":", 1)[0].endswith(".py"):
        from deepslim.datasets.userfile import FileSource
        return FileSource(*base.rsplit(":", 1), options=options)
    path = Path(base)
    if not path.exists():
        raise DatasetError(f"Unknown dataset '{base}': it is neither a built-in name ({', '.join(BUILTIN_DATASETS)}), "
                           "an existing directory or table file (.csv, .parquet), nor path/file.py:fn.")
    from deepslim.datasets.tabular import is_table_path, open_table
    if is_table_path(path):
        from deepslim.datasets.text import is_text_table, open_text
        return open_text(base, options) if is_text_table(path, options) else open_table(base, options)
    if not path.is_dir():
        raise DatasetError(f"Dataset {path} is a file; give a .csv or .parquet table, or an ImageFolder or CIFAR-10 "
                           "directory.")
    if options:
        raise ConfigError(f"Dataset options ({', '.join(options)}) apply to tables and file datasets, not {path}.")
    from deepslim.datasets.folders import Cifar10Source, ImageFolderSource, is_cifar10_dir
    return Cifar10Source(path) if is_cifar10_dir(path) else ImageFolderSource(path)


def image_input_spec(spec: Signature | InputSpec) -> InputSpec:
    """The image input of ``spec`` (image sources feed one image; anything else is a ConfigError)."""
    return spec.to_input_spec() if isinstance(spec, Signature) else spec


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"--split must be train, val or test, got '{split}'.")
    return split


def check_classes(model_classes: int | Sequence[str], info: DatasetInfo, dataset_label: str) -> None:
    """Raise DatasetError unless the model's classes fit dataset ``info``: the same count and, when both
    sides have real names (not the default "0".."N-1"), the same names in the same order.

    ``model_classes`` is the model's class names, or only their count when it has none."""
    count = model_classes if isinstance(model_classes, int) else len(model_classes)
    if count != info.num_classes:
        raise DatasetError(f"The model has {count} classes but dataset {dataset_label} has {info.num_classes}; "
                           "give the dataset the model was trained on.")
    if isinstance(model_classes, int):
        return
    model, data = tuple(map(str, model_classes)), tuple(map(str, info.classes))
    if _default_names(model) or _default_names(data) or model == data:
        return
    wrong = [f"#{i} '{m}' vs '{d}'" for i, (m, d) in enumerate(zip(model, data)) if m != d]
    more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
    raise DatasetError(f"The model's class names differ from dataset {dataset_label}'s ({', '.join(wrong[:3])}{more}); "
                       "give the dataset the model was trained on.")


def _default_names(names: tuple[str, ...]) -> bool:
    return names == tuple(str(i) for i in range(len(names)))


def subset(dataset: Dataset, count: int | None, *, seed: int = 0) -> Dataset:
    """A seeded random subset of ``count`` samples (the whole dataset when count is None or too big)."""
    if count is None or count >= len(dataset):
        return dataset
    if count < 1:
        raise ConfigError(f"A subset needs at least 1 sample, got {count}.")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:count].tolist())


def collate_for(dataset: Dataset) -> Callable | None:
    """The batching ``dataset`` asks for (a text split cuts each batch to its longest text), looked up through
    subsets; None: PyTorch's default."""
    while dataset is not None:
        if callable(getattr(dataset, "collate", None)):
            return dataset.collate
        dataset = getattr(dataset, "dataset", None)
    return None


def calibration_inputs(dataset: str, spec: Signature | InputSpec, count: int | None, *, severity: int = 3,
                       seed: int = 0) -> tuple[np.ndarray, ...]:
    """``count`` training samples (a seeded subset, no augmentation) prepared for ``spec``: one array per input,
    in the signature's order; ``None``: 300, or the whole train split when it is smaller.

    The calibration set of post-training quantization; one function, so every quantizer compared
    (deepslim's, NNCF's defaults in the benchmark) sees the same samples."""
    source = open_dataset(dataset, severity=severity)
    train = source.split("train", spec)
    count = min(300, len(train)) if count is None else count
    if len(train) < count:
        raise DatasetError(f"--calibration-samples {count} asks for more than the {len(train)} samples of "
                           f"{source.info.name}'s train split; lower it.")
    picked = subset(train, count, seed=seed)
    items = [picked[i][0] for i in range(len(picked))]
    if isinstance(items[0], torch.Tensor):
        return (np.stack([x.numpy() for x in items]),)
    return tuple(np.stack([x[k].numpy() for x in items]) for k in range(len(items[0])))


def calibration_images(dataset: str, spec: Signature | InputSpec, count: int | None, *, severity: int = 3,
                       seed: int = 0) -> np.ndarray:
    """:func:`calibration_inputs` of a one-image model, as one float32 array."""
    return calibration_inputs(dataset, spec, count, severity=severity, seed=seed)[0].astype(np.float32)


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], *, name: str = "the dataset",
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Indices of a fixed stratified train/val/test split (a test fraction of 0 gives train/val only)."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(labels))
    try:
        train, rest = train_test_split(idx, train_size=fractions[0], stratify=labels, random_state=seed)
        if fractions[2] == 0:
            return {"train": np.sort(train), "val": np.sort(rest), "test": np.array([], dtype=int)}
        val_share = fractions[1] / (fractions[1] + fractions[2])
        val, test = train_test_split(rest, train_size=val_share, stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        raise DatasetError(f"Dataset {name} has too few samples ({len(labels)}) for a stratified train/val/test "
                           "split; give each class at least 7 samples or separate split folders.") from exc
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


# --- preprocessing shared by every source -----------------------------------------------------

def adapt_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat grey to 3 channels or average RGB to grey; leaves matching images alone."""
    have = image.shape[-3]
    if have == channels:
        return image
    if have == 1:
        return image.expand(*image.shape[:-3], channels, *image.shape[-2:]).contiguous()
    if channels == 1:
        return image.mean(dim=-3, keepdim=True)
    raise DatasetError(f"Cannot feed {have}-channel images to a model that takes {channels} channels.")


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batch = image.unsqueeze(0) if image.dim() == 3 else image
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0) if image.dim() == 3 else out


def normalize(image: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=image.dtype).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=image.dtype).view(-1, 1, 1)
    return (image - mean) / std


def random_affine(image: torch.Tensor) -> torch.Tensor:
    """Small random rotation, shift and scale; no flips (digits and text are not mirror-symmetric)."""
    import torchvision.transforms.v2.functional as TF
    angle = float(torch.empty(1).uniform_(-10, 10))
    h, w = image.shape[-2:]
    tx, ty = (torch.empty(2).uniform_(-0.08, 0.08) * torch.tensor([w, h])).tolist()
    scale = float(torch.empty(1).uniform_(0.9, 1.1))
    return TF.affine(image, angle=angle, translate=[tx, ty], scale=scale, shear=[0.0, 0.0])


def random_crop_flip(image: torch.Tensor) -> torch.Tensor:
    """ImageNet-style: a random resized crop (35-100% of the area, aspect 3/4-4/3) back to the same size, then a
    horizontal flip half of the time."""
    from torchvision.transforms import v2
    h, w = image.shape[-2:]
    crop = v2.RandomResizedCrop((h, w), scale=(0.35, 1.0), antialias=True)
    return v2.RandomHorizontalFlip()(crop(image))


AUGMENT_HELP = ("Training augmentation: none; light (small random rotation, shift and scale, never flips: safe "
                "for digits and text); standard (random resized crops and horizontal flips for photos; "
                "pad-and-crop and flips for CIFAR-10; the same as light for digits).")


def split_augment(split: str, augment: Augment | str | bool) -> Augment:
    """The augmentation policy a split gets; only the train split is ever augmented.

    - ``none``: no augmentation; a train image is exactly its evaluation image.
    - ``light`` (mild, never flips, so safe for digits and text): after the evaluation preprocessing,
      a random rotation of up to ±10°, a shift of up to ±8% of each side and a scale of 0.9-1.1.
      The same in every source (digits, digits-c, ImageFolder, CIFAR-10, file.py:fn).
    - ``standard`` (natural photos): ImageFolder and file.py:fn datasets take a random resized crop of
      35-100% of the area (aspect 3/4-4/3) and a horizontal flip half of the time; CIFAR-10 takes a
      reflect-padded random crop (4 px at 32x32) and a horizontal flip; digits and digits-c take the
      same as light, because a mirrored digit is a different digit or none at all.

    ``augment`` is an :class:`~deepslim.config.Augment`, its string, or a bool (True: light, False: none).
    """
    policy = augment_policy(augment)
    return policy if split == "train" else Augment.NONE


def tensor_augment(split: str, augment: Augment | str | bool, *,
                   standard: Callable[[torch.Tensor], torch.Tensor] = random_crop_flip
                   ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The augmentation of an image tensor in [0, 1] for ``split`` (None: none); see :func:`split_augment`.
    ``standard`` is the source's own standard policy (digits pass :func:`random_affine`)."""
    policy = split_augment(split, augment)
    if policy is Augment.NONE:
        return None
    return random_affine if policy is Augment.LIGHT else standard


class TensorImages(Dataset):
    """Images in [0, 1] held in memory (N, C, h, w), prepared for one model per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: InputSpec,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.images, self.labels, self.spec, self.augment = images, labels, spec, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = resize(adapt_channels(self.images[index], self.spec.channels), self.spec.size)
        if self.augment is not None:
            image = self.augment(image)
        return normalize(image, self.spec), torch.as_tensor(self.labels[index], dtype=torch.long)


def aspect_note(info: DatasetInfo, spec: Signature | InputSpec) -> str | None:
    """A sentence when the data's images would be stretched to the model's input (another aspect ratio),
    None when the shapes agree or the data is not one image per sample."""
    if info.native_size is None:
        return None
    image = spec.image if isinstance(spec, Signature) else spec
    if image is None:
        return None
    (h, w), (ih, iw) = info.native_size, image.size
    if abs(h / w - ih / iw) <= 0.02 * (ih / iw):
        return None
    return (f"the data's {h}x{w} images are stretched to the model's {ih}x{iw} input (another aspect ratio); "
            f"give --input-size {h}x{w} (or a multiple) to keep their shape")
