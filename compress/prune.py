"""Structured pruning with torch-pruning (DepGraph): what to remove (importance), how (pruners), and
which layers move together (the dependency graph) are torch-pruning's; deepslim chooses the
target, protects the head, recalibrates BatchNorm, fine-tunes and records the lineage."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from compress.hf_prune import check_hf, is_hf
from compress.options import Importance, Recover
from compress.prune_inputs import Example, as_example, count, example_of, ignored_layers, reader
from compress.prune_plan import (Structure, analyse, attention_heads, attention_modules, global_plan, head_schedule,
                                 refine, sync_attention_heads, uniform_plan, unwrapped, with_heads)
from compress.prune_plan import ratio_dict as ratio_dict_for
from deepslim.config import Augment, OptimizerKind
from deepslim.data import open_dataset
from deepslim.errors import ConfigError, DeepSlimError, first_line
from deepslim.evaluation import check_compatible, evaluate
from deepslim.models import ModelBundle
from deepslim.provenance import data_policies, recorded_name
from deepslim.signature import Signature
from deepslim.spec import StageRecord
from deepslim.training import versions

FINETUNE_AUGMENT = Augment.LIGHT  # fine-tuning after pruning: mild shifts and scaling, never flips


class PruneError(DeepSlimError):
    """The model cannot be pruned as asked."""


@dataclass(frozen=True)
class PruneConfig:
    ratio: float | None = None          # fraction of channels removed per layer (or globally)
    speedup: float | None = None        # MACs reduced this many times; the ratio is searched (within 5%)
    importance: Importance = Importance.L2
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int | None = 8
    max_layer_ratio: float = 0.9
    ignore: tuple[str, ...] = ()
    finetune_epochs: int = 0
    finetune_lr: float = 0.03
    finetune_optimizer: OptimizerKind = OptimizerKind.SGD  # adamw for transformers
    recover: Recover = Recover.FINETUNE   # kd: fine-tune by distilling from the model before pruning
    temperature: float = 4.0            # --recover kd
    alpha: float = 0.5                  # --recover kd
    sparsity_train_epochs: int = 0      # bn importance: L1 on BatchNorm scales before pruning
    sparsity_lambda: float = 1e-4
    calibration_batches: int = 20       # BatchNorm statistics recomputed on this many training batches
    taylor_batches: int = 4
    layer_ratios: dict[str, float] | None = None  # per-layer ratios (e.g. from sensitivity allocation)
    seed: int = 0
    head_ratio: float | None = None     # fraction of attention heads removed per layer (None: the width ratio)
    depth: int | None = None            # Hugging Face encoders: keep this many layers, evenly spaced
    sync_bn: bool = False               # fine-tuning under torchrun on GPUs: SyncBatchNorm (TrainConfig.sync_bn)

    def __post_init__(self) -> None:
        object.__setattr__(self, "importance", Importance(self.importance))
        object.__setattr__(self, "recover", Recover(self.recover))
        object.__setattr__(self, "finetune_optimizer", OptimizerKind(self.finetune_optimizer))
        if self.recover is Recover.KD:
            if not self.finetune_epochs:
                raise ConfigError("--recover kd distills during fine-tuning; give --finetune-epochs N (N >= 1).")
            from compress.distill import DistillConfig
            DistillConfig(temperature=self.temperature, alpha=self.alpha)  # same checks as distill
        if self.ratio is not None and self.speedup is not None:
            raise ConfigError("Give exactly one of --ratio and --speedup.")
        if self.ratio is None and self.speedup is None and self.head_ratio is None and self.depth is None:
            raise ConfigError("Give exactly one of --ratio and --speedup (for a transformer, --head-ratio or --depth "
                              "alone also do).")
        if self.head_ratio is not None and not 0 <= self.head_ratio < 1:
            raise ConfigError("--head-ratio is the fraction of attention heads removed per layer and must be at least "
                              f"0 and below 1, got {self.head_ratio}.")
        if self.depth is not None and self.depth < 1:
            raise ConfigError(f"--depth is the number of encoder layers kept and must be a positive integer, got "
                              f"{self.depth}.")
        if self.ratio is not None and not 0 < self.ratio < 1:
            raise ConfigError(f"--ratio is the fraction of channels removed and must be between 0 and 1, got {self.ratio}.")
        if self.speedup is not None and not self.speedup > 1:
            raise ConfigError(f"--speedup must be greater than 1 (MACs reduced that many times), got {self.speedup}.")
        if not 0 < self.max_layer_ratio < 1:
            raise ConfigError(f"--max-layer-ratio must be between 0 and 1, got {self.max_layer_ratio}.")
        if self.iterative_steps < 1:
            raise ConfigError(f"--iterative-steps must be a positive integer, got {self.iterative_steps}.")
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"--round-to must be a positive integer, got {self.round_to}.")
        for name in ("finetune_epochs", "sparsity_train_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}.")
        if self.sparsity_train_epochs and self.importance is not Importance.BN:
            raise ConfigError("--sparsity-train-epochs belongs to --importance bn (network slimming).")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "importance": self.importance.value, "recover": self.recover.value,
                "finetune_optimizer": self.finetune_optimizer.value, "ignore": list(self.ignore)}


@dataclass(frozen=True)
class PrunePlan:
    """What will be pruned and what is left out, before any work."""

    ignored: dict[str, str]              # layer -> why it is left out
    prunable_groups: int
    attention_modules: int


# --- the building blocks ----------------------------------------------------------------------

def _importance(kind: Importance):
    import torch_pruning as tp
    return {Importance.L1: lambda: tp.importance.MagnitudeImportance(p=1),
            Importance.L2: lambda: tp.importance.MagnitudeImportance(p=2),
            Importance.TAYLOR: lambda: tp.importance.TaylorImportance(),
            Importance.BN: lambda: tp.importance.BNScaleImportance(),
            Importance.LAMP: lambda: tp.importance.LAMPImportance(p=2),
            Importance.RANDOM: lambda: tp.importance.RandomImportance()}[kind]()


def make_pruner(model: nn.Module, example: Any, cfg: PruneConfig, ratio: float, ignored: dict[str, str],
                layer_ratios: dict[str, float] | None = None, planned: tuple[Structure, dict[str, int]] | None = None,
                *, signature: Signature | None = None):
    """torch-pruning's MetaPruner set to leave exactly the per-group plan (computed here when not given).

    ``example`` holds one sample of every input (a tuple, or a tensor for one input); ``signature`` says
    which output the task reads (torch-pruning's ``output_transform``) when the model returns several.
    Every group gets its own ratio (``pruning_ratio_dict``), rounding and cap already applied, so
    torch-pruning's own rounding (which rounds kept channels down, past the cap or to nothing) is off."""
    import torch_pruning as tp
    example = as_example(example)
    modules = dict(model.named_modules())
    heads = attention_heads(model)
    s, kept = planned or _plan_for(model, example, cfg, ratio, ignored, layer_ratios, signature)
    ratio_dict = {modules[n]: r for n, r in ratio_dict_for(kept, s).items() if n in modules}
    schedule = head_schedule(heads, head_ratio(cfg, ratio), cfg.iterative_steps)
    # head dims stay, so a projection's width ratio only lets torch-pruning reach its head count (set per step)
    ratio_dict.update({m: 0.5 for m in schedule})
    ratio = min(ratio, cfg.max_layer_ratio)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=_importance(cfg.importance), global_pruning=False,
        pruning_ratio=ratio, pruning_ratio_dict=ratio_dict or None, max_pruning_ratio=cfg.max_layer_ratio,
        iterative_steps=cfg.iterative_steps, ignored_layers=[modules[n] for n in ignored],
        round_to=None, num_heads=heads, prune_num_heads=bool(heads), prune_head_dims=not heads,
        head_pruning_ratio=head_ratio(cfg, ratio) if heads else 0.0, output_transform=reader(signature),
        unwrapped_parameters=unwrapped(model))
    pruner.head_pruning_ratio_dict.update(schedule)
    return pruner


def structure(model: nn.Module, example: Any, cfg: PruneConfig, ignored: dict[str, str], *,
              count: bool = True, signature: Signature | None = None) -> Structure:
    """The model's torch-pruning groups under ``cfg``'s rounding and cap, with its per-layer MACs model.
    ``example``: one sample of every input (or, for a one-image model, its (C, H, W) shape)."""
    importance = _importance(_structure_only(cfg).importance) if cfg.global_pruning else None
    return analyse(model, as_example(example), ignored=ignored, round_to=cfg.round_to,
                   max_ratio=cfg.max_layer_ratio, heads=attention_heads(model), importance=importance, count=count,
                   read=reader(signature))


def plan_at(s: Structure, cfg: PruneConfig, ratio: float, layer_ratios: dict[str, float] | None) -> dict[str, int]:
    """Kept units per group at ``ratio``: the same ratio everywhere, or torch-pruning's global ranking."""
    fn = global_plan if cfg.global_pruning else uniform_plan
    return with_heads(s, fn(s, ratio, cfg.max_layer_ratio, layer_ratios), head_ratio(cfg, ratio))


def head_ratio(cfg: PruneConfig, ratio: float) -> float:
    """The fraction of heads each attention layer loses: --head-ratio, else the width ratio (capped)."""
    return min(cfg.head_ratio if cfg.head_ratio is not None else ratio, cfg.max_layer_ratio)


def _plan_for(model, example, cfg, ratio, ignored, layer_ratios, signature) -> tuple[Structure, dict[str, int]]:
    s = structure(model, example, cfg, ignored, count=False, signature=signature)
    return s, plan_at(s, cfg, ratio, layer_ratios)


def plan(bundle: ModelBundle, cfg: PruneConfig, *, example: Example | None = None) -> PrunePlan:
    """Check that the model is prunable; say which layers are left out and why.

    ``example`` is one sample of every input (default: :func:`compress.prune_inputs.example_of` without data)."""
    import torch_pruning as tp
    example = example if example is not None else example_of(bundle.signature)
    check_hf(bundle, cfg, attention=bool(attention_heads(bundle.model)))
    ignored = ignored_layers(bundle, cfg.ignore, example=example)
    model = copy.deepcopy(bundle.model).eval()
    if cfg.importance is Importance.BN and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                   for m in model.modules()):
        raise PruneError(f"--importance bn ranks channels by BatchNorm scales, and {bundle.arch.name} has no "
                         "BatchNorm layer; use l2, l1, lamp, taylor or random.")
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                      output_transform=reader(bundle.signature),
                                                      unwrapped_parameters=unwrapped(model))
    except Exception as exc:  # torch-pruning's tracer raises many types on unsupported models
        raise PruneError(f"torch-pruning cannot trace {bundle.arch.name}: {type(exc).__name__}: {exc}".splitlines()[0]
                         + ".") from exc
    modules = dict(model.named_modules())
    groups = list(graph.get_all_groups(ignored_layers=[modules[n] for n in ignored],
                                       root_module_types=[nn.modules.conv._ConvNd, nn.Linear]))
    if not groups:
        raise PruneError(f"{bundle.arch.name} has no prunable layer (every Conv/Linear group is ignored or fixed).")
    return PrunePlan(ignored, len(groups), attention_modules(model))


def macs_after(bundle: ModelBundle, cfg: PruneConfig, ratio: float, ignored: dict[str, str],
               layer_ratios: dict[str, float] | None = None,
               planned: tuple[Structure, dict[str, int]] | None = None, *, example: Example | None = None) -> int:
    """MACs of a copy really pruned at ``ratio`` or to ``planned`` (all iterative steps at once), counted on
    ``example`` (one sample of every input; default: without data)."""
    model = copy.deepcopy(bundle.model).eval()
    example = example if example is not None else example_of(bundle.signature)
    pruner = make_pruner(model, example, _structure_only(cfg), ratio, ignored, layer_ratios, planned,
                         signature=bundle.signature)
    pruner.step()
    sync_attention_heads(model, pruner)
    return count(model, example)[0]


def _structure_only(cfg: PruneConfig) -> PruneConfig:
    """The same target with a data-free importance and one step, for MAC searches."""
    from dataclasses import replace
    kind = cfg.importance if cfg.importance in (Importance.L1, Importance.L2, Importance.LAMP, Importance.BN) \
        else Importance.L2
    return replace(cfg, importance=kind, iterative_steps=1)


def search_plan(bundle: ModelBundle, cfg: PruneConfig, s: Structure, ignored: dict[str, str], *,
                tolerance: float = 0.05, example: Example | None = None) -> tuple[float, dict[str, int], float]:
    """The plan whose MAC reduction is ``cfg.speedup`` within ``tolerance``: (uniform ratio, plan, reduction).

    A bisection of the uniform ratio on the MACs model, then single groups moved one rounding step at a
    time (:func:`compress.prune_plan.refine`); the reduction is then counted on a really pruned copy, and
    the MACs model corrected by it when it is off."""
    target, seen = cfg.speedup, {}
    at = lambda r: plan_at(s, cfg, r, _scaled(cfg.layer_ratios, r))  # noqa: E731
    low, high = 0.0, cfg.max_layer_ratio
    for _ in range(24):
        mid = (low + high) / 2
        seen[f"--ratio {mid:.3f}"] = reached = s.reduction(at(mid))
        low, high = (mid, high) if reached < target else (low, mid)
    ratio = min((r for r in (low, high)), key=lambda r: abs(math.log(s.reduction(at(r)) / target)))
    plan, scale, best = at(ratio), 1.0, None
    tied = is_hf(bundle.arch)  # a Hugging Face config holds one FFN width: the uniform plan only
    for _ in range(1 if tied else 3):  # aim at half the window; keep the nearest really counted plan
        if not tied:
            plan = refine(s, plan, target, tolerance=tolerance / 2, scale=scale)
        exact = s.base_macs / max(macs_after(bundle, cfg, ratio, ignored, planned=(s, plan), example=example), 1)
        seen[f"--speedup {exact:.2f}"] = exact
        if best is None or abs(math.log(exact / target)) < abs(math.log(best[1] / target)):
            best = (plan, exact)
        if abs(exact - target) <= tolerance / 2 * target:
            break
        scale = exact / s.reduction(plan)
    if abs(best[1] - target) > tolerance * target:
        raise PruneError(_unreachable(cfg, seen))
    return ratio, best[0], best[1]


def _unreachable(cfg: PruneConfig, seen: dict[str, float]) -> str:
    below = max(((v, k) for k, v in seen.items() if v < cfg.speedup), default=None)
    above = min(((v, k) for k, v in seen.items() if v > cfg.speedup), default=None)
    near = " and ".join(f"{v:.2f}x ({k})" for v, k in (x for x in (below, above) if x is not None)) or "none"
    return (f"No plan within --max-layer-ratio {cfg.max_layer_ratio} reaches a {cfg.speedup}x MAC reduction "
            f"within 5% (nearest reachable: {near}); lower --speedup, raise --max-layer-ratio, ignore fewer "
            f"layers, or use --round-to 1 (channels move in steps of {cfg.round_to or 1}).")


def _scaled(layer_ratios: dict[str, float] | None, scale: float) -> dict[str, float] | None:
    return None if layer_ratios is None else {k: min(v * scale, 0.95) for k, v in layer_ratios.items()}


# --- the stage ----------------------------------------------------------------------------------

def prune(bundle: ModelBundle, cfg: PruneConfig, *, dataset: str | None = "digits", severity: int = 3,
          progress: bool = True, log: Callable[[str], None] | None = None) -> ModelBundle:
    """Prune ``bundle`` structurally; recalibrate BatchNorm and fine-tune when a dataset is given.

    torch-pruning traces a real sample of every input from the dataset (without one: zeros, or seeded random
    inputs of the right dtypes) and reads the task output; the task head keeps its width. Fine-tuning and its
    guard use the task's loss and primary metric. Returns a new bundle (the input is not modified) whose
    lineage records the stage.
    """
    from compress.hf_prune import after_step, snapshot
    from compress.hf_prune import start as hf_start
    from compress.recover import accumulate_taylor_gradients, recover_step, sparsity_train
    say = log or (lambda _msg: None)
    start = time.perf_counter()
    data = _data(bundle, dataset, cfg, severity)
    if data is None and (cfg.finetune_epochs or cfg.sparsity_train_epochs or cfg.importance is Importance.TAYLOR):
        raise ConfigError("Fine-tuning, sparsity training and Taylor importance need --dataset.")
    example = example_of(bundle.signature, data["train"] if data is not None else None)
    the_plan = plan(bundle, cfg, example=example)
    work, sig, task = copy.deepcopy(bundle), bundle.signature, bundle.task
    teacher = copy.deepcopy(bundle.model).eval() if cfg.recover is Recover.KD else None
    before_macs, before_params = count(work.model, example)
    before = evaluate(work, dataset, severity=severity).metrics if dataset else None
    heads = hf_start(work.model, cfg.depth, say) if is_hf(work.arch) else None
    ignored = {n: why for n, why in the_plan.ignored.items() if n in dict(work.model.named_modules())}
    if cfg.sparsity_train_epochs:
        say(f"network slimming: {cfg.sparsity_train_epochs} epochs with L1 {cfg.sparsity_lambda} on BatchNorm scales")
        sparsity_train(work.model, data["train"], data["val"], epochs=cfg.sparsity_train_epochs,
                       penalty=cfg.sparsity_lambda, seed=cfg.seed, progress=progress, task=task, signature=sig)
    ratio, the_structure = cfg.ratio or 0.0, structure(work.model, example, cfg, ignored, signature=sig)
    if not the_structure.planned():
        raise PruneError(_nothing_to_cut(bundle, the_structure))
    if cfg.speedup is not None:
        ratio, groups, target = search_plan(work, cfg, the_structure, ignored, example=example)
        say(f"ratio {ratio:.3f} with {_moved(the_structure, cfg, ratio, groups)} group(s) moved by rounding "
            f"steps: a {target:.2f}x MAC reduction (asked {cfg.speedup}x)")
    else:
        groups = plan_at(the_structure, cfg, ratio, cfg.layer_ratios)
    for name, why in the_structure.uncut().items():
        say(f"not cut: {name} ({why})")
    pruner = make_pruner(work.model, example, cfg, ratio, ignored, planned=(the_structure, groups), signature=sig)
    history = []
    for step in range(cfg.iterative_steps):
        if cfg.importance is Importance.TAYLOR:
            accumulate_taylor_gradients(work.model, data["train"], batches=cfg.taylor_batches, task=task,
                                        signature=sig)
        before_step = snapshot(work.model) if heads is not None else None
        try:
            pruner.step()
            sync_attention_heads(work.model, pruner)
            macs = count(work.model, example)[0]  # the pruned model must still run
        except (RuntimeError, IndexError, ValueError) as exc:  # torch-pruning lost track of this model's channels
            raise PruneError(f"torch-pruning could not prune {bundle.arch.name} consistently ({type(exc).__name__}: "
                             f"{first_line(exc)}); leave the failing blocks out with --ignore, or prune another "
                             "architecture.") from exc
        work.model.zero_grad(set_to_none=True)
        if heads is not None:  # the config says what was removed; the rebuilt model must take the weights
            heads = after_step(work, heads, before_step)
        row = {"step": step + 1, "macs": macs if heads is None else count(work.model, example)[0]}
        if data is not None:
            row.update(recover_step(work, cfg, data, step, teacher, progress=progress, say=say))
        history.append(row)
        say(f"step {step + 1}/{cfg.iterative_steps}: {before_macs / row['macs']:.2f}x fewer MACs")
    work.model.eval().cpu()
    after_macs, after_params = count(work.model, example)
    metrics: dict[str, Any] = {"macs_before": before_macs, "macs_after": after_macs, "params_before": before_params,
                               "params_after": after_params, "mac_reduction": before_macs / after_macs,
                               "ratio": ratio, "steps": history, "ignored": ignored,
                               "groups": _kept(work.model, the_structure, groups),
                               "uncut": the_structure.uncut(), "primary": task.primary,
                               **_sizes(bundle, work, cfg, ratio)}
    if dataset:
        metrics.update(test_before=before, test=evaluate(work, dataset, severity=severity).metrics)
        metrics.update(_drop(task, metrics["test_before"], metrics["test"]))
    spec = work.input_spec if sig.single_image else sig
    recorded = {"dataset": recorded_name(dataset, severity) if dataset else None,
                **({"data": data_policies(data["source"], spec, FINETUNE_AUGMENT)} if data is not None else {})}
    record = StageRecord("prune", {**cfg.to_json(), **recorded}, round(time.perf_counter() - start, 2),
                         metrics, versions=versions())
    return work.with_record(record)


def _sizes(before: ModelBundle, work: ModelBundle, cfg: PruneConfig, ratio: float) -> dict[str, Any]:
    """What the lineage adds for transformers: the sequence length MACs are counted at, the head ratio, a
    Hugging Face model's new sizes (layers, FFN width, heads per layer, pruned_heads) and, with ``--depth``, the
    encoder layers kept (``kept_layers`` of ``layers_before``: distillation's default layer map reads them)."""
    from compress.hf_prune import describe, encoder_layers, keep_layers
    out: dict[str, Any] = {}
    if cfg.depth is not None:
        total = len(encoder_layers(before.model)[1])
        out.update(kept_layers=keep_layers(total, cfg.depth), layers_before=total)
    if "sequence" in work.signature.sizes:
        out["sequence_length"] = work.signature.sizes["sequence"]
    if attention_heads(work.model):
        out["head_ratio"] = head_ratio(cfg, ratio)
    if is_hf(work.arch):
        out["sizes"] = describe(work.arch)
    return out


def _drop(task, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """How much the primary metric fell on test, in the task's unit (points, or % of the baseline)."""
    if task.primary not in before or task.primary not in after:
        return {}
    return {"drop": round(task.drop(before, after), 4), "drop_unit": task.drop_unit()}


def _nothing_to_cut(bundle: ModelBundle, s: Structure) -> str:
    reasons = "; ".join(f"{name}: {why}" for name, why in list(s.uncut().items())[:3])
    more = f" (and {len(s.uncut()) - 3} more)" if len(s.uncut()) > 3 else ""
    return (f"No layer group of {bundle.arch.name} can be cut ({reasons}{more}); for narrow layers use "
            "--round-to 1, or ignore fewer layers.")


def _moved(s: Structure, cfg: PruneConfig, ratio: float, groups: dict[str, int]) -> int:
    uniform = plan_at(s, cfg, ratio, _scaled(cfg.layer_ratios, ratio))
    return sum(uniform[k] != v for k, v in groups.items())


def _kept(model: nn.Module, s: Structure, groups: dict[str, int]) -> dict[str, list[int]]:
    """Per planned group: [channels before, channels planned, channels the root layer has now]."""
    modules = dict(model.named_modules())
    out = {}
    for g in s.groups:
        if g.name in groups:
            root = modules[g.name]
            now = getattr(root, "out_channels", getattr(root, "out_features", None))
            out[g.name] = [g.units * g.per_unit, groups[g.name] * g.per_unit, now]
    return out


def _data(bundle: ModelBundle, dataset: str | None, cfg: PruneConfig, severity: int = 3) -> dict[str, Any] | None:
    if dataset is None:
        return None
    source = open_dataset(dataset, severity=severity)
    check_compatible(bundle, source.info, dataset)
    sig, task = bundle.signature, bundle.task
    return {"train": source.split("train", sig, task=task),
            "train_aug": source.split("train", sig, augment=FINETUNE_AUGMENT, task=task),
            "val": source.split("val", sig, task=task), "source": source}


__all__ = ["Importance", "PruneConfig", "PruneError", "PrunePlan", "macs_after", "plan", "prune", "search_plan"]
