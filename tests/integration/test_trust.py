"""Trust: a model file never runs code unless the user said so (--trust-code, or naming the file).

A hostile bundle's header names Python code to build its architecture: the standard library's
``subprocess.py:run`` with a shell command, or a ``.py`` beside it that writes a marker file when
imported. Every command that loads a model must refuse it (exit 2, one line, no traceback) and
run nothing, with and without --trust-pickle.
"""

from __future__ import annotations

import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch

from cli_contract import invoke, ok

from deepslim import bundle as fmt
from deepslim.fileio import sha256_file
from deepslim.spec import ArchSource, ArchSpec, InputSpec

EVIL_PY = '''\
from pathlib import Path
Path(__file__).with_name("PWNED").write_text("imported")


def build(num_classes=10, **kwargs):
    Path(__file__).with_name("PWNED").write_text("called")
    import torch.nn as nn
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
'''

NET_PY = '''\
import torch.nn as nn


def build(num_classes=10, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
'''


def _hostile(tmp_path: Path, kind: str) -> Path:
    """A bundle whose header asks to run code: 'stdlib' (subprocess.run), 'nohash' or 'hash' (evil.py)."""
    marker = tmp_path / "PWNED"
    if kind == "stdlib":
        target = Path(sysconfig.get_paths()["stdlib"]) / "subprocess.py"
        spec = ArchSpec(ArchSource.FILE, f"{target}:run", {"args": ["touch", str(marker)]}, sha256_file(target))
    else:
        evil = tmp_path / "evil.py"
        evil.write_text(EVIL_PY)
        spec = ArchSpec(ArchSource.FILE, f"{evil}:build", {"num_classes": 10},
                        sha256_file(evil) if kind == "hash" else None)
    path = tmp_path / f"hostile-{kind}.safetensors"
    header = fmt.Header(spec, InputSpec.create(1, 8, (0.5,), (0.25,)), [str(i) for i in range(10)])
    fmt.write(path, {"1.weight": torch.zeros(10, 64), "1.bias": torch.zeros(10)}, header)
    return path


def _commands(model: Path, tmp: Path) -> dict[str, list[str]]:
    recipe = tmp / "recipe.yaml"
    recipe.write_text(f"name: hostile\ndataset: digits\nmodel: {{path: {model}}}\nstages: [{{stage: prune, ratio: 0.5}}]\n"
                      "bench: null\n")
    m, o = str(model), str(tmp / "out")
    # -d digits: the hostile files record no dataset, and the test is what their code does, not which data
    commands = {
        "eval": ["eval", m],
        "export": ["export", m, "--target", "onnx", "-o", o + ".onnx"],
        "bench": ["bench", m, "--backend", "torch", "--report", o + "-bench"],
        "info --layers": ["info", m, "--layers"],
        "prune": ["compress", "prune", m, "--ratio", "0.5", "-o", o + ".safetensors"],
        "distill (teacher)": ["compress", "distill", "--teacher", m, "--student", "small_cnn", "-o",
                              o + ".safetensors"],
        "distill (student)": ["compress", "distill", "--teacher", m, "--student", m, "-o", o + "2.safetensors"],
        "quantize": ["compress", "quantize", m, "-o", o + "-int8.onnx"],
        "train": ["train", m, "--epochs", "1", "-o", o + "-trained.safetensors"],
        "run": ["run", str(recipe), "--run-dir", str(tmp / "run")],
        "auto": ["auto", m, "--trials", "1", "-o", o + "-auto"],
    }
    return {k: v if k in ("run", "info --layers") else [*v, "-d", "digits"] for k, v in commands.items()}


PICKLE_FLAG = {"eval", "export", "prune", "distill (teacher)", "distill (student)", "train"}


@pytest.mark.parametrize("kind", ["stdlib", "nohash", "hash"])
@pytest.mark.parametrize("pickle", [False, True], ids=["plain", "trust-pickle"])
def test_hostile_bundle_runs_nothing_on_any_command(tmp_path, kind, pickle):
    model = _hostile(tmp_path, kind)
    for name, args in _commands(model, tmp_path).items():
        if pickle and name not in PICKLE_FLAG:
            continue
        result = invoke(args + (["--trust-pickle"] if pickle else []))
        shown = f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
        assert result.exit_code == 2 and "Traceback" not in result.output, shown
        assert not (tmp_path / "PWNED").exists(), f"{name} ran the bundle's code"
        message = " ".join(result.stderr.split())
        if kind == "stdlib":
            assert "Python installation" in message, shown
        else:
            assert "evil.py" in message and "build()" in message and "--trust-code" in message, shown
            if kind == "hash":
                assert "--arch" in message, shown  # both ways to allow it are named
        assert not list(tmp_path.glob("out*")), f"{name} wrote an output"


def test_stdlib_is_never_imported_even_with_trust_code(tmp_path):
    model = _hostile(tmp_path, "stdlib")
    result = invoke(["eval", str(model), "--trust-code"])
    assert result.exit_code == 2 and "Python installation" in result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_unhashed_file_needs_trust_code_even_when_named(tmp_path):
    model = _hostile(tmp_path, "nohash")
    result = invoke(["eval", str(model), "--arch", f"{tmp_path / 'evil.py'}:build"])
    assert result.exit_code == 2 and "records no sha256" in result.stderr
    assert not (tmp_path / "PWNED").exists()
    ok(["eval", model, "--trust-code", "--limit", "20", "-d", "digits"])  # the user said so: it runs
    assert (tmp_path / "PWNED").read_text() == "called"


@pytest.fixture()
def user_bundle(tmp_path, monkeypatch):
    """A bundle trained from the user's own net.py (named on the command line, so allowed)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text(NET_PY)
    ok(["train", "--arch", "net.py:build", "-d", "digits", "--input-size", "8", "--channels", "1", "--epochs", "1", "-q",
        "-o", "mine.safetensors"])
    return tmp_path / "mine.safetensors"


def test_named_or_trusted_architecture_file_loads(user_bundle):
    refused = invoke(["eval", str(user_bundle), "--limit", "20"])
    assert refused.exit_code == 2 and "net.py" in refused.stderr and "--trust-code" in refused.stderr
    named = ok(["eval", user_bundle, "--arch", "net.py:build", "--limit", "20", "--json"])
    trusted = ok(["eval", user_bundle, "--trust-code", "--limit", "20", "--json"])
    assert '"top1"' in named.stdout and named.stdout == trusted.stdout


def test_changed_architecture_file_is_an_error_naming_both_hashes(user_bundle):
    net = user_bundle.with_name("net.py")
    recorded = sha256_file(net)
    net.write_text(NET_PY.replace("nn.ReLU()", "nn.Tanh()"))
    result = invoke(["eval", str(user_bundle), "--arch", "net.py:build"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert recorded in result.stderr and sha256_file(net) in result.stderr


def test_moved_bundle_uses_the_matching_copy_beside_it(user_bundle, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "net.py").write_text(NET_PY)
    user_bundle.rename(moved / "mine.safetensors")
    (tmp_path / "net.py").unlink()
    ok(["eval", moved / "mine.safetensors", "--arch", str(moved / "net.py") + ":build", "--limit", "20"])
    (moved / "net.py").write_text(textwrap.dedent(NET_PY).replace("hidden=16", "hidden=16, extra=0"))
    result = invoke(["eval", str(moved / "mine.safetensors"), "--trust-code"])
    assert result.exit_code == 2 and "sha256" in result.stderr  # --trust-code does not skip the hash check


def test_header_names_resolve_only_through_the_registries(tmp_path):
    from deepslim.errors import ModelError, UnknownArchitectureError
    from deepslim.models import load_model
    for source, name, kwargs, error in [
            (ArchSource.TORCHVISION, "get_weight", {"name": "x"}, UnknownArchitectureError),
            (ArchSource.BUILTIN, "__class__", {}, UnknownArchitectureError),
            (ArchSource.TORCHVISION, "resnet18", {"num_classes": 10, "weights": "DEFAULT"}, ModelError)]:
        path = tmp_path / f"{name}.safetensors"
        header = fmt.Header(ArchSpec(source, name, kwargs), InputSpec.create(3, 8, (0.5,), (0.25,)), ["a"])
        fmt.write(path, {"w": torch.zeros(1)}, header)
        with pytest.raises(error):
            load_model(path)


def test_recipe_arch_file_is_relative_to_the_recipe_and_counts_as_named(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "net.py").write_text(NET_PY)  # a file architecture takes the data's channels (1 for digits)
    recipe = project / "r.yaml"
    recipe.write_text("name: mine\ndataset: digits\nmodel: {arch: 'net.py:build', input_size: 8}\n"
                      "stages: [{stage: train, epochs: 1}, {stage: prune, ratio: 0.25}]\nbench: null\n")
    monkeypatch.chdir(tmp_path)  # not the recipe's folder: net.py is found beside the recipe
    ok(["run", recipe, "--run-dir", "run", "--quiet"])
    pruned = tmp_path / "run" / "02-prune" / "model.safetensors"
    assert pruned.is_file()
    refused = invoke(["eval", str(pruned), "--limit", "20"])  # outside the recipe nobody named net.py
    assert refused.exit_code == 2 and "net.py" in refused.stderr
    follow = tmp_path / "follow.yaml"
    follow.write_text(f"name: follow\nmodel: {{path: '{pruned}'}}\nstages: [{{stage: prune, ratio: 0.25}}]\n"
                      "bench: null\n")
    refused = invoke(["run", str(follow), "--run-dir", "run2", "--quiet"])
    assert refused.exit_code == 2 and "--trust-code" in refused.stderr
    ok(["run", follow, "--run-dir", "run2", "--quiet", "--trust-code"])


def test_structure_may_only_change_plain_settings_the_architecture_has(trained_cnn, tmp_path):
    from deepslim.errors import ModelError
    from deepslim.models import load_model, save_model
    path = save_model(trained_cnn, tmp_path / "m.safetensors")
    header = fmt.read_header(path)
    tensors = fmt.read_tensors(path)
    for attrs in ({"forward": "x"}, {"_forward_hooks": [1]}, {"out_channels": {"a": 1}}, {"out_channels": "8"},
                  {"__dict__": 1}):
        header.structure = {"modules": {"features.0": attrs}, "tensors": {}}
        fmt.write(tmp_path / "bad.safetensors", tensors, header)
        with pytest.raises(ModelError, match="not a plain setting"):
            load_model(tmp_path / "bad.safetensors")


def test_the_bytes_that_were_hashed_are_the_bytes_that_run_never_a_cached_pyc(tmp_path):
    import importlib.util
    from importlib._bootstrap_external import _code_to_timestamp_pyc
    from deepslim.errors import ModelError
    from deepslim.usercode import user_attribute
    net = tmp_path / "net.py"
    net.write_text(NET_PY)
    stat = net.stat()
    evil = compile(EVIL_PY, str(net), "exec")  # a pyc that claims to be net.py's (same mtime and size)
    cache = Path(importlib.util.cache_from_source(str(net)))
    cache.parent.mkdir()
    cache.write_bytes(_code_to_timestamp_pyc(evil, int(stat.st_mtime), stat.st_size))
    build = user_attribute(net, "build", error=ModelError, sha256=sha256_file(net), defined_here=True)
    assert build(num_classes=3)[-1].out_features == 3 and not (tmp_path / "PWNED").exists()


def test_no_python_installation_is_ever_imported_from(tmp_path):
    from deepslim.trust import check_importable
    from deepslim.errors import UntrustedCodeError
    for path in ("/usr/lib/python3.11/subprocess.py", "/opt/env/lib/python3.9/site-packages/pkg/mod.py",
                 "/usr/lib/python3/dist-packages/yaml/__init__.py"):
        with pytest.raises(UntrustedCodeError, match="Python installation"):
            check_importable(Path(path))
    user = tmp_path / "lib" / "python_models" / "net.py"  # only looks like one
    assert check_importable(user) == user.resolve()


def test_naming_a_function_allows_that_function_only(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET_PY + "\n\ndef other(**kwargs):\n    open(__file__ + '.PWNED', 'w')\n\n"
                   "from subprocess import run\n")
    for fn in ("other", "run"):
        spec = ArchSpec(ArchSource.FILE, f"{net}:{fn}", {"args": ["touch", str(tmp_path / "PWNED")]},
                        sha256_file(net))
        path = tmp_path / f"{fn}.safetensors"
        fmt.write(path, {"w": torch.zeros(1)}, fmt.Header(spec, InputSpec.create(1, 8, (0.5,), (0.25,)), ["a"]))
        named_build = invoke(["eval", str(path), "--arch", f"{net}:build"])
        assert named_build.exit_code == 2 and f"{fn}()" in named_build.stderr  # build was named, not this one
    trusted = invoke(["eval", str(tmp_path / "run.safetensors"), "--trust-code"])
    assert trusted.exit_code == 2 and "not defined in" in trusted.stderr and "subprocess" in trusted.stderr
    assert not (tmp_path / "PWNED").exists() and not Path(str(net) + ".PWNED").exists()


@pytest.mark.parametrize("header_edit", [
    lambda h: h["structure"].update(modules={"": 5}),
    lambda h: h["arch"].update(name=5),
    lambda h: h["structure"].update(tensors={"1.weight": [-3, 64]}),
    lambda h: h.update(structure=[1, 2])])
def test_malformed_headers_are_one_sentence(tmp_path, header_edit):
    import json
    from safetensors.torch import save_file
    header = fmt.Header(ArchSpec(ArchSource.BUILTIN, "small_cnn", {"num_classes": 10, "in_channels": 1}),
                        InputSpec.create(1, 8, (0.5,), (0.25,)), [str(i) for i in range(10)]).to_json()
    header_edit(header)
    save_file({"w": torch.zeros(1)}, str(tmp_path / "bad.safetensors"),
              metadata={"format": "pt", fmt.METADATA_KEY: json.dumps(header)})
    result = invoke(["eval", str(tmp_path / "bad.safetensors")])
    assert result.exit_code == 2 and "Traceback" not in result.output and result.stderr.startswith("error: ")


def test_bench_export_names_stay_unique_whatever_the_paths(tmp_path):
    from pipeline.bench import _unique_stems
    paths = [tmp_path / "a-model.safetensors", tmp_path / "a" / "model.safetensors",
             tmp_path / "b" / "model.safetensors", Path("model.safetensors")]
    stems = _unique_stems(paths)
    assert len(set(stems.values())) == len(paths) and all(not s.startswith("-") for s in stems.values())
