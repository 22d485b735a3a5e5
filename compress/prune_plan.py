"""Per-group channel plans: how many channels each torch-pruning group keeps.

torch-pruning's groups (DepGraph) are the unit: every layer whose channels are coupled (a residual
stage, a depthwise block) moves together. deepslim decides each group's kept width here, before any
weight is touched, so the rounding (``--round-to``) and the cap (``--max-layer-ratio``) hold for every
layer, the MACs fall monotonically with the ratio, and a group that cannot be cut is named. MACs of a
plan come from a per-layer model (each layer's MACs scaled by the kept fractions of the groups its
channels belong to), so a ``--speedup`` search needs one graph trace, not one per candidate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Group:
    """One torch-pruning group, named by its root layer."""

    name: str                  # the root layer (the group's first Conv/Linear)
    units: int                 # prunable units: channels, or channels per channel group
    per_unit: int              # channels per unit (the channel groups of a grouped layer)
    allowed: tuple[int, ...]   # unit counts the group may keep, ascending (--round-to, --max-layer-ratio)
    layers: tuple[str, ...]    # every Conv/Linear whose channels move with the group
    reason: str | None = None  # why it is not cut (None: it is planned)
    attention: bool = False    # attention projections: torch-pruning removes whole heads instead
    heads: int = 0             # attention projections (Linear): their heads (the MACs model scales by heads kept)


@dataclass
class Structure:
    """The groups of a model and a MACs model over their kept fractions."""

    groups: list[Group]
    base_macs: int
    terms: list[tuple[float, tuple[tuple[int, int], ...]]]  # (layer MACs, ((group index, power), ...))
    fixed_macs: float                                       # MACs of layers no planned group touches
    importance: dict[int, torch.Tensor]                     # group index -> channel scores (global ranking)

    def planned(self) -> list[int]:
        return [i for i, g in enumerate(self.groups) if g.reason is None]

    def full(self) -> dict[str, int]:
        return {g.name: g.units for g in self.groups if g.reason is None}

    def macs(self, plan: dict[str, int]) -> float:
        """MACs of the model pruned to ``plan`` (group name -> kept units), from the per-layer model."""
        frac = {i: plan.get(g.name, g.units) / g.units for i, g in enumerate(self.groups)}
        return self.fixed_macs + sum(m * math.prod(frac[i] ** p for i, p in dims) for m, dims in self.terms)

    def reduction(self, plan: dict[str, int]) -> float:
        return self.base_macs / max(self.macs(plan), 1.0)

    def uncut(self) -> dict[str, str]:
        """Groups left whole, with the reason (ignored, coupled with an ignored layer, too small...)."""
        return {g.name: g.reason for g in self.groups if g.reason is not None}


def analyse(model: nn.Module, example: tuple[torch.Tensor, ...], *, ignored: dict[str, str], round_to: int | None,
            max_ratio: float, heads: dict[nn.Module, int], importance=None, count: bool = True,
            read=None) -> Structure:
    """Trace ``model`` once (a copy) on ``example`` (one sample of every input, a tuple): its groups, what each
    may keep, and (``count``) the per-layer MACs model. ``read`` picks the task output (``output_transform``)."""
    import torch_pruning as tp
    head_names = {n: heads[m] for n, m in model.named_modules() if m in heads}  # by name: the copy has others
    model = copy.deepcopy(model).eval()
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    head_modules = {modules[n]: count for n, count in head_names.items()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=read,
                                                  unwrapped_parameters=unwrapped(model))
    skip = {m: (n, why) for n, why in ignored.items() if n in modules for m in modules[n].modules()}
    groups, members, scores = [], [], {}
    for group in graph.get_all_groups(root_module_types=list(ROOTS)):
        root = group[0].dep.target.module
        outs = [d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)]
        ins = [d.target.module for d, _ in group if graph.is_in_channel_pruning_fn(d.handler)]
        reason = _reason(names[root], outs, skip, head_modules, names)
        per_unit = _channel_groups(graph, group)
        units = graph.get_out_channels(root) // per_unit
        allowed = allowed_keeps(units, per_unit, round_to, max_ratio)
        if reason is None and len(allowed) < 2:
            reason = _too_small(units * per_unit, round_to, max_ratio)
        layers = tuple(dict.fromkeys(names[m] for m in outs + ins if isinstance(m, ROOTS) and m in names))
        groups.append(Group(names[root], units, per_unit, allowed, layers, reason,
                            attention=any(m in head_modules for m in outs),
                            heads=next((head_modules[m] for m in outs if m in head_modules
                                        and isinstance(m, nn.Linear)), 0)))
        members.append((set(outs), set(ins)))
        if importance is not None and reason is None:
            imp = importance(group)
            scores[len(groups) - 1] = imp.view(per_unit, -1).mean(0).cpu() if imp is not None else None
    base, layer_macs = 0, {}
    if count:
        base, _, layer_macs, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    terms, fixed = _terms(model, layer_macs, groups, members)
    return Structure(groups, int(base), terms, fixed, {k: v for k, v in scores.items() if v is not None})


def unwrapped(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Parameters outside torch-pruning's layers (class tokens, position embeddings), each with the dim
    torch-pruning prunes by default (its last one longer than 1), named so torch-pruning does not warn.
    They follow the group of that dim: the hidden width, which a Hugging Face model keeps whole."""
    import torch_pruning as tp
    kinds = tp.DependencyGraph().REGISTERED_PRUNERS
    wrapped = {id(p) for m in model.modules() if tp.ops.module2type(m) in kinds
               and tp.ops.module2type(m) != tp.ops.OPTYPE.ELEMENTWISE for p in m.parameters()}
    out = []
    for p in model.parameters():
        dims = [i for i, size in enumerate(p.shape) if size > 1]
        if id(p) not in wrapped and dims:
            out.append((p, dims[-1]))
    return out


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Head counts torch-pruning needs to remove whole heads.

    timm-style attention (a fused ``qkv`` Linear and ``num_heads``) and Hugging Face self-attention
    (``query``/``key``/``value`` or DistilBERT's ``q_lin``/``k_lin``/``v_lin`` Linears, see
    :mod:`compress.hf_prune`) lose whole heads. ``nn.MultiheadAttention`` (torchvision's ViT) ties the
    attention width to the residual width, so it cannot lose heads without becoming another module:
    torch-pruning keeps its heads and prunes the MLP widths around it."""
    from compress.hf_prune import attention_heads as hf_heads
    heads: dict[nn.Module, int] = hf_heads(model)
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            heads[module] = module.num_heads
        elif isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int):
            heads[module.qkv] = module.num_heads
    return heads


def attention_modules(model: nn.Module) -> int:
    """How many attention modules :func:`attention_heads` found (a Hugging Face one has three Linears)."""
    from compress.hf_prune import projections
    return sum(1 for m in model.modules() if isinstance(m, nn.MultiheadAttention) or projections(m) is not None
               or (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)))


def sync_attention_heads(model: nn.Module, pruner) -> None:
    """torch-pruning tracks pruned head counts; the attention modules must be told."""
    from compress.hf_prune import sync_heads
    counts = getattr(pruner, "num_heads", {})
    sync_heads(model, counts)
    for module in model.modules():  # timm MetaFormer's Scale (PoolFormer, ConvFormer...) views its vector by .shape
        shape, scale = getattr(module, "shape", None), getattr(module, "scale", None)
        if isinstance(scale, nn.Parameter) and isinstance(shape, tuple) and shape and shape[0] != scale.numel():
            module.shape = (scale.numel(), *shape[1:])
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and module in counts:
            module.num_heads = counts[module]
            module.head_dim = module.embed_dim // module.num_heads
        elif isinstance(getattr(module, "qkv", None), nn.Linear) and module.qkv in counts:
            module.num_heads = counts[module.qkv]
            if hasattr(module, "head_dim"):
                module.head_dim = module.qkv.out_features // (3 * module.num_heads)
            if isinstance(getattr(module, "attn_dim", None), int):  # timm >= 1.0.20 reshapes by it
                module.attn_dim = module.qkv.out_features // 3


def head_schedule(heads: dict[nn.Module, int], ratio: float, steps: int) -> dict[nn.Module, list[float]]:
    """torch-pruning's per-step head ratios (``head_pruning_ratio_dict``) that remove exactly
    round(``ratio`` · heads) heads of each attention Linear over ``steps`` (at least one head stays).

    torch-pruning removes ceil(step ratio · heads left) at each step; its own schedule (the target ratio
    of the heads left, step after step) removes more than asked over several steps."""
    out = {}
    for module, total in heads.items():
        if not isinstance(module, nn.Linear):
            continue  # nn.MultiheadAttention keeps its heads (see attention_heads)
        goal = heads_removed(total, ratio)
        done = [(2 * goal * k + steps) // (2 * steps) for k in range(steps + 1)]  # removed after step k
        per_step = [0.0]
        for k in range(1, steps + 1):
            n, left = done[k] - done[k - 1], total - done[k - 1]
            per_step.append((n - 0.5) / left if n > 0 else 0.0)
        out[module] = per_step
    return out


def heads_by_name(heads: dict[nn.Module, int], names: dict[nn.Module, str]) -> list[str]:
    return [names[m] for m in heads if m in names]


def _reason(root: str, outs: list[nn.Module], skip: dict, head_modules: set, names: dict) -> str | None:
    for module in outs:
        if module in skip:
            layer, why = skip[module]
            return why if layer == root else f"coupled with {layer} ({why})"
    if any(m in head_modules for m in outs):
        return "attention projections: torch-pruning removes whole heads here, not widths"
    return None


def _too_small(channels: int, round_to: int | None, max_ratio: float) -> str:
    if channels <= 1:
        return "a single channel"
    return (f"{channels} channels: no smaller multiple of --round-to {round_to or 1} keeps "
            f"{1 - max_ratio:.0%} of them (--max-layer-ratio {max_ratio})")


def _channel_groups(graph, group) -> int:
    """Channel groups of a grouped layer in the group (as torch-pruning's MetaPruner counts them)."""
    counts = [1]
    for dep, _ in group:
        module = dep.target.module
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or (isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels):
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        counts.append((pruner.get_out_channel_groups if out else pruner.get_in_channel_groups)(module) or 1)
    return max(counts)


def allowed_keeps(units: int, per_unit: int, round_to: int | None, max_ratio: float) -> tuple[int, ...]:
    """Unit counts a group may keep: multiples of the rounding step that keep at least (1 - cap) of it."""
    step = max(1, (round_to or 1) // math.gcd(round_to or 1, per_unit))
    least = max(1, math.ceil(units * (1 - max_ratio) - 1e-9))
    keeps = {k for k in range(step, units + 1, step) if k >= least}
    return tuple(sorted(keeps | {units}))


def _terms(model: nn.Module, layer_macs: dict, groups: list[Group], members: list) -> tuple[list, float]:
    """Each leaf layer's MACs and the groups (with the power) that scale them."""
    terms, fixed = [], 0.0
    for module in model.modules():
        macs = layer_macs.get(module) or 0
        if not macs or next(module.children(), None) is not None:
            continue
        dims = []
        for i, (outs, ins) in enumerate(members):
            modelled = groups[i].reason is None or groups[i].heads > 0  # heads: scaled by the heads kept
            if not modelled or (module not in outs and module not in ins):
                continue
            both = module in outs and module in ins
            bilinear = isinstance(module, ROOTS) and not (isinstance(module, nn.modules.conv._ConvNd)
                                                           and module.groups == module.in_channels)
            dims.append((i, 2 if both and bilinear else 1))
        if dims:
            terms.append((float(macs), tuple(dims)))
        else:
            fixed += macs
    return terms, fixed


# --- plans ---------------------------------------------------------------------------------------

def heads_removed(heads: int, ratio: float) -> int:
    """Heads a layer loses at ``ratio``: the nearest count, and at least one head stays."""
    return min(int(ratio * heads + 0.5), heads - 1)


def with_heads(s: Structure, plan: dict[str, int], ratio: float) -> dict[str, int]:
    """``plan`` plus each attention group's kept width at head ratio ``ratio`` (for the MACs model only:
    torch-pruning sets the heads, see :func:`head_schedule`)."""
    out = dict(plan)
    for g in s.groups:
        if g.heads > 0:
            out[g.name] = g.units - heads_removed(g.heads, ratio) * (g.units // g.heads)
    return out


def nearest(allowed: tuple[int, ...], target: float) -> int:
    """The allowed count nearest ``target`` (ties keep more channels)."""
    return min(allowed, key=lambda k: (abs(k - target), -k))


def uniform_plan(s: Structure, ratio: float, max_ratio: float,
                 layer_ratios: dict[str, float] | None = None) -> dict[str, int]:
    """Each planned group keeps the allowed count nearest (1 - ratio) of its units (per-layer ratios win)."""
    plan = {}
    for g in (s.groups[i] for i in s.planned()):
        r = min(max((layer_ratios or {}).get(g.name, ratio), 0.0), max_ratio)
        plan[g.name] = nearest(g.allowed, g.units * (1 - r))
    return plan


def global_plan(s: Structure, ratio: float, max_ratio: float,
                layer_ratios: dict[str, float] | None = None) -> dict[str, int]:
    """torch-pruning's global ranking (one threshold over every group's scores), then the cap and rounding."""
    plan = uniform_plan(s, ratio, max_ratio, layer_ratios)
    ranked = {i: v for i, v in s.importance.items() if s.groups[i].name not in (layer_ratios or {})}
    if not ranked:
        return plan
    scores = torch.cat(list(ranked.values()))
    n_pruned = len(scores) - int(len(scores) * (1 - ratio))
    if n_pruned <= 0:
        return plan
    threshold = torch.topk(scores, k=n_pruned, largest=False).values[-1]
    for i, v in ranked.items():
        g = s.groups[i]
        plan[g.name] = nearest(g.allowed, float((v > threshold).sum()))
    return plan


def refine(s: Structure, plan: dict[str, int], target: float, *, tolerance: float, max_moves: int = 400,
           scale: float = 1.0) -> dict[str, int]:
    """Move single groups one allowed step at a time (the move that lands nearest the target MAC reduction)
    until the reduction is within ``tolerance`` of ``target``; ``scale`` corrects the MACs model."""
    plan = dict(plan)
    reach = lambda p: s.reduction(p) * scale  # noqa: E731
    movable = {s.groups[i].name for i in s.planned()}  # attention keeps its head count
    for _ in range(max_moves):
        if abs(reach(plan) - target) <= tolerance * target:
            break
        best, best_gap = None, abs(math.log(reach(plan) / target))
        for name, keep in plan.items():
            if name not in movable:
                continue
            allowed = next(g.allowed for g in s.groups if g.name == name)
            at = allowed.index(keep)
            for j in (at - 1, at + 1):
                if 0 <= j < len(allowed):
                    trial = {**plan, name: allowed[j]}
                    gap = abs(math.log(reach(trial) / target))
                    if gap < best_gap - 1e-12:
                        best, best_gap = trial, gap
        if best is None:
            break
        plan = best
    return plan


def ratio_dict(plan: dict[str, int], s: Structure) -> dict[str, float]:
    """Per-root ratios for torch-pruning's ``pruning_ratio_dict`` that leave exactly the planned units.

    Every group but attention's is listed (0.0 when it stays whole), so none falls back to a default
    ratio. torch-pruning keeps ``int(units * (1 - ratio))``; half a unit of margin makes that exact."""
    out = {}
    for g in s.groups:
        if g.attention:
            continue
        keep = plan.get(g.name, g.units)
        out[g.name] = 0.0 if keep >= g.units else (g.units - keep - 0.5) / g.units
    return out
