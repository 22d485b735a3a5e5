"""A Hugging Face directory with its own modelling code (``auto_map``, as ``trust_remote_code`` hub models have):
nothing imports its Python files without --trust-code; with it the model trains, prunes into a directory that
carries the files (``from_pretrained(..., trust_remote_code=True)`` loads it) and exports; a bundle rebuilds the
model only while the recorded files keep their sha256."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cli_contract import assert_clean_failure, invoke, ok, snapshot


def _imported(directory: Path) -> bool:
    """Whether transformers imported modelling code from ``directory`` (its modules are named after it)."""
    return any(name.startswith(f"transformers_modules.{directory.name}") for name in sys.modules)


@pytest.fixture(scope="module")
def custom(tmp_path_factory, text_models) -> tuple[Path, Path, Path]:
    """A tiny BERT with logits scaled by its own code (``logit_scale=2``), trained 1 epoch with --trust-code."""
    root = tmp_path_factory.mktemp("custom_code")
    texts = text_models.write_texts(root / "texts.csv", n=200)
    model = text_models.custom_bert_dir(root / "scaledbert_src")
    before = snapshot(root)
    refused = invoke(["train", str(model), "-d", str(texts), "--epochs", "1", "-q", "-o", str(root / "ft.safetensors")])
    assert_clean_failure(refused, ["auto_map in config.json", "needs --trust-code"], before=before, root=root,
                         output="ft.safetensors")
    assert not _imported(model)  # refused before transformers read a line of it
    ok(["train", model, "-d", texts, "--epochs", "1", "--optimizer", "adamw", "--lr", "3e-3", "-q", "--trust-code",
        "-o", root / "ft.safetensors"])
    return root / "ft.safetensors", model, texts


def test_the_bundle_records_the_code_and_runs_it_only_with_trust_code(custom):
    from deepslim.hf import CODE_KEY
    from deepslim.models import load_model
    from deepslim.errors import UntrustedCodeError
    ft, model, _ = custom
    from deepslim.bundle import read_header
    record = read_header(ft).arch.kwargs[CODE_KEY]
    assert record["directory"] == str(model.resolve())
    assert sorted(record["sha256"]) == ["configuration_scaled.py", "modeling_scaled.py"]
    with pytest.raises(UntrustedCodeError, match="pass --trust-code"):
        load_model(ft)
    bundle = load_model(ft, trust_code=True)
    assert type(bundle.model).__name__ == "ScaledBertForSequenceClassification"
    ids = torch.tensor([[2, 10, 11, 3]])
    scaled = bundle.model(input_ids=ids).logits
    plain = bundle.model.bert(input_ids=ids).pooler_output
    assert torch.allclose(scaled, 2.0 * bundle.model.classifier(plain), atol=1e-6)  # its own forward ran


def test_prune_writes_a_directory_that_carries_the_code_and_exports(custom, tmp_path):
    from transformers import AutoModelForSequenceClassification
    ft, _, texts = custom
    out = tmp_path / "pruned"
    before = snapshot(tmp_path)
    refused = invoke(["compress", "prune", str(ft), "--ratio", "0.5", "--head-ratio", "0.5", "--no-check", "-q",
                      "-o", str(out)])
    assert_clean_failure(refused, ["runs its own modelling code", "pass --trust-code"], before=before,
                         root=tmp_path, output="pruned")
    ok(["compress", "prune", ft, "--ratio", "0.5", "--head-ratio", "0.5", "--no-check", "-q", "--trust-code",
        "-o", out])
    assert (out / "modeling_scaled.py").is_file() and (out / "configuration_scaled.py").is_file()
    assert "_deepslim_code" not in json.loads((out / "config.json").read_text())
    loaded = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True, local_files_only=True)
    assert type(loaded).__name__ == "ScaledBertForSequenceClassification" and loaded.config.logit_scale == 2.0
    assert [l.attention.self.num_attention_heads for l in loaded.bert.encoder.layer] == [2, 2]
    assert loaded.config.intermediate_size == 32
    result = ok(["export", out, "--target", "onnx", "--trust-code", "-o", tmp_path / "pruned.onnx"])
    assert "parity ok" in result.output and "sequence lengths" in result.output
    with (out / "modeling_scaled.py").open("a") as fh:
        fh.write("\n# edited in the written directory\n")
    result = invoke(["eval", str(out), "-d", str(texts), "--trust-code"])
    assert result.exit_code == 2 and "not the modelling code the model was saved with" in result.output


def test_changed_code_is_refused_even_with_trust_code(custom, tmp_path):
    import shutil
    ft, model, texts = custom
    moved = tmp_path / "moved"
    shutil.copytree(model, moved)
    modeling = model / "modeling_scaled.py"
    original = modeling.read_text()
    try:
        modeling.write_text(original + "\nimport os  # changed after the bundle was saved\n")
        result = invoke(["eval", str(ft), "-d", str(texts), "--trust-code"])
        assert result.exit_code == 2 and "sha256" in result.output and "modeling_scaled.py" in result.output
        assert "Traceback" not in result.output
    finally:
        modeling.write_text(original)
    shutil.rmtree(model)
    try:
        result = invoke(["eval", str(ft), "-d", str(texts), "--trust-code"])
        assert result.exit_code == 2 and "which is gone" in result.output
    finally:
        shutil.copytree(moved, model)
