"""The CLI's error contract: a bad input gives exit code 2 and one line ``error: ...`` on stderr.

Every case below must also fail *before* any work is done: no output bundle, no
``.tmp-*`` file or directory or ``.ckpt`` sibling, nothing else written, and every input file
byte-for-byte (and mtime and mode) unchanged. The contract's checks live in cli_contract.py.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

import cli_contract
from cli_contract import DATA_PY, Cases, assert_bad_input
from deepslim.models import SmallCNN, load_model, save_model

OUT = "out.safetensors"

ARCH_PY = '''\
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def broken(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_featurs, num_classes))  # a user's typo: NameError
'''


# --- artifacts, made once per session and copied into each test's directory -------------------

@dataclass(frozen=True)
class Artifacts:
    bundle: bytes           # small_cnn bundle, 10 classes, 1 channel, 8x8
    state_dict: bytes       # state_dict of the default small_cnn (width 32), 10 classes, 1 channel
    narrow_state: bytes     # state_dict of small_cnn with width=8
    pickled_module: bytes   # torch.save(whole SmallCNN module)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    save_model(load_model(arch="small_cnn", num_classes=10, input_size=8), root / "b.safetensors")
    torch.save(SmallCNN(num_classes=10, in_channels=1).state_dict(), root / "sd.pth")
    torch.save(SmallCNN(num_classes=10, in_channels=1, width=8).state_dict(), root / "narrow.pth")
    torch.save(SmallCNN(num_classes=10, in_channels=1), root / "m.pt")
    return Artifacts(*(p.read_bytes() for p in (root / "b.safetensors", root / "sd.pth", root / "narrow.pth",
                                                root / "m.pt")))


class Workspace(cli_contract.Workspace):
    """Creates a case's input files in the (current) test directory; ``art`` is the Artifacts."""

    art: Artifacts

    def bundle(self, name: str = "model.safetensors") -> str:
        return self.write(name, self.art.bundle)

    def state_dict(self, name: str = "w.pth") -> str:
        return self.write(name, self.art.state_dict)

    def pickled_module(self, name: str = "m.pt") -> str:
        return self.write(name, self.art.pickled_module)

    def plain_safetensors(self, name: str = "plain.safetensors", metadata: dict[str, str] | None = None) -> str:
        save_file({"weight": torch.zeros(2, 2)}, str(self.root / name), metadata=metadata)
        return name


# --- the cases: each makes its inputs and returns (args, fragments the message must contain) ---
# (DATA_PY, from cli_contract, is a dataset function file with 3 classes, for the class-count mismatch)

CASES = Cases()
case = CASES.case


# eval: model files

@case("eval-missing-file")
def _(ws: Workspace):
    return ["eval", "missing.safetensors"], ["missing.safetensors", "does not exist"]


@case("eval-corrupt-safetensors")
def _(ws: Workspace):
    ws.write("corrupt.safetensors", random.Random(4096).randbytes(4096))
    return ["eval", "corrupt.safetensors"], ["corrupt.safetensors", "corrupt"]


@case("eval-truncated-bundle")
def _(ws: Workspace):
    ws.write("cut.safetensors", ws.art.bundle[: len(ws.art.bundle) // 2])
    return ["eval", "cut.safetensors"], ["cut.safetensors", "truncated"]


@case("eval-pickled-module-without-trust-pickle")
def _(ws: Workspace):
    return ["eval", ws.pickled_module("m.pt")], ["m.pt", "--trust-pickle"]


@case("eval-state-dict-given-as-model")
def _(ws: Workspace):
    return ["eval", ws.state_dict("w.pth")], ["w.pth", "state_dict", "--weights"]


@case("eval-exported-onnx-as-model")
def _(ws: Workspace):
    return ["eval", ws.write("model.onnx", b"not really onnx")], ["model.onnx", "exported"]


@case("eval-unknown-model-suffix")
def _(ws: Workspace):
    return ["eval", ws.write("model.xyz", b"?")], ["model.xyz", "'.xyz'"]


@case("eval-model-and-arch")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--arch", "small_cnn"], ["--arch", "not both"]


@case("eval-no-model-no-arch")
def _(ws: Workspace):
    return ["eval"], ["--arch NAME"]


@case("eval-corrupt-pt-model")
def _(ws: Workspace):
    # random bytes are no pickle at all: the message must say corrupt, not suggest --trust-pickle
    ws.write("junk.pt", random.Random(7).randbytes(4096))  # fixed bytes: random ones may spell a pickle opcode
    return ["eval", "junk.pt"], ["junk.pt", "corrupt"]


@case("eval-pickled-module-channel-mismatch")
def _(ws: Workspace):
    # the pickled SmallCNN takes 1 channel; forcing 3 makes its first layer fail on the data
    return (["eval", ws.pickled_module(), "--trust-pickle", "--input-size", "8", "--channels", "3", "--limit", "4"],
            ["fails on example inputs (x: image 3x8x8", "--channels"])


# eval: --weights

@case("eval-weights-missing")
def _(ws: Workspace):
    return ["eval", "--arch", "small_cnn", "--weights", "nope.pth"], ["nope.pth", "does not exist"]


@case("eval-weights-not-a-state-dict")
def _(ws: Workspace):
    torch.save([1, 2, 3], ws.root / "list.pth")
    return ["eval", "--arch", "small_cnn", "--weights", "list.pth"], ["list.pth", "not a state_dict"]


@case("eval-weights-corrupt")
def _(ws: Workspace):
    ws.write("junk.pth", random.Random(4096).randbytes(4096))
    return ["eval", "--arch", "small_cnn", "--weights", "junk.pth"], ["junk.pth", "corrupt"]


@case("eval-weights-truncated")
def _(ws: Workspace):
    ws.write("cut.pth", ws.art.state_dict[: len(ws.art.state_dict) // 2])
    return ["eval", "--arch", "small_cnn", "--weights", "cut.pth"], ["cut.pth", "corrupt or truncated"]


@case("eval-arch-kwargs-not-json")
def _(ws: Workspace):
    return ["eval", "--arch", "small_cnn", "--arch-kwargs", "not json"], ["--arch-kwargs", "not valid JSON"]


@case("eval-arch-kwargs-not-object")
def _(ws: Workspace):
    return ["eval", "--arch", "small_cnn", "--arch-kwargs", "[16]"], ["--arch-kwargs", "JSON object"]


@case("eval-arch-kwargs-zero-width")
def _(ws: Workspace):
    return ["eval", "--arch", "small_cnn", "--arch-kwargs", '{"width": 0}', "--limit", "4"], ["small_cnn", "width"]


@case("eval-channels-zero")
def _(ws: Workspace):
    return ["eval", "--arch", "small_cnn", "--channels", "0", "--limit", "4"], ["--channels", "got 0"]


# eval: options and data

@case("eval-bundle-with-input-size")
def _(ws: Workspace):
    # a bundle carries its own input spec: overriding it silently would be wrong
    return ["eval", ws.bundle(), "--input-size", "32", "--channels", "3"], ["--input-size, --channels", "bundle"]


@case("eval-split-bogus")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--split", "bogus"], ["--split", "bogus"]


@case("eval-limit-zero")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--limit", "0"], ["--limit", "got 0"]


@case("eval-batch-size-zero")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--batch-size", "0"], ["--batch-size", "got 0"]


@case("eval-class-count-mismatch")
def _(ws: Workspace):
    ws.write("data.py", DATA_PY)
    return ["eval", ws.bundle(), "--dataset", "data.py:make"], ["10 classes", "data.py:make", "has 3"]


@case("eval-dataset-function-missing")
def _(ws: Workspace):
    ws.write("data.py", DATA_PY)
    return ["eval", ws.bundle(), "--dataset", "data.py:nope"], ["data.py", "nope(split)"]


@case("eval-device-bogus")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--device", "bogus", "--limit", "4"], ["--device", "bogus"]


@case("eval-dataset-function-raises")
def _(ws: Workspace):
    ws.write("data.py", "def make(split):\n    raise FileNotFoundError('/data/digits is not mounted')\n")
    return ["eval", ws.bundle(), "--dataset", "data.py:make"], ["data.py:make", "/data/digits is not mounted"]


@case("eval-dataset-function-returns-bare-numbers")
def _(ws: Workspace):
    ws.write("data.py", "def make(split):\n    return [1, 2, 3]\n")
    return ["eval", ws.bundle(), "--dataset", "data.py:make"], ["data.py", "(inputs, target) pairs"]


@case("eval-dataset-file-import-error-multiline-message")
def _(ws: Workspace):
    ws.write("data.py", "raise RuntimeError('first line\\nsecond line')\n")
    return ["eval", ws.bundle(), "--dataset", "data.py:make"], ["data.py", "RuntimeError", "first line"]


@case("eval-digits-c-severity-0")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--dataset", "digits-c", "--severity", "0"], ["--severity", "got 0"]


# info

@case("info-missing-file")
def _(ws: Workspace):
    return ["info", "missing.safetensors"], ["missing.safetensors", "does not exist"]


@case("info-corrupt-file")
def _(ws: Workspace):
    ws.write("corrupt.safetensors", random.Random(4096).randbytes(4096))
    return ["info", "corrupt.safetensors"], ["corrupt.safetensors", "corrupt"]


@case("info-plain-safetensors")
def _(ws: Workspace):
    return ["info", ws.plain_safetensors()], ["plain.safetensors", "without a deepslim header"]


@case("info-corrupt-header")
def _(ws: Workspace):
    name = ws.plain_safetensors("bad-header.safetensors", metadata={"deepslim": "{not json"})
    return ["info", name], ["bad-header.safetensors", "corrupt deepslim header"]


@case("info-future-format-version")
def _(ws: Workspace):
    header = json.dumps({"format": "deepslim.bundle", "format_version": 99})
    name = ws.plain_safetensors("future.safetensors", metadata={"deepslim": header})
    return ["info", name], ["future.safetensors", "version 99", "upgrade deepslim"]


# train: architectures

@case("train-unknown-arch-suggests-resnet18")
def _(ws: Workspace):
    return ["train", "--arch", "resnett18", "-o", OUT], ["'resnett18'", "resnet18"]


@case("train-arch-file-missing")
def _(ws: Workspace):
    return ["train", "--arch", "missing.py:build", "-o", OUT], ["missing.py", "does not exist"]


@case("train-arch-function-missing")
def _(ws: Workspace):
    ws.write("arch.py", ARCH_PY)
    return ["train", "--arch", "./arch.py:nope", "-o", OUT], ["arch.py", "'nope'"]


@case("train-arch-function-raises")
def _(ws: Workspace):
    ws.write("arch.py", ARCH_PY)
    return ["train", "--arch", "arch.py:broken", "-o", OUT], ["arch.py:broken", "in_featurs"]


@case("train-vit-input-size-not-divisible-by-patch")
def _(ws: Workspace):
    return (["train", "--arch", "vit_b_16", "--input-size", "30", "-o", OUT],
            ["vit_b_16", "indivisible by patch size"])


@case("train-torchvision-one-channel")
def _(ws: Workspace):
    return ["train", "--arch", "resnet18", "--channels", "1", "-o", OUT], ["3 input channels", "not 1"]


@case("train-pretrained-with-builtin-arch")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--pretrained", "DEFAULT", "-o", OUT], ["--pretrained", "torchvision"]


@case("train-arch-kwargs-not-json")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--arch-kwargs", "not json", "-o", OUT], ["--arch-kwargs", "JSON"]


@case("train-model-and-arch")
def _(ws: Workspace):
    return ["train", ws.bundle(), "--arch", "small_cnn", "-o", OUT], ["--arch", "not both"]


@case("train-no-model-no-arch")
def _(ws: Workspace):
    return ["train", "-o", OUT], ["--arch NAME"]


@case("eval-pickled-module-without-input-size")
def _(ws: Workspace):
    # a pickled module has no input spec: guessing 224 px silently gave 10% top-1 on an 8 px model
    return ["eval", ws.pickled_module(), "--trust-pickle"], ["--input-size", "pickled module"]


@case("train-init-over-loaded-weights")
def _(ws: Workspace):
    return ["train", ws.bundle(), "--init", "kaiming", "-o", OUT], ["--init kaiming", "loaded weights"]


@case("eval-severity-without-digits-c")
def _(ws: Workspace):
    return ["eval", ws.bundle(), "--dataset", "digits", "--severity", "4"], ["--severity", "digits-c"]


@case("train-pickled-module-cannot-be-saved")
def _(ws: Workspace):
    return ["train", ws.pickled_module(), "--trust-pickle", "--input-size", "8", "-o", OUT], ["pickle", "--arch NAME --weights"]


# train: datasets

@case("train-dataset-missing-dir")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--dataset", "/nonexistent/dir", "-o", OUT], ["/nonexistent/dir"]


@case("train-dataset-empty-dir")
def _(ws: Workspace):
    (ws.root / "empty").mkdir()
    return ["train", "--arch", "small_cnn", "--dataset", "empty", "-o", OUT], ["dataset directory empty", "class folder"]


@case("train-dataset-is-a-file")
def _(ws: Workspace):
    ws.write("notes.txt", "hello")
    return ["train", "--arch", "small_cnn", "--dataset", "notes.txt", "-o", OUT], ["notes.txt", "is a file"]


@case("train-dataset-too-small-to-split")
def _(ws: Workspace):
    from PIL import Image
    for label in ("cat", "dog"):  # two images per class: too few for a stratified 70/15/15 split
        (ws.root / "tiny" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(ws.root / "tiny" / label / f"{i}.png")
    return (["train", "--arch", "small_cnn", "--dataset", "tiny", "--epochs", "1", "--quiet", "-o", OUT],
            ["tiny", "too few samples"])


@case("train-digits-c-severity-9")
def _(ws: Workspace):
    return (["train", "--arch", "small_cnn", "--dataset", "digits-c", "--severity", "9", "-o", OUT],
            ["--severity", "between 1 and 5", "got 9"])


# train: numeric options

@case("train-epochs-zero")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--epochs", "0", "-o", OUT], ["--epochs", "got 0"]


@case("train-lr-negative")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--lr", "-0.1", "-o", OUT], ["--lr", "-0.1"]


@case("train-lr-infinite")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--lr", "inf", "--epochs", "1", "--quiet", "-o", OUT], ["--lr", "inf"]


@case("train-weight-decay-nan")
def _(ws: Workspace):
    return (["train", "--arch", "small_cnn", "--weight-decay", "nan", "--epochs", "1", "--quiet", "-o", OUT],
            ["--weight-decay", "nan"])


@case("train-device-bogus")
def _(ws: Workspace):
    return (["train", "--arch", "small_cnn", "--device", "bogus", "--epochs", "1", "--quiet", "-o", OUT],
            ["--device", "bogus"])


@case("train-epochs-not-a-number")
def _(ws: Workspace):
    # rejected by the option parser; deepslim turns its usage error into one line too
    return ["train", "--arch", "small_cnn", "--epochs", "abc", "-o", OUT], ["--epochs", "valid integer"]


@case("train-batch-size-zero")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--batch-size", "0", "-o", OUT], ["--batch-size", "got 0"]


@case("train-input-size-zero")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--input-size", "0", "-o", OUT], ["--input-size", "got 0"]


@case("train-momentum-one")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "--momentum", "1", "-o", OUT], ["--momentum", "[0, 1)"]


@case("train-warmup-not-below-epochs")
def _(ws: Workspace):
    return (["train", "--arch", "small_cnn", "--epochs", "1", "--warmup-epochs", "1", "-o", OUT],
            ["--warmup-epochs", "got 1"])


@case("train-resume-without-checkpoint")
def _(ws: Workspace):
    return (["train", "--arch", "small_cnn", "--epochs", "1", "--resume", "--quiet", "-o", OUT],
            ["--resume", f"{OUT}.ckpt"])


# train: the output

@case("train-output-exists-without-force")
def _(ws: Workspace):
    ws.write(OUT, b"an earlier result")
    return ["train", "--arch", "small_cnn", "-o", OUT], [OUT, "--force"]


@case("train-output-wrong-suffix")
def _(ws: Workspace):
    return ["train", "--arch", "small_cnn", "-o", "model.pt"], ["model.pt", ".safetensors"]


@case("train-output-is-the-input")
def _(ws: Workspace):
    model = ws.bundle("model.safetensors")
    return ["train", model, "-o", model, "--force"], ["model.safetensors", "same file as an input"]


@case("train-output-is-the-weights-input")
def _(ws: Workspace):
    ws.plain_safetensors("w.safetensors")
    return (["train", "--arch", "small_cnn", "--weights", "w.safetensors", "-o", "w.safetensors", "--force"],
            ["w.safetensors", "same file as an input"])


@case("train-output-is-a-directory")
def _(ws: Workspace):
    (ws.root / "dir.safetensors").mkdir()
    return ["train", "--arch", "small_cnn", "-o", "dir.safetensors", "--force"], ["dir.safetensors", "directory"]


@case("train-output-parent-is-a-file")
def _(ws: Workspace):
    ws.write("afile", "x")
    return ["train", "--arch", "small_cnn", "-o", "afile/out.safetensors"], ["afile", "not a directory"]


# compress prune

PRUNE = ["compress", "prune", "--no-check", "-q"]


@case("prune-ratio-zero")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--ratio", "0", "-o", OUT], ["--ratio", "between 0 and 1", "got 0"]


@case("prune-ratio-one")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--ratio", "1", "-o", OUT], ["--ratio", "got 1"]


@case("prune-ratio-above-one")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--ratio", "1.5", "-o", OUT], ["--ratio", "got 1.5"]


@case("prune-speedup-below-one")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--speedup", "0.5", "-o", OUT], ["--speedup", "greater than 1"]


@case("prune-ratio-and-speedup")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--ratio", "0.3", "--speedup", "2", "-o", OUT], ["exactly one", "--ratio"]


@case("prune-no-target")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "-o", OUT], ["exactly one"]


@case("prune-ignore-unknown-layer")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--ratio", "0.3", "--ignore", "features.99", "-o", OUT], ["features.99",
                                                                                            "does not have"]


@case("prune-no-prunable-layer")
def _(ws: Workspace):
    ws.write("lin.py", "import torch.nn as nn\ndef build(num_classes):\n"
                       "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    return ([*PRUNE, "--arch", "lin.py:build", "--input-size", "8", "--channels", "1", "--ratio", "0.3", "-o", OUT],
            ["no prunable layer"])


@case("prune-unreachable-speedup")
def _(ws: Workspace):
    return ([*PRUNE, ws.bundle(), "--speedup", "40", "--max-layer-ratio", "0.3", "-o", OUT],
            ["40", "MAC reduction", "--max-layer-ratio"])


@case("prune-no-output")
def _(ws: Workspace):
    return [*PRUNE, ws.bundle(), "--ratio", "0.3"], ["-o OUTPUT", "--sensitivity"]


@case("prune-sparsity-without-bn")
def _(ws: Workspace):
    return ([*PRUNE, ws.bundle(), "--ratio", "0.3", "--sparsity-train-epochs", "1", "-o", OUT],
            ["--sparsity-train-epochs", "importance bn"])


# --- the tests --------------------------------------------------------------------------------

def test_there_are_enough_cases() -> None:
    commands = {case_id.split("-")[0] for case_id in CASES}
    assert len(CASES) >= 18 and commands == {"train", "eval", "info", "prune"}


@pytest.mark.parametrize("case_id", CASES.params())
def test_bad_input_is_one_error_line_and_exit_2(case_id: str, workspace: Workspace) -> None:
    args, fragments = CASES[case_id](workspace)
    assert_bad_input(args, fragments, workspace.root, output=OUT)


_SHAPE_MISMATCH = re.compile(r"'(?P<key>[\w.]+)' has shape (?P<file>\([\d, ]*\)) in the file "
                             r"but (?P<model>\([\d, ]*\)) in the model")


@pytest.mark.parametrize("command", ["eval", "train"])
def test_state_dict_shape_mismatch_names_key_and_both_shapes(command: str, workspace: Workspace) -> None:
    workspace.write("w.pth", workspace.art.narrow_state)  # width 8; --arch small_cnn builds width 32
    args = [command, "--arch", "small_cnn", "--weights", "w.pth"] + (["-o", OUT] if command == "train" else [])
    message = assert_bad_input(args, ["w.pth", "small_cnn"], workspace.root, output=OUT)
    match = _SHAPE_MISMATCH.search(message)
    assert match, f"no key and shapes in {message!r}"
    narrow = SmallCNN(num_classes=10, in_channels=1, width=8).state_dict()
    wide = SmallCNN(num_classes=10, in_channels=1).state_dict()
    key = match["key"]
    assert key in narrow and key in wide, message
    assert match["file"] == str(tuple(narrow[key].shape)), message
    assert match["model"] == str(tuple(wide[key].shape)), message
    assert match["file"] != match["model"], message
