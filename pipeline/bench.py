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
from deepslim.fileio import require_model
from deepslim.models import ModelBundle, load_model
from deepslim.signature import Signature, parse_size
from deepslim.spec import ArchSource
from export import OnnxConfig, Target, VerifyConfig, export_model

_EXPORT_FOR = {Backend.ONNXRUNTIME: Target.ONNX, Backend.OPENVINO: Target.OPENVINO, Backend.TENSORRT: Target.TENSORRT}
_SUFFIX = {Target.ONNX: ".onnx", Target.OPENVINO: ".xml", Target.TENSORRT: ".engine"}


def plan_targets(artifacts: Sequence[Path], backends: Sequence[Backend], export_dir: Path, *,
                 input_size: int | tuple[int, int] | str | None = None, dataset: str | None = "digits",
                 sources: Mapping[Path, Path] | None = None, sequences: Sequence[int] = (),
                 batches: Sequence[int] = (1,)) -> tuple[list[BenchTarget], list[str]]:
    """Every (artifact, backend) pair that can run, exporting bundles for ONNX/IR backends; plus notes.

    ``input_size`` (N, (H, W) or "HxW") runs one-image models at another size; any other model is refused.
    ``sources`` maps an OpenVINO IR to the bundle it was made from, so that its MACs can be
    recounted when it runs at another ``input_size``. ``sequences`` (--seq-len) needs models with a
    sequence input that take every length; their exports keep the bundle as their source (MACs
    at each length), and a TensorRT engine's profile spans ``batches`` and ``sequences``."""
    if not artifacts:
        raise ConfigError("Give at least one artifact to benchmark.")
    input_size = parse_size(input_size)
    kinds = _validate(artifacts, backends, input_size)  # every cheap check before the first export
    check_sequence_lengths(artifacts, sequences)
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
                                         dataset, tuple(sequences), tuple(batches)))
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
    kinds = [artifact_kind(require_model(path, "artifact")) for path in artifacts]
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


def check_sequence_lengths(artifacts: Sequence[Path], sequences: Sequence[int]) -> None:
    """--seq-len fits every artifact: a sequence input, and no length beyond its position embeddings (a bundle's
    Hugging Face config says how many; an export's tokenizer records its limit). Reads headers and metadata
    only, so the CLI can refuse before anything else."""
    if not sequences:
        return
    from benchmarks.runners import read_meta
    from benchmarks.text_inputs import check_sequences, sequence_limit
    from deepslim.bundle import read_header
    for path in artifacts:
        path = Path(path)
        if artifact_kind(require_model(path, "artifact")) is ArtifactKind.BUNDLE:
            header = read_header(path)
            if header is None:
                continue  # loading it says what is wrong
            config = None
            if header.arch.source is ArchSource.HF:
                from deepslim.hf import make_config
                config = make_config(header.arch.kwargs)
            signature, limit = header.signature, sequence_limit(header.signature, config)
        else:
            signature = read_meta(path).signature
            limit = sequence_limit(signature)
        check_sequences(signature, tuple(sequences), path.name, limit)


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
              input_size: tuple[int, int] | None, dataset: str | None, sequences: tuple[int, ...] = (),
              batches: tuple[int, ...] = (1,)) -> BenchTarget:
    target = _EXPORT_FOR[backend]
    size = "" if input_size is None else f"_{input_size[0]}px" if input_size[0] == input_size[1] else \
        f"_{input_size[0]}x{input_size[1]}px"
    out = export_dir / f"{stem}{size}{_SUFFIX[target]}"
    extra = {}
    if sequences and target is Target.TENSORRT:  # the engine's profile covers every timed shape
        from export import TensorRTConfig
        extra["tensorrt_config"] = TensorRTConfig(batches=tuple(batches), dim_ranges={
            "sequence": (min(sequences), max(sequences), max(sequences))})
    result = export_model(bundle, target, out, onnx_config=OnnxConfig(input_size=input_size),
                          verify=VerifyConfig(dataset=dataset), force=True, **extra)  # the report's own folder
    note = f"exported from {path.name} for this run; {_parity_words(result)}"
    return BenchTarget(result.artifact, backend, note=note, source=bundle if sequences else None)


def _parity_words(result) -> str:
    parity = result.parity
    if parity is None:
        return "parity not checked"
    words = f"parity vs torch: max |diff| {parity.max_abs:.1e}"
    agreement = getattr(parity, "agreement", getattr(parity, "top1_agreement", None))
    return words + (f", agreement {agreement:.3f}" if agreement is not None else "")
