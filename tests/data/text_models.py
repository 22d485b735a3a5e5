"""Offline fixtures for transformer tests: a synthetic text task, a tokenizer trained in memory, and tiny
Hugging Face BERT and ViT directories built from configs (random weights, nothing downloaded)."""

from __future__ import annotations

import os
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "happy", "bright", "lovely", "superb", "calm"]
NEGATIVE = ["bad", "awful", "poor", "sad", "dark", "ugly", "dreadful", "grim"]
FILLER = ["the", "a", "day", "film", "food", "room", "was", "is", "very", "quite", "and", "it", "this", "place",
          "song", "story", "really", "so"]


def sentence(rng: random.Random) -> tuple[str, int]:
    """A short text whose label is 1 when its positive words outnumber its negative ones; ``not`` flips the word
    after it, so bag-of-words is not enough."""
    words, score = [], 0
    for _ in range(rng.randint(4, 14)):
        r = rng.random()
        if r < 0.55:
            words.append(rng.choice(FILLER))
            continue
        flip = rng.random() < 0.3
        positive = rng.random() < 0.5
        if flip:
            words.append("not")
        words.append(rng.choice(POSITIVE if positive else NEGATIVE))
        score += (1 if positive else -1) * (-1 if flip else 1)
    if score == 0:
        words.append(rng.choice(POSITIVE))
        score = 1
    return " ".join(words), int(score > 0)


def write_texts(path: Path, n: int = 600, seed: int = 0, *, pairs: bool = False) -> Path:
    import pandas as pd
    rng = random.Random(seed)
    rows = [sentence(rng) for _ in range(n)]
    frame = pd.DataFrame({"text": [t for t, _ in rows], "label": [["negative", "positive"][y] for _, y in rows]})
    if pairs:
        frame["other"] = [sentence(rng)[0] for _ in range(n)]
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)
    return path


def tokenizer(texts: list[str] | None = None):
    """A WordPiece tokenizer built in memory with the tokenizers library: the task's words (or those of
    ``texts``), single letters and ``##`` letters for anything else. The vocabulary is listed, not trained,
    so every process gets the same token ids (WordPiece training breaks count ties in hash order)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w.lower() for t in (texts or [" ".join(POSITIVE + NEGATIVE + FILLER + ["not"])]) for w in t.split()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = list(dict.fromkeys(specials + words + letters + [f"##{c}" for c in letters]))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def bert_dir(path: Path, *, layers: int = 2, hidden: int = 32, heads: int = 4, intermediate: int = 64,
             head: bool = False, seed: int = 0) -> Path:
    """A tiny BERT directory with its tokenizer: a base model (``head=False``, as a pre-trained checkpoint
    would be) or a sequence classifier with 2 labels."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel
    torch.manual_seed(seed)
    tok = tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config) if head else BertModel(config)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


CUSTOM_CONFIG = """from transformers import BertConfig


class ScaledBertConfig(BertConfig):
    model_type = "deepslim-test-scaled-bert"

    def __init__(self, logit_scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.logit_scale = logit_scale
"""
CUSTOM_MODEL = """from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_scaled import ScaledBertConfig


class ScaledBertForSequenceClassification(BertForSequenceClassification):
    config_class = ScaledBertConfig

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              return_dict=True)
        return SequenceClassifierOutput(logits=out.logits * self.config.logit_scale)
"""


def custom_bert_dir(path: Path, *, logit_scale: float = 2.0, seed: int = 0) -> Path:
    """A tiny BERT directory with its own modelling code, as hub models with ``trust_remote_code`` have: a BERT
    subclass whose logits are scaled by ``config.logit_scale``, named by ``auto_map`` in ``config.json``."""
    import json
    bert_dir(path, head=True, seed=seed)
    (path / "configuration_scaled.py").write_text(CUSTOM_CONFIG)
    (path / "modeling_scaled.py").write_text(CUSTOM_MODEL)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="deepslim-test-scaled-bert", logit_scale=logit_scale,
                  architectures=["ScaledBertForSequenceClassification"],
                  auto_map={"AutoConfig": "configuration_scaled.ScaledBertConfig",
                            "AutoModelForSequenceClassification": "modeling_scaled.ScaledBertForSequenceClassification"})
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return path


def vit_dir(path: Path, *, image_size: int = 8, patch: int = 2, channels: int = 1, hidden: int = 32, layers: int = 2,
            heads: int = 4, intermediate: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import ViTConfig, ViTModel
    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=patch, num_channels=channels, hidden_size=hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(str(path))
    return path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
