"""How fast does the search go with one worker and with two sharing PostgreSQL? Trials per hour, one run.

    .venv/bin/python -m benchmarks.search_workers [--seconds 240] [--out runs/bench-search-workers]

A throwaway PostgreSQL server is started in a temporary directory (``tests/pg.py``: initdb and pg_ctl
of the Debian package). A small CNN is trained on digits once; then `deepslim auto` runs with
``--time-budget SECONDS`` as one worker on study ``one``, and as two workers at once on study ``two``.
Each study's finished trials (complete or pruned) over the wall time give trials per hour. Two
workers on two cores do not double it: each trial already uses both cores (torch and the runtime
use every thread), so two share them. The figures go to ``OUT/search_workers.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.drive import ROOT, deepslim


def _workers(model: Path, url: str, study: str, n: int, seconds: float, out: Path) -> float:
    """Run ``n`` workers together; the wall time until the last one ends."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "auto", str(model), "--storage", url,
                               "--study", study, "--target", "onnxruntime", "--finetune-epochs", "1",
                               "--max-accuracy-drop", "5", "--time-budget", str(seconds), "--quiet",
                               "-o", str(out / f"{study}-w{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(n)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err[-3000:]}")
    return time.perf_counter() - start


def _study_trials(out: Path, study: str, n: int) -> list[dict]:
    """The study's trials as the last worker to finish reported them (its search.json lists them all)."""
    reports = [json.loads((out / f"{study}-w{i}" / "search.json").read_text()) for i in range(n)]
    return max((r["trials"] for r in reports), key=len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="each worker's --time-budget")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-search-workers"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import pg
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "base.safetensors"
    if not model.exists():
        deepslim("train", "--arch", "small_cnn", "-d", "digits", "--input-size", "8", "--arch-kwargs",
                 '{"width": 16}', "--epochs", "3", "--quiet", "-o", str(model))
    rows = []
    with pg.server() as server:
        for study, n in (("one", 1), ("two", 2)):
            wall = _workers(model, server.url(), study, n, args.seconds, args.out)
            trials = _study_trials(args.out, study, n)
            finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
            rows.append({"workers": n, "wall_s": round(wall, 1), "finished": len(finished),
                         "failed": sum(t["state"] == "FAIL" for t in trials),
                         "trials_per_hour": round(3600 * len(finished) / wall, 1)})
            print(f"{n} worker(s): {len(finished)} trials finished in {wall:.0f} s = "
                  f"{rows[-1]['trials_per_hour']:.1f} trials/hour")
    ratio = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"] if rows[0]["trials_per_hour"] else float("nan")
    print(f"2 workers / 1 worker: {ratio:.2f}x trials per hour")
    from benchmarks.env import environment
    (args.out / "search_workers.json").write_text(json.dumps({"rows": rows, "ratio": round(ratio, 3),
                                                               "seconds": args.seconds,
                                                               "environment": environment()}, indent=1))


if __name__ == "__main__":
    main()
