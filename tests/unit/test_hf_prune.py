"""Hugging Face encoders pruned by whole heads, FFN width and depth: the config says what was removed, so
``from_pretrained`` and deepslim bundles rebuild the pruned model exactly; timm ViT heads still go."""

from __future__ import annotations

import json

import pytest
import torch

from deepslim.errors import ConfigError
from deepslim.tasks import Task

TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
DISTIL = {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 64, "dropout": 0.0,
          "attention_dropout": 0.0}
VIT = {"image_size": 8, "patch_size": 2, "num_channels": 1,
       **{k: v for k, v in TEXT.items() if k != "max_position_embeddings"}}
TWO = Task.classification(["negative", "positive"])


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, text_models):
    path = tmp_path_factory.mktemp("hf_prune") / "tok"
    text_models.tokenizer().save_pretrained(str(path))
    return path


def _bundle(kind: str, tokenizer_dir):
    from deepslim.models import load_model
    from deepslim.signature import InputKind, TensorSpec
    torch.manual_seed(0)
    if kind == "vit":
        return load_model(arch="hf:vit", arch_kwargs=VIT, task=Task.classification([str(i) for i in range(10)]),
                          input_size=8, channels=1, mean=(0.5,), std=(0.25,))
    tokens = (TensorSpec("input_ids", ("batch", "sequence"), "int64", InputKind.TOKENS),)
    kwargs = DISTIL if kind == "distilbert" else TEXT
    return load_model(arch=f"hf:{kind}", arch_kwargs=kwargs, task=TWO, inputs=tokens, tokenizer=str(tokenizer_dir))


def _inputs(bundle) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    if bundle.signature.text is None:
        return {"pixel_values": torch.randn(3, 1, 8, 8, generator=gen)}
    ids = torch.randint(5, 100, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in bundle.signature.input_names:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def _prune(bundle, **kwargs):
    from compress.prune import PruneConfig, prune
    return prune(bundle, PruneConfig(**kwargs), dataset=None, progress=False)


def _heads(model) -> list[int]:
    from compress.hf_prune import _attention, _count_attr, encoder_layers
    return [getattr(a, _count_attr(a)) for a in map(_attention, encoder_layers(model)[1])]


def _auto(bundle):
    import transformers
    return (transformers.AutoModelForImageClassification if bundle.signature.text is None
            else transformers.AutoModelForSequenceClassification)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "vit"])
def test_heads_and_ffn_pruned_reload_through_from_pretrained_and_the_bundle(kind, tokenizer_dir, tmp_path):
    from deepslim import bundle as bundle_format
    from deepslim.models import load_model, save_model
    base = _bundle(kind, tokenizer_dir)
    pruned = _prune(base, ratio=0.5, head_ratio=0.5)
    assert _heads(pruned.model) == [2, 2] and _heads(base.model) == [4, 4]
    sizes = pruned.lineage[-1].metrics["sizes"]
    assert sizes["ffn"] == 32 and sizes["heads"] == [2, 2] and sizes["layers"] == 2
    m = pruned.lineage[-1].metrics
    assert m["macs_after"] < 0.6 * m["macs_before"]
    assert m.get("sequence_length") == (None if kind == "vit" else 64)  # text MACs at the tokenizer's max_length
    x = _inputs(pruned)
    with torch.no_grad():
        want = pruned.model.eval()(**x).logits
        hf = _auto(pruned).from_pretrained(save_model(pruned, tmp_path / "dir"), local_files_only=True).eval()
        assert _heads(hf) == [2, 2]
        config = json.loads((tmp_path / "dir" / "config.json").read_text())
        assert config[{"distilbert": "hidden_dim"}.get(kind, "intermediate_size")] == 32
        assert sorted(map(len, config["pruned_heads"].values())) == [2, 2]
        assert (hf(**x).logits - want).abs().max() < 1e-5
        path = save_model(pruned, tmp_path / "p.safetensors")
        assert bundle_format.read_header(path).structure == {"modules": {}, "tensors": {}}
        assert torch.equal(load_model(path).model(**x).logits, want)


def test_depth_and_a_second_prune_keep_pruned_heads_in_the_original_numbering(tokenizer_dir, tmp_path):
    from deepslim.models import load_model, save_model
    first = load_model(save_model(_prune(_bundle("bert", tokenizer_dir), head_ratio=0.5), tmp_path / "a"))
    removed = {int(k): set(v) for k, v in first.arch.kwargs["pruned_heads"].items()}
    assert first.model.config.intermediate_size == 64 and {len(v) for v in removed.values()} == {2}
    second = _prune(first, head_ratio=0.5, depth=1)  # keeps layer 0: one of its two heads left goes
    again = {int(k): set(v) for k, v in second.arch.kwargs["pruned_heads"].items()}
    assert list(again) == [0] and removed[0] < again[0] and len(again[0]) == 3
    assert second.arch.kwargs["num_hidden_layers"] == 1 and _heads(second.model) == [1]
    recorded = second.lineage[-1].metrics
    assert recorded["kept_layers"] == [0] and recorded["layers_before"] == 2  # distill's auto map reads these
    x = _inputs(second)
    with torch.no_grad():
        hf = _auto(second).from_pretrained(save_model(second, tmp_path / "b"), local_files_only=True).eval()
        assert (hf(**x).logits - second.model.eval()(**x).logits).abs().max() < 1e-5


def test_iterative_steps_remove_exactly_the_heads_asked():
    from torch import nn
    from compress.prune_plan import head_schedule
    for heads, ratio, steps in ((12, 0.5, 3), (4, 0.5, 2), (12, 0.3, 4), (3, 0.9, 2)):
        left = heads
        layer = nn.Linear(2, 2)
        for r in head_schedule({layer: heads}, ratio, steps)[layer][1:]:
            left -= int(torch.tensor(r * left).ceil())  # what torch-pruning removes at a step
        assert left == heads - min(int(ratio * heads + 0.5), heads - 1)


def test_depth_keeps_evenly_spaced_layers_with_the_first_and_last():
    from compress.hf_prune import keep_layers
    assert keep_layers(12, 4) == [0, 4, 7, 11] and keep_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert keep_layers(2, 1) == [0] and keep_layers(3, 3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="must be 1 to 2"):
        keep_layers(2, 3)


def test_what_a_config_could_not_hold_is_refused_before_any_work(tokenizer_dir, cnn_bundle):
    bert = _bundle("bert", tokenizer_dir)
    with pytest.raises(ConfigError, match="--global .*one intermediate size.*--local"):
        _prune(bert, ratio=0.5, global_pruning=True)
    with pytest.raises(ConfigError, match="must be 1 to 2, got 3"):
        _prune(bert, depth=3)
    with pytest.raises(ConfigError, match="--depth keeps N of the encoder layers of a Hugging Face model"):
        _prune(cnn_bundle, ratio=0.5, depth=1)
    with pytest.raises(ConfigError, match="--head-ratio removes attention heads, and small_cnn has no attention"):
        _prune(cnn_bundle, ratio=0.5, head_ratio=0.5)
    with pytest.raises(ConfigError, match="at least 0 and below 1, got 1.0"):
        _prune(bert, head_ratio=1.0)


def test_timm_vit_loses_whole_heads_and_reloads_bit_exact(tmp_path):
    from deepslim.models import load_model, save_model
    torch.manual_seed(0)
    base = load_model(arch="timm:vit_tiny_patch16_224", num_classes=10, input_size=32,
                      arch_kwargs={"depth": 2, "embed_dim": 48, "num_heads": 4})
    pruned = _prune(base, ratio=0.5, head_ratio=0.5, round_to=None)
    attn = pruned.model.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 2 * attn.head_dim and attn.head_dim == 12
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(save_model(pruned, tmp_path / "v.safetensors")).model(x), pruned.model(x))
