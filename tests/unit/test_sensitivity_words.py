"""The sensitivity report says its val figure comes from a subset: "val top-1 on N of M val images"."""

from __future__ import annotations

import json

import torch

from compress.prune import PruneConfig
from compress.sensitivity import ValTop1, analyze, write_sensitivity
from deepslim.data import open_dataset
from deepslim.models import load_model


def test_the_analysis_counts_the_val_images_it_measured_and_the_report_says_so(tmp_path, monkeypatch):
    import compress.sensitivity
    torch.manual_seed(0)
    bundle = load_model(arch="small_cnn", num_classes=10, input_size=8, arch_kwargs={"width": 8})
    total = len(open_dataset("digits").split("val", bundle.input_spec))
    monkeypatch.setattr(compress.sensitivity, "prunable_roots", lambda *_: ["features.0"])  # one layer is enough
    base, rows = analyze(bundle, "digits", PruneConfig(ratio=0.5), ratios=(0.5,), limit=40)
    assert (base.images, base.total) == (40, total) and total > 40 and 0.0 <= base <= 1.0
    assert [r.layer for r in rows] == ["features.0"]
    paths = write_sensitivity(base, rows, tmp_path)
    md = paths["md"].read_text()
    assert md.startswith(f"Unpruned model: val top-1 on 40 of {total} val images: {base:.4f}.")
    record = json.loads(paths["json"].read_text())
    assert (record["val_images"], record["val_total"], record["base_top1"]) == (40, total, float(base))


def test_a_figure_on_the_whole_split_says_all():
    assert ValTop1(0.5, 360, 360).describe() == "val top-1 on all 360 val images"
    assert ValTop1(0.5, 300, 360).describe() == "val top-1 on 300 of 360 val images"
