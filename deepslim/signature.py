"""Torch-free description of what a model eats and returns: named inputs and named outputs.

An input has a shape whose first dim is ``batch`` and whose other dims are numbers or names
(``sequence``, ``length``...): named dims are dynamic axes on export. Its ``kind`` decides the
preprocessing every stage applies:

- ``image``: (C, H, W) in [0, 1], resized and channel-adapted to the model, then normalised with
  ``mean``/``std`` (one value per channel) — deepslim's original behaviour;
- ``features``: a vector of numbers, standardised with ``mean``/``std`` (one per feature, learnt from
  the train split and recorded here);
- ``tokens`` / ``mask``: integer inputs, passed as they are;
- ``tensor``: anything else (a signal, an embedding), passed as it is.

Outputs are named (``output`` for a single tensor, ``output_0``... for a tuple, the keys of a dict);
``task_output`` names the one the task reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from deepslim.errors import ConfigError
from deepslim.spec import InputSpec
from deepslim.textspec import TextSpec

Dim = int | str
BATCH = "batch"
INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint8", "bool")


class InputKind(str, Enum):
    IMAGE = "image"
    FEATURES = "features"
    TOKENS = "tokens"
    MASK = "mask"
    TENSOR = "tensor"


@dataclass(frozen=True)
class TensorSpec:
    """One named input: shape (``batch`` first), dtype, kind and, for images and features, normalisation."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    kind: InputKind = InputKind.TENSOR
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    channel_order: str = ""  # images: RGB, BGR or GRAY

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"Input name '{self.name}' is not a valid Python identifier.")
        if not self.shape or self.shape[0] != BATCH:
            raise ConfigError(f"Input '{self.name}' needs 'batch' as its first dimension, got {list(self.shape)}.")
        for dim in self.shape[1:]:
            if isinstance(dim, bool) or not (isinstance(dim, str) and dim.isidentifier() or isinstance(dim, int) and dim > 0):
                raise ConfigError(f"Input '{self.name}' has dimension {dim!r}; dims are positive numbers or names.")
        if self.kind is InputKind.IMAGE:
            self._check_image()
        if self.kind is InputKind.FEATURES and self.mean:
            if len(self.mean) != self.sample_shape[-1] or len(self.std) != len(self.mean):
                raise ConfigError(f"Input '{self.name}' has {self.sample_shape[-1]} features but "
                                  f"{len(self.mean)} means and {len(self.std)} stds.")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"Input '{self.name}' has a std value that is not positive.")

    def _check_image(self) -> None:
        if len(self.shape) != 4 or not all(isinstance(d, int) for d in self.shape[1:]):
            raise ConfigError(f"Image input '{self.name}' needs a shape (batch, C, H, W) of numbers, got "
                              f"{list(self.shape)}.")
        if len(self.mean) != self.shape[1] or len(self.std) != self.shape[1]:
            raise ConfigError(f"Image input '{self.name}' needs {self.shape[1]} mean and std values, got "
                              f"{len(self.mean)} and {len(self.std)}.")

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        return self.shape[1:]

    @property
    def is_integer(self) -> bool:
        return self.dtype in INTEGER_DTYPES

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, batch: int = 1, sizes: dict[str, int] | None = None) -> tuple[int, ...]:
        """The shape with ``batch`` and every named dim replaced (``sizes``; missing names raise)."""
        sizes = {BATCH: batch, **(sizes or {})}
        missing = [d for d in self.shape if isinstance(d, str) and d not in sizes]
        if missing:
            raise ConfigError(f"Input '{self.name}' has the dynamic dims {missing}; give their sizes.")
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    # images
    @property
    def channels(self) -> int:
        return int(self.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.shape[2]), int(self.shape[3])

    def to_input_spec(self) -> InputSpec:
        if self.kind is not InputKind.IMAGE:
            raise ConfigError(f"Input '{self.name}' is {self.kind.value}, not an image.")
        return InputSpec(tuple(self.shape[1:]), self.mean, self.std, self.dtype, self.channel_order or "RGB")

    @classmethod
    def from_input_spec(cls, spec: InputSpec, name: str = "x") -> TensorSpec:
        return cls(name, (BATCH, *spec.shape), spec.dtype, InputKind.IMAGE, tuple(spec.mean), tuple(spec.std),
                   spec.channel_order)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                               "kind": self.kind.value}
        if self.mean:
            out.update(mean=list(self.mean), std=list(self.std))
        if self.channel_order:
            out["channel_order"] = self.channel_order
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(data["shape"]), str(data.get("dtype", "float32")),
                   InputKind(data.get("kind", "tensor")), tuple(data.get("mean", ())), tuple(data.get("std", ())),
                   str(data.get("channel_order", "")))


@dataclass(frozen=True)
class Signature:
    """A model's inputs (in ``forward``'s order) and outputs, and the output the task reads."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...] = ("output",)
    task_output: str = "output"
    output_layout: str = "tensor"  # how forward returns: tensor, tuple or dict
    notes: tuple[str, ...] = field(default=(), compare=False)  # what was assumed, in words
    text: TextSpec | None = None  # token inputs: the tokenizer that makes them from text

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("A model needs at least one input.")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"Input names repeat: {names}.")
        if self.task_output not in self.outputs:
            raise ConfigError(f"The task output '{self.task_output}' is not one of the outputs {list(self.outputs)}.")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def image(self) -> TensorSpec | None:
        """The image input, when there is exactly one."""
        images = [i for i in self.inputs if i.kind is InputKind.IMAGE]
        return images[0] if len(images) == 1 else None

    @property
    def sizes(self) -> dict[str, int]:
        """Sizes of the named dims an example needs (``sequence``: the tokenizer's ``max_length``)."""
        return {"sequence": self.text.max_length} if self.text is not None else {}

    @property
    def single_image(self) -> bool:
        """The model has exactly one input and it is an image (what deepslim supported first)."""
        return len(self.inputs) == 1 and self.inputs[0].kind is InputKind.IMAGE

    @property
    def task_index(self) -> int:
        return self.outputs.index(self.task_output)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ConfigError(f"The model has no input '{name}'; its inputs are {list(self.input_names)}.")

    def replace_input(self, spec: TensorSpec) -> Signature:
        return replace(self, inputs=tuple(spec if i.name == spec.name else i for i in self.inputs))

    def with_image_size(self, size: int | tuple[int, int]) -> Signature:
        image = self.image
        if image is None:
            raise ConfigError("Only a model with one image input can change its input size.")
        h, w = (size, size) if isinstance(size, int) else size
        return self.replace_input(replace(image, shape=(BATCH, image.channels, h, w)))

    def with_outputs(self, outputs: tuple[str, ...], layout: str, task_output: str | None = None) -> Signature:
        chosen = task_output if task_output is not None else outputs[0]
        return replace(self, outputs=tuple(outputs), output_layout=layout, task_output=chosen)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Per input and output name, the axes that are dynamic (``batch`` always; named dims)."""
        axes = {i.name: i.dynamic_axes for i in self.inputs}
        axes.update({o: {0: BATCH} for o in self.outputs})
        return axes

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [i.to_json() for i in self.inputs], "outputs": list(self.outputs),
                "task_output": self.task_output, "output_layout": self.output_layout,
                "notes": list(self.notes), **({"text": self.text.to_json()} if self.text else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        outputs = tuple(str(o) for o in data.get("outputs", ["output"]))
        return cls(tuple(TensorSpec.from_json(i) for i in data["inputs"]), outputs,
                   str(data.get("task_output", outputs[0])), str(data.get("output_layout", "tensor")),
                   tuple(data.get("notes", ())), TextSpec.from_json(data["text"]) if data.get("text") else None)

    @classmethod
    def from_input_spec(cls, spec: InputSpec, name: str = "x") -> Signature:
        """The signature of a model that takes one image, as bundles before signatures described it."""
        return cls((TensorSpec.from_input_spec(spec, name),))

    def to_input_spec(self) -> InputSpec:
        """The image input as an :class:`InputSpec` (image-only code paths)."""
        if not self.single_image:
            kinds = ", ".join(f"{i.name} ({i.kind.value})" for i in self.inputs)
            raise ConfigError(f"This step needs a model with one image input; this model takes {kinds}.")
        return self.inputs[0].to_input_spec()

    def describe(self) -> str:
        """One line: ``x: image 1x28x28 float32 -> logits``."""
        ins = ", ".join(f"{i.name}: {i.kind.value} {'x'.join(map(str, i.sample_shape))} {i.dtype}" for i in self.inputs)
        outs = ", ".join(f"{o}{' (task)' if o == self.task_output and len(self.outputs) > 1 else ''}"
                         for o in self.outputs)
        return f"{ins} -> {outs}"


def parse_size(text: str | int | None) -> tuple[int, int] | None:
    """``28``, ``"28"`` or ``"28x56"`` -> (H, W); None stays None."""
    if text is None:
        return None
    if isinstance(text, int):
        parts = [text]
    else:
        try:
            parts = [int(p) for p in str(text).lower().split("x")]
        except ValueError:
            parts = []
    if len(parts) not in (1, 2) or min(parts, default=0) < 1:
        raise ConfigError(f"--input-size must be a positive size N or HxW (e.g. 28x56), got '{text}'.")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
