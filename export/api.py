"""One call from a model to a verified artifact: ``export_model`` (what ``deepslim export`` runs)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.errors import ConfigError
from deepslim.models import ModelBundle
from export.onnx import OnnxConfig, to_onnx
from export.options import OVSource, Precision, Target
from export.openvino import to_openvino
from export.parity import ParityReport, check_parity
from export.tensorrt import TensorRTConfig, check_qdq_for_tensorrt, require_tensorrt, to_tensorrt


SUFFIX = {Target.ONNX: ".onnx", Target.OPENVINO: ".xml", Target.TENSORRT: ".engine"}


@dataclass(frozen=True)
class VerifyConfig:
    dataset: str | None = None   # real inputs from its test split; None: seeded random inputs
    samples: int = 64
    severity: int = 3

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"--parity-samples must be a positive integer, got {self.samples}.")


@dataclass(frozen=True)
class ExportResult:
    artifact: Path
    parity: ParityReport | None
    extra_files: tuple[Path, ...] = ()


def check_request(source: ModelBundle | Path, target: Target, output: Path, precision: Precision) -> None:
    """Reject impossible requests before anything is written."""
    if output.suffix.lower() != SUFFIX[target]:
        raise ConfigError(f"A {target.value} export is named *{SUFFIX[target]}; got {output.name}.")
    if precision is Precision.INT8 and target is not Target.TENSORRT:
        raise ConfigError(f"--precision int8 for {target.value} comes from `deepslim compress quantize`, "
                          "not from export.")
    if not isinstance(source, ModelBundle):
        if artifact_kind(source) is not ArtifactKind.ONNX or target is Target.ONNX:
            raise ConfigError(f"Export to {target.value} starts from a bundle"
                              f"{'' if target is Target.ONNX else ' or an ONNX file'}; got {source.name}.")
        if target is Target.TENSORRT and precision is Precision.INT8:
            import onnx
            if problems := check_qdq_for_tensorrt(onnx.load(str(source), load_external_data=False)):
                raise ConfigError(f"{source.name} is not a TensorRT-ready int8 model: {problems[0]}.")
    elif target is Target.TENSORRT and precision is Precision.INT8:
        raise ConfigError("--precision int8 for TensorRT needs a Q/DQ ONNX file (from `deepslim compress quantize "
                          "--target tensorrt`), not a bundle.")
    if target is Target.TENSORRT:
        require_tensorrt()


def export_model(source: ModelBundle | str | Path, target: Target, output: str | Path, *,
                 precision: Precision = Precision.FP32, onnx_config: OnnxConfig | None = None,
                 ov_via: OVSource = OVSource.ONNX, tensorrt_config: TensorRTConfig | None = None,
                 verify: VerifyConfig | None = VerifyConfig()) -> ExportResult:
    """Export ``source`` (a bundle, or an ONNX file for OpenVINO/TensorRT) and check parity unless verify=None."""
    target, precision, output = Target(target), Precision(precision), Path(output)
    source = source if isinstance(source, ModelBundle) else Path(source)
    check_request(source, target, output, precision)
    onnx_config = replace(onnx_config or OnnxConfig(), fp16=precision is Precision.FP16 and target is Target.ONNX)
    extra: tuple[Path, ...] = ()
    if target is Target.ONNX:
        artifact = to_onnx(source, output, onnx_config)
    elif target is Target.OPENVINO:
        artifact = to_openvino(source, output, precision=precision.value, via=ov_via, onnx_config=onnx_config)
        extra = (output.with_suffix(".bin"),)
    else:
        trt_config = replace(tensorrt_config or TensorRTConfig(), precision=precision)
        onnx_path = source if isinstance(source, Path) else to_onnx(source, output.with_suffix(".onnx"), onnx_config)
        artifact = to_tensorrt(onnx_path, output, trt_config)
        extra = (output.with_name(output.name + ".json"),) + (() if onnx_path == source else (onnx_path,))
    parity = None
    if verify is not None:
        try:
            parity = check_parity(source, artifact, precision=precision.value, dataset=verify.dataset,
                                  samples=verify.samples)
        except Exception:
            for path in (artifact, *extra):  # a failed check leaves no artifact behind
                path.unlink(missing_ok=True)
            raise
    return ExportResult(artifact, parity, extra)
