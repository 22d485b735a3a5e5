"""One call from a model to a verified artifact: ``export_model`` (what ``deepslim export`` runs)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.errors import ConfigError
from deepslim.fileio import atomic_files, check_new_outputs
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


def planned_files(target: Target, output: str | Path, *, from_bundle: bool) -> list[Path]:
    """Every file an export to ``target`` at ``output`` writes (from a bundle or an ONNX file), the artifact first."""
    out, target = Path(output), Target(target)
    if target is Target.ONNX:
        return [out, out.with_name(out.name + ".data")]  # the side file only for models over 2 GB
    if target is Target.OPENVINO:
        return [out, out.with_suffix(".bin")]
    files = [out, out.with_name(out.name + ".json")]
    if from_bundle:  # the engine is built from an ONNX export kept beside it
        onnx_path = out.with_suffix(".onnx")
        files += [onnx_path, onnx_path.with_name(onnx_path.name + ".data")]
    return files


def export_model(source: ModelBundle | str | Path, target: Target, output: str | Path, *,
                 precision: Precision = Precision.FP32, onnx_config: OnnxConfig | None = None,
                 ov_via: OVSource = OVSource.ONNX, tensorrt_config: TensorRTConfig | None = None,
                 verify: VerifyConfig | None = VerifyConfig(), force: bool = False) -> ExportResult:
    """Export ``source`` (a bundle, or an ONNX file for OpenVINO/TensorRT) and check parity unless verify=None.

    Every file is written under a temporary name and parity is checked there; the files are moved
    into place only when the check passes, so a failed or killed check leaves any previous files
    at ``output`` as they were. If any file the export would write (:func:`planned_files`) exists,
    nothing is done unless ``force=True`` (the CLI's ``--force`` rule).
    """
    target, precision, output = Target(target), Precision(precision), Path(output)
    source = source if isinstance(source, ModelBundle) else Path(source)
    check_request(source, target, output, precision)
    onnx_config = replace(onnx_config or OnnxConfig(), fp16=precision is Precision.FP16 and target is Target.ONNX)
    files = planned_files(target, output, from_bundle=isinstance(source, ModelBundle))
    check_new_outputs(files, force=force)
    with atomic_files(*files) as tmps:
        _write(source, target, tmps[0], precision, onnx_config, ov_via, tensorrt_config)
        parity = None
        if verify is not None:
            parity = check_parity(source, tmps[0], precision=precision.value, dataset=verify.dataset,
                                  samples=verify.samples, severity=verify.severity)
        written = [final for tmp, final in zip(tmps, files) if tmp.exists()]
    return ExportResult(output, parity, tuple(written[1:]))


def _write(source: ModelBundle | Path, target: Target, output: Path, precision: Precision, onnx_config: OnnxConfig,
           ov_via: OVSource, tensorrt_config: TensorRTConfig | None) -> Path:
    if target is Target.ONNX:
        return to_onnx(source, output, onnx_config)
    if target is Target.OPENVINO:
        return to_openvino(source, output, precision=precision.value, via=ov_via, onnx_config=onnx_config)
    trt_config = replace(tensorrt_config or TensorRTConfig(), precision=precision)
    onnx_path = source if isinstance(source, Path) else to_onnx(source, output.with_suffix(".onnx"), onnx_config)
    return to_tensorrt(onnx_path, output, trt_config)
