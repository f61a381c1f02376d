"""Image-branch inference throughput at 224×224, written to
benchmarks/results/image_throughput.json.

    .venv/bin/python benchmarks/bench_image_throughput.py [--patients 160] [--repeats 7]

For MobileNetV3-Small and EfficientNet-B0 (random weights: speed does not depend on them) it
measures embeddings per second

- ``raw``: ``model.predict`` on preprocessed images already in memory (the model alone);
- ``pipeline``: from PNG files on disk through the branch's own path — OpenCV decode and
  preprocessing in a parallel tf.data map, batching, prefetch, the model — exactly what
  ``ImageBranch.transform`` runs;

and the ratio (target: pipeline ≥ 0.8 × raw: the median over interleaved raw/pipeline pairs;
best-of figures too), the peak resident memory of the process, and the
peak Python-side allocation during one pipeline pass (tracemalloc, in a separate untimed pass).
Images come from the synthetic generator at 256 px (about two per patient) in a temporary
folder. Uses every core (TensorFlow's default threading).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from deeppcos.data import load_cohort
from deeppcos.data.synthetic import generate_cohort
from deeppcos.image import pipeline
from deeppcos.image.backbones import build_model
from deeppcos.image.params import ImageParams
from deeppcos.image.preprocess import load_and_preprocess

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "image_throughput.json"
SIZE = 224
BATCH = 32
BACKBONES = ("mobilenetv3small", "efficientnetb0")


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 / 1024 if platform.system() == "Linux" else 1 / (1024 * 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1)


def timed_runs(repeats: int, fn: Any) -> tuple[float, list[float]]:
    """Median seconds over ``repeats`` runs after one untimed warm-up run (tracing, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), [round(t, 3) for t in times]


def seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_backbone(name: str, table: pipeline.ImageTable, repeats: int) -> dict[str, Any]:
    """Raw and pipeline runs are interleaved (raw, pipeline, raw, pipeline, …) so both meet the
    same background load: on a shared 2-core VM single runs vary by ±40%."""
    cfg = ImageParams(backbone=name, image_size=SIZE).preprocess
    model, embedding = build_model(name, SIZE, None, 0.3, 0)
    embedder = keras.Model(model.input, model.get_layer(embedding).output)
    n = len(table)
    images = np.stack(
        [load_and_preprocess(p, f, cfg) for p, f in zip(table.paths, table.frames, strict=True)]
    )

    def run_raw() -> np.ndarray:  # the model alone, on preprocessed images in memory
        return embedder.predict(images, batch_size=BATCH, verbose=0)

    def run_pipeline() -> np.ndarray:  # files -> decode + preprocess -> batch -> model
        return embedder.predict(pipeline.inference_dataset(table, cfg, BATCH), verbose=0)

    run_raw(), run_pipeline()  # warm-up: tracing, file cache of the OS
    raw, pipe = [], []
    for _ in range(repeats):
        raw.append(seconds(run_raw))
        pipe.append(seconds(run_pipeline))
    rss_after_timing = peak_rss_mb()  # includes the raw path's in-memory array
    out = run_pipeline()
    assert out.shape[0] == n
    tracemalloc.start()
    run_pipeline()
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    ratios = [r / p for r, p in zip(raw, pipe, strict=True)]
    raw_rate, pipe_rate = n / statistics.median(raw), n / statistics.median(pipe)
    return {
        "images": n,
        "embedding_width": int(out.shape[1]),
        "raw_embeddings_per_s": round(raw_rate, 1),
        "pipeline_embeddings_per_s": round(pipe_rate, 1),
        "raw_embeddings_per_s_best": round(n / min(raw), 1),
        "pipeline_embeddings_per_s_best": round(n / min(pipe), 1),
        "pipeline_over_raw_median_of_pairs": round(statistics.median(ratios), 3),
        "pipeline_over_raw_best": round(min(raw) / min(pipe), 3),
        "target_met": statistics.median(ratios) >= 0.8,
        "raw_seconds_runs": [round(t, 3) for t in raw],
        "pipeline_seconds_runs": [round(t, 3) for t in pipe],
        "peak_rss_mb_after_timing": rss_after_timing,
        "python_peak_alloc_mb_pipeline": round(python_peak / 2**20, 2),
    }


def decode_only_rate(table: pipeline.ImageTable, repeats: int) -> dict[str, float]:
    """Decode + preprocess alone, serial (one core) and through the parallel tf.data map."""
    cfg = ImageParams(backbone="mobilenetv3small", image_size=SIZE).preprocess
    pairs = list(zip(table.paths, table.frames, strict=True))
    serial_s, _ = timed_runs(repeats, lambda: [load_and_preprocess(p, f, cfg) for p, f in pairs])
    parallel_s, _ = timed_runs(repeats, lambda: list(pipeline.inference_dataset(table, cfg, BATCH)))
    return {
        "serial_images_per_s": round(len(table) / serial_s, 1),
        "tf_data_parallel_images_per_s": round(len(table) / parallel_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deeppcos-bench-") as tmp:
        start = time.perf_counter()
        spec = generate_cohort(tmp, n_patients=args.patients, seed=0, image_size=256)
        cohort = load_cohort(spec)
        table = pipeline.table_from(cohort.images)
        setup_s = time.perf_counter() - start
        results: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "gpu": bool(tf.config.list_physical_devices("GPU")),
            },
            "input": {"size": SIZE, "batch_size": BATCH, "source_px": 256, "images": len(table)},
            "setup_seconds": round(setup_s, 2),
            "decode_preprocess": decode_only_rate(table, args.repeats),
            "backbones": {},
        }
        for name in BACKBONES:
            results["backbones"][name] = bench_backbone(name, table, args.repeats)
            print(name, json.dumps(results["backbones"][name]))
    results["peak_rss_mb"] = peak_rss_mb()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
