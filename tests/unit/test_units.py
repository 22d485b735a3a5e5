"""Numbers in words: one meaning of "×" (baseline time / artifact time) and sizes that never read "0.0 MiB"."""

from __future__ import annotations

import math

import pytest

from deepslim.units import format_count, format_size, format_speedup


@pytest.mark.parametrize("speedup, words", [(2.0, "2.00× faster"), (5.19, "5.19× faster"), (1.0, "1.00× faster"),
                                            (0.5, "2.00× slower"), (1 / 1.5, "1.50× slower"),
                                            (0.188, "5.32× slower"), (0.999, "1.00× slower")])
def test_a_speedup_is_baseline_over_artifact_and_below_one_reads_slower(speedup, words):
    assert format_speedup(speedup) == words


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_a_speedup_that_is_no_ratio_of_two_times_is_refused(bad):
    with pytest.raises(ValueError, match="positive finite"):
        format_speedup(bad)


@pytest.mark.parametrize("num_bytes, text", [(0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                             (30_000, "29.3 KiB"), (2**20 - 52, "1023.9 KiB"),
                                             (2**20 - 1, "1.0 MiB"), (2**20, "1.0 MiB"),
                                             (int(10.8 * 2**20), "10.8 MiB"), (int(1.2 * 2**30), "1.20 GiB")])
def test_sizes_pick_the_unit_that_keeps_the_number_readable(num_bytes, text):
    assert format_size(num_bytes) == text


@pytest.mark.parametrize("count, text", [(0, "0"), (999, "999"), (1000, "1.00k"), (12_345, "12.3k"),
                                         (99_999, "100k"), (999_950, "1.00M"), (4_100_000, "4.10M"),
                                         (123_456_789, "123M"), (1_800_000_000, "1.80G")])
def test_counts_keep_three_significant_figures_so_a_small_model_is_not_zero(count, text):
    assert format_count(count) == text


def test_a_negative_size_is_refused():
    with pytest.raises(ValueError, match="negative"):
        format_size(-1)


def test_units_imports_no_torch():
    import subprocess
    import sys
    code = "import sys, deepslim.units; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
