"""Shared fixtures: small models trained in seconds on the built-in digits data."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch


def pytest_configure(config):
    """transformers copies a model directory's own code (``trust_remote_code``) into its modules cache: the
    tests' copies go to a temporary one, not the user's ``~/.cache/huggingface/modules``."""
    if "HF_MODULES_CACHE" not in os.environ:
        os.environ["HF_MODULES_CACHE"] = config._deepslim_modules = tempfile.mkdtemp(prefix="deepslim-hf-modules-")


def pytest_unconfigure(config):
    if getattr(config, "_deepslim_modules", None):
        shutil.rmtree(config._deepslim_modules, ignore_errors=True)


@pytest.fixture(scope="session")
def trained_cnn():
    """small_cnn trained 3 epochs on digits at 8x8 (a few seconds)."""
    from deepslim.config import TrainConfig
    from deepslim.training import model_for_dataset, train
    torch.manual_seed(0)
    bundle = model_for_dataset("small_cnn", "digits", input_size=8, arch_kwargs={"width": 16})
    return train(bundle, "digits", TrainConfig(epochs=3, seed=0), progress=False)


@pytest.fixture(scope="session")
def any_kind(tmp_path_factory):
    """``any_kind(name)``: the path of a tiny trained bundle of kind ``name`` (``tests/any_kinds.KINDS``: tabular,
    regression, multilabel, two_input, wide, signal), trained once per session."""
    from any_kinds import train_kind
    directory = tmp_path_factory.mktemp("any_kinds")
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = train_kind(name, directory)
        return cache[name]
    return get


@pytest.fixture()
def cnn_bundle():
    from deepslim.models import load_model
    torch.manual_seed(0)
    return load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 8})


@pytest.fixture(scope="session")
def text_models():
    """``tests/data/text_models.py``: the synthetic text task, the in-memory tokenizer, tiny BERT/ViT directories."""
    import importlib
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "data"))
    try:
        return importlib.import_module("text_models")
    finally:
        sys.path.pop(0)
