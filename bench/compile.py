"""Benchmark: `hxpc compile` of one environment to all targets, beside kustomize.

For each N, generates a spec of N services and models with three
environments (bench/gen.py) and times the `hxpc compile --env prod` command
(a fresh process, as CI runs it), and in the same run times kustomize
rendering the equivalent Kubernetes overlay: a base of N Deployments,
Services and ConfigMaps, and an overlay with a strategic-merge patch per
service. Wall time of `--repeat` runs of each, alternating hxpc and
kustomize so that a noisy machine affects both alike; the best and the median
of each are printed, and their ratios.

hxpc is measured as a user runs it: a wheel of this checkout installed in
its own virtualenv (built once per wheel content, under
~/.cache/hxpc-bench/), so the figures include byte-compiled modules and no
editable-install import hook; `--dev` measures this checkout's `python -m
hxpc` instead.

kustomize is `kubectl kustomize` where kubectl is installed, else a
`kustomize` on PATH, else it is built once with `go install
sigs.k8s.io/kustomize/kustomize/v5@v5.8.2` into ~/.cache/hxpc-bench/bin
(v5.8.3 needs a newer Go than this machine has).

Run: python bench/compile.py [--repeat R] [--dev] [N ...]   (default N: 10 100 1000 5000)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import write_spec

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "hxpc-bench"
KUSTOMIZE_VERSION = "v5.8.2"
KUSTOMIZE_TIMEOUT_S = 600


def installed_hxpc() -> list[str]:
    """`hxpc` from a wheel of this checkout, installed with its dependencies in a virtualenv of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", tmp], check=True)
        wheel = next(Path(tmp).glob("hxpc-*.whl"))
        venv = CACHE / f"venv-{hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]}"
        if not (venv / "bin" / "hxpc").exists():
            print(f"installing {wheel.name} into {venv} (once per change) ...", file=sys.stderr)
            for old in CACHE.glob("venv-*"):
                shutil.rmtree(old)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                           check=True)
    return [str(venv / "bin" / "hxpc")]


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    gobin = CACHE / "bin"
    binary = gobin / "kustomize"
    if not binary.exists():
        print(f"building kustomize {KUSTOMIZE_VERSION} with go install (once) ...", file=sys.stderr)
        subprocess.run(["go", "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
                       env={**os.environ, "GOBIN": str(gobin)}, check=True)
    return [str(binary), "build"]


def write_kustomize(root: Path, n: int) -> Path:
    """A base of n Deployments+Services+ConfigMaps and an overlay patching each Deployment."""
    base, overlay = root / "base", root / "overlay"
    base.mkdir(parents=True)
    overlay.mkdir()
    resources, patches = [], []
    for i in range(n):
        name = f"svc-{i:05d}"
        (base / f"{name}.yaml").write_text(f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-env}}
data: {{LOG_LEVEL: INFO, SVC_INDEX: "{i}"}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {10000 + i % 200 * 10}, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: {name}
        image: registry.example/svc-{i}:1.0.{i}
        ports: [{{name: http, containerPort: {10000 + i % 200 * 10}}}]
        envFrom: [{{configMapRef: {{name: {name}-env}}}}]
        resources: {{limits: {{cpu: 500m, memory: 256Mi}}}}
""")
        resources.append(f"- {name}.yaml")
        (overlay / f"patch-{name}.yaml").write_text(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  template:
    spec:
      containers:
      - name: {name}
        resources: {{limits: {{memory: 512Mi}}}}
""")
        patches.append(f"- path: patch-{name}.yaml")
    (base / "kustomization.yaml").write_text("resources:\n" + "\n".join(resources) + "\n")
    (overlay / "kustomization.yaml").write_text(
        "namespace: bench-prod\nresources:\n- ../base\npatches:\n" + "\n".join(patches) + "\n")
    return overlay


def timed(command: list[str], timeout: float | None = None) -> float | None:
    """Wall time of one run; None when it times out."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()[:2000]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 100, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per N (default: 15 up to N=100, where noise is most of the difference; 3 above)")
    parser.add_argument("--dev", action="store_true", help="measure `python -m hxpc` of this checkout")
    args = parser.parse_args()
    hxpc_command = [sys.executable, "-m", "hxpc"] if args.dev else installed_hxpc()
    kustomize = kustomize_command()
    print(f"hxpc: {' '.join(hxpc_command)}\nkustomize: {' '.join(kustomize)}")
    print(f"{'N':>6} {'files':>6} {'hxpc all targets, best / median (s)':>36} "
          f"{'kustomize k8s only, best / median (s)':>38} {'ratio, best / median':>21}")
    for n in args.sizes:
        repeat = args.repeat or (15 if n <= 100 else 3)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            spec = write_spec(root, n, envs=("staging", "prod"))
            out = root / "out"
            overlay = write_kustomize(root / "kustomize", n)
            hxpc_runs: list[float] = []
            kust_runs: list[float | None] = []
            # alternate the two, so that a noisy spell of the machine hits both alike
            for i in range(repeat):
                took = timed([*hxpc_command, "compile", str(spec), "--env", "prod", "-o", str(out)])
                assert took is not None
                hxpc_runs.append(took)
                if n < 1000 or i == 0:  # kustomize takes minutes at N >= 1000: once is enough
                    kust_runs.append(timed([*kustomize, str(overlay)], KUSTOMIZE_TIMEOUT_S))
            files = sum(1 for p in out.rglob("*") if p.is_file())
            h_best, h_med = min(hxpc_runs), statistics.median(hxpc_runs)
            hxpc_text = f"{h_best:.3f} / {h_med:.3f}"
            if None in kust_runs:
                kust_text, ratio = f"> {KUSTOMIZE_TIMEOUT_S}", "-"
            else:
                done = [k for k in kust_runs if k is not None]
                k_best, k_med = min(done), statistics.median(done)
                kust_text = f"{k_best:.3f} / {k_med:.3f}"
                ratio = f"{h_best / k_best:.2f} / {h_med / k_med:.2f}"
            print(f"{n:>6} {files:>6} {hxpc_text:>36} {kust_text:>38} {ratio:>21}", flush=True)


if __name__ == "__main__":
    main()
