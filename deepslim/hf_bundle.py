"""Hugging Face models as bundles: a new one (``--arch hf:bert``, ``hf:./dir``), a directory read back, and a
bundle written as a directory that ``AutoModelFor….from_pretrained`` and ``AutoTokenizer.from_pretrained`` load,
with deepslim's header (signature, task, lineage) beside it in ``deepslim.json``."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepslim import hf
from deepslim.errors import ConfigError, ModelError
from deepslim.signature import InputKind, Signature, TensorSpec
from deepslim.spec import ArchSource, ArchSpec
from deepslim.tasks import Task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def new_model(target: str, *, task: Task, inputs: tuple[TensorSpec, ...] | None, arch_kwargs: dict[str, Any],
              weights: Any, input_size: Any, channels: int | None, mean: tuple[float, ...] | None,
              std: tuple[float, ...] | None, tokenizer: str | Path | None, max_length: int | None,
              trust_code: bool = False):
    """A model for ``task`` from ``hf:TARGET``: a model type (``bert``, ``vit``: random weights, config from
    ``arch_kwargs``) or a local directory (its config and weights; a head that does not fit the task starts
    afresh). Text data (``inputs`` with tokens) makes a sequence classifier fed by the directory's tokenizer
    or ``tokenizer``; anything else an image classifier."""
    from transformers import CONFIG_MAPPING
    from deepslim.models import ModelBundle, load_weights
    from deepslim.modelio import probe_outputs
    directory = None
    from_dir = hf.is_hf_dir(target) and (target not in CONFIG_MAPPING or "/" in target or target.startswith("."))
    if from_dir:  # a model type's name (hf:bert) is never shadowed by a ./bert folder; hf:./bert names the folder
        directory = Path(target).expanduser().resolve()
        config = hf.read_config(directory, trust_code=trust_code)
        kwargs = {**hf.config_dict(config), **arch_kwargs}
        config = hf.make_config(kwargs, trust_code=trust_code)
    elif target in CONFIG_MAPPING:
        config = hf.make_config({"model_type": target, **arch_kwargs}, trust_code=trust_code)
    else:
        hf.require_local(target)  # raises: a hub id or a missing directory
        raise AssertionError("unreachable")
    text = bool(inputs) and any(i.kind is InputKind.TOKENS for i in inputs)
    head = hf.head_for(config, text=text)
    if text != (head == "sequence-classification"):
        what = "text" if text else "images"
        raise ConfigError(f"The data gives {what} but {target} is a {head.replace('-', ' ')} model.")
    spec = ArchSpec(ArchSource.HF, head, hf.with_task(hf.config_dict(config), task))
    if head == "image-classification":
        spec = hf.resized(spec, input_size, channels)
    model = hf.build(spec, pretrained=directory, trust_code=trust_code)
    for module in model.modules():  # where the weights came from is lineage, not structure
        if isinstance(getattr(module, "name_or_path", None), str):
            module.name_or_path = ""
    if weights is not None:
        load_weights(model, weights, label=f"hf:{target}")
    signature = _signature(model, spec, directory, inputs, text=text, tokenizer=tokenizer, max_length=max_length,
                           mean=mean, std=std)
    signature = probe_outputs(model, signature, task, choice="logits")
    return ModelBundle(model.eval(), spec, signature, task)


def _signature(model: Any, spec: ArchSpec, directory: Path | None, inputs, *, text: bool, tokenizer, max_length,
               mean, std) -> Signature:
    config = model.config
    if text:
        source = tokenizer or (directory if directory is not None and hf.has_tokenizer(directory) else None)
        if source is None:
            raise ConfigError("A text model needs its tokenizer; give --tokenizer DIR (a directory with "
                              "tokenizer.json or vocab.txt, or a tokenizer.json file).")
        textspec = hf.read_tokenizer(source, max_length=max_length, model_limit=hf.position_limit(config))
        return Signature(hf.text_inputs(model, textspec), ("logits",), "logits", text=textspec)
    if max_length is not None or tokenizer is not None:
        raise ConfigError("--max-length and --tokenizer apply to text models; this one takes images.")
    stats = hf.processor_stats(directory) if directory is not None else None
    image = [i for i in inputs or () if i.kind is InputKind.IMAGE]
    data_mean = image[0].mean if image else None
    data_std = image[0].std if image else None
    m = mean or data_mean or (stats[0] if stats else IMAGENET_MEAN)
    s = std or data_std or (stats[1] if stats else IMAGENET_STD)
    return Signature((hf.image_input(config, tuple(m), tuple(s)),), ("logits",), "logits")


# --- directories --------------------------------------------------------------------------------

def load_dir(directory: Path, *, trust_code: bool = False):
    """A directory deepslim wrote (config, weights, tokenizer, ``deepslim.json``), rebuilt from its header and
    loaded strictly from its ``model.safetensors`` (bit-exact)."""
    from deepslim import bundle as bundle_format
    from deepslim.models import ModelBundle, _load_state, build_model
    header = bundle_format.read_header(directory)  # deepslim.json: format and version checked as a file's
    if header is None or header.arch.source is not ArchSource.HF:
        raise ModelError(f"{directory / hf.SIDECAR} does not describe a Hugging Face model.")
    config = hf.config_dict(hf.read_config(directory, trust_code=trust_code))
    saved = header.arch.kwargs.get(hf.CODE_KEY)
    if saved is not None and config.get(hf.CODE_KEY, {}).get("sha256") != saved.get("sha256"):
        raise ModelError(f"The Python files in {directory} are not the modelling code the model was saved with "
                         f"({', '.join(sorted(saved.get('sha256', {})))}, with the sha256 in {hf.SIDECAR}).")
    arch = replace(header.arch, kwargs=config)
    model = build_model(arch)
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{directory} has no model.safetensors; deepslim reads pickle-free weights only.")
    _load_state(model, bundle_format.read_tensors(weights), label=arch.name, source=weights)
    return ModelBundle(model.eval(), arch, header.signature, header.task, header.lineage, directory)


def save_dir(bundle, directory: str | Path, *, force: bool = False) -> Path:
    """Write ``bundle`` (a Hugging Face model) as a directory ``from_pretrained`` loads: ``config.json`` with its
    (pruned) sizes, ``model.safetensors``, the tokenizer or image processor, and ``deepslim.json`` (the
    header). Written beside the target and renamed when complete; an existing target needs ``force``."""
    from deepslim import bundle as bundle_format
    target = Path(directory)
    if bundle.arch.source is not ArchSource.HF:
        raise ConfigError(f"Only Hugging Face models are saved as directories; name the output "
                          f"{target.with_suffix('.safetensors')}.")
    if target.exists() and not (force and (target / hf.SIDECAR).is_file()):
        raise ConfigError(f"{target} exists; pass --force to replace it (only a directory deepslim wrote is "
                          "replaced).")
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        config = hf.make_config(bundle.arch.kwargs)
        code = getattr(config, hf.CODE_KEY, None)
        if code is not None:  # config.json names the files by auto_map; they travel with it
            delattr(config, hf.CODE_KEY)
        config.architectures = [type(bundle.model).__name__]
        bundle.model.config = config
        bundle.model.save_pretrained(str(tmp), safe_serialization=True)
        if code is not None:
            source = hf.checked_code(code)
            for name in code["sha256"]:
                shutil.copy2(source / name, tmp / name)
        _save_preprocessor(bundle.signature, tmp)
        header = bundle_format.Header(bundle.arch, bundle.signature, bundle.task, lineage=list(bundle.lineage))
        (tmp / hf.SIDECAR).write_text(json.dumps(header.to_json(), indent=1, sort_keys=True))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_preprocessor(signature: Signature, directory: Path) -> None:
    if signature.text is not None:
        with hf.offline():
            signature.text.tokenizer().save_pretrained(str(directory))
        return
    image = signature.image
    if image is not None:
        h, w = image.size
        processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": h, "width": w},
                     "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                     "image_mean": list(image.mean), "image_std": list(image.std)}
        (directory / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
