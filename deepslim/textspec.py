"""How text becomes a model's token inputs: the model's own tokenizer, carried in its signature.

A :class:`TextSpec` holds a fast tokenizer's serialised ``tokenizer.json`` (compressed), the
tokenizer class and its special tokens, and the longest sequence the model is fed
(``max_length``: longer texts are truncated). It travels in the signature, so a bundle, an ONNX
file or an OpenVINO IR can tokenize a dataset without the directory it came from — as an image
input carries its mean and std. Torch-free; ``transformers`` is imported only to tokenize.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any

from deepslim.errors import ConfigError, ModelError, first_line

DEFAULT_MAX_LENGTH = 128
# tokenizer_config keys worth keeping (special tokens and how inputs are laid out); plain strings and numbers only
_KEPT = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
         "model_max_length", "padding_side", "truncation_side", "do_lower_case")


@dataclass(frozen=True)
class TextSpec:
    """A model's tokenizer (``tokenizer.json`` text, compressed), its class, settings and ``max_length``."""

    tokenizer_json: str  # zlib + base64 of tokenizer.json
    tokenizer_class: str = "PreTrainedTokenizerFast"
    settings: dict[str, Any] = field(default_factory=dict)
    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    max_length: int = DEFAULT_MAX_LENGTH
    position_limit: int | None = None  # the longest sequence the model's position embeddings take

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ConfigError(f"--max-length must be at least 2, got {self.max_length}.")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.json_text().encode()).hexdigest()

    def json_text(self) -> str:
        return zlib.decompress(base64.b64decode(self.tokenizer_json)).decode()

    def with_max_length(self, max_length: int | None) -> TextSpec:
        from dataclasses import replace
        return self if max_length is None else replace(self, max_length=int(max_length))

    def to_json(self) -> dict[str, Any]:
        return {"tokenizer_json": self.tokenizer_json, "tokenizer_class": self.tokenizer_class,
                "settings": dict(self.settings), "model_input_names": list(self.model_input_names),
                "max_length": self.max_length, "sha256": self.sha256,
                **({"position_limit": self.position_limit} if self.position_limit else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextSpec:
        return cls(str(data["tokenizer_json"]), str(data.get("tokenizer_class", "PreTrainedTokenizerFast")),
                   dict(data.get("settings", {})), tuple(data.get("model_input_names", ("input_ids", "attention_mask"))),
                   int(data.get("max_length", DEFAULT_MAX_LENGTH)),
                   int(data["position_limit"]) if data.get("position_limit") else None)

    # --- with transformers ------------------------------------------------------------------------

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, *, max_length: int | None = None,
                       model_limit: int | None = None) -> TextSpec:
        """The spec of a fast ``transformers`` tokenizer; ``max_length`` defaults to the smaller of 128, the
        tokenizer's own limit and the model's (``model_limit``: its position embeddings)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelError(f"The tokenizer {type(tokenizer).__name__} is not a fast tokenizer; deepslim needs a "
                             "tokenizer.json (save it with a fast tokenizer, or install the `tokenizers` converter).")
        settings = {}
        for key in _KEPT:
            value = getattr(tokenizer, key, None)
            value = str(value) if key.endswith("_token") and value is not None else value
            if isinstance(value, (str, int, float, bool)) and not (key == "model_max_length" and value > 10**8):
                settings[key] = value
        limits = [v for v in (settings.get("model_max_length"), model_limit) if isinstance(v, int)]
        length = max_length or min([DEFAULT_MAX_LENGTH, *limits])
        if limits and length > min(limits):
            raise ConfigError(f"--max-length {length} is longer than the model takes ({min(limits)} tokens).")
        packed = base64.b64encode(zlib.compress(backend.to_str().encode(), 9)).decode()
        return cls(packed, type(tokenizer).__name__, settings, tuple(tokenizer.model_input_names), int(length),
                   model_limit)

    def tokenizer(self) -> Any:
        """A ``transformers`` fast tokenizer rebuilt from the spec (no file, no download)."""
        import transformers
        from tokenizers import Tokenizer
        try:
            backend = Tokenizer.from_str(self.json_text())
        except Exception as exc:  # tokenizers raises its own exception type for a bad file
            raise ModelError(f"The model's tokenizer cannot be read ({first_line(exc)}).") from exc
        cls = getattr(transformers, self.tokenizer_class, None)
        if not (isinstance(cls, type) and self.tokenizer_class.endswith("TokenizerFast")):
            cls = transformers.PreTrainedTokenizerFast
        kwargs = {k: v for k, v in self.settings.items() if k != "do_lower_case"}
        return cls(tokenizer_object=backend, model_input_names=list(self.model_input_names), **kwargs)
