"""Benchmark: how fast the library's work runs at each thread setting, on an idle machine and with the
other cores kept busy (the thread policy of :mod:`mi_art.threads` is chosen from this table).

Jobs, each in a fresh process (so that torch starts with the setting, as a user's command does):

- ``readme``: the README's main job, ``mi-art attack --dataset digits``, from an empty cache;
- ``prior``: 100 steps of the GMI prior (WGAN-GP) on the AT&T benchmark's public faces at 32 px (200 images;
  every step is the same work, so a 300-step prior takes 3x at each setting: 268 s at ``auto``, idle);
- ``attack``: one GMI attack of 100 reconstructions (20 identities x 5, 100 iterations) at 32 px; the target
  and the generator are untrained (the time of a search does not depend on the weights);
- ``mnist``: the issue's smallest MNIST run (2 iterations, one epoch of target and judge, 2-step priors).

Settings: ``1`` thread; ``all`` (one per usable CPU); ``torch`` (torch's default, untouched); ``passive``
(torch's default with ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep instead of spinning); ``spin``
(torch's default with ``GOMP_SPINCOUNT=10000``: a waiting thread spins 30x shorter than libgomp's default, then
sleeps); ``auto`` (the library's policy). Loads: ``idle``; ``busy``, a busy loop on each other usable core (a
browser tab, a compiler); ``torch``, a second torch job training a CNN with torch's default threads (a second
audit, a colleague's job). The script starts and stops the loads itself.

    python benchmarks/threads.py                                   # readme, prior, attack; 2 repeats
    python benchmarks/threads.py --jobs mnist --settings 1,torch,auto --repeats 1

Each run is appended to the results file (``--out``) as it ends; a rerun skips what is there.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from mi_art.threads import usable_cpus

from _results import Results
from _settings import DEFAULT_ROOT, REPO, SHARED

JOBS = ("readme", "prior", "attack", "mnist")
SETTINGS = ("1", "all", "torch", "passive", "spin", "auto")
LOADS = ("idle", "busy", "torch")

PRIOR_JOB = """
import time, mi_art
from mi_art.data import load_dataset
data = load_dataset("image-folder", {root!r}, private=20, image_size=32, channels=1, test_fraction=0.2)
start = time.perf_counter()
mi_art.train_gmi_prior(data.public.x, steps=100, augment="flip", seed=0)
print("SECONDS", time.perf_counter() - start)
"""

ATTACK_JOB = """
import time, numpy as np, torch, mi_art
from art.estimators.classification import PyTorchClassifier
torch.manual_seed(0)
target = mi_art.make_classifier("cnn", 1, 20, 32).eval()
classifier = PyTorchClassifier(target, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 32, 32), nb_classes=20,
                               clip_values=(0, 1))
generator, critic = mi_art.Generator(32, 1).eval(), mi_art.Critic(32, 1).eval()
attack = mi_art.GMI(classifier, generator, critic, iterations=100, n_reconstructions=5)
start = time.perf_counter()
attack.infer(None, y=np.arange(20))
print("SECONDS", time.perf_counter() - start)
"""

LOAD_TORCH = """
import torch
nn = torch.nn
model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
while True:
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
"""


def job_command(job: str, folder: Path, data_root: Path) -> List[str]:
    if job == "readme":
        return ["mi-art", "attack", "--dataset", "digits", "--quiet", "--out", str(folder / "out"),
                "--cache-dir", str(folder / "cache")]
    if job == "mnist":
        return ["mi-art", "attack", "--dataset", "mnist", "--data-root", str(data_root / "mnist"), "--iterations", "2",
                "--target-epochs", "1", "--judge-epochs", "1", "--gmi-steps", "2", "--kedmi-steps", "2",
                "--surrogate-steps", "2", "--n-reconstructions", "1", "--quiet", "--out", str(folder / "out"),
                "--cache-dir", str(folder / "cache")]
    code = PRIOR_JOB.format(root=str(data_root / "att_faces")) if job == "prior" else ATTACK_JOB
    return [sys.executable, "-c", code]


def setting_env(setting: str) -> Dict[str, str]:
    """The environment of a job at ``setting`` (the library reads MI_ART_THREADS when imported)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MI_ART_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["MI_ART_THREADS"] = {"1": "1", "all": str(usable_cpus()), "torch": "torch", "passive": "torch",
                             "spin": "torch", "auto": "auto"}[setting]
    if setting == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if setting == "spin":
        env["GOMP_SPINCOUNT"] = "10000"
    return env


def start_load(load: str) -> List[subprocess.Popen]:
    """The load's processes: one busy loop on each other usable core, or one torch job (torch's default threads)."""
    if load == "idle":
        return []
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MI_ART_THREADS")}
    if load == "busy":
        return [subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
                for _ in range(max(1, usable_cpus() - 1))]
    return [subprocess.Popen([sys.executable, "-c", LOAD_TORCH], env=env)]


def run_job(job: str, setting: str, data_root: Path, timeout: float) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mi-art-threads-") as tmp:
        start = time.perf_counter()
        try:
            done = subprocess.run(job_command(job, Path(tmp), data_root), env=setting_env(setting), capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "timed_out": timeout}
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{job} at {setting} failed:\n{done.stderr[-2000:]}")
        inner = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("SECONDS")]
        record: Dict[str, Any] = {"seconds": inner[0] if inner else wall, "wall_seconds": wall}
        results = Path(tmp) / "out" / "results.json"
        if results.exists():
            saved = json.loads(results.read_text())
            record.update({k: saved.get(k) for k in ("threads", "thread_setting", "acc@1")})
        return record


def table(results: Dict[str, Any], jobs: List[str]) -> str:
    lines = []
    for job in jobs:
        lines += [f"### {job}", "", "| setting | " + " | ".join(LOADS) + " |", "|---|" + "---:|" * len(LOADS)]
        best = {load: min([statistics.median(v) for s in SETTINGS
                           if (v := _seconds(results, job, s, load))] or [None]) for load in LOADS}
        for setting in SETTINGS:
            cells = []
            for load in LOADS:
                values = _seconds(results, job, setting, load)
                if not values:
                    cells.append("")
                    continue
                med = statistics.median(values)
                spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
                ratio = f", {med / best[load]:.2f}x" if best[load] else ""
                cells.append(f"{med:.1f} s{spread}{ratio}")
            lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _seconds(results: Dict[str, Any], job: str, setting: str, load: str) -> List[float]:
    return [r["seconds"] for k, r in results.items() if k.startswith(f"{job}/{setting}/{load}/")
            and r.get("seconds") is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="readme,prior,attack", help=f"comma-separated, of {', '.join(JOBS)}")
    parser.add_argument("--settings", default="1,torch,passive,auto",
                        help=f"comma-separated, of {', '.join(SETTINGS)} (default: all but 'all', which is torch's "
                             "default wherever torch starts one thread per usable CPU, as here)")
    parser.add_argument("--loads", default=",".join(LOADS), help=f"comma-separated, of {', '.join(LOADS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take (then recorded as such)")
    parser.add_argument("--data-root", default=str(SHARED), help="folder holding att_faces/ and mnist/")
    parser.add_argument("--out", default=str(REPO / "mi_art_runs" / "threads.json"))
    args = parser.parse_args()
    chosen = {"jobs": args.jobs.split(","), "settings": args.settings.split(","), "loads": args.loads.split(",")}
    for what, valid in (("jobs", JOBS), ("settings", SETTINGS), ("loads", LOADS)):
        bad = [v for v in chosen[what] if v not in valid]
        if bad:
            parser.error(f"--{what}: {', '.join(bad)} not among {', '.join(valid)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    data_root = Path(args.data_root)
    out = Path(args.out)
    results = Results(out)
    print(f"{usable_cpus()} usable CPUs (affinity and cgroup quota), os.cpu_count() {os.cpu_count()}", flush=True)
    for repeat in range(args.repeats):
        for load in chosen["loads"]:
            todo = [(j, s) for j in chosen["jobs"] for s in chosen["settings"]
                    if f"{j}/{s}/{load}/{repeat}" not in results]
            if not todo:
                continue
            procs = start_load(load)
            try:
                time.sleep(1.0 if procs else 0.0)
                for job, setting in todo:
                    record = run_job(job, setting, data_root, args.timeout)
                    results.store(f"{job}/{setting}/{load}/{repeat}", {**record, "cpus": usable_cpus(),
                                                                        "date": time.strftime("%Y-%m-%d %H:%M")})
                    print(f"{job:7s} {setting:8s} {load:6s} repeat {repeat}: {record.get('seconds')} s "
                          f"(threads {record.get('threads', '-')})", flush=True)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    print(table(results.records, chosen["jobs"]))


if __name__ == "__main__":
    main()
