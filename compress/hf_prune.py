"""Hugging Face encoders under torch-pruning: whole attention heads, FFN width and encoder depth, with the
config rewritten so the pruned model rebuilds from it (``from_pretrained`` and deepslim bundles alike).

torch-pruning removes the heads (``num_heads`` for the query/key/value Linears, ``prune_num_heads``, head
dims fixed) and the FFN channels; the hidden (residual) width, the embeddings, the pooler and the classifier
stay, since a Hugging Face config has one ``hidden_size`` and no width of their own. What was removed is then
written where transformers reads it: ``pruned_heads`` (per layer, the removed heads in the ORIGINAL numbering,
merged with any the config already had), the FFN width (``intermediate_size``; DistilBERT's ``hidden_dim``) and
``num_hidden_layers``. Which heads went is read from the weights (each kept query block matched to the block it
was before the step), so nothing depends on torch-pruning's internals; :func:`verify` then rebuilds the model from
the new config and checks that the pruned weights load strictly with no structural difference left.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from deepslim.errors import ConfigError, DeepSlimError
from deepslim.spec import ArchSource, ArchSpec

QKV = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"))  # BERT/RoBERTa/ViT/DeiT, DistilBERT
HEAD_COUNTS = ("num_attention_heads", "n_heads")
HEAD_WIDTHS = ("all_head_size", "dim")
FFN_SIZES = ("intermediate_size", "hidden_dim")  # the config's FFN width: BERT-style, DistilBERT


class HFPruneError(DeepSlimError):
    """A Hugging Face model cannot be pruned into a shape its config can describe."""


def is_hf(arch: ArchSpec) -> bool:
    return arch.source is ArchSource.HF


def check_hf(bundle, cfg, *, attention: bool) -> None:
    """Refuse, before any work, what a model's config could not describe after pruning."""
    if cfg.head_ratio is not None and not attention:
        raise ConfigError(f"--head-ratio removes attention heads, and {bundle.arch.name} has no attention module "
                          "whose heads torch-pruning can remove; use --ratio or --speedup.")
    if not is_hf(bundle.arch):
        if cfg.depth is not None:
            raise ConfigError(f"--depth keeps N of the encoder layers of a Hugging Face model, and {bundle.arch.name} "
                              f"is a {bundle.arch.source.value} model; use --ratio or --speedup.")
        return
    if cfg.global_pruning:
        raise ConfigError("--global ranks channels across layers, so the FFNs would get different widths, which a "
                          "Hugging Face config (one intermediate size) cannot hold; use --local.")
    if cfg.layer_ratios:
        raise ConfigError("Per-layer ratios (--allocation sensitivity) give the FFNs different widths, which a "
                          "Hugging Face config (one intermediate size) cannot hold; use --allocation uniform.")
    if cfg.depth is not None:
        keep_layers(len(encoder_layers(bundle.model)[1]), cfg.depth)  # raises when out of range


def start(model: nn.Module, depth: int | None, say) -> Heads:
    """The heads the model has (from its config), after ``--depth`` dropped the layers it does not keep."""
    heads = Heads.of(model)
    if depth is not None:
        total = len(encoder_layers(model)[1])
        keep = keep_layers(total, depth)
        heads = drop_layers(model, heads, keep)
        say(f"--depth {depth}: kept encoder layers {', '.join(map(str, keep))} of 0-{total - 1}")
    return heads


# --- attention modules ---------------------------------------------------------------------------

def projections(module: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
    """The query/key/value Linears of a Hugging Face self-attention module (None for anything else)."""
    if not any(isinstance(getattr(module, n, None), int) for n in HEAD_COUNTS):
        return None
    for names in QKV:
        layers = tuple(getattr(module, n, None) for n in names)
        if all(isinstance(m, nn.Linear) for m in layers) and isinstance(getattr(module, "attention_head_size", None),
                                                                        int):
            return layers  # type: ignore[return-value]
    return None


def _count_attr(module: nn.Module) -> str:
    return next(n for n in HEAD_COUNTS if isinstance(getattr(module, n, None), int))


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """torch-pruning's ``num_heads``: each query, key and value Linear with its module's head count."""
    heads: dict[nn.Module, int] = {}
    for module in model.modules():
        layers = projections(module)
        if layers is not None:
            heads.update({m: getattr(module, _count_attr(module)) for m in layers})
    return heads


def sync_heads(model: nn.Module, counts: dict[nn.Module, int]) -> None:
    """Tell each attention module how many heads torch-pruning left (head size fixed, width = heads × size)."""
    for module in model.modules():
        layers = projections(module)
        if layers is None or layers[0] not in counts:
            continue
        n = counts[layers[0]]
        setattr(module, _count_attr(module), n)
        width = next(a for a in HEAD_WIDTHS if isinstance(getattr(module, a, None), int))
        setattr(module, width, n * module.attention_head_size)


# --- the encoder -----------------------------------------------------------------------------------

def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's layer list (``bert.encoder.layer``, ``distilbert.transformer.layer``, ``vit.encoder.layer``):
    the ModuleList of ``num_hidden_layers`` blocks that each hold one self-attention module."""
    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and all(
                sum(projections(m) is not None for m in block.modules()) == 1 for block in module):
            return name, module
    raise HFPruneError(f"{type(model).__name__} has no encoder layer list deepslim can prune (a ModuleList of "
                       f"{n} blocks with one query/key/value self-attention each).")


def fixed_layers(model: nn.Module) -> dict[str, str]:
    """Modules outside the encoder layers (embeddings, pooler, pre-classifier, final norm): never pruned, so the
    hidden width stays and the config describes every width."""
    path, _ = encoder_layers(model)
    parts = path.split(".")
    out = {}
    for depth in range(len(parts)):
        parent = ".".join(parts[:depth])
        owner = model.get_submodule(parent) if parent else model
        for child, module in owner.named_children():
            name = f"{parent}.{child}" if parent else child
            if child != parts[depth] and any(True for _ in module.parameters()):
                out[name] = "outside the encoder layers: the hidden width stays and the config has no width for it"
    return out


def _attention(block: nn.Module) -> nn.Module:
    return next(m for m in block.modules() if projections(m) is not None)


def ffn_layers(model: nn.Module) -> list[str]:
    """Per encoder layer, the FFN's first Linear (``intermediate.dense``, ``ffn.lin1``): the first Linear of the
    block outside the child that holds the attention."""
    path, layers = encoder_layers(model)
    out = []
    for i, block in enumerate(layers):
        attention = _attention(block)
        holder = next(c for c in block.children() if any(m is attention for m in c.modules()))
        inside = {id(m) for m in holder.modules()}
        name = next((n for n, m in block.named_modules() if isinstance(m, nn.Linear) and id(m) not in inside), None)
        if name is None:
            raise HFPruneError(f"Encoder layer {i} of {type(model).__name__} has no FFN Linear outside its attention.")
        out.append(f"{path}.{i}.{name}")
    return out


# --- which heads are left ------------------------------------------------------------------------

@dataclass
class Heads:
    """Per encoder layer, the ORIGINAL indices (as ``pruned_heads`` numbers them) of the heads it still has."""

    total: int
    kept: list[list[int]]

    @classmethod
    def of(cls, model: nn.Module) -> Heads:
        config = model.config
        total = int(config.num_attention_heads)
        pruned = {int(k): set(v) for k, v in (config.pruned_heads or {}).items()}
        _, layers = encoder_layers(model)
        return cls(total, [[h for h in range(total) if h not in pruned.get(i, set())] for i in range(len(layers))])

    def pruned(self) -> dict[int, list[int]]:
        return {i: [h for h in range(self.total) if h not in kept] for i, kept in enumerate(self.kept)
                if len(kept) < self.total}


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    """Each encoder layer's query weight, to match against after a pruning step."""
    _, layers = encoder_layers(model)
    return [projections(_attention(b))[0].weight.detach().clone() for b in layers]


def track(heads: Heads, before: list[torch.Tensor], model: nn.Module) -> Heads:
    """The heads left after a step: each kept query block is the block of one head before it (in order)."""
    _, layers = encoder_layers(model)
    kept = []
    for i, (block, old) in enumerate(zip(layers, before)):
        attention = _attention(block)
        size = attention.attention_head_size
        new = projections(attention)[0].weight.detach()
        old_blocks, new_blocks = old.split(size), new.split(size)
        at, left = 0, []
        for head in new_blocks:
            while at < len(old_blocks) and not torch.equal(old_blocks[at], head):
                at += 1
            if at == len(old_blocks):
                raise HFPruneError(f"Cannot tell which heads of encoder layer {i} were removed (a kept query block "
                                   "matches no head before the step); use --head-ratio 0.")
            left.append(heads.kept[i][at])
            at += 1
        kept.append(left)
    return Heads(heads.total, kept)


# --- depth -----------------------------------------------------------------------------------------

def keep_layers(total: int, depth: int) -> list[int]:
    """The layers ``--depth N`` keeps: evenly spaced, first and last included (round(i·(L−1)/(N−1))); 4 of 12
    are 0, 4, 7, 11 and 6 of 12 are 0, 2, 4, 7, 9, 11 (DistilBERT's choice); N = 1 keeps the first."""
    if not 1 <= depth <= total:
        raise ConfigError(f"--depth keeps N of the model's {total} encoder layers, so N must be 1 to {total}, "
                          f"got {depth}.")
    if depth == 1:
        return [0]
    return sorted({int(i * (total - 1) / (depth - 1) + 0.5) for i in range(depth)})


def drop_layers(model: nn.Module, heads: Heads, keep: list[int]) -> Heads:
    """Keep only the encoder layers ``keep`` (renumbered 0..N-1, ``num_hidden_layers`` set on the config)."""
    path, layers = encoder_layers(model)
    owner_name, _, attr = path.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, attr, nn.ModuleList([layers[i] for i in keep]))
    for new, block in enumerate(getattr(owner, attr)):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new
    for name in ("n_layers", "num_layers", "num_hidden_layers"):  # DistilBERT's Transformer counts its layers
        if isinstance(getattr(owner, name, None), int):
            setattr(owner, name, len(keep))
    model.config.num_hidden_layers = len(keep)
    return Heads(heads.total, [heads.kept[i] for i in keep])


# --- the config ------------------------------------------------------------------------------------

def rewrite(arch: ArchSpec, model: nn.Module, heads: Heads) -> ArchSpec:
    """``arch`` with the pruned sizes in its config: ``pruned_heads``, the FFN width, ``num_hidden_layers``; the
    attention modules' ``pruned_heads`` sets and the model's config follow."""
    from deepslim import hf
    config = hf.make_config(arch.kwargs)
    _, layers = encoder_layers(model)
    config.num_hidden_layers = len(layers)
    config.pruned_heads = heads.pruned()
    modules = dict(model.named_modules())
    widths = sorted({modules[n].out_features for n in ffn_layers(model)})
    if len(widths) > 1:
        raise HFPruneError(f"The FFN widths differ across layers ({widths}), and a Hugging Face config holds one "
                           "intermediate size; prune every layer at the same ratio (no --global, no sensitivity "
                           "allocation).")
    size = next((a for a in FFN_SIZES if isinstance(getattr(config, a, None), int)), None)
    if size is None:
        raise HFPruneError(f"The {config.model_type} config has no FFN width ({' or '.join(FFN_SIZES)}).")
    setattr(config, size, widths[0])
    for i, block in enumerate(layers):
        removed = set(config.pruned_heads.get(i, []))
        for module in block.modules():
            if isinstance(getattr(module, "pruned_heads", None), set):
                module.pruned_heads = set(removed)
    for module in model.modules():  # where the weights were read from: the pruned model is no longer that
        if isinstance(getattr(module, "name_or_path", None), str):
            module.name_or_path = ""
    for key in ("num_hidden_layers", "pruned_heads", size):  # in place: the modules share the config object
        setattr(model.config, key, getattr(config, key))
    return replace(arch, kwargs=hf.config_dict(config))


def after_step(bundle, heads: Heads, before: list[torch.Tensor]) -> Heads:
    """After a pruning step: which heads went (:func:`track`), the config rewritten (:func:`rewrite`) and the
    rebuilt model checked against the pruned one (:func:`verify`) before any fine-tuning."""
    heads = track(heads, before, bundle.model)
    bundle.arch = rewrite(bundle.arch, bundle.model, heads)
    verify(bundle.arch, bundle.model)
    return heads


def verify(arch: ArchSpec, model: nn.Module) -> None:
    """The model ``arch`` builds takes the pruned weights strictly, with no structural difference left (so the
    bundle's structure section is empty and ``from_pretrained`` loads the directory)."""
    from deepslim.bundle import capture_structure
    from deepslim.models import build_model
    with torch.random.fork_rng():
        reference = build_model(arch)
    own, built = model.state_dict(), reference.state_dict()
    wrong = [f"'{k}' is {tuple(v.shape)} but the config builds {tuple(built[k].shape) if k in built else 'nothing'}"
             for k, v in own.items() if k not in built or built[k].shape != v.shape]
    wrong += [f"the config builds '{k}', which the pruned model lacks" for k in built if k not in own]
    if not wrong:
        reference.load_state_dict(own, strict=True)
        structure = capture_structure(model, reference)
        wrong = [f"'{n}' differs in {sorted(a)}" for n, a in structure["modules"].items()]
    if wrong:
        raise HFPruneError(f"The pruned model does not match the config it was given: {wrong[0]}"
                           + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "") + ".")


def describe(arch: ArchSpec) -> dict[str, Any]:
    """The sizes the lineage records: heads per layer, FFN width, layers."""
    from deepslim import hf
    config = hf.make_config(arch.kwargs)
    total = int(config.num_attention_heads)
    pruned = config.pruned_heads or {}
    size = next((getattr(config, a) for a in FFN_SIZES if isinstance(getattr(config, a, None), int)), None)
    return {"layers": int(config.num_hidden_layers), "ffn": size,
            "heads": [total - len(pruned.get(i, [])) for i in range(int(config.num_hidden_layers))],
            "pruned_heads": {str(k): v for k, v in pruned.items()}}
