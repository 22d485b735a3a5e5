"""``path/file.py:fn``: the user's dataset function; ``fn(split)`` returns a torch Dataset of ``(inputs, target)``.

``inputs`` is a tensor (one input), a tuple (in ``forward``'s order) or a dict keyed by input name.
Images (float ``C x H x W``, C <= 4, values in [0, 1]) keep deepslim's resizing, channel adaptation
and normalisation; nothing else is touched. The task is inferred from the targets (integers:
classification; 0/1 vectors: multilabel; floats: regression) unless ``?task=`` says.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from torch.utils.data import Dataset

from deepslim.config import Augment
from deepslim.data import DatasetInfo, Split, image_input_spec, tensor_augment
from deepslim.errors import DatasetError, first_line
from deepslim.samples import prepare, propose_inputs
from deepslim.signature import InputKind, Signature
from deepslim.spec import InputSpec
from deepslim.tasks import Task, task_for_targets
from deepslim.usercode import user_attribute

PROBE = 256  # samples read to describe the inputs


class FileSource:
    """A dataset the user's function returns, split by split."""

    def __init__(self, path: str, fn_name: str, *, options: dict[str, str] | None = None) -> None:
        file = Path(path)
        if not file.is_file():
            raise DatasetError(f"The dataset file {file} does not exist.")
        self.fn, self.label = user_attribute(file, fn_name, error=DatasetError), f"{file}:{fn_name}"
        if not callable(self.fn) or "split" not in inspect.signature(self.fn).parameters:
            raise DatasetError(f"{file} needs a function {fn_name}(split) returning a torch Dataset.")
        self.options = dict(options or {})
        self._train = self._call("train")
        self.info = self._describe(self.label)

    def _call(self, split: str) -> Dataset:
        try:
            ds = self.fn(split=split)
        except Exception as exc:  # user code: any failure becomes one sentence
            raise DatasetError(f"Dataset {self.label} failed for split '{split}': {type(exc).__name__}: "
                               f"{first_line(exc)}.") from exc
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or len(ds) == 0:
            raise DatasetError(f"The dataset function returned no samples for split '{split}'.")
        return ds

    def _item(self, index: int):
        item = self._train[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetError(f"{self.label} must return a Dataset of (inputs, target) pairs; item {index} is "
                               f"{type(item).__name__}.")
        return item

    def _describe(self, name: str) -> DatasetInfo:
        probe = [self._item(i) for i in range(min(len(self._train), PROBE))]
        inputs = propose_inputs([x for x, _ in probe])
        targets = [self._item(i)[1] for i in range(len(self._train))]
        classes = getattr(self._train, "classes", None)
        task = task_for_targets(targets, kind=self.options.get("task"),
                                names=list(map(str, classes)) if classes is not None else None)
        policy = f"the train, val and test splits that {name} returns, as they are"
        if len(inputs) == 1 and inputs[0].kind is InputKind.IMAGE:  # what file datasets were before signatures
            image = inputs[0]
            h, w = image.size
            return DatasetInfo(name, task.names, image.channels, image.mean, image.std, (h, w), split_policy=policy,
                               preprocess=f"images at {h}x{w}: resized to the input size, no crop", task=task)
        kinds = ", ".join(f"{i.name} ({i.kind.value} {'x'.join(map(str, i.sample_shape))})" for i in inputs)
        image = next((i for i in inputs if i.kind is InputKind.IMAGE), None)
        return DatasetInfo(name, task.names, image.channels if image else 0, image.mean if image else (),
                           image.std if image else (), image.size if image else None, split_policy=policy,
                           preprocess=f"inputs {kinds}: images resized to the input size, the rest as they are",
                           task=task, inputs=inputs)

    def split(self, name: Split, spec: Signature | InputSpec, *, augment: Augment | str | bool = Augment.NONE,
              task: Task | None = None) -> Dataset:
        signature = Signature.from_input_spec(image_input_spec(spec)) if isinstance(spec, InputSpec) else spec
        base = self._train if name == "train" else self._call(name)
        return prepare(base, signature, task or self.info.task_of(), tensor_augment(name, augment),
                       where=f"dataset {self.label}")
