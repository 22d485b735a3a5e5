"""``deepslim bench --seq-len`` pieces without a model: real texts tokenized to exactly each length (padded with
attention mask 0, or truncated), the refusals, the latency grid of (sequence, batch) points, and the reports
that show the sequence length. Image and tabular reports keep their shape (no sequence keys)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.bench import BenchReport, Entry
from benchmarks.latency import LatencyConfig, point_key, summarize
from benchmarks.report import figures, summary_rows, title_line, to_html, to_markdown
from benchmarks.text_inputs import (TextSamples, check_sequences, padding_words, parse_sequences,
                                    sequence_limit)
from deepslim.errors import ConfigError
from deepslim.signature import BATCH, InputKind, Signature, TensorSpec
from deepslim.textspec import TextSpec

LONG = " ".join(["the film was very good and the room was not bad"] * 3)  # 35 tokens with [CLS], [SEP]


@pytest.fixture(scope="module")
def signature(text_models):
    """A BERT-like text model's signature with the in-memory tokenizer (model_max_length 64)."""
    ids = TensorSpec("input_ids", (BATCH, "sequence"), "int64", InputKind.TOKENS)
    mask = TensorSpec("attention_mask", (BATCH, "sequence"), "int64", InputKind.MASK)
    types = TensorSpec("token_type_ids", (BATCH, "sequence"), "int64", InputKind.TOKENS)
    text = TextSpec.from_tokenizer(text_models.tokenizer())
    return Signature((ids, mask, types), ("logits",), "logits", text=text)


def test_texts_are_padded_with_mask_zero_or_truncated_to_exactly_each_length(signature):
    samples = TextSamples([("good day",), (LONG,)], "two texts")
    tokenizer = signature.text.tokenizer()
    ids, mask, types = samples.batch(signature, 16, 2)
    assert ids.shape == mask.shape == types.shape == (2, 16) and ids.dtype == np.int64
    assert mask[0].tolist() == [1] * 4 + [0] * 12  # [CLS] good day [SEP], then padding
    assert (ids[0, 4:] == tokenizer.pad_token_id).all() and not types.any()
    assert mask[1].all() and ids[1, -1] == tokenizer.sep_token_id  # truncated, still ends with [SEP]
    assert samples.padding(signature, 16, 2) == {"padded": 1, "truncated": 1, "real_tokens": 0.625}
    ids, mask, _ = samples.batch(signature, 64, 3)  # more rows than texts: they repeat
    assert ids.shape == (3, 64) and (ids[0] == ids[2]).all() and mask[1].sum() < 64
    stats = samples.padding(signature, 64, 3)
    assert stats["padded"] == 3 and stats["truncated"] == 0
    assert padding_words(stats, 64, 3).startswith("3/3 padded to 64 (")
    assert padding_words({"padded": 1, "truncated": 1, "real_tokens": 0.625}, 16, 2) == \
        "1/2 padded to 16, 1/2 truncated to 16 (62% real tokens)"


def test_sentence_pairs_fill_token_type_ids_and_random_ids_stay_in_the_vocabulary(signature):
    ids, mask, types = TextSamples([("good day", "bad film")], "a pair").batch(signature, 12, 1)
    assert types[0].tolist() == [0] * 4 + [1] * 3 + [0] * 5 and mask[0].sum() == 7
    random = TextSamples(None, "seeded random token ids")
    ids, mask, types = random.batch(signature, 20, 2)
    assert ids.shape == (2, 20) and mask.all() and 0 <= ids.min() and ids.max() < len(signature.text.tokenizer())
    assert ids.max() > 1 and random.padding(signature, 20, 2) is None  # not the 0/1 ids of example inputs


def test_seq_len_refusals_are_one_sentence(signature):
    image = Signature((TensorSpec("x", (BATCH, 1, 8, 8), kind=InputKind.IMAGE, mean=(0.5,), std=(0.5,)),))
    with pytest.raises(ConfigError, match=r"^--seq-len applies to models with a sequence input \(text models\); "
                                          r"cnn.onnx takes x: image 1x8x8 float32 -> output\.$"):
        check_sequences(image, (16,), "cnn.onnx")
    check_sequences(image, (), "cnn.onnx")  # no --seq-len: nothing to check
    with pytest.raises(ConfigError, match=r"^--seq-len 128 is longer than m.onnx takes \(64 positions\); give "
                                          r"lengths up to 64\.$"):
        check_sequences(signature, (16, 128), "m.onnx", sequence_limit(signature))
    check_sequences(signature, (3, 64), "m.onnx", 64)
    with pytest.raises(ConfigError, match=r"^--seq-len 2 leaves no room for text: m.onnx's tokenizer adds 2 special "
                                          r"tokens to every text; give lengths of at least 3\.$"):
        check_sequences(signature, (2, 16), "m.onnx", 64)
    for bad in ("0", "16,x", ""):
        with pytest.raises(ConfigError, match="--seq-len must be comma-separated positive lengths"):
            parse_sequences(bad)
    assert parse_sequences("32, 128,32") == (32, 128) and parse_sequences(None) == ()
    with pytest.raises(ConfigError, match="--seq-len lengths must be positive"):
        LatencyConfig(sequences=(0,))


def test_the_position_limit_comes_from_the_model_config_then_the_tokenizer(signature):
    from transformers import BertConfig, RobertaConfig
    assert sequence_limit(signature, BertConfig(max_position_embeddings=40)) == 40
    assert sequence_limit(signature, RobertaConfig(max_position_embeddings=514)) == 512
    assert sequence_limit(signature) == 64  # the tokenizer's model_max_length
    bare = Signature(signature.inputs, ("logits",), "logits")
    assert sequence_limit(bare) is None


def test_latency_points_pair_every_sequence_with_every_batch():
    config = LatencyConfig(batches=(1, 8), sequences=(32, 128))
    assert config.points == [(32, 1), (32, 8), (128, 1), (128, 8)]
    assert LatencyConfig(batches=(1, 8)).points == [1, 8]
    assert point_key((128, 8)) == "seq128_b8" and point_key(8) == "8"


def _text_entry(name: str, backend: str, p50: float, first: bool) -> Entry:
    inputs = {n: {"shape": ["sequence"], "dtype": "int64", "kind": k}
              for n, k in (("input_ids", "tokens"), ("attention_mask", "mask"))}
    entry = Entry(f"{name} [{backend}]", name, backend, "onnx", "fp32", 4096, 10, 1000, [16], None, {}, 0.1, None,
                  accuracy={"top1": 0.8, "f1_macro": 0.75, "samples": 90}, inputs=inputs)
    for n in (16, 32):
        for b in (1, 2):
            stats = summarize([[p50 * n / 16 * b] * 3], b, sequence=n)
            stats.speedup = stats.speedup_same_backend = 1.0 if first else 2.0
            stats.padding = {"padded": b, "truncated": 0, "real_tokens": 0.5}
            entry.latency[n, b] = stats
    return entry


def test_a_seq_len_report_shows_each_sequence_length_with_sequences_per_second(tmp_path):
    config = {"batches": [1, 2], "sequences": [16, 32], "dataset": "texts.csv", "split": "test", "limit": None,
              "task": "classification", "primary_metric": "top1", "images": False}
    env = {"cpu": {"model": "cpu", "usable_cores": 2, "flags": []}, "gpu": None, "threads": 1, "os": "linux",
           "versions": {}}
    report = BenchReport("now", env, config, [_text_entry("m.safetensors", "torch", 2.0, True),
                                              _text_entry("m.onnx", "onnxruntime", 1.0, False)])
    head, rows = summary_rows(report, compact=True)
    assert [h for h in head if h.endswith("p50 ms")] == ["s16 b1 p50 ms", "s16 b2 p50 ms", "s32 b1 p50 ms",
                                                         "s32 b2 p50 ms"]
    assert rows[0][3] == "text, 2 inputs" and "MACs (seq 16)" in head
    assert title_line(report) == "accuracy on texts.csv, test split (all 90 samples); latency at sequence 16, 32"
    md = to_markdown(report)
    assert "| artifact | backend | seq | batch | p50 | p90 | p99 | mean | std | sequences/s | inputs |" in md
    assert "| m.onnx | onnxruntime | 32 | 2 | 4.000 |" in md and "2/2 padded to 32 (50% real tokens)" in md
    assert "s32 b2 p50 ms (spread)" in to_html(report, {})
    kept = report.to_json()
    row = kept["entries"][1]["latency"]["seq32_b2"]
    assert row["sequence"] == 32 and row["batch"] == 2 and row["sequences_per_s"] == pytest.approx(500.0)
    assert row["padding"] == {"padded": 2, "truncated": 0, "real_tokens": 0.5}
    assert title_line(json.loads(json.dumps(kept))) == title_line(report)
    figs = figures(report)
    assert set(figs) == {"accuracy_vs_latency.png", "latency_per_batch.png", "size.png", "latency_per_sequence.png"}
    lines = figs["latency_per_sequence.png"].axes[0].get_lines()
    assert len(lines) == 4 and list(lines[0].get_xdata()) == [16, 32]


def test_batch_only_latency_rows_keep_their_json_keys():
    row = summarize([[1.0, 2.0]], 4).to_json()
    assert "sequence" not in row and "padding" not in row and "sequences_per_s" not in row
    assert summarize([[1.0, 2.0]], 4).sequence is None
