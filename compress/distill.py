"""Knowledge distillation: a student learns from a teacher's outputs (and, optionally, its features).

    from compress.distill import DistillConfig, distill, open_teacher
    student = distill(open_teacher("base.safetensors"), load_model(arch="small_cnn", ...), "digits")

The teacher is a bundle (any PyTorch model deepslim loads) or an exported artifact run through
the benchmark runners (ONNX Runtime, OpenVINO, TensorRT), so the student can learn from the
model that is really deployed; that costs one runner call per training batch and gives
the task output only (no feature distillation); the teachers live in :mod:`compress.teachers`.
Hugging Face encoders also distill layer by layer (``hidden_weight``, ``attention_weight``, ``layer_map``:
hidden states and attention maps, TinyBERT / MiniLM style; :mod:`compress.transformer_kd`).

Any model kind distills (:mod:`deepslim.tasks`): temperature KL on the logits for classification,
BCE against the teacher's sigmoid for multilabel, MSE against the teacher's prediction for
regression, each mixed by ``alpha`` with the task's own loss on the true targets. Both models are
called with every input and read through their signatures' task outputs; they must solve the same
task (kind and width) on the same inputs.
Training goes through the shared loop (:func:`deepslim.training.fit`): schedules,
augmentation, mixed precision, gradient accumulation, checkpoints and resume, DDP under
torchrun, BatchNorm recalibration, and a fine-tuning start for a student that is trained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.losses import feature_loss, make_adapter, task_distillation_loss
from compress.teachers import (DistillError, RunnerTeacher, Teacher, TorchTeacher, capture, inputs_text,
                               layer_named, open_teacher, shape_text)
from compress.transformer_kd import AUTO, AttentionLoss, TransformerKD, layer_map_text, parse_layer_map
from deepslim.config import TrainConfig
from deepslim.data import open_dataset
from deepslim.distributed import local_device, setup
from deepslim.errors import ConfigError, ModelError, first_line
from deepslim.evaluation import check_compatible, predict_all, resolve_device
from deepslim.finetune import finetune_config, kept_start_note
from deepslim.fingerprint import state_fingerprint
from deepslim.metrics import task_metrics
from deepslim.modelio import as_args, call, example_inputs, output_layout, task_output
from deepslim.models import ModelBundle
from deepslim.provenance import data_policies, recorded_name
from deepslim.signature import InputKind, Signature
from deepslim.spec import StageRecord
from deepslim.tasks import Task
from deepslim.training import (fit, fit_target_scale, input_identity, measure_start, open_splits, sayer,
                               start_at_target_mean, val_metric, versions)


@dataclass(frozen=True)
class DistillConfig:
    """How the student learns: the loss mix and the shared training loop's settings."""

    temperature: float = 4.0
    alpha: float = 0.5                 # weight of the KD term; 1 - alpha goes to the task's loss on the targets
    feature_pairs: tuple[tuple[str, str], ...] = ()   # (teacher layer, student layer)
    feature_weight: float = 1.0        # weight of the mean feature MSE
    hidden_weight: float = 0.0         # transformers: weight of the mean hidden-state MSE over the layer map's pairs
    attention_weight: float = 0.0      # transformers: weight of the mean attention-map loss over the pairs
    layer_map: str = AUTO              # "auto" or "0:1,1:3" (student layer : teacher layer, 0-based)
    attention_loss: AttentionLoss = AttentionLoss.KL
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ConfigError(f"--temperature must be a positive number (the logits are divided by it), "
                              f"got {self.temperature}.")
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
            raise ConfigError(f"--alpha weighs the distillation loss against the loss on the true targets and "
                              f"must be between 0 and 1, got {self.alpha}.")
        for option, value in (("--feature-weight", self.feature_weight), ("--hidden-weight", self.hidden_weight),
                              ("--attention-weight", self.attention_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{option} must be a number >= 0, got {value}.")
        layer_map = parse_layer_map(self.layer_map)  # a ConfigError for a malformed map
        if layer_map is not None and not self.transformer_kd:
            raise ConfigError("--layer-map pairs the layers of --hidden-weight and --attention-weight; give one of "
                              "them a weight above 0, or leave --layer-map out.")
        object.__setattr__(self, "layer_map", AUTO if layer_map is None else layer_map_text(layer_map))
        object.__setattr__(self, "attention_loss", AttentionLoss(self.attention_loss))
        object.__setattr__(self, "feature_pairs", tuple((str(t), str(s)) for t, s in self.feature_pairs))

    @property
    def losses(self) -> list[str]:
        names = ["ce"] if self.alpha < 1 else []
        names += ["kd"] if self.alpha > 0 else []
        names += ["feature_mse"] if self.feature_pairs and self.feature_weight > 0 else []
        names += ["hidden_mse"] if self.hidden_weight > 0 else []
        return names + ([f"attention_{self.attention_loss.value}"] if self.attention_weight > 0 else [])

    @property
    def transformer_kd(self) -> bool:
        """Whether encoder layers' hidden states or attention maps are distilled (:mod:`compress.transformer_kd`)."""
        return self.hidden_weight > 0 or self.attention_weight > 0

    def to_json(self) -> dict[str, Any]:
        """The record's config; the transformer options only when they are on (other records stay as they were)."""
        data = asdict(self)
        data.update(feature_pairs=[f"{t}:{s}" for t, s in self.feature_pairs], train=self.train.to_json(),
                    attention_loss=self.attention_loss.value, losses=self.losses)
        if not self.transformer_kd:
            for key in ("hidden_weight", "attention_weight", "layer_map", "attention_loss"):
                del data[key]
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


# --- the student ------------------------------------------------------------------------------

class StudentWithAdapters(nn.Module):
    """What the train loop optimises: the student plus the 1x1 adapters of the feature pairs (and, for
    transformers, ``kd``: the layer map's projections, :class:`compress.transformer_kd.TransformerKD`).

    Forward takes every input and returns what the student returns; in training mode it also leaves
    the adapted features of the watched layers in ``adapted`` and the encoder layers' projected hidden states
    and attention maps in ``kd`` (computed inside forward, so DDP sees every parameter used).
    """

    def __init__(self, student: nn.Module, layers: list[str], adapters: list[nn.Module]) -> None:
        super().__init__()
        self.student, self.adapters, self.layers = student, nn.ModuleList(adapters), layers
        self.captured: dict[str, torch.Tensor] = {}
        self.adapted: list[torch.Tensor] = []
        self.kd: TransformerKD | None = None
        modules = dict(student.named_modules())
        targets = [layer_named(modules, n, "student") for n in layers]  # every name checked before any hook
        self._hooks = [m.register_forward_hook(capture(self.captured, n)) for m, n in zip(targets, layers)]

    def forward(self, *x: torch.Tensor) -> Any:
        out = self.kd.student_forward(self.student, x) if self.training and self.kd is not None else self.student(*x)
        if self.training and self.layers:
            self.adapted = [a(self.captured[n]) for a, n in zip(self.adapters, self.layers)]
        return out

    def close(self) -> nn.Module:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.captured.clear()
        self.adapted = []
        if self.kd is not None:
            self.kd.close()
        return self.student


# --- the stage ----------------------------------------------------------------------------------

def distill(teacher: Teacher | ModelBundle, student: ModelBundle, dataset: str = "digits",
            cfg: DistillConfig | None = None, *, severity: int = 3, checkpoint: str | Path | None = None,
            resume: bool = False, progress: bool = True, log: Callable[[str], None] | None = None) -> ModelBundle:
    """Train ``student`` to match ``teacher`` on ``dataset``; return it as a bundle with the stage in its lineage.

    The student is trained in place (pass a copy to keep the original). Checks that can fail
    (task kind and width, inputs, layer names, a forward pass of each) run before any training.
    A student that starts trained is fine-tuned at a tenth of the default learning rate unless
    ``cfg.train.lr`` is set, and the result is the better on val of its start and the best epoch
    (:mod:`deepslim.finetune`); each such decision is said through ``log`` and kept in ``notes``.
    The record carries ``val_<primary>`` (``val_top1`` for a classifier) and the task's test metrics
    (:func:`deepslim.metrics.task_metrics`) of the teacher and of the student before and after.
    """
    cfg = cfg or DistillConfig()
    say = sayer(progress, log)
    start = time.perf_counter()
    teacher = teacher if isinstance(teacher, Teacher) else TorchTeacher(teacher)
    wrapper = None
    try:
        source = open_dataset(dataset, severity=severity)
        _check_pairing(teacher, student, _data_channels(source.info), say)
        check_compatible(student, source.info, dataset)
        start_weights = state_fingerprint(student.model)
        wrapper = _prepare(teacher, student, cfg)
        spec, task = student.signature, student.task
        splits = open_splits(source, spec, cfg.train.augment, student.model, task=task)
        student = fit_target_scale(student, splits["train"])
        task = student.task
        device = resolve_device(local_device(setup(cfg.train.device), cfg.train.device))
        if isinstance(teacher, TorchTeacher):
            teacher.to(device)
        if isinstance(teacher, RunnerTeacher):
            where = "the GPU" if teacher.backend == "tensorrt" else "the CPU"
            say(f"teacher {teacher.name} runs through {teacher.backend}: one inference of the exported model per "
                f"training batch, on {where}, its task output only")
        teacher_out, targets = teacher.predict(splits["test"])
        teacher_test = task_metrics(task, teacher_out, targets)
        before = _test_metrics(student.model, splits["test"], task, spec, device, teacher_out)
        begin = measure_start(student.model, splits["val"], student.lineage, cfg.train, str(device), task=task,
                              signature=spec)
        if not begin.trained:
            start_at_target_mean(student.model, task)
        tuned, lr_note = finetune_config(cfg.train, begin)
        cfg = replace(cfg, train=tuned)
        if lr_note:
            say(lr_note)
        teacher_identity = teacher.identity()
        identity = {"student_arch": student.arch.to_json(), "student_weights": start_weights,
                    "input": input_identity(spec), "dataset": source.info.name,
                    "teacher": teacher_identity, "distill": {k: v for k, v in cfg.to_json().items()
                                                               if k != "train"}}
        if not task.is_classification:
            identity["task"] = task.to_json()
        teacher.seconds = 0.0
        loss_fn = _loss_fn(teacher, wrapper, cfg, task, spec)
        result = fit(wrapper, splits["train"], splits["val"], cfg.train, loss_fn=loss_fn,
                     checkpoint=Path(checkpoint) if checkpoint else None, resume=resume, progress=progress,
                     identity=identity, keep_start=begin.trained, start_val_top1=begin.val_top1,
                     bn_data=splits.get("bn"), task=task, signature=spec)
        teacher_seconds = teacher.seconds
        layer_pairs = {"layer_pairs": layer_map_text(wrapper.kd.pairs)} if wrapper.kd is not None else {}
        model = wrapper.close()
        test = _test_metrics(model, splits["test"], task, spec, device, teacher_out)
    finally:
        if wrapper is not None:
            wrapper.close()
        teacher.close()
    notes = ([lr_note] if lr_note else []) + result.notes
    if result.best_epoch == 0:
        notes.append(kept_start_note(begin.val_top1, result.history))
        say(notes[-1])
    params = {**cfg.to_json(), **layer_pairs, "teacher": teacher_identity,
              "dataset": recorded_name(dataset, severity), "task": task.to_json(),
              "data": data_policies(source, spec, cfg.train.augment)}
    metrics = {"teacher_test": teacher_test, "test_before": before, "test": test,
               **val_metric(task, result.best_val), "best_epoch": result.best_epoch,
               "start_val_top1": begin.val_top1, "kept_start": result.best_epoch == 0, "history": result.history,
               "teacher_seconds": round(teacher_seconds, 2), "notes": notes}
    record = StageRecord("distill", params, round(time.perf_counter() - start, 2), metrics, versions=versions())
    return student.with_record(record, model=model.cpu().eval())


def _test_metrics(model: nn.Module, test_ds, task: Task, signature: Signature, device,
                  teacher_out) -> dict[str, float]:
    """The task's test metrics of ``model``, with its ``agreement`` with the teacher where the task has one."""
    outputs, targets = predict_all(model, test_ds, device=str(device), signature=signature)
    return task_metrics(task, outputs, targets, reference=teacher_out)


def _data_channels(info) -> int | dict[str, int]:
    """The data's image channels (per image input name for data with several inputs): greyscale data lets a
    1-channel and a 3-channel model pair."""
    if info.is_image:
        return info.channels
    return {i.name: i.channels for i in info.inputs if i.kind is InputKind.IMAGE}


def _check_pairing(teacher: Teacher, student: ModelBundle, data_channels: int | dict[str, int],
                   say: Callable[[str], None]) -> None:
    t_task, s_task = teacher.task, student.task
    if t_task.kind is not s_task.kind:
        raise DistillError(f"The teacher solves a {t_task.kind.value} task but the student a {s_task.kind.value} "
                           "task; distillation needs the same task.")
    if t_task.width != s_task.width:
        what = {"classification": "classes", "multilabel": "labels"}.get(s_task.kind.value, "targets")
        raise DistillError(f"The teacher predicts {t_task.width} {what} but the student {s_task.width}; "
                           f"distillation needs the same {what} in the same order.")
    if list(t_task.names) != list(s_task.names):
        what = {"classification": "classes", "multilabel": "labels"}.get(s_task.kind.value, "targets")
        say(f"warning: teacher and student name their {what} differently; they are matched by position")
    teacher.pair(student.signature, data_channels)


def _prepare(teacher: Teacher, student: ModelBundle, cfg: DistillConfig) -> StudentWithAdapters:
    """Hook the feature layers, run one batch through both models and size the adapters on it."""
    pairs = _active_pairs(cfg)
    if pairs:
        teacher.watch([t for t, _ in pairs])
    wrapper = StudentWithAdapters(student.model, [s for _, s in pairs], [])
    try:
        x = example_inputs(student.signature, 2)
        _check_output(student, _trial_forward(student, x))
        if cfg.transformer_kd:
            wrapper.kd = _transformer_kd(teacher, student, cfg, x)
        if not pairs:
            return wrapper
        teacher.outputs(x if len(x) > 1 else x[0])
        torch.manual_seed(cfg.train.seed)
        adapters = [_adapter(wrapper.captured, teacher.features, t, s) for t, s in pairs]
        wrapper.adapters = nn.ModuleList(adapters)
        return wrapper
    except BaseException:
        wrapper.close()
        raise


def _trial_forward(student: ModelBundle, x: tuple[torch.Tensor, ...]) -> Any:
    model = student.model
    was_training = model.training
    try:
        with torch.no_grad():
            return model.eval()(*x)
    except Exception as exc:  # a user's model may raise anything
        spec = student.signature
        shown = shape_text(spec.to_input_spec()) if spec.single_image else inputs_text(spec)
        raise ModelError(f"The student does not accept {shown} inputs: {first_line(exc)}.") from exc
    finally:
        model.train(was_training)


def _check_output(student: ModelBundle, out: Any) -> None:
    """A ModelError unless the student returns what its signature says, with a task output of the task's width."""
    width, signature = student.num_classes, student.signature
    what = "logits" if student.task.kind.value != "regression" else "predictions"
    try:
        layout = output_layout(out)[0]
        value = task_output(out, signature) if layout == signature.output_layout else None
    except (ModelError, IndexError, KeyError, TypeError):
        value = None
    shape_ok = isinstance(value, torch.Tensor) and len(value) == 2 and (
        value.dim() == 2 and value.shape[1] == width or value.dim() == 1 and width == 1 and what == "predictions")
    if not shape_ok:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(out).__name__
        raise ModelError(f"The student returns {got} for a batch of 2, not (2, {width}) {what}.")


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


def _transformer_kd(teacher: Teacher, student: ModelBundle, cfg: DistillConfig,
                    x: tuple[torch.Tensor, ...]) -> TransformerKD:
    from compress.transformer_kd import prepare
    return prepare(teacher, student, x, hidden_weight=cfg.hidden_weight, attention_weight=cfg.attention_weight,
                   layer_map=parse_layer_map(cfg.layer_map), attention_loss=cfg.attention_loss, seed=cfg.train.seed)


def _active_pairs(cfg: DistillConfig) -> tuple[tuple[str, str], ...]:
    """Feature pairs that contribute to the loss (none at --feature-weight 0: unused adapters would stall DDP)."""
    return cfg.feature_pairs if cfg.feature_weight > 0 else ()


def _loss_fn(teacher: Teacher, wrapper: StudentWithAdapters, cfg: DistillConfig, task: Task, signature: Signature):
    pairs = _active_pairs(cfg)
    mixed = task_distillation_loss(task, temperature=cfg.temperature, alpha=cfg.alpha,
                                   label_smoothing=cfg.train.label_smoothing)

    def loss_fn(net: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
        target = teacher.outputs(x)
        out = task_output(call(net, x), signature)
        loss = mixed(out, target, y)
        if wrapper.kd is not None:
            loss = loss + wrapper.kd.loss(teacher.transformer, as_args(x))
        if pairs:
            feats = sum(feature_loss(s, teacher.features[t]) for s, (t, _) in zip(wrapper.adapted, pairs))
            loss = loss + cfg.feature_weight * feats / len(pairs)
        return loss

    return loss_fn


def kd_finetune_loss(teacher_model: nn.Module, temperature: float, alpha: float, *, task: Task | None = None,
                     signature: Signature | None = None):
    """A loss for :func:`deepslim.training.fit` that distills from ``teacher_model`` (its task output only).

    Used by pruning's ``--recover kd`` (the teacher is the model before it was pruned) and QAT's.
    ``task`` picks the distillation loss (default: classification, temperature KL and cross-entropy);
    ``signature`` says which output both models' task reads (default: they return one tensor). The
    batch ``x`` may hold several inputs (a tuple in ``forward``'s order)."""
    teacher_model.eval()
    mixed = task_distillation_loss(task, temperature=temperature, alpha=alpha)

    def read(out: Any) -> torch.Tensor:
        return out if signature is None else task_output(out, signature)

    def loss_fn(net: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
        device = as_args(x)[0].device
        if next(teacher_model.parameters()).device != device:
            teacher_model.to(device)
        with torch.no_grad():
            target = read(call(teacher_model, x))
        return mixed(read(call(net, x)), target, y)

    return loss_fn


__all__ = ["DistillConfig", "DistillError", "RunnerTeacher", "StudentWithAdapters", "Teacher", "TorchTeacher",
           "distill", "kd_finetune_loss", "open_teacher", "parse_feature_pairs"]
