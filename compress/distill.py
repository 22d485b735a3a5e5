"""Knowledge distillation: a student learns from a teacher's softened logits (and, optionally, its features).

    from compress.distill import DistillConfig, distill, open_teacher
    student = distill(open_teacher("base.safetensors"), load_model(arch="small_cnn", ...), "digits")

The teacher is a bundle (any PyTorch model deepslim loads) or an exported artifact run through
the benchmark runners (ONNX Runtime, OpenVINO, TensorRT), so the student can learn from the
model that is really deployed; that costs one runner call per training batch and gives
logits only (no feature distillation). Training goes through the shared loop
(:func:`deepslim.training.fit`): schedules, augmentation, mixed precision, gradient
accumulation, checkpoints and resume, and DDP under torchrun.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compress.losses import distillation_loss, feature_loss, make_adapter
from deepslim.config import TrainConfig
from deepslim.data import open_dataset
from deepslim.distributed import context, gather_shards, local_device, setup, shard
from deepslim.errors import ConfigError, DeepSlimError, ModelError, first_line
from deepslim.evaluation import check_compatible, predict_all, resolve_device
from deepslim.fileio import sha256_file
from deepslim.fingerprint import state_fingerprint
from deepslim.metrics import classification_metrics
from deepslim.models import ModelBundle
from deepslim.spec import InputSpec, StageRecord
from deepslim.training import fit, versions

_RUNNER_BACKEND = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}


class DistillError(DeepSlimError):
    """Teacher and student cannot be paired, or a named layer does not exist."""


@dataclass(frozen=True)
class DistillConfig:
    """How the student learns: the loss mix and the shared training loop's settings."""

    temperature: float = 4.0
    alpha: float = 0.5                 # weight of the KD term; 1 - alpha goes to cross-entropy with the labels
    feature_pairs: tuple[tuple[str, str], ...] = ()   # (teacher layer, student layer)
    feature_weight: float = 1.0        # weight of the mean feature MSE
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ConfigError(f"--temperature must be a positive number (the logits are divided by it), "
                              f"got {self.temperature}.")
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
            raise ConfigError(f"--alpha weighs the distillation loss against cross-entropy and must be between "
                              f"0 and 1, got {self.alpha}.")
        if not (math.isfinite(self.feature_weight) and self.feature_weight >= 0):
            raise ConfigError(f"--feature-weight must be >= 0, got {self.feature_weight}.")
        object.__setattr__(self, "feature_pairs", tuple((str(t), str(s)) for t, s in self.feature_pairs))

    @property
    def losses(self) -> list[str]:
        names = ["ce"] if self.alpha < 1 else []
        names += ["kd"] if self.alpha > 0 else []
        return names + (["feature_mse"] if self.feature_pairs and self.feature_weight > 0 else [])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(feature_pairs=[f"{t}:{s}" for t, s in self.feature_pairs], train=self.train.to_json(),
                    losses=self.losses)
        return data


def parse_feature_pairs(text: str | None) -> tuple[tuple[str, str], ...]:
    """``teacher.layer3:student.layer3,teacher.layer4:student.layer4`` -> ((layer3, layer3), (layer4, layer4)).

    The ``teacher.`` and ``student.`` prefixes are optional."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ConfigError(f"--feature-pairs takes TEACHER_LAYER:STUDENT_LAYER pairs separated by commas, "
                              f"got '{item.strip()}'.")
        t, s = (p.strip() for p in parts)
        pairs.append((t.removeprefix("teacher."), s.removeprefix("student.")))
    return tuple(pairs)


# --- the teacher ----------------------------------------------------------------------------------

class Teacher:
    """What distillation asks of a teacher: logits for a student's batch, features of named layers."""

    name: str
    kind: str
    input_spec: InputSpec
    classes: list[str]
    seconds: float = 0.0   # time spent in the teacher's forward passes
    features: dict[str, torch.Tensor]
    device: torch.device = torch.device("cpu")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch normalised with ``student_spec`` (set by :meth:`pair`)."""
        start = time.perf_counter()
        with torch.no_grad():
            out = self._forward(self._renormalize(x))
        self.seconds += time.perf_counter() - start
        return out

    def pair(self, student_spec: InputSpec, data_channels: int = 0) -> None:
        """Feed the teacher batches prepared for the student, converted to the teacher's normalisation.

        The spatial size must match. Channel counts may differ (1 vs 3) only for greyscale data
        (``data_channels == 1``), whose 3-channel form repeats one channel: the conversion is then exact.
        """
        (sc, *s_size), (tc, *t_size) = student_spec.shape, self.input_spec.shape
        grey = data_channels == 1 and {sc, tc} <= {1, 3}
        if s_size != t_size or (sc != tc and not grey):
            raise DistillError(f"The student takes {_shape(student_spec)} inputs but the teacher "
                               f"{_shape(self.input_spec)}; distillation feeds both the same batch, so build "
                               "the student at the teacher's input size and channels.")
        s_mean, s_std = _stats(student_spec)
        t_mean, t_std = _stats(self.input_spec)
        same = sc == tc and torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std)
        self._convert = None if same else (s_mean, s_std, t_mean, t_std)

    def _renormalize(self, x: torch.Tensor) -> torch.Tensor:
        convert = getattr(self, "_convert", None)
        if convert is None:
            return x
        s_mean, s_std, t_mean, t_std = (a.to(x.device, x.dtype) for a in convert)
        raw = x * s_std + s_mean
        if raw.shape[1] != t_mean.shape[0]:  # greyscale: 3 equal channels <-> 1
            raw = raw.mean(1, keepdim=True) if raw.shape[1] == 3 else raw.expand(-1, 3, -1, -1)
        return (raw - t_mean) / t_std

    def watch(self, layers: list[str]) -> None:
        raise DistillError(f"The teacher {self.name} is an exported {self.kind} artifact whose inner layers "
                           "cannot be read; use --feature-pairs with a bundle teacher, or logits only.")

    def predict(self, dataset: Dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels over the whole dataset (sharded over ranks under torchrun)."""
        ctx = context()
        logits, labels = [], []
        for x, y in DataLoader(shard(dataset, ctx), batch_size=batch_size, shuffle=False):
            logits.append(self.logits(x.to(self.device)).float().cpu())
            labels.append(y)
        total = len(dataset)
        return (gather_shards(torch.cat(logits).numpy(), total, ctx),
                gather_shards(torch.cat(labels).numpy(), total, ctx))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def close(self) -> None:
        """Drop hooks and runners."""

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchTeacher(Teacher):
    """A PyTorch teacher in eval mode; forward hooks read the features of named layers."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle, self.model = bundle, bundle.model.eval()
        self.name = bundle.path.name if bundle.path else bundle.arch.name
        self.kind, self.input_spec, self.classes = "bundle", bundle.input_spec, list(bundle.classes)
        self.features, self._hooks = {}, []
        self.device = next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def to(self, device: torch.device) -> TorchTeacher:
        self.model.to(device)
        self.device = device
        return self

    def watch(self, layers: list[str]) -> None:
        modules = dict(self.model.named_modules())
        targets = [_module(modules, name, "teacher") for name in layers]  # every name checked before any hook
        for module, name in zip(targets, layers):
            self._hooks.append(module.register_forward_hook(_capture(self.features, name)))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.device:
            self.to(x.device)
        try:
            return self.model(x)
        except Exception as exc:  # a user's model may raise anything
            raise ModelError(f"The teacher fails on inputs of shape {tuple(x.shape)}: {first_line(exc)}.") from exc

    def identity(self) -> dict[str, Any]:
        digest = sha256_file(self.bundle.path) if self.bundle.path else state_fingerprint(self.model)
        return {"name": self.name, "kind": self.kind, "sha256": digest}

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.model.cpu()


class RunnerTeacher(Teacher):
    """An exported artifact (ONNX, OpenVINO IR, TensorRT engine) as the teacher, through its runner."""

    def __init__(self, path: Path, backend: str | None = None, *, device: str = "cpu") -> None:
        from benchmarks.runners import RunnerOptions, open_runner
        self.path = Path(path)
        backend = backend or _RUNNER_BACKEND.get(self.path.suffix.lower())
        if backend is None:
            raise ConfigError(f"{path} is not an exported artifact (.onnx, .xml or .engine).")
        self.runner = open_runner(self.path, backend, RunnerOptions(device=device))
        meta = self.runner.meta
        self.name, self.kind, self.backend = self.path.name, self.path.suffix.lower().lstrip("."), backend
        self.input_spec, self.classes, self.features = meta.input_spec, list(meta.classes), {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the batch in chunks the artifact accepts (a TensorRT profile or a fixed ONNX batch)."""
        batch = x.detach().float().cpu().numpy()
        step = self.runner.max_batch or len(batch)
        try:
            outs = [np.asarray(self.runner.run(batch[i:i + step]), dtype=np.float32)
                    for i in range(0, len(batch), step)]
        except Exception as exc:  # runtimes raise their own exception types
            raise ModelError(f"The teacher {self.name} fails on a batch of shape {tuple(batch[:step].shape)} "
                             f"through {self.backend}: {first_line(exc)}.") from exc
        return torch.from_numpy(np.concatenate(outs)).to(x.device)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "backend": self.backend, "sha256": sha256_file(self.path)}

    def close(self) -> None:
        self.runner.__exit__(None, None, None)


def open_teacher(source: str | Path | ModelBundle | Teacher, *, backend: str | None = None,
                 device: str = "cpu") -> Teacher:
    """A teacher from a bundle (or loaded model) or from an exported artifact's path."""
    if isinstance(source, Teacher):
        return source
    if isinstance(source, ModelBundle):
        return TorchTeacher(source)
    path = Path(source)
    if path.suffix.lower() in _RUNNER_BACKEND:
        return RunnerTeacher(path, backend, device=device)
    from deepslim.models import load_model
    return TorchTeacher(load_model(path))


# --- the student ------------------------------------------------------------------------------

class StudentWithAdapters(nn.Module):
    """What the train loop optimises: the student plus the 1x1 adapters of the feature pairs.

    Forward returns the student's logits; in training mode it also leaves the adapted features
    of the watched layers in ``adapted`` (computed inside forward, so DDP sees every parameter used).
    """

    def __init__(self, student: nn.Module, layers: list[str], adapters: list[nn.Module]) -> None:
        super().__init__()
        self.student, self.adapters, self.layers = student, nn.ModuleList(adapters), layers
        self.captured: dict[str, torch.Tensor] = {}
        self.adapted: list[torch.Tensor] = []
        modules = dict(student.named_modules())
        targets = [_module(modules, n, "student") for n in layers]  # every name checked before any hook
        self._hooks = [m.register_forward_hook(_capture(self.captured, n)) for m, n in zip(targets, layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.student(x)
        if self.training and self.layers:
            self.adapted = [a(self.captured[n]) for a, n in zip(self.adapters, self.layers)]
        return out

    def close(self) -> nn.Module:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.captured.clear()
        self.adapted = []
        return self.student


def _capture(store: dict[str, torch.Tensor], name: str) -> Callable:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        store[name] = output[0] if isinstance(output, (tuple, list)) else output
    return hook


def _module(modules: dict[str, nn.Module], name: str, role: str) -> nn.Module:
    if name not in modules or not name:
        known = [n for n in modules if n and "." not in n] or [n for n in modules if n][:12]
        raise DistillError(f"--feature-pairs: the {role} has no layer '{name}'; its top-level layers are "
                           f"{', '.join(known)} (`deepslim info MODEL --layers` lists them all).")
    return modules[name]


# --- the stage ----------------------------------------------------------------------------------

def distill(teacher: Teacher | ModelBundle, student: ModelBundle, dataset: str = "digits",
            cfg: DistillConfig | None = None, *, severity: int = 3, checkpoint: str | Path | None = None,
            resume: bool = False, progress: bool = True, log: Callable[[str], None] | None = None) -> ModelBundle:
    """Train ``student`` to match ``teacher`` on ``dataset``; return it as a bundle with the stage in its lineage.

    The student is trained in place (pass a copy to keep the original). Checks that can fail
    (class counts, input shapes, layer names, a forward pass of each) run before any training.
    """
    cfg = cfg or DistillConfig()
    say = log or (lambda _msg: None)
    start = time.perf_counter()
    teacher = teacher if isinstance(teacher, Teacher) else TorchTeacher(teacher)
    wrapper = None
    try:
        source = open_dataset(dataset, severity=severity)
        _check_pairing(teacher, student, source.info.channels, say)
        check_compatible(student, source.info.num_classes, dataset)
        start_weights = state_fingerprint(student.model)
        wrapper = _prepare(teacher, student, cfg)
        spec = student.input_spec
        splits = {name: source.split(name, spec, augment=cfg.train.augment and name == "train")
                  for name in ("train", "val", "test")}
        ctx = setup(cfg.train.device)
        device = resolve_device(local_device(ctx, cfg.train.device))
        if isinstance(teacher, TorchTeacher):
            teacher.to(device)
        if isinstance(teacher, RunnerTeacher):
            where = "the GPU" if teacher.backend == "tensorrt" else "the CPU"
            say(f"teacher {teacher.name} runs through {teacher.backend}: one inference of the exported model per "
                f"training batch, on {where}, logits only")
        teacher_test = classification_metrics(*teacher.predict(splits["test"]))
        before = classification_metrics(*predict_all(student.model, splits["test"], device=str(device)))
        teacher_identity = teacher.identity()
        identity = {"student_arch": student.arch.to_json(), "student_weights": start_weights,
                    "input": spec.to_json(), "dataset": source.info.name,
                    "teacher": teacher_identity, "distill": {k: v for k, v in cfg.to_json().items()
                                                               if k != "train"}}
        teacher.seconds = 0.0
        result = fit(wrapper, splits["train"], splits["val"], cfg.train, loss_fn=_loss_fn(teacher, wrapper, cfg),
                     checkpoint=Path(checkpoint) if checkpoint else None, resume=resume, progress=progress,
                     identity=identity)
        teacher_seconds = teacher.seconds
        model = wrapper.close()
        test = classification_metrics(*predict_all(model, splits["test"], device=str(device)))
    finally:
        if wrapper is not None:
            wrapper.close()
        teacher.close()
    params = {**cfg.to_json(), "teacher": teacher_identity, "dataset": source.info.name}
    metrics = {"teacher_test": teacher_test, "test_before": before, "test": test, "val_top1": result.best_val_top1,
               "best_epoch": result.best_epoch, "history": result.history,
               "teacher_seconds": round(teacher_seconds, 2)}
    record = StageRecord("distill", params, round(time.perf_counter() - start, 2), metrics, versions=versions())
    return student.with_record(record, model=model.cpu().eval())


def _check_pairing(teacher: Teacher, student: ModelBundle, data_channels: int, say: Callable[[str], None]) -> None:
    if len(teacher.classes) != student.num_classes:
        raise DistillError(f"The teacher predicts {len(teacher.classes)} classes but the student "
                           f"{student.num_classes}; distillation needs the same classes in the same order.")
    if list(teacher.classes) != list(student.classes):
        say("warning: teacher and student name their classes differently; they are matched by position")
    teacher.pair(student.input_spec, data_channels)


def _prepare(teacher: Teacher, student: ModelBundle, cfg: DistillConfig) -> StudentWithAdapters:
    """Hook the feature layers, run one batch through both models and size the adapters on it."""
    pairs = _active_pairs(cfg)
    if pairs:
        teacher.watch([t for t, _ in pairs])
    wrapper = StudentWithAdapters(student.model, [s for _, s in pairs], [])
    try:
        x = torch.zeros(2, *student.input_spec.shape)
        out = _trial_forward(student)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != student.num_classes:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"The student returns {got} for a batch of 2, not (2, {student.num_classes}) logits.")
        if not pairs:
            return wrapper
        teacher.logits(x)
        torch.manual_seed(cfg.train.seed)
        adapters = [_adapter(wrapper.captured, teacher.features, t, s) for t, s in pairs]
        wrapper.adapters = nn.ModuleList(adapters)
        return wrapper
    except BaseException:
        wrapper.close()
        raise


def _trial_forward(student: ModelBundle) -> Any:
    model = student.model
    was_training = model.training
    try:
        with torch.no_grad():
            return model.eval()(torch.zeros(2, *student.input_spec.shape))
    except Exception as exc:  # a user's model may raise anything
        raise ModelError(f"The student does not accept {_shape(student.input_spec)} inputs: "
                         f"{first_line(exc)}.") from exc
    finally:
        model.train(was_training)


def _adapter(student_feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor], t: str,
             s: str) -> nn.Module:
    """The adapter of one feature pair, sized and tried on the trial batch's features."""
    for role, feats, name in (("teacher", teacher_feats, t), ("student", student_feats, s)):
        if not isinstance(feats.get(name), torch.Tensor):
            raise DistillError(f"--feature-pairs {t}:{s}: the {role} layer '{name}' gives no tensor in a forward "
                               "pass (it is not called, or returns something else).")
    try:
        adapter = make_adapter(student_feats[s].shape, teacher_feats[t].shape)
        with torch.no_grad():
            feature_loss(adapter(student_feats[s]), teacher_feats[t])
    except (ValueError, RuntimeError) as exc:
        raise DistillError(f"--feature-pairs {t}:{s}: {first_line(exc)}.") from exc
    return adapter


def _active_pairs(cfg: DistillConfig) -> tuple[tuple[str, str], ...]:
    """Feature pairs that contribute to the loss (none at --feature-weight 0: unused adapters would stall DDP)."""
    return cfg.feature_pairs if cfg.feature_weight > 0 else ()


def _loss_fn(teacher: Teacher, wrapper: StudentWithAdapters, cfg: DistillConfig):
    smoothing, pairs = cfg.train.label_smoothing, _active_pairs(cfg)

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = teacher.logits(x)
        logits = net(x)
        loss = distillation_loss(logits, target, y, temperature=cfg.temperature, alpha=cfg.alpha,
                                 label_smoothing=smoothing)
        if pairs:
            feats = sum(feature_loss(s, teacher.features[t]) for s, (t, _) in zip(wrapper.adapted, pairs))
            loss = loss + cfg.feature_weight * feats / len(pairs)
        return loss

    return loss_fn


def kd_finetune_loss(teacher_model: nn.Module, temperature: float, alpha: float):
    """A loss for :func:`deepslim.training.fit` that distills from ``teacher_model`` (logits only).

    Used by pruning's ``--recover kd``: the teacher is the model before it was pruned."""
    teacher_model.eval()

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if next(teacher_model.parameters()).device != x.device:
            teacher_model.to(x.device)
        with torch.no_grad():
            target = teacher_model(x)
        return distillation_loss(net(x), target, y, temperature=temperature, alpha=alpha)

    return loss_fn


def _stats(spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    c = spec.shape[0]
    return (torch.tensor(spec.mean, dtype=torch.float32).view(c, 1, 1),
            torch.tensor(spec.std, dtype=torch.float32).view(c, 1, 1))


def _shape(spec: InputSpec) -> str:
    c, h, w = spec.shape
    return f"{c}x{h}x{w}"


__all__ = ["DistillConfig", "DistillError", "RunnerTeacher", "StudentWithAdapters", "Teacher", "TorchTeacher",
           "distill", "kd_finetune_loss", "open_teacher", "parse_feature_pairs"]
