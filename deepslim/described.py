"""What every described model (bundle, bundle header, exported artifact, teacher) shares: a signature and a
task, readable as the one-image ``input_spec`` and ``classes`` that deepslim had before signatures."""

from __future__ import annotations

from typing import Any

from deepslim.signature import Signature
from deepslim.spec import InputSpec
from deepslim.tasks import Task


def coerce(signature: Signature | InputSpec, task: Task | Any) -> tuple[Signature, Task]:
    """``signature`` and ``task``, where an :class:`InputSpec` and a class list stand for a one-image classifier."""
    if isinstance(signature, InputSpec):
        signature = Signature.from_input_spec(signature)
    if not isinstance(task, Task):
        task = Task.classification(list(task))
    return signature, task


class Described:
    """A mixin for classes with ``signature`` and ``task`` attributes; call :meth:`_coerce` in ``__post_init__``."""

    signature: Signature
    task: Task

    def _coerce(self) -> None:
        signature, task = coerce(self.signature, self.task)
        object.__setattr__(self, "signature", signature)  # works for frozen dataclasses too
        object.__setattr__(self, "task", task)

    @property
    def input_spec(self) -> InputSpec:
        """The image input (a ConfigError for a model that does not take exactly one image)."""
        return self.signature.to_input_spec()

    @property
    def classes(self) -> list[str]:
        return list(self.task.names)
