"""What every exported artifact carries (input spec, classes, lineage) and how to tell artifacts apart.

Exports store :class:`ArtifactMeta` as JSON: in an ONNX file's ``metadata_props``
(key ``deepslim``), in an OpenVINO IR's ``rt_info`` (``deepslim/meta``), and in a
TensorRT engine's JSON sidecar. Runners read it back to feed the artifact correctly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from deepslim.errors import ConfigError, InputFileError
from deepslim.described import Described
from deepslim.signature import Signature
from deepslim.spec import InputSpec, StageRecord
from deepslim.tasks import Task

META_KEY = "deepslim"
META_VERSION = 1


class ArtifactKind(str, Enum):
    BUNDLE = "bundle"
    ONNX = "onnx"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


_SUFFIX = {".safetensors": ArtifactKind.BUNDLE, ".onnx": ArtifactKind.ONNX, ".xml": ArtifactKind.OPENVINO,
           ".engine": ArtifactKind.TENSORRT, ".plan": ArtifactKind.TENSORRT}


def is_bundle(path: str | Path) -> bool:
    """A deepslim bundle: a ``.safetensors`` file or a Hugging Face directory deepslim wrote."""
    from deepslim.fileio import SIDECAR
    return Path(path).suffix.lower() == ".safetensors" or (Path(path) / SIDECAR).is_file()


def artifact_kind(path: str | Path) -> ArtifactKind:
    """The kind of artifact ``path`` is, by its suffix; a directory deepslim wrote (``deepslim.json`` beside a
    Hugging Face model) is a bundle."""
    if Path(path).is_dir():
        from deepslim.fileio import SIDECAR
        if (Path(path) / SIDECAR).is_file():
            return ArtifactKind.BUNDLE
        raise InputFileError(f"{path} is a directory deepslim did not write (no {SIDECAR}); load it once with a "
                             "--dataset (deepslim train DIR ... -o OUT) to make a model deepslim can read.")
    kind = _SUFFIX.get(Path(path).suffix.lower())
    if kind is None:
        raise InputFileError(f"{path} is not a known artifact; use a .safetensors bundle, .onnx, OpenVINO .xml "
                             "or TensorRT .engine file.")
    return kind


@dataclass(frozen=True)
class ArtifactMeta(Described):
    """deepslim's metadata inside an exported artifact: the model's signature and task, its lineage, and how
    it was exported. An :class:`InputSpec` and a class list are accepted in place of a signature and a
    task (a one-image classifier, as artifacts before signatures described it)."""

    signature: Signature
    task: Task
    lineage: list[StageRecord] = field(default_factory=list)
    export: dict[str, Any] = field(default_factory=dict)  # exporter, precision, sizes, MACs, params, notes

    def __post_init__(self) -> None:
        self._coerce()

    def to_json(self) -> str:
        data = {"format_version": META_VERSION, "signature": self.signature.to_json(), "task": self.task.to_json(),
                "classes": self.classes, "lineage": [r.to_json() for r in self.lineage], "export": self.export}
        if self.signature.single_image:
            data["input"] = self.input_spec.to_json()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path = "artifact") -> ArtifactMeta:
        try:
            data = json.loads(text)
            signature = (Signature.from_json(data["signature"]) if "signature" in data
                         else Signature.from_input_spec(InputSpec.from_json(data["input"])))
            task = Task.from_json(data["task"]) if "task" in data else Task.classification(data["classes"])
            return cls(signature, task, [StageRecord.from_json(r) for r in data.get("lineage", [])],
                       dict(data.get("export", {})))
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            raise InputFileError(f"{source} has corrupt deepslim metadata ({exc}).") from exc


def read_onnx_meta(path: str | Path) -> ArtifactMeta | None:
    """deepslim's metadata of an ONNX file (None if it has none); weights are not loaded."""
    import onnx

    from deepslim.errors import first_line
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors come in several types
        raise InputFileError(f"{path} is not a valid ONNX file ({first_line(exc)}).") from exc
    value = next((p.value for p in proto.metadata_props if p.key == META_KEY), None)
    return ArtifactMeta.from_json(value, path) if value is not None else None
