"""CUDA check of the kernel: train on GPU (bf16 autocast), bundle round trip, torch eager latency.

Run on a machine with a CUDA GPU:  python -m scripts.gpu_check
Prints one table; each latency is the median of CUDA-event-timed runs after warm-up.
"""

from __future__ import annotations

import time

import torch

from deepslim.config import TrainConfig
from deepslim.evaluation import evaluate
from deepslim.models import load_model, save_model
from deepslim.training import model_for_dataset, train


def _train(arch: str, size: int, epochs: int, device: str, amp: bool = True):
    torch.manual_seed(0)
    bundle = model_for_dataset(arch, "digits", input_size=size)
    start = time.perf_counter()
    out = train(bundle, "digits", TrainConfig(epochs=epochs, device=device, amp=amp), progress=False)
    return out, time.perf_counter() - start


def _latency_ms(model: torch.nn.Module, shape: tuple[int, ...], dtype: torch.dtype | None, reps: int = 100) -> float:
    x = torch.randn(*shape, device="cuda")
    model = model.cuda().eval()
    times = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for _ in range(20):
            model(x)
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("this script needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    rows = []
    for arch, size, epochs in (("small_cnn", 16, 10), ("resnet18", 32, 10)):
        for amp in (False, True):
            bundle, seconds = _train(arch, size, epochs, "cuda", amp)
            test = bundle.lineage[-1].metrics["test"]["top1"]
            rows.append(f"train {arch:<10} {size}px {epochs} ep cuda amp={amp!s:<5} {seconds:6.1f} s  test top-1 {test:.4f}")
    save_model(bundle, "/tmp/gpu_resnet18.safetensors", force=True)
    reloaded = load_model("/tmp/gpu_resnet18.safetensors")
    cpu = evaluate(reloaded, "digits", device="cpu")
    gpu = evaluate(reloaded, "digits", device="cuda")
    agree = float((cpu.logits.argmax(1) == gpu.logits.argmax(1)).mean())
    max_err = float(abs(cpu.logits - gpu.logits).max())
    rows.append(f"reloaded bundle: top-1 cpu {cpu.metrics['top1']:.4f} cuda {gpu.metrics['top1']:.4f} "
                f"agreement {agree:.4f} max|dlogit| {max_err:.2e}")
    model = load_model(arch="resnet18", num_classes=10, input_size=224).model
    for batch in (1, 32):
        fp32 = _latency_ms(model, (batch, 3, 224, 224), None)
        bf16 = _latency_ms(model, (batch, 3, 224, 224), torch.bfloat16)
        rows.append(f"resnet18 224px batch {batch:>2} torch eager p50: fp32 {fp32:.3f} ms  bf16 autocast {bf16:.3f} ms "
                    f"(ratio {fp32 / bf16:.2f}x, same run)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
