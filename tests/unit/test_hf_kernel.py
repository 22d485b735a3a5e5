"""The Hugging Face kernel: models from configs and local directories (never the hub), the tokenizer in the
signature, from_pretrained directories written and read back, text tables."""

from __future__ import annotations

import json

import pytest
import torch

from deepslim.errors import ConfigError, DatasetError, ModelError, OutputError
from deepslim.tasks import Task

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 48,
        "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def kit(tmp_path_factory, text_models):
    root = tmp_path_factory.mktemp("hf_kernel")
    bert = text_models.bert_dir(root / "bert")
    texts = text_models.write_texts(root / "texts.csv", n=120)
    return root, bert, texts


def _text_model(kit, **kwargs):
    from deepslim.training import model_for_dataset
    root, bert, texts = kit
    return model_for_dataset(f"hf:{bert}", str(texts), **kwargs)


def test_a_hub_id_is_refused_with_how_to_download():
    from deepslim.models import load_model
    with pytest.raises(ConfigError, match="never downloads.*download it first"):
        load_model(arch="hf:bert-base-uncased", task=Task.classification(["a", "b"]))


def test_a_local_directory_gives_a_text_classifier_with_its_tokenizer(kit):
    bundle = _text_model(kit)
    sig = bundle.signature
    assert sig.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert all(i.shape == ("batch", "sequence") and i.dtype == "int64" for i in sig.inputs)
    assert sig.text is not None and sig.text.max_length == 64  # the tokenizer's (and positions') limit
    assert bundle.task.names == ("negative", "positive") and bundle.model.config.num_labels == 2
    assert bundle.model.config.id2label == {0: "negative", 1: "positive"}
    again = type(sig).from_json(json.loads(json.dumps(sig.to_json())))
    assert again == sig and again.text.sha256 == sig.text.sha256
    words = again.text.tokenizer()("not good at all")["input_ids"]
    assert words == sig.text.tokenizer()("not good at all")["input_ids"] and len(words) > 3


def test_max_length_is_recorded_and_checked(kit):
    assert _text_model(kit, max_length=24).signature.text.max_length == 24
    with pytest.raises(ConfigError, match="longer than the model takes"):
        _text_model(kit, max_length=500)


def test_a_directory_round_trips_through_from_pretrained(kit, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from deepslim.models import load_model, save_model
    bundle = _text_model(kit)
    out = save_model(bundle, tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json", "deepslim.json"} <= {p.name for p in out.iterdir()}
    ids = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
           "token_type_ids": torch.zeros(1, 4, dtype=torch.long)}
    with torch.no_grad():
        want = bundle.model(**ids).logits
        hf = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True).eval()
        assert torch.equal(hf(**ids).logits, want)
        back = load_model(out)
        # the same weights, but from_pretrained's tensors sit at the safetensors file's offsets and the reloaded
        # ones in fresh (aligned) memory: BLAS on AVX2 sums them in another order (about 3e-9 apart seen)
        torch.testing.assert_close(back.model(**ids).logits, want, rtol=0, atol=1e-6)
    assert back.signature == bundle.signature and back.task == bundle.task
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok("good day")["input_ids"] == bundle.signature.text.tokenizer()("good day")["input_ids"]


def test_a_directory_is_a_bundle_wherever_a_model_or_artifact_goes(kit, tmp_path):
    from deepslim.artifact import ArtifactKind, artifact_kind, is_bundle
    from deepslim.bundle import read_header
    from deepslim.errors import InputFileError
    from deepslim.fileio import require_model
    from deepslim.models import save_model
    bundle = _text_model(kit)
    out = save_model(bundle, tmp_path / "model")
    assert artifact_kind(out) is ArtifactKind.BUNDLE and is_bundle(out) and not is_bundle(kit[1])
    assert read_header(out).signature == bundle.signature and read_header(kit[1]) is None
    assert require_model(kit[1]) == kit[1]  # a Hugging Face directory goes where a MODEL goes
    with pytest.raises(InputFileError, match="directory deepslim did not write"):
        artifact_kind(kit[1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="a directory without a model in it"):
        require_model(tmp_path / "empty")


def test_directory_outputs_are_replaced_only_with_force_and_only_if_deepslim_wrote_them(kit, tmp_path):
    from deepslim.fileio import check_output
    from deepslim.models import save_model
    bundle = _text_model(kit)
    out = save_model(bundle, tmp_path / "model")
    with pytest.raises(ConfigError, match="exists"):
        save_model(bundle, out)
    save_model(bundle, out, force=True)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="never replaced"):
        check_output(foreign, force=True, directory=True)
    with pytest.raises(ConfigError, match="exists"):
        save_model(bundle, foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_model_that_needs_custom_code_is_refused(tmp_path, text_models):
    from deepslim.hf import read_config
    bert = text_models.bert_dir(tmp_path / "bert")
    config = json.loads((bert / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (bert / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="needs --trust-code"):
        read_config(bert)


def test_a_directory_deepslim_did_not_write_needs_data(kit):
    from deepslim.models import load_model
    with pytest.raises(ConfigError, match="give --dataset"):
        load_model(kit[1])


def test_an_image_model_from_a_config_takes_the_data_size(tmp_path):
    from deepslim.training import model_for_dataset
    bundle = model_for_dataset("hf:vit", "digits", input_size=8,
                               arch_kwargs={**TINY, "patch_size": 2, "num_channels": 1})
    image = bundle.signature.inputs[0]
    assert image.name == "pixel_values" and image.shape == ("batch", 1, 8, 8)
    with pytest.raises(ConfigError, match="apply to text models"):
        model_for_dataset("hf:vit", "digits", input_size=8, max_length=16, arch_kwargs={**TINY, "patch_size": 2})


def test_text_tables_read_csv_and_jsonl_with_pairs(tmp_path, text_models):
    from deepslim.data import open_dataset
    text_models.write_texts(tmp_path / "t.jsonl", n=60, pairs=True)
    source = open_dataset(f"{tmp_path / 't.jsonl'}?text=text,other")
    assert source.columns == ["text", "other"] and source.info.task_of().names == ("negative", "positive")
    assert sum(len(source.splits[s]) for s in ("train", "val", "test")) == 60
    with pytest.raises(DatasetError, match="no text column 'nope'"):
        open_dataset(f"{tmp_path / 't.jsonl'}?text=nope")
    with pytest.raises(ConfigError, match="one column, or two"):
        open_dataset(f"{tmp_path / 't.jsonl'}?text=text,other,label")


def test_a_text_split_is_tokenized_for_the_model_and_batches_trim(kit):
    from deepslim.data import open_dataset
    from deepslim.datasets.text import trim
    bundle = _text_model(kit)
    source = open_dataset(str(kit[2]))
    data = source.split("val", bundle.signature)
    (ids, mask, types), y = data[0]
    assert ids.dtype == torch.int64 and ids.shape == mask.shape == types.shape and y.dtype == torch.int64
    batch = tuple(torch.stack([data[i][0][k] for i in range(4)]) for k in range(3))
    cut = trim(batch, bundle.signature)
    assert cut[0].shape[1] == int(batch[1].sum(dim=1).max()) <= batch[0].shape[1]
    with pytest.raises(ConfigError, match="holds text"):
        source.split("val", _image_signature())


def _image_signature():
    from deepslim.signature import Signature
    from deepslim.spec import InputSpec
    return Signature.from_input_spec(InputSpec.create(1, 8, (0.5,), (0.5,)))


def test_unknown_timm_names_get_suggestions():
    from deepslim.architectures import resolve_arch
    from deepslim.errors import UnknownArchitectureError
    with pytest.raises(UnknownArchitectureError, match="did you mean timm:resnet18"):
        resolve_arch("timm:resnet18x", num_classes=10)


def test_recipes_take_a_hugging_face_directory_relative_to_the_recipe(tmp_path, text_models):
    from pydantic import ValidationError
    from pipeline.recipe import ModelSpec, resolve_arch
    text_models.bert_dir(tmp_path / "bert")
    assert resolve_arch("hf:./bert", tmp_path) == f"hf:{(tmp_path / 'bert').resolve()}"
    assert resolve_arch("hf:bert", tmp_path / "elsewhere") == "hf:bert"
    assert ModelSpec(arch="hf:./bert", max_length=32, tokenizer="tok").max_length == 32
    with pytest.raises(ValidationError, match="apply to arch"):
        ModelSpec(path="model.safetensors", max_length=32)


def test_recipe_distill_stages_take_the_transformer_losses_and_old_run_keys_stay():
    from pydantic import ValidationError
    from pipeline.recipe import DistillStage
    from pipeline.run import _config
    stage = DistillStage(stage="distill", hidden_weight=1.0, attention_weight=0.5, layer_map="0:1",
                         attention_loss="mse")
    assert _config(stage)["layer_map"] == "0:1" and _config(stage)["attention_loss"] == "mse"
    assert set(_config(DistillStage(stage="distill"))) == {"stage", "teacher", "epochs", "lr", "temperature", "alpha"}
    with pytest.raises(ValidationError):
        DistillStage(stage="distill", attention_loss="l1")
