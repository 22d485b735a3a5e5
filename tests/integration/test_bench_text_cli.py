"""``deepslim bench --seq-len`` on a text model from the CLI: a tiny BERT trained one epoch by `deepslim train`,
its bundle on torch and its ONNX export on onnxruntime, timed at every (sequence length, batch) pair on real texts
and scored on the test split; OpenVINO compiles a static sequence length for latency and keeps a dynamic one for
accuracy; lengths beyond the position embeddings, and --seq-len on an image model, are refused in one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_contract import assert_bad_input, ok

SEQ, BATCHES = (16, 32), (1, 2)


@pytest.fixture(scope="module")
def text_kit(tmp_path_factory, text_models):
    """(bundle, texts.csv, report dir): a 2-layer BERT (hidden 32, 64 positions) trained 1 epoch by `deepslim train`,
    benched on torch and (exported on the way, with parity) on onnxruntime at --seq-len 16,32 x --batch 1,2."""
    root = tmp_path_factory.mktemp("bench_text")
    bert = text_models.bert_dir(root / "bert")
    texts = text_models.write_texts(root / "texts.csv", n=300)
    ok(["train", bert, "-d", texts, "-o", root / "m.safetensors", "--epochs", "1"])
    ok(["bench", root / "m.safetensors", "--backend", "torch,onnxruntime", "--seq-len", ",".join(map(str, SEQ)),
        "--batch", ",".join(map(str, BATCHES)), "--iterations", "2", "--rounds", "1", "--warmup", "1", "--threads",
        "1", "-d", texts, "--report", root / "report"])
    return root / "m.safetensors", texts, root / "report"


def _onnx(report):
    (onnx,) = (report / "artifacts").glob("*.onnx")
    return onnx


def test_bench_times_every_sequence_length_and_batch_and_scores_every_artifact(text_kit):
    _, _, report = text_kit
    data = json.loads((report / "report.json").read_text())
    assert data["config"]["sequences"] == list(SEQ) and data["config"]["batches"] == list(BATCHES)
    entries = data["entries"]
    assert [(e["kind"], e["backend"]) for e in entries] == [("bundle", "torch"), ("onnx", "onnxruntime")]
    for e in entries:
        assert sorted(e["latency"]) == sorted(f"seq{n}_b{b}" for n in SEQ for b in BATCHES)
        for key, row in e["latency"].items():
            n, b = (int(v) for v in key[3:].split("_b"))
            assert (row["sequence"], row["batch"]) == (n, b) and row["p50_ms"] > 0
            assert row["sequences_per_s"] == pytest.approx(b / (row["p50_ms"] / 1e3))
            assert row["padding"]["padded"] + row["padding"]["truncated"] <= b
        assert e["accuracy"]["samples"] == 45 and {"top1", "f1_macro"} <= set(e["accuracy"])
        assert e["macs_per_sequence"]["32"] > e["macs_per_sequence"]["16"] > 0  # the export's source counts them
    torch_row, onnx_row = entries  # the same model on another runtime: the same decisions on the test split
    assert onnx_row["accuracy"]["agreement"] == 1.0
    assert onnx_row["accuracy"]["top1"] == pytest.approx(torch_row["accuracy"]["top1"])
    assert onnx_row["accuracy"]["f1_macro"] == pytest.approx(torch_row["accuracy"]["f1_macro"])
    md = (report / "report.md").read_text()
    assert "| seq | batch |" in md and "sequences/s" in md and "padded to 32" in md
    assert "latency at sequence 16, 32" in md and (report / "latency_per_sequence.png").stat().st_size > 0
    assert "s32 b2 p50 ms" in (report / "report.html").read_text()


def test_openvino_compiles_each_latency_length_statically_and_takes_any_length_for_accuracy(text_kit):
    from benchmarks import Backend, RunnerOptions, open_runner
    from benchmarks.text_inputs import TextSamples
    onnx = _onnx(text_kit[2])
    ov = open_runner(onnx, Backend.OPENVINO, RunnerOptions(threads=1))
    ort = open_runner(onnx, Backend.ONNXRUNTIME, RunnerOptions(threads=1))
    samples = TextSamples([("the food was good",), ("not bad at all and so lovely",)], "two texts")
    ov.prepare(2, {"sequence": 16})
    for length in (16, 24):  # 16: the static shape; 24: compiled with a dynamic sequence axis on the way
        x = samples.batch(ov.signature, length, 2)
        np.testing.assert_allclose(ov.run(x), ort.run(x), atol=1e-4)
    assert set(ov.compiled) == {(2, (("sequence", 16),)), (2, None)}


def test_a_length_beyond_the_position_embeddings_is_refused(text_kit, tmp_path):
    bundle, texts, report = text_kit
    onnx = _onnx(report)
    message = assert_bad_input(["bench", str(bundle), str(onnx), "--seq-len", "16,128", "-d", str(texts),
                                "--report", str(tmp_path / "r")], ["--seq-len 128", "(64 positions)"], tmp_path)
    assert message == "error: --seq-len 128 is longer than m.safetensors takes (64 positions); give lengths up to 64."


def test_seq_len_on_an_image_model_is_refused(trained_cnn, tmp_path):
    from deepslim.models import save_model
    cnn = tmp_path / "in" / "cnn.safetensors"
    cnn.parent.mkdir()
    save_model(trained_cnn, cnn)
    assert_bad_input(["bench", str(cnn), "--seq-len", "16", "--report", str(tmp_path / "r")],
                     ["--seq-len applies to models with a sequence input", "cnn.safetensors takes x: image"], tmp_path)


def test_a_tensorrt_engine_of_a_seq_len_run_is_built_for_every_batch_and_length(text_kit, tmp_path, monkeypatch):
    """No GPU here: the export is stubbed, and what bench would build is checked (its profile, its source)."""
    from types import SimpleNamespace

    import pipeline.bench as planning
    from benchmarks import Backend
    seen = {}

    def export_model(bundle, target, out, **kwargs):
        seen.update(target=target, bundle=bundle, **kwargs)
        return SimpleNamespace(artifact=out, parity=None)

    monkeypatch.setattr(planning, "export_model", export_model)
    bundle = text_kit[0]
    (target,), _ = planning.plan_targets([bundle], [Backend.TENSORRT], tmp_path, dataset=None, sequences=SEQ,
                                         batches=BATCHES)
    config = seen["tensorrt_config"]
    assert seen["target"].value == "tensorrt" and target.path.suffix == ".engine" and target.source is seen["bundle"]
    assert tuple(config.batches) == BATCHES and dict(config.dim_ranges) == {"sequence": (16, 32, 32)}
