"""`deepslim compress prune` on a Hugging Face text model: a tiny BERT trained on a text CSV loses half its heads
and FFN width (with a KD fine-tune), comes back as a directory that transformers' ``from_pretrained`` loads with
the smaller sizes, and `deepslim eval` reads it; the refusals say what to change in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_contract import assert_clean_failure, invoke, ok, snapshot


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_models) -> tuple[Path, Path]:
    """A tiny BERT directory (2 layers, hidden 32, 4 heads, FFN 64) trained 2 epochs on 300 texts."""
    root = tmp_path_factory.mktemp("transformer_prune")
    texts = text_models.write_texts(root / "texts.csv", n=300)
    bert = text_models.bert_dir(root / "bert")
    ok(["train", bert, "-d", texts, "--epochs", "2", "--optimizer", "adamw", "--lr", "3e-3", "-q", "-o", root / "ft"])
    return root / "ft", texts


def test_heads_and_ffn_pruned_with_kd_into_a_from_pretrained_directory(trained, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    ft, texts = trained
    out = tmp_path / "pruned"
    result = ok(["compress", "prune", ft, "--ratio", "0.5", "--head-ratio", "0.5", "--finetune-epochs", "1",
                 "--recover", "kd", "--finetune-optimizer", "adamw", "--finetune-lr", "1e-3", "--no-check", "-o", out])
    assert "MACs counted at sequence length 64" in result.output and "heads per layer [2, 2]" in result.output
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    layers = model.bert.encoder.layer
    assert [l.attention.self.num_attention_heads for l in layers] == [2, 2]
    assert [l.intermediate.dense.out_features for l in layers] == [32, 32] and model.config.intermediate_size == 32
    assert AutoTokenizer.from_pretrained(out, local_files_only=True)("not good")["input_ids"][0] == 2  # [CLS]
    record = json.loads((out / "deepslim.json").read_text())["lineage"][-1]
    m = record["metrics"]
    assert record["stage"] == "prune" and m["macs_after"] < 0.6 * m["macs_before"] and m["sequence_length"] == 64
    assert "finetune_val_top1" in m["steps"][0] and "top1" in m["test"]
    evaluated = json.loads(ok(["eval", out, "-d", texts, "--json"]).stdout)
    assert evaluated["metrics"]["top1"] == pytest.approx(m["test"]["top1"])  # the directory scores what it records


@pytest.mark.parametrize(("extra", "fragments"), [
    (["--head-ratio", "1.5"], ["--head-ratio", "below 1, got 1.5"]),
    (["--ratio", "0.5", "--global"], ["--global", "one intermediate size", "--local"]),
    (["--depth", "3"], ["--depth", "1 to 2, got 3"]),
])
def test_prune_refusals_for_a_transformer(trained, tmp_path, monkeypatch, extra, fragments):
    ft, _ = trained
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = invoke(["compress", "prune", str(ft), *extra, "--no-check", "--quiet", "-o", "out"])
    assert_clean_failure(result, fragments, before=before, root=tmp_path, output="out")


def test_a_directory_output_for_a_model_that_is_not_hugging_face_is_refused(tmp_path, monkeypatch, cnn_bundle):
    from deepslim.models import save_model
    monkeypatch.chdir(tmp_path)
    save_model(cnn_bundle, tmp_path / "cnn.safetensors")
    before = snapshot(tmp_path)
    result = invoke(["compress", "prune", "cnn.safetensors", "--ratio", "0.5", "-d", "digits", "--no-check",
                     "--quiet", "-o", "pruned"])
    assert_clean_failure(result, ["Only Hugging Face models are saved as directories", "pruned.safetensors"],
                         before=before, root=tmp_path, output="pruned")
