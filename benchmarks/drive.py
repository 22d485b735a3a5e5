"""Run the deepslim CLI from a benchmark script, as a user would (keeps the scripts on the benchmarks floor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def deepslim(*args: str) -> str:
    """``deepslim ARGS`` in a subprocess; its stdout, or exit with its command line and stderr on failure."""
    cmd = [sys.executable, str(ROOT / "cli.py"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout
