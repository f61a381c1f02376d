"""Serving latency, batch scoring rate and memory, written to benchmarks/results/serving.json.

    .venv/bin/python benchmarks/bench_serving.py [--quick]

1. Trains two small runs on synthetic cohorts: tabular only (300 patients) and tabular + image
   (160 patients, compact CNN at 64 px, 2 epochs).
2. **Service latency**: ``deeppcos serve`` (the tabular + image run) in its own process on
   loopback; one client sends one-patient requests one at a time — tabular only (the labs),
   and tabular + image (the labs and two 128-px PNG ovary images, base64) — then 8 clients send
   200 tabular-only requests at once. p50 / p95 / p99 in milliseconds.
3. **Batch rate**: ``score_table`` on 100,000 synthetic tabular patients (the 300-patient table
   resampled under new ids, CSV, chunks of 10,000) with the tabular run, and on ~2,000 images
   (a 1,050-patient synthetic cohort at 128 px, chunks of 250) with the image run.
4. **Memory**: each batch job runs in a fresh process that reports its peak RSS; 10,000 and
   100,000 patients show whether memory stays flat as the input grows.

The machine's load average is recorded before and after: on a shared 2-core machine other work
slows every figure, so read them with it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serving.json"
KEY = "benchmark-key-0123456789"


# --- runs -------------------------------------------------------------------------------------


def train_run(work: Path, *, image: bool, patients: int) -> Path:
    from deeppcos.config import load_config
    from deeppcos.training import train

    config = {
        "name": "bench-serving-image" if image else "bench-serving-tabular",
        "seed": 0,
        "synthetic": {
            "patients": patients,
            "seed": 7,
            "image_size": 128,
            "folder": str(work / "cohort"),
        },
        "split": {"n_folds": 3, "test_fraction": 0.2},
        "tabular": {"enabled": True},
        "image": {
            "enabled": image,
            "params": {"backbone": "compact", "image_size": 64, "max_epochs_compact": 2},
        },
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return train(load_config(path), work / "run", overwrite=True)


# --- the service ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "BENCH_KEY": KEY}
    command = [sys.executable, "-m", "deeppcos.cli", "serve", str(run), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--api-key-env", "BENCH_KEY"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the server did not start within 180 s")


def request_bodies(run: Path) -> tuple[dict, dict]:
    cohort = run.parent / "cohort"
    table = pd.read_csv(cohort / "patients.csv")
    manifest = pd.read_csv(cohort / "images.csv")
    pid = manifest["patient_id"].value_counts().index[0]  # a patient with two images
    row = table[table["patient_id"] == pid].drop(columns=["pcos", "severity", "site"]).iloc[0]
    features = {k: float(v) for k, v in row.items() if k != "patient_id" and pd.notna(v)}
    images = [
        {"data": base64.b64encode((cohort / path).read_bytes()).decode(), "side": side}
        for path, side in manifest.loc[manifest["patient_id"] == pid, ["path", "side"]].values
    ]
    tabular = {"patients": [{"patient_id": pid, "features": features}]}
    both = {"patients": [{"patient_id": pid, "features": features, "images": images}]}
    return tabular, both


def percentiles(ms: list[float]) -> dict[str, float]:
    values = np.array(ms)
    return {
        "n": len(values),
        **{f"p{q}_ms": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)},
        "mean_ms": round(float(values.mean()), 1),
    }


def timed_requests(url: str, body: dict, n: int) -> list[float]:
    import httpx

    times = []
    with httpx.Client(timeout=120, headers={"X-API-Key": KEY}) as http:
        for _ in range(n):
            start = time.perf_counter()
            response = http.post(url, json=body)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"request failed: {response.status_code} {response.text[:300]}")
            times.append(elapsed)
    return times


def bench_service(run: Path, quick: bool) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    tabular, both = request_bodies(run)
    server = start_server(run, port)
    try:
        timed_requests(url, tabular, 5)  # warm-up (first calls build the TF graph)
        timed_requests(url, both, 5)
        n = 30 if quick else 100
        sequential_tabular = timed_requests(url, tabular, n)
        sequential_both = timed_requests(url, both, n // 2)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            chunks = list(pool.map(lambda _: timed_requests(url, tabular, 25), range(8)))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)
    concurrent = [t for chunk in chunks for t in chunk]
    return {
        "request_bytes": {
            "tabular_only": len(json.dumps(tabular)),
            "tabular_and_image": len(json.dumps(both)),
        },
        "images_per_request": len(both["patients"][0]["images"]),
        "sequential_tabular_only": percentiles(sequential_tabular),
        "sequential_tabular_and_image": percentiles(sequential_both),
        "concurrent_8_clients_tabular_only": {
            **percentiles(concurrent),
            "requests_per_s": round(len(concurrent) / wall, 1),
            "errors": 0,
        },
    }


# --- batch scoring (each job in a fresh process, for its peak RSS) -------------------------------


def batch_job(run: str, patients: str, images: str | None, chunk_size: int, out: str) -> dict:
    from deeppcos.batch import cached_predictor, score_table

    start = time.perf_counter()
    cached_predictor(str(Path(run).resolve()))  # the model load, timed apart from the scoring
    load = time.perf_counter() - start
    result = score_table(run, patients, out, images=images, chunk_size=chunk_size)
    return {
        "patients": result.patients,
        "chunks": result.chunks,
        "model_load_s": round(load, 2),
        "seconds": round(result.seconds, 2),
        "patients_per_s": round(result.patients_per_second, 1),
        "peak_rss_mb": round(peak_rss_kib() / 1024, 1),
    }


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that over from the forking parent across exec, so a child of a process that had loaded
    TensorFlow would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_job(**kwargs: object) -> dict:
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); from bench_serving import batch_job; "
        "print(json.dumps(batch_job(**json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def big_table(source: Path, n: int, target: Path) -> Path:
    table = pd.read_csv(source).drop(columns=["pcos", "severity", "site"])
    rng = np.random.default_rng(0)
    sample = table.iloc[rng.integers(0, len(table), n)].reset_index(drop=True)
    sample["patient_id"] = [f"B{i:07d}" for i in range(n)]
    sample.to_csv(target, index=False)
    return target


def bench_batch(tabular_run: Path, image_run: Path, work: Path, quick: bool) -> dict:
    from deeppcos.data.synthetic import generate_cohort

    source = tabular_run.parent / "cohort" / "patients.csv"
    sizes = (2_000, 20_000) if quick else (10_000, 100_000)
    tabular = {}
    for n in sizes:
        path = big_table(source, n, work / f"patients-{n}.csv")
        tabular[str(n)] = run_job(
            run=str(tabular_run),
            patients=str(path),
            images=None,
            chunk_size=10_000,
            out=str(work / f"out-{n}.parquet"),
        )
    images_cohort = work / "images-cohort"
    generate_cohort(images_cohort, n_patients=210 if quick else 1_050, seed=11, image_size=128)
    n_images = len(pd.read_csv(images_cohort / "images.csv"))
    image = run_job(
        run=str(image_run),
        patients=str(images_cohort / "patients.csv"),
        images=str(images_cohort / "images.csv"),
        chunk_size=250,
        out=str(work / "out-images.parquet"),
    )
    image["images"] = n_images
    image["images_per_s"] = round(n_images / image["seconds"], 1)
    small, large = (tabular[str(n)] for n in sizes)
    return {
        "tabular": tabular,
        "images": image,
        "memory": {
            "peak_rss_mb_by_patients": {str(n): tabular[str(n)]["peak_rss_mb"] for n in sizes},
            "growth_ratio": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
            "input_ratio": sizes[1] / sizes[0],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        work = Path(folder)
        (work / "tab").mkdir()
        (work / "img").mkdir()
        tabular_run = train_run(work / "tab", image=False, patients=300)
        image_run = train_run(work / "img", image=True, patients=160)
        service = bench_service(image_run, args.quick)
        batch = bench_batch(tabular_run, image_run, work, args.quick)
    results = {
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "quick": args.quick,
        "service": service,
        "batch": batch,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
