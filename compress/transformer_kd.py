"""Transformer distillation (TinyBERT, DistilBERT and MiniLM style): each student encoder layer learns the hidden
states and attention maps of a teacher layer named by a layer map, beside the logits KD of :mod:`compress.distill`.

    deepslim compress distill --teacher ft --student small --hidden-weight 1 --attention-weight 1 --layer-map auto

**How the features are read.** Through the models' own ``output_hidden_states=True`` and
``output_attentions=True`` forward arguments, which every Hugging Face encoder takes (BERT, RoBERTa,
DistilBERT, ViT, DeiT, ...): ``hidden_states`` is the embeddings' output then each encoder layer's
(batch, tokens, width), ``attentions`` each layer's attention probabilities (batch, heads, query, key). The
inputs still go in positionally, in the signature's order (:func:`deepslim.modelio.call`), so how deepslim
calls a model does not change and no module names or output tuples are guessed per family (forward hooks on
``BertLayer`` / ``TransformerBlock`` / ``ViTLayer`` would need both, and give no probabilities under sdpa).

**Attention maps need the eager attention path** (sdpa computes no weights). For each forward pass that asks
for them, and only for that pass, the model's ``config._attn_implementation`` is ``"eager"`` (ViT-style models
read it at call time); BERT- and DistilBERT-style models, which choose their attention class when built, fall
back to the eager computation themselves when asked for attentions (transformers logs that once). Every other
call (validation, test metrics, the saved student) runs as before: switching the config for the whole run would
break them (DistilBERT's sdpa class then gets an unexpanded mask).

**Layer map.** ``auto`` pairs student layer ``i`` of ``S`` with teacher layer ``ceil((i + 1) * T / S) - 1`` of
``T``: evenly spaced, the last with the last (6 of 12: 1, 3, ..., 11); or ``"0:1,1:3"`` by hand (0-based
encoder layers). A student narrower than its teacher learns the hidden states through a linear projection per
pair, trained with the student and never saved in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from compress.losses import attention_map_loss, hidden_state_loss
from deepslim.errors import ConfigError, DeepSlimError, ModelError, first_line

AUTO = "auto"
LayerPairs = tuple[tuple[int, int], ...]  # (student layer, teacher layer)


class AttentionLoss(str, Enum):
    KL = "kl"    # KL(teacher || student) per query row (MiniLM)
    MSE = "mse"  # squared difference of the probabilities (TinyBERT)


class TransformerKDError(DeepSlimError):
    """The models cannot give (or pair) the hidden states or attention maps asked for."""


# --- the layer map ------------------------------------------------------------------------------

def parse_layer_map(text: str | None) -> LayerPairs | None:
    """``auto`` (None) or ``"0:1,1:3"`` (student layer 0 learns teacher layer 1, ...; 0-based encoder layers)."""
    if text is None or text.strip().lower() == AUTO:
        return None
    pairs = []
    for item in (i.strip() for i in text.split(",")):
        parts = [p.strip() for p in item.split(":")]
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"--layer-map takes auto or STUDENT:TEACHER pairs of 0-based layer numbers separated "
                              f"by commas (e.g. 0:1,1:3), got '{item}'.")
        pairs.append((int(parts[0]), int(parts[1])))
    students = [s for s, _ in pairs]
    twice = sorted({s for s in students if students.count(s) > 1})
    if twice:
        raise ConfigError(f"--layer-map maps student layer {twice[0]} more than once; each student layer learns "
                          "one teacher layer.")
    return tuple(pairs)


def auto_layer_map(student_layers: int, teacher_layers: int) -> LayerPairs:
    """Every student layer, evenly spaced over the teacher's; the last student layer learns the last teacher one."""
    return tuple((i, -(-(i + 1) * teacher_layers // student_layers) - 1) for i in range(student_layers))


def resolve_layer_map(pairs: LayerPairs | None, student_layers: int, teacher_layers: int,
                      kept: tuple[list[int], int] | None = None) -> LayerPairs:
    """The pairs to train: ``auto`` (None) resolved, or the given ones checked against both models' depths.
    ``auto`` for a student cut by ``prune --depth`` from a teacher as deep as the one it was cut from (``kept``:
    the layers it kept, of how many) pairs each student layer with the teacher layer it was copied from, when
    the last was kept (``--depth 1`` keeps the first layer, and the last student layer learns the last)."""
    if pairs is None:
        if (kept is not None and len(kept[0]) == student_layers and kept[1] == teacher_layers
                and kept[0][-1] == teacher_layers - 1):
            return tuple(enumerate(kept[0]))
        return auto_layer_map(student_layers, teacher_layers)
    for s, t in pairs:
        for role, index, depth in (("student", s, student_layers), ("teacher", t, teacher_layers)):
            if index >= depth:
                raise ConfigError(f"--layer-map {s}:{t}: the {role} has {depth} encoder layer"
                                  f"{'s' if depth != 1 else ''} (0 to {depth - 1}).")
    return tuple(pairs)


def layer_map_text(pairs: LayerPairs) -> str:
    return ",".join(f"{s}:{t}" for s, t in pairs)


# --- reading the features -----------------------------------------------------------------------

@dataclass
class Features:
    """What one forward pass gave: each encoder layer's hidden states and attention maps (empty when not asked)."""

    hidden: tuple[torch.Tensor, ...] = ()
    attentions: tuple[torch.Tensor, ...] = ()

    @property
    def layers(self) -> int:
        return len(self.hidden) or len(self.attentions)


def is_transformer(model: nn.Module) -> bool:
    """A Hugging Face ``PreTrainedModel`` (the only kind whose layers' features deepslim reads by itself)."""
    if not type(model).__module__.startswith("transformers."):
        return False
    from transformers import PreTrainedModel
    return isinstance(model, PreTrainedModel)


def forward_features(model: nn.Module, args: tuple[torch.Tensor, ...], *, hidden: bool,
                     attention: bool) -> tuple[Any, Features]:
    """``model(*args)`` (inputs in the signature's order) with its per-layer hidden states and attention maps."""
    with eager_attention(model) if attention else contextlib.nullcontext():
        out = model(*args, output_hidden_states=hidden, output_attentions=attention)
    states = _tensors(out, "hidden_states") if hidden else ()
    maps = _tensors(out, "attentions") if attention else ()
    if hidden and len(states) < 2:
        raise TransformerKDError(f"{type(model).__name__} returns no per-layer hidden states.")
    if attention and not maps:
        raise TransformerKDError(f"{type(model).__name__} returns no attention maps, even on the eager attention "
                                 "path; use --attention-weight 0.")
    return out, Features(tuple(states[1:]), tuple(maps))  # hidden_states[0] is the embeddings' output


def _tensors(out: Any, key: str) -> tuple[torch.Tensor, ...]:
    value = out.get(key) if hasattr(out, "get") else None
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, torch.Tensor) for v in value):
        return ()
    return tuple(value)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """The model on the eager attention path (which computes attention probabilities) inside the block: for calls
    that ask for attentions only (:func:`forward_features`)."""
    config = model.config
    saved = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = saved


# --- the student's side -----------------------------------------------------------------------------

class TransformerKD(nn.Module):
    """The pairs, the projections of the student's hidden states to the teacher's width (trained with the student,
    never saved in it), the loss weights, and what the student's last training forward gave (projected)."""

    def __init__(self, pairs: LayerPairs, projections: list[nn.Module], *, hidden_weight: float,
                 attention_weight: float, attention_loss: AttentionLoss, mask_index: int | None) -> None:
        super().__init__()
        self.pairs, self.projections = pairs, nn.ModuleList(projections)
        self.hidden_weight, self.attention_weight = float(hidden_weight), float(attention_weight)
        self.attention_loss, self.mask_index = AttentionLoss(attention_loss), mask_index
        self.hidden: list[torch.Tensor] = []
        self.attentions: list[torch.Tensor] = []

    @property
    def wants(self) -> dict[str, bool]:
        return {"hidden": self.hidden_weight > 0, "attention": self.attention_weight > 0}

    def student_forward(self, student: nn.Module, args: tuple[torch.Tensor, ...]) -> Any:
        out, feats = forward_features(student, args, **self.wants)
        if self.hidden_weight > 0:
            self.hidden = [p(feats.hidden[s]) for p, (s, _) in zip(self.projections, self.pairs)]
        if self.attention_weight > 0:
            self.attentions = [feats.attentions[s] for s, _ in self.pairs]
        return out

    def loss(self, teacher: Features, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """hidden weight · mean hidden-state MSE + attention weight · mean attention-map loss, over the pairs."""
        mask = args[self.mask_index] if self.mask_index is not None else None
        total = torch.zeros((), device=args[0].device)
        if self.hidden_weight > 0:
            terms = [hidden_state_loss(s, teacher.hidden[t], mask) for s, (_, t) in zip(self.hidden, self.pairs)]
            total = total + self.hidden_weight * torch.stack(terms).mean()
        if self.attention_weight > 0:
            terms = [attention_map_loss(s, teacher.attentions[t], mask, kind=self.attention_loss.value)
                     for s, (_, t) in zip(self.attentions, self.pairs)]
            total = total + self.attention_weight * torch.stack(terms).mean()
        return total

    def close(self) -> None:
        self.hidden, self.attentions = [], []


def prepare(teacher: Any, student: Any, x: tuple[torch.Tensor, ...], *, hidden_weight: float,
            attention_weight: float, layer_map: LayerPairs | None, attention_loss: AttentionLoss | str,
            seed: int = 0) -> TransformerKD:
    """The student's side for a teacher (:class:`compress.teachers.Teacher`) and a student bundle, checked on the
    trial batch ``x``; from now on the teacher keeps each batch's features in ``teacher.transformer``."""
    wants = {"hidden": hidden_weight > 0, "attention": attention_weight > 0}
    teacher.watch_transformer(**wants)  # refuses an exported teacher, or one that is not a transformer
    require_transformer(student.model, "student", student.path.name if student.path else student.arch.name)
    student_feats = trial_features(student.model, x, wants, "student")
    teacher.outputs(x if len(x) > 1 else x[0])
    masks = [i for i, spec in enumerate(student.signature.inputs) if spec.kind.value == "mask"]
    return build(student.model, teacher.transformer, student_feats, layer_map, hidden_weight=hidden_weight,
                 attention_weight=attention_weight, attention_loss=attention_loss,
                 mask_index=masks[0] if masks else None, seed=seed, kept=kept_layers(student.lineage))


def kept_layers(lineage: list[Any]) -> tuple[list[int], int] | None:
    """The encoder layers the student's last ``prune --depth`` kept, and of how many (None without one)."""
    for record in reversed(lineage):
        metrics = record.metrics if isinstance(record.metrics, dict) else {}
        if record.stage == "prune" and "kept_layers" in metrics:
            return list(metrics["kept_layers"]), int(metrics["layers_before"])
    return None


def build(student: nn.Module, teacher_feats: Features, student_feats: Features, layer_map: LayerPairs | None, *,
          hidden_weight: float, attention_weight: float, attention_loss: AttentionLoss | str,
          mask_index: int | None, seed: int = 0, kept: tuple[list[int], int] | None = None) -> TransformerKD:
    """The student's side, sized and checked on one trial batch's features of both models."""
    pairs = resolve_layer_map(layer_map, student_feats.layers, teacher_feats.layers, kept)
    projections = []
    torch.manual_seed(seed)
    for s, t in pairs:
        if hidden_weight > 0:
            projections.append(_projection(student_feats.hidden[s], teacher_feats.hidden[t], s, t))
        if attention_weight > 0:
            _check_maps(student_feats.attentions[s], teacher_feats.attentions[t], s, t)
    return TransformerKD(pairs, projections, hidden_weight=hidden_weight, attention_weight=attention_weight,
                         attention_loss=attention_loss, mask_index=mask_index)


def _projection(student: torch.Tensor, teacher: torch.Tensor, s: int, t: int) -> nn.Module:
    if student.dim() != 3 or teacher.dim() != 3 or student.shape[:2] != teacher.shape[:2]:
        raise TransformerKDError(f"Student layer {s} gives hidden states {tuple(student.shape)} but teacher layer "
                                 f"{t} {tuple(teacher.shape)} on the same batch; they need the same tokens (same "
                                 "inputs, and for images the same patch size).")
    width_s, width_t = student.shape[-1], teacher.shape[-1]
    return nn.Identity() if width_s == width_t else nn.Linear(width_s, width_t, bias=False)


def _check_maps(student: torch.Tensor, teacher: torch.Tensor, s: int, t: int) -> None:
    try:
        attention_map_loss(student, teacher)
    except ValueError as exc:
        raise TransformerKDError(f"Student layer {s} and teacher layer {t} give attention maps that cannot be "
                                 f"compared ({first_line(exc)}); they need the same tokens.") from exc


def require_transformer(model: nn.Module, role: str, name: str) -> None:
    if not is_transformer(model):
        raise TransformerKDError(f"--hidden-weight and --attention-weight read the encoder layers of Hugging Face "
                                 f"models, but the {role} {name} is a {type(model).__name__}; use --feature-pairs "
                                 "for other models.")


def trial_features(model: nn.Module, args: tuple[torch.Tensor, ...], wants: dict[str, bool], role: str) -> Features:
    """One forward pass of the trial batch with the features asked for, in eval mode and without gradients."""
    was = model.training
    try:
        with torch.no_grad():
            return forward_features(model.eval(), args, **wants)[1]
    except TransformerKDError:
        raise
    except Exception as exc:  # a model may raise anything
        raise ModelError(f"The {role} fails when asked for its hidden states and attention maps: "
                         f"{first_line(exc)}.") from exc
    finally:
        model.train(was)


__all__ = ["AUTO", "AttentionLoss", "Features", "TransformerKD", "TransformerKDError", "auto_layer_map", "build",
           "eager_attention", "forward_features", "is_transformer", "layer_map_text", "parse_layer_map", "prepare",
           "require_transformer", "resolve_layer_map", "trial_features"]
