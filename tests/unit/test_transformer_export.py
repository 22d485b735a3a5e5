"""Export of a Hugging Face text model (#14): ONNX with input_ids/attention_mask/token_type_ids and dynamic batch and
sequence axes, checked on real texts at several sequence lengths; OpenVINO IR (from the ONNX file and from torch)
with the signature and its tokenizer in rt_info; the TensorRT optimisation profile of ``--seq-len`` built against a
fake builder (no TensorRT here)."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import text_models  # noqa: E402

from deepslim.artifact import ArtifactMeta, read_onnx_meta  # noqa: E402
from deepslim.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """An untrained 2-layer BERT (hidden 32, 64 positions) fitted to a CSV of 200 texts, and its ONNX file."""
    from deepslim.training import model_for_dataset
    from export.onnx import to_onnx
    root = tmp_path_factory.mktemp("transformer_export")
    bert = text_models.bert_dir(root / "bert")
    texts = str(text_models.write_texts(root / "texts.csv", n=200))
    torch.manual_seed(0)
    bundle = model_for_dataset(f"hf:{bert}", texts)
    return bundle, texts, to_onnx(bundle, root / "bert.onnx")


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _tokens(bundle, length: int, n: int = 5) -> dict[str, np.ndarray]:
    from export.parity import tokens_at
    texts = [(text_models.sentence(random.Random(i))[0],) for i in range(n)]
    return tokens_at(bundle.signature, texts, length)


def _torch(bundle, feed: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return bundle.model.eval()(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()


def test_onnx_has_the_token_inputs_with_dynamic_batch_and_sequence_and_runs_at_any_length(kit):
    import onnxruntime as ort
    bundle, _, path = kit
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(_dims(i) == ["batch", "sequence"] and i.type.tensor_type.elem_type == onnx.TensorProto.INT64
               for i in graph.input)
    assert [o.name for o in graph.output] == ["logits"] and _dims(graph.output[0]) == ["batch", 2]
    meta = read_onnx_meta(path)
    assert meta.export["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert meta.export["dim_limits"] == {"sequence": 64}  # the position embeddings
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, length in ((1, 5), (3, 23), (2, 64)):
        feed = _tokens(bundle, length, n)
        assert feed["input_ids"].shape == (n, length)
        np.testing.assert_allclose(session.run(None, feed)[0], _torch(bundle, feed), rtol=1e-4, atol=1e-5)


def test_parity_compares_real_texts_truncated_and_padded_to_several_lengths(kit):
    from export.parity import check_parity, sequence_lengths
    bundle, texts, path = kit
    report = check_parity(bundle, path, dataset=texts, samples=16)
    assert report.passed and report.samples == 3 * 16 and report.max_abs < 1e-4
    lengths = [int(n) for n in re.search(r"sequence lengths ([\d, ]+)", report.inputs).group(1).split(", ")]
    assert len(lengths) == 3 and lengths[0] < lengths[1] < lengths[2] == 64, report.inputs
    assert sequence_lengths(20, 64) == (10, 20, 64) and sequence_lengths(64, 64) == (32, 64)


def test_the_signature_and_its_tokenizer_travel_in_onnx_and_openvino_metadata(kit, tmp_path):
    from benchmarks.runners import read_meta
    from export.openvino import to_openvino
    bundle, _, path = kit
    meta = read_onnx_meta(path)
    assert meta.signature == bundle.signature and meta.signature.text.sha256 == bundle.signature.text.sha256
    xml = to_openvino(path, tmp_path / "bert.xml")
    back = read_meta(xml)
    assert back.signature == bundle.signature and back.task == bundle.task
    assert back.signature.text.tokenizer()("not good")["input_ids"] == \
        bundle.signature.text.tokenizer()("not good")["input_ids"]
    import openvino as ov
    model = ov.Core().read_model(str(xml))
    assert [p.get_any_name() for p in model.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(p.get_partial_shape().to_string() == "[?,?]" for p in model.inputs)


def test_a_tokenizer_of_a_real_vocabulary_size_fits_in_both_metadata_stores(kit, tmp_path):
    """A 30k-word WordPiece vocabulary (BERT's size) is a few hundred KB in the metadata, read back intact."""
    from dataclasses import replace

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from benchmarks.runners import read_meta
    from deepslim.artifact import META_KEY
    from deepslim.textspec import TextSpec
    from export.onnx import set_metadata
    bundle, _, path = kit
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i:05d}x{i * 7919 % 100003}": i + 2 for i in range(30_000)}}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    text = TextSpec.from_tokenizer(PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]"),
                                   max_length=64)
    meta = ArtifactMeta(replace(bundle.signature, text=text), bundle.task, [], {"target": "onnx"})
    assert len(meta.to_json()) > 200_000
    proto = onnx.load(str(path))
    set_metadata(proto, meta)
    onnx.save_model(proto, str(tmp_path / "big.onnx"))
    assert read_onnx_meta(tmp_path / "big.onnx").signature.text == text
    import openvino as ov
    model = ov.Core().read_model(str(path))
    model.set_rt_info(meta.to_json(), [META_KEY, "meta"])
    ov.save_model(model, str(tmp_path / "big.xml"))
    again = read_meta(tmp_path / "big.xml").signature.text
    assert again == text and len(again.tokenizer().get_vocab()) == 30_002


@pytest.mark.slow  # a torch.export of its own (about 10 s); --ov-via onnx is the default, tested above
def test_openvino_from_torch_keeps_the_sequence_axis_dynamic(kit, tmp_path):
    """torch.export refuses a sequence range past the position embeddings: the range ends at them."""
    import openvino as ov

    from export.openvino import to_openvino
    bundle, _, _ = kit
    xml = to_openvino(bundle, tmp_path / "torch.xml", via="torch")
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for n, length in ((2, 7), (1, 64)):
        feed = _tokens(bundle, length, n)
        got = compiled([feed[p.get_any_name()] for p in compiled.inputs])[0]
        np.testing.assert_allclose(got, _torch(bundle, feed), rtol=1e-4, atol=1e-5)


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)


class _Builder:
    def create_optimization_profile(self):
        return _Profile()


class _Network:
    names = ("input_ids", "attention_mask", "token_type_ids")
    num_inputs = 3

    def get_input(self, i):
        return type("T", (), {"name": self.names[i]})()


def test_seq_len_sets_every_token_input_s_tensorrt_profile(kit):
    from export.options import parse_seq_len
    from export.tensorrt import TensorRTConfig, optimization_profile, plan_build, trtexec_command
    meta = read_onnx_meta(kit[2])
    config = TensorRTConfig(batches=(1, 8), dim_ranges={"sequence": parse_seq_len("16,32,64")})
    plan = plan_build(meta, config)
    profile = optimization_profile(_Builder(), _Network(), plan)  # what _build adds to the builder config
    assert profile.shapes == {name: ((1, 16), (8, 32), (8, 64)) for name in _Network.names}
    line = trtexec_command("m.onnx", "m.engine", plan).split()
    assert "--minShapes=input_ids:1x16,attention_mask:1x16,token_type_ids:1x16" in line
    assert "--maxShapes=input_ids:8x64,attention_mask:8x64,token_type_ids:8x64" in line
    default = plan_build(meta, TensorRTConfig(batches=(4,)))  # 1 to the tokenizer's max_length, tuned there
    assert default.inputs[1].min_shape == (4, 1) and default.inputs[1].opt_shape == default.max_shape == (4, 64)
    from dataclasses import replace
    unrecorded = replace(meta, export={k: v for k, v in meta.export.items() if k != "dim_limits"})
    for m in (meta, unrecorded):  # the export's record, else the tokenizer spec's position limit
        with pytest.raises(ConfigError, match="--seq-len goes up to 512 but the model takes at most 64"):
            plan_build(m, TensorRTConfig(dim_ranges={"sequence": (16, 128, 512)}))


def test_seq_len_is_checked():
    from deepslim.spec import InputSpec
    from export.options import parse_seq_len
    from export.tensorrt import TensorRTConfig, plan_build
    assert parse_seq_len("32") == (32, 32, 32) and parse_seq_len(None) is None
    for bad in ("16,8,64", "0,1,2", "a", "1,2"):
        with pytest.raises(ConfigError, match="--seq-len must be MIN,OPT,MAX"):
            parse_seq_len(bad)
    image = ArtifactMeta(InputSpec.create(3, 32, (0.5,), (0.5,)), ["a", "b"])
    with pytest.raises(ConfigError, match=r"not named dims of the model's inputs \(x: image.*--seq-len applies"):
        plan_build(image, TensorRTConfig(dim_ranges={"sequence": (1, 2, 3)}))
