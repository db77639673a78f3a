"""Benchmark: `hxpc validate` on generated specs of N services and models with two overlays.

Prints, per N, the spec size, the in-process CPU time of load+merge+validate
for one environment (best of 3), and the CPU time of the `hxpc validate`
command for all three environments (user+sys of the child process). CPU time,
not wall time: these machines are shared and noisy, and a busy neighbour
inflates wall time but not the work done. Target: 1,000 services in under a
second, growing linearly.
Run: python bench/validate.py [N ...]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import write_spec

from hxpc.compiler.pipeline import resolve_env
from hxpc.sources import FileSources


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 5000]
    print(f"{'N':>6} {'spec KiB':>9} {'validate 1 env, cpu (s)':>24} {'per 1k (s)':>11} "
          f"{'hxpc validate, 3 envs, cpu (s)':>31}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            spec = write_spec(Path(tmp), n)
            best = float("inf")
            for _ in range(3):
                start = time.process_time()
                resolve_env(FileSources(str(spec)), "prod")
                best = min(best, time.process_time() - start)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run([sys.executable, "-m", "hxpc", "validate", str(spec)], capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            if done.returncode != 0:
                raise SystemExit(f"validate failed for N={n}:\n{done.stderr[:2000]}")
            size = spec.stat().st_size / 1024
            print(f"{n:>6} {size:>9.0f} {best:>24.3f} {best / n * 1000:>11.3f} {wall:>31.3f}")


if __name__ == "__main__":
    main()
