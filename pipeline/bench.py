"""Turn ``deepslim bench`` arguments into benchmark targets, exporting bundles on the way.

``benchmarks`` measures the artifacts it is given; making the ONNX/IR files a bundle
needs for the requested backends is the pipeline's job (and each is parity-checked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks import Backend, BenchTarget
from benchmarks.runners import can_run
from deepslim.artifact import ArtifactKind, artifact_kind
from deepslim.errors import ConfigError
from deepslim.data import open_dataset
from deepslim.evaluation import check_compatible
from deepslim.fileio import require_file
from deepslim.models import ModelBundle, load_model
from deepslim.signature import Signature, parse_size
from export import OnnxConfig, Target, VerifyConfig, export_model

_EXPORT_FOR = {Backend.ONNXRUNTIME: Target.ONNX, Backend.OPENVINO: Target.OPENVINO, Backend.TENSORRT: Target.TENSORRT}
_SUFFIX = {Target.ONNX: ".onnx", Target.OPENVINO: ".xml", Target.TENSORRT: ".engine"}


def plan_targets(artifacts: Sequence[Path], backends: Sequence[Backend], export_dir: Path, *,
                 input_size: int | tuple[int, int] | str | None = None, dataset: str | None = "digits",
                 sources: Mapping[Path, Path] | None = None) -> tuple[list[BenchTarget], list[str]]:
    """Every (artifact, backend) pair that can run, exporting bundles for ONNX/IR backends; plus notes.

    ``input_size`` (N, (H, W) or "HxW") runs one-image models at another size; any other model is refused.
    ``sources`` maps an OpenVINO IR to the bundle it was made from, so that its MACs can be
    recounted when it runs at another ``input_size``."""
    if not artifacts:
        raise ConfigError("Give at least one artifact to benchmark.")
    input_size = parse_size(input_size)
    kinds = _validate(artifacts, backends, input_size)  # every cheap check before the first export
    bundles = {p: load_model(p) for p, kind in zip(artifacts, kinds) if kind is ArtifactKind.BUNDLE}
    if input_size is not None:
        for path, bundle in bundles.items():
            _check_resizable(bundle.signature, Path(path))
    if dataset is not None:
        info = open_dataset(dataset).info
        for path, bundle in bundles.items():
            check_compatible(bundle, info, dataset)
    targets, notes = [], []
    stems = _unique_stems(artifacts)
    for path, kind in zip(artifacts, kinds):
        for backend in backends:
            if can_run(backend, path):
                resized_ir = backend is Backend.OPENVINO and kind is ArtifactKind.OPENVINO and input_size is not None
                sized = backend is Backend.TORCH or resized_ir
                source = _source(Path(path), sources, bundles) if resized_ir else None
                targets.append(BenchTarget(Path(path), backend, input_size if sized else None, source=source))
            elif kind is ArtifactKind.BUNDLE:
                targets.append(_exported(bundles[path], Path(path), stems[path], backend, export_dir, input_size,
                                         dataset))
            else:
                notes.append(f"{Path(path).name} is not run on {backend.value} (it runs {kind.value} artifacts only)")
    return targets, notes


def _source(path: Path, sources: Mapping[Path, Path] | None, loaded: dict) -> ModelBundle | None:
    bundle_path = (sources or {}).get(path)
    if bundle_path is None:
        return None
    if bundle_path not in loaded:
        loaded[bundle_path] = load_model(bundle_path)
    return loaded[bundle_path]


def _validate(artifacts: Sequence[Path], backends: Sequence[Backend],
              input_size: tuple[int, int] | None) -> list[ArtifactKind]:
    kinds = [artifact_kind(require_file(path, "artifact")) for path in artifacts]
    for path, kind in zip(artifacts, kinds):
        if input_size is not None and kind not in (ArtifactKind.BUNDLE, ArtifactKind.OPENVINO):
            raise ConfigError(f"--input-size applies to bundles and OpenVINO IRs only; {Path(path).name} has a fixed "
                              "input size.")
        if kind is not ArtifactKind.BUNDLE and not any(can_run(b, path) for b in backends):
            raise ConfigError(f"None of the backends {', '.join(b.value for b in backends)} can run {path}.")
        if input_size is not None and kind is ArtifactKind.OPENVINO:
            from benchmarks.runners import read_meta
            _check_resizable(read_meta(path).signature, Path(path))
    return kinds


def _check_resizable(signature: Signature, path: Path) -> None:
    if not signature.single_image:
        raise ConfigError(f"--input-size applies to models with one image input; {path.name} takes "
                          f"{signature.describe()}.")


def _unique_stems(artifacts: Sequence[Path]) -> dict[Path, str]:
    """File stems for the exports, one per source file (by resolved path): the stems; where two sources share
    one, the parent folder's name and the stem (a run directory's stages all hold a model.safetensors); where
    those still repeat, a short hash of the resolved path too (runs/a/02-prune and runs/b/02-prune).
    A part that is empty (the folder name of a file at the filesystem root) is left out and leading dashes are
    dropped, so no name starts with "-" (which a shell would read as an option)."""
    resolved = {p: Path(p).resolve() for p in artifacts}
    sources = list(dict.fromkeys(resolved.values()))

    def named(path: Path, level: int) -> str:
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        parts = [[path.stem], [path.parent.name, path.stem], [path.parent.name, path.stem, digest]][level]
        return "-".join(part for part in parts if part).lstrip("-") or "model"

    level = next(n for n in range(3) if n == 2 or len({named(r, n) for r in sources}) == len(sources))
    return {p: named(resolved[p], level) for p in artifacts}


def _exported(bundle: ModelBundle, path: Path, stem: str, backend: Backend, export_dir: Path,
              input_size: tuple[int, int] | None, dataset: str | None) -> BenchTarget:
    target = _EXPORT_FOR[backend]
    size = "" if input_size is None else f"_{input_size[0]}px" if input_size[0] == input_size[1] else \
        f"_{input_size[0]}x{input_size[1]}px"
    out = export_dir / f"{stem}{size}{_SUFFIX[target]}"
    result = export_model(bundle, target, out, onnx_config=OnnxConfig(input_size=input_size),
                          verify=VerifyConfig(dataset=dataset), force=True)  # the report's own folder
    note = f"exported from {path.name} for this run; {_parity_words(result)}"
    return BenchTarget(result.artifact, backend, note=note)


def _parity_words(result) -> str:
    parity = result.parity
    if parity is None:
        return "parity not checked"
    words = f"parity vs torch: max |diff| {parity.max_abs:.1e}"
    agreement = getattr(parity, "agreement", getattr(parity, "top1_agreement", None))
    return words + (f", agreement {agreement:.3f}" if agreement is not None else "")
