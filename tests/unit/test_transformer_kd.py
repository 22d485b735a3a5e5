"""Transformer distillation pieces: the hidden-state and attention-map losses on hand-computed tensors, the layer
map (auto, parsed, refused), and the per-layer features of tiny BERT, DistilBERT and ViT configs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compress.distill import DistillConfig
from compress.losses import attention_map_loss, hidden_state_loss
from compress.transformer_kd import (AttentionLoss, Features, TransformerKDError, auto_layer_map, build,
                                     eager_attention, forward_features, parse_layer_map, require_transformer,
                                     resolve_layer_map)
from deepslim.errors import ConfigError


# --- losses -----------------------------------------------------------------------------------------

def test_hidden_state_mse_counts_real_tokens_only():
    student = torch.zeros(1, 2, 2)
    teacher = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    assert hidden_state_loss(student, teacher).item() == pytest.approx(5.0)  # (1 + 1 + 9 + 9) / 4
    assert hidden_state_loss(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot be compared"):
        hidden_state_loss(torch.zeros(1, 2, 3), teacher)


def test_attention_kl_is_teacher_to_student_per_query():
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])    # (batch 1, head 1, query 2, key 2)
    student = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    first, second = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), math.log(2.0)
    assert attention_map_loss(student, teacher).item() == pytest.approx((first + second) / 2, rel=1e-5)
    assert attention_map_loss(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx(first, rel=1e-5)
    padded = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])     # a masked key is 0 on both sides: no nan
    assert attention_map_loss(padded, padded).item() == 0.0


def test_attention_mse_and_averaged_heads():
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    assert attention_map_loss(student, teacher, kind="mse").item() == pytest.approx((0.0625 * 2 + 0.25 * 2) / 4)
    cells = torch.tensor([[1, 0]])  # the real query-key cell (0, 0) only
    assert attention_map_loss(student, teacher, cells, kind="mse").item() == pytest.approx(0.0625)
    two_heads = torch.cat([teacher, torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])], dim=1)  # a pruned student: 1 head
    averaged = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    assert attention_map_loss(student, two_heads).item() == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(two_heads.mean(1, keepdim=True), averaged)
    with pytest.raises(ValueError, match="cannot be compared"):
        attention_map_loss(torch.full((1, 1, 3, 3), 1 / 3), teacher)


# --- the layer map -------------------------------------------------------------------------------------

def test_auto_layer_map_spreads_evenly_and_ends_on_the_last_layer():
    assert auto_layer_map(1, 2) == ((0, 1),)
    assert auto_layer_map(2, 4) == ((0, 1), (1, 3))
    assert auto_layer_map(6, 12) == tuple((i, 2 * i + 1) for i in range(6))
    assert auto_layer_map(4, 12) == ((0, 2), (1, 5), (2, 8), (3, 11))
    assert auto_layer_map(3, 3) == ((0, 0), (1, 1), (2, 2))


def test_a_student_cut_by_depth_learns_from_the_layers_it_was_copied_from():
    from compress.transformer_kd import kept_layers
    from deepslim.spec import StageRecord
    kept = ([0, 4, 7, 11], 12)
    assert resolve_layer_map(None, 4, 12, kept) == ((0, 0), (1, 4), (2, 7), (3, 11))
    assert resolve_layer_map(None, 4, 6, kept) == auto_layer_map(4, 6)  # another teacher: evenly spaced
    assert resolve_layer_map(((0, 3),), 4, 12, kept) == ((0, 3),)  # a map given is the map used
    assert resolve_layer_map(None, 1, 12, ([0], 12)) == ((0, 11),)  # --depth 1: the last still learns the last
    lineage = [StageRecord("train", {}, 1.0, {}), StageRecord("prune", {}, 1.0, {"kept_layers": [0, 1],
                                                                                 "layers_before": 4}),
               StageRecord("prune", {}, 1.0, {"sizes": {"layers": 2}})]
    assert kept_layers(lineage) == ([0, 1], 4) and kept_layers(lineage[:1]) is None


def test_layer_maps_parse_and_bad_ones_are_refused_in_one_sentence():
    assert parse_layer_map("auto") is None and parse_layer_map(None) is None
    assert parse_layer_map(" 0:1, 1:3 ") == ((0, 1), (1, 3))
    for bad, words in (("0-1", "STUDENT:TEACHER pairs"), ("a:1", "got 'a:1'"), ("-1:0", "0-based"),
                       ("0:1,", "got ''"), ("0:1,0:2", "student layer 0 more than once")):
        with pytest.raises(ConfigError, match=words):
            parse_layer_map(bad)
    with pytest.raises(ConfigError, match=r"--layer-map 0:2: the teacher has 2 encoder layers \(0 to 1\)"):
        resolve_layer_map(parse_layer_map("0:2"), 1, 2)
    with pytest.raises(ConfigError, match="the student has 1 encoder layer "):
        resolve_layer_map(((1, 0),), 1, 2)
    assert resolve_layer_map(None, 1, 2) == ((0, 1),)


def test_distill_config_records_the_transformer_options():
    cfg = DistillConfig(hidden_weight=1, attention_weight=0.5, layer_map=" 0:1 ", attention_loss="mse")
    data = cfg.to_json()
    assert (data["hidden_weight"], data["attention_weight"], data["layer_map"]) == (1, 0.5, "0:1")
    assert data["attention_loss"] == "mse" and data["losses"] == ["ce", "kd", "hidden_mse", "attention_mse"]
    assert DistillConfig(attention_weight=1).to_json()["layer_map"] == "auto"
    plain = DistillConfig().to_json()  # logits KD records what it recorded before
    assert not DistillConfig().transformer_kd and not {"hidden_weight", "layer_map", "attention_loss"} & set(plain)
    with pytest.raises(ConfigError, match="give one of them a weight above 0"):
        DistillConfig(layer_map="0:1")
    with pytest.raises(ConfigError, match="--attention-weight must be a number >= 0"):
        DistillConfig(attention_weight=-1)


# --- features of tiny Hugging Face encoders -------------------------------------------------------------

def _bert(layers=2, hidden=32, heads=4):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=32)).eval()


def _text_batch():
    ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    return ids, torch.tensor([[1] * 7, [1] * 5 + [0] * 2])


@pytest.mark.parametrize("family", ["bert", "distilbert", "vit"])
def test_every_encoder_layer_gives_its_hidden_states_and_attention_maps(family):
    import transformers as tf
    if family == "bert":
        model, args, tokens = _bert(layers=2), _text_batch(), 7
    elif family == "distilbert":
        model = tf.DistilBertForSequenceClassification(tf.DistilBertConfig(
            vocab_size=40, dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=32)).eval()
        args, tokens = _text_batch(), 7
    else:
        model = tf.ViTForImageClassification(tf.ViTConfig(
            image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64)).eval()
        args, tokens = (torch.randn(2, 1, 8, 8),), 17  # 16 patches and the class token
    layers = {"bert": 2, "distilbert": 3, "vit": 2}[family]
    before = model.config._attn_implementation
    with torch.no_grad():
        out, feats = forward_features(model, args, hidden=True, attention=True)
        plain = model(*args).logits  # a plain call after it runs as before (sdpa where it was)
    assert model.config._attn_implementation == before
    with eager_attention(model):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == before
    assert feats.layers == layers and len(feats.attentions) == layers
    assert all(h.shape == (2, tokens, 32) for h in feats.hidden)
    assert all(a.shape == (2, 4, tokens, tokens) for a in feats.attentions)
    assert torch.allclose(feats.attentions[0].sum(-1), torch.ones(2, 4, tokens), atol=1e-5)  # probabilities
    assert torch.allclose(out.logits, plain, atol=1e-6)  # the same model, the same logits
    if family != "vit":  # padded keys get no attention
        assert feats.attentions[-1][1, :, :, 5:].abs().max() == 0


def test_a_narrower_student_learns_through_a_projection_that_is_not_part_of_it():
    teacher, student = _bert(layers=2, hidden=32), _bert(layers=1, hidden=16, heads=2)
    args = _text_batch()
    with torch.no_grad():
        t_feats = forward_features(teacher, args, hidden=True, attention=True)[1]
        s_feats = forward_features(student, args, hidden=True, attention=True)[1]
    kd = build(student, t_feats, s_feats, None, hidden_weight=1.0, attention_weight=1.0,
               attention_loss=AttentionLoss.KL, mask_index=1)
    assert kd.pairs == ((0, 1),) and isinstance(kd.projections[0], nn.Linear)
    assert kd.projections[0].weight.shape == (32, 16)
    kd.student_forward(student.train(), args)
    loss = kd.loss(t_feats, args)
    loss.backward()
    assert loss.item() > 0 and kd.projections[0].weight.grad is not None
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert not any("projection" in k for k in student.state_dict())
    same = build(teacher, t_feats, t_feats, ((0, 0), (1, 1)), hidden_weight=1.0, attention_weight=0.0,
                 attention_loss="kl", mask_index=None)
    assert all(isinstance(p, nn.Identity) for p in same.projections)


def test_features_that_cannot_pair_and_models_that_have_none_are_refused():
    hidden = Features(hidden=(torch.zeros(2, 7, 32),))
    other = Features(hidden=(torch.zeros(2, 9, 32),))
    with pytest.raises(TransformerKDError, match="they need the same tokens"):
        build(nn.Linear(1, 1), hidden, other, None, hidden_weight=1.0, attention_weight=0.0, attention_loss="kl",
              mask_index=None)
    with pytest.raises(TransformerKDError, match="the student small is a Linear; use --feature-pairs"):
        require_transformer(nn.Linear(2, 2), "student", "small")
