"""Typed, user-facing errors.

Every failure caused by user input is a :class:`DeepSlimError` whose message is
one sentence saying what was wrong and what to do. The CLI prints it without a
traceback and exits with code 2.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


class DeepSlimError(Exception):
    """Base class of every user-facing deepslim error."""

    exit_code = 2


class ConfigError(DeepSlimError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class InputFileError(DeepSlimError):
    """An input file is missing, unreadable, truncated or corrupt."""


class OutputError(DeepSlimError):
    """An output cannot be written (exists without --force, equals an input, ...)."""


class ModelError(DeepSlimError):
    """A model cannot be built or loaded."""


class UnknownArchitectureError(ModelError):
    """The architecture name is not known."""


class StateDictMismatchError(ModelError):
    """Weights do not fit the architecture."""


class UnsafePickleError(ModelError):
    """Loading would unpickle a file and the user did not pass --trust-pickle."""


class UntrustedCodeError(ModelError):
    """Loading would run Python code a model file names, and the user did not allow it (--trust-code)."""


class DatasetError(DeepSlimError):
    """A dataset cannot be found, read or matched to the model."""


class BackendMissingError(DeepSlimError):
    """An optional backend (onnxruntime, openvino, tensorrt, ...) is not installed."""


class ArtifactMismatchError(DeepSlimError):
    """An artifact was built for another runtime version or device (e.g. a TensorRT engine)."""
