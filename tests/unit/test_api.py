"""The public Python API as the README shows it."""

from __future__ import annotations

import deepslim


def test_readme_python_api(tmp_path):
    bundle = deepslim.load_model(arch="small_cnn", num_classes=10, input_size=16, channels=1)
    bundle = deepslim.train(bundle, "digits", deepslim.TrainConfig(epochs=2, seed=0), progress=False)
    path = deepslim.save_model(bundle, tmp_path / "base.safetensors")
    reloaded = deepslim.load_model(path)
    result = deepslim.evaluate(reloaded, "digits-c", severity=3)
    assert set(result.metrics) >= {"top1", "top5", "roc_auc_macro", "ap_macro"}
    assert result.metrics["samples"] == 360
    assert callable(deepslim.train) and callable(deepslim.evaluate) and callable(deepslim.fit)
    assert deepslim.open_dataset("digits").info.num_classes == 10
