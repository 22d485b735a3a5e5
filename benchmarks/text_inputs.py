"""Latency inputs of text models at each ``--seq-len``: real texts of the dataset, tokenized with each model's
own tokenizer (carried in its signature) and padded (attention mask 0) or truncated to exactly that length.

A model takes ``--seq-len`` when an input has a dim named ``sequence``; a length beyond the model's position
embeddings is refused with one sentence, before anything is exported or timed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.latency import SEQUENCE, latency_inputs
from benchmarks.runners.base import Batch
from deepslim.errors import ConfigError
from deepslim.signature import BATCH, Signature


def has_sequence(signature: Signature) -> bool:
    """Some input has a dim named ``sequence`` (token ids, attention mask)."""
    return any(d == SEQUENCE for spec in signature.inputs for d in spec.sample_shape)


def sequence_limit(signature: Signature, model: Any = None) -> int | None:
    """The longest sequence the model takes: its Hugging Face config's position embeddings (``model`` a
    ``transformers`` module or config), else the limit the signature's tokenizer records; None when unknown."""
    config = getattr(model, "config", model)
    if config is not None and hasattr(config, "model_type"):
        from deepslim.hf import position_limit
        limit = position_limit(config)
        if limit is not None:
            return limit
    text = signature.text
    if text is None:
        return None
    recorded = getattr(text, "position_limit", None) or text.settings.get("model_max_length")
    return int(recorded) if isinstance(recorded, int) and recorded > 0 else None


def check_sequences(signature: Signature, sequences: tuple[int, ...] | list[int], name: str,
                    limit: int | None = None) -> None:
    """A ConfigError (one sentence) unless the model has a sequence dim that takes every length."""
    if not sequences:
        return
    if not has_sequence(signature):
        raise ConfigError(f"--seq-len applies to models with a sequence input (text models); {name} takes "
                          f"{signature.describe()}.")
    if limit is not None and max(sequences) > limit:
        raise ConfigError(f"--seq-len {max(sequences)} is longer than {name} takes ({limit} positions); give "
                          f"lengths up to {limit}.")
    if signature.text is not None:
        least = signature.text.tokenizer().num_special_tokens_to_add(pair=False) + 1
        if min(sequences) < least:
            raise ConfigError(f"--seq-len {min(sequences)} leaves no room for text: {name}'s tokenizer adds "
                              f"{least - 1} special tokens to every text; give lengths of at least {least}.")


@dataclass
class TextSamples:
    """The texts that feed latency at each sequence length (the first rows of a split), or None: seeded
    random token ids. ``where`` says where they come from, in words."""

    texts: list[tuple[str, ...]] | None
    where: str
    _tokenizers: dict[str, Any] = field(default_factory=dict, repr=False)
    _cache: dict[tuple, tuple[Batch, dict[str, Any] | None]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, dataset: str | None, split: str, count: int) -> TextSamples:
        """The first ``count`` texts of ``dataset``'s ``split`` (fewer when it is smaller: they repeat);
        random token ids when there is no dataset or it holds no texts."""
        if dataset is None:
            return cls(None, "seeded random token ids (no dataset to draw texts from)")
        from deepslim.data import open_dataset
        source = open_dataset(dataset)
        if not hasattr(source, "texts_of"):
            return cls(None, f"seeded random token ids ({dataset} holds no texts)")
        texts = source.texts_of(split)[:count]
        if not texts:
            raise ConfigError(f"The {split} split of {dataset} has no texts to time --seq-len with.")
        return cls(texts, f"the first {len(texts)} texts of the {split} split of {dataset}")

    def batch(self, signature: Signature, length: int, batch: int) -> Batch:
        """Every input of ``batch`` rows at exactly ``length`` tokens, in the signature's order."""
        return self._make(signature, length, batch)[0]

    def padding(self, signature: Signature, length: int, batch: int) -> dict[str, Any] | None:
        """How the rows of that batch fit ``length``: ``padded`` and ``truncated`` row counts and ``real_tokens``
        (the fraction of positions holding a text's own tokens); None for random token ids."""
        return self._make(signature, length, batch)[1]

    def _make(self, signature: Signature, length: int, batch: int) -> tuple[Batch, dict[str, Any] | None]:
        key = (signature.text.sha256 if signature.text else None, signature.input_names, length, batch)
        if key not in self._cache:
            if self.texts is None or signature.text is None:
                self._cache[key] = (_random(signature, length, batch, self._tokenizer(signature)), None)
            else:
                self._cache[key] = self._tokenize(signature, length, batch)
        return self._cache[key]

    def _tokenizer(self, signature: Signature) -> Any:
        if signature.text is None:
            return None
        sha = signature.text.sha256
        if sha not in self._tokenizers:
            self._tokenizers[sha] = signature.text.tokenizer()
        return self._tokenizers[sha]

    def _tokenize(self, signature: Signature, length: int, batch: int) -> tuple[Batch, dict[str, Any]]:
        tokenizer = self._tokenizer(signature)
        rows = [self.texts[i % len(self.texts)] for i in range(batch)]
        first = [r[0] for r in rows]
        second = [r[1] for r in rows] if len(rows[0]) > 1 else None
        out = tokenizer(first, second, padding="max_length", truncation=True, max_length=length,
                        return_tensors="np", verbose=False)
        if out["input_ids"].shape[1] != length:  # a pair's special tokens alone are longer than ``length``
            raise ConfigError(f"--seq-len {length} is too short for these texts with the model's special tokens; "
                              "give a longer length.")
        full = [len(ids) for ids in tokenizer(first, second, truncation=False, verbose=False)["input_ids"]]
        other = _tuple(latency_inputs(signature, batch, {SEQUENCE: length}))  # inputs that are not text
        arrays = tuple(np.asarray(out[s.name], dtype=np.int64) if s.name in out
                       else np.zeros((batch, length), dtype=np.int64) if s.shape == (BATCH, SEQUENCE) else other[k]
                       for k, s in enumerate(signature.inputs))
        stats = {"padded": sum(n < length for n in full), "truncated": sum(n > length for n in full),
                 "real_tokens": round(sum(min(n, length) for n in full) / (batch * length), 4)}
        return (arrays[0] if len(arrays) == 1 else arrays), stats


def _random(signature: Signature, length: int, batch: int, tokenizer: Any) -> Batch:
    """Seeded random inputs at ``length``: token ids anywhere in the tokenizer's vocabulary (when it has one)."""
    x = latency_inputs(signature, batch, {SEQUENCE: length})
    if tokenizer is None:
        return x
    arrays = list(_tuple(x))
    rng = np.random.default_rng(batch * 1000 + length)
    for k, spec in enumerate(signature.inputs):
        if spec.name == "input_ids":
            arrays[k] = rng.integers(0, len(tokenizer), size=arrays[k].shape, dtype=np.int64)
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def _tuple(x: Batch) -> tuple[np.ndarray, ...]:
    return tuple(x) if isinstance(x, tuple) else (x,)


def padding_words(stats: dict[str, Any] | None, length: int, batch: int) -> str:
    """``"8/8 padded to 128 (13% real tokens)"``, ``"6/8 padded to 32, 2/8 truncated to 32 (...)"``; ``"random
    ids"``."""
    if stats is None:
        return "random ids"
    parts = [f"{stats[k]}/{batch} {k} to {length}" for k in ("padded", "truncated") if stats[k]]
    words = ", ".join(parts) or f"{batch}/{batch} exactly {length}"
    return f"{words} ({stats['real_tokens']:.0%} real tokens)"


def parse_sequences(text: str | None) -> tuple[int, ...]:
    """``--seq-len 32,128,384`` -> (32, 128, 384); None -> () (no sequence lengths: batch sizes only)."""
    if text is None:
        return ()
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"--seq-len must be comma-separated positive lengths such as 32,128,384, got '{text}'.")
    return tuple(dict.fromkeys(values))
