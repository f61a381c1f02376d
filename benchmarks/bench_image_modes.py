"""The image branch's three modes side by side, on real and synthetic images, written to
benchmarks/results/image_modes.json.

    .venv/bin/python benchmarks/bench_image_modes.py [--cohorts chestxr8 pcosgen synthetic]
        [--modes scratch frozen finetune] [--parts modes random_split demo throughput]

The ImageNet weights must be in the Keras cache (``~/.keras/models``): copy
``../shared/weights/mobilenet_2_5_224_tf_no_top.h5`` there (``.ci/run`` does).

* ``modes``: for each cohort config and each mode, ``deeppcos train`` (the config's own split:
  patient-grouped folds, duplicate clusters kept together, a locked test part) and ``deeppcos
  evaluate``: the image branch's out-of-fold ROC AUC and its locked-test ROC AUC, each with a 95%
  patient-bootstrap interval; the fused figures where the cohort has a table; at the run's
  decision threshold and at a calibrated risk of 0.5 the locked test part's accuracy,
  precision, recall and F1 (what Auto-PCOS reports) with intervals; the wall time. The embedding
  cache is emptied before each frozen run, so its time includes every embedding.
* ``random_split`` (PCOSGen): the shipped config's model on a random frame-level split (no
  duplicate grouping), to show how much neighbouring video frames inflate the figures; with
  2-bit groups; and on every frame (``label_noise: keep``: the three uterus videos labelled at
  random kept), grouped and split at random.
* ``demo``: wall time of ``deeppcos demo`` (600 synthetic patients) per image mode.
* ``throughput``: embedding images per second through ``embed_table`` (files decoded and
  preprocessed, chunked, cached) against raw ``model.predict`` on the same images already in
  memory, and the time of a fully cached re-run.

Modes: ``scratch`` is the compact CNN from random weights (at ``SCRATCH_SIZE``); ``frozen`` and
``finetune`` use MobileNet v1 at width 0.25 with ImageNet weights (the only pretrained weights
at hand), at ``FROZEN_SIZE`` and ``FINETUNE_SIZE`` pixels, ``frozen`` with the library's default
head (``head_c`` 1); ``frozen_grid`` pools the embedding over a 4 × 4 grid of the last two
feature maps (``pool_grid``, ``pool_layers``) with the strongly regularised head (``head_c``
0.001); ``config`` is the shipped config's own image branch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

from deeppcos.config import load_config
from deeppcos.evaluation.metrics import classification_metrics
from deeppcos.pipeline.evaluate import evaluate_run
from deeppcos.pipeline.training import cohort_for, train
from deeppcos.runs.reader import Run
from deeppcos.stats import weighted_auc

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "image_modes.json"
FROZEN_SIZE = 224
FINETUNE_SIZE = 160
MOBILENET = {"backbone": "mobilenet", "width": 0.25, "weights": "imagenet"}
# The compact CNN from scratch at the sizes the configs used before the ImageNet modes.
SCRATCH_SIZE = {"chestxr8": 128, "pcosgen": 128, "synthetic": 96}
MODE_PARAMS: dict[str, dict[str, Any]] = {
    "scratch": {"backbone": "compact", "weights": None, "mode": "scratch"},
    "frozen": {**MOBILENET, "mode": "frozen", "image_size": FROZEN_SIZE},
    # Frozen, with the embedding pooled over a 4 x 4 grid of the last feature map and of
    # conv_pw_11's (SpatialGridPooling): where a feature is, not only whether it is there.
    "frozen_grid": {
        **MOBILENET,
        "mode": "frozen",
        "image_size": FROZEN_SIZE,
        "pool_grid": 4,
        "pool_layers": ["conv_pw_11_relu"],
        "head_c": 0.001,
    },
    "finetune": {
        **MOBILENET,
        "mode": "finetune",
        "image_size": FINETUNE_SIZE,
        "epochs_head": 4,
        "epochs_finetune": 4,
        "patience": 2,
    },
}


def _config(name: str, mode: str, cache: Path, **split: Any) -> Any:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    image = config.image.model_copy(deep=True)
    if mode == "config":  # the shipped config's own image branch
        image.params = {**image.params, "embedding_cache": str(cache)}
    else:
        keep = {k: v for k, v in image.params.items() if k == "preprocess"}
        settings = MODE_PARAMS[mode]
        if mode == "scratch":
            settings = {**settings, "image_size": SCRATCH_SIZE.get(name, 128)}
        image.params = {**keep, **settings, "embedding_cache": str(cache)}
    update: dict[str, Any] = {"image": image}
    if split:
        update["split"] = config.split.model_copy(update=split)
    return config.model_copy(update=update)


def _threshold_metrics(test: pd.DataFrame, threshold: float, seed: int) -> dict[str, Any]:
    scored = test["risk"].notna() & test["label"].notna()
    y = test.loc[scored, "label"].astype(int).to_numpy()
    risk = test.loc[scored, "risk"].to_numpy()
    metrics = classification_metrics(y, risk, threshold, seed=seed)
    return {
        "threshold": threshold,
        **{k: metrics[k] for k in ("accuracy", "ppv", "sensitivity", "f1", "specificity")},
        "precision_is": "ppv",
        "recall_is": "sensitivity",
    }


def _within_largest_groups(config: Any, cohort: Any, run: Path, n: int = 3) -> list[dict[str, Any]]:
    """The image branch's out-of-fold ROC AUC *within* each of the ``n`` largest duplicate
    groups of the development part (a long video): how well it ranks one video's frames."""
    from deeppcos.audit.checks import duplicate_patient_groups

    groups = duplicate_patient_groups(
        cohort, near_duplicate_threshold=config.split.near_duplicate_bits
    )
    oof = Run(run).oof_predictions().dropna(subset=["p_image"])
    oof["group"] = groups.reindex(oof["patient_id"]).to_numpy()
    out = []
    for _, members in sorted(oof.groupby("group"), key=lambda g: -len(g[1]))[:n]:
        y = members["label"].astype(int).to_numpy()
        auc = weighted_auc(y, members["p_image"].to_numpy()) if 0 < y.sum() < len(y) else None
        out.append(
            {
                "frames": len(members),
                "positive_share": round(float(y.mean()), 3),
                "roc_auc": None if auc is None else round(auc, 3),
            }
        )
    return out


def run_mode(name: str, mode: str, work: Path, label: str | None = None, **split: Any) -> dict:
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # every embedding counted in the wall time
    config = _config(name, mode, cache, **split)
    cohort = cohort_for(config)  # a synthetic cohort is generated outside the timed part
    start = time.perf_counter()
    run = train(config, work / f"{name}-{label or mode}", overwrite=True)
    seconds = round(time.perf_counter() - start, 1)
    metrics = Run(run).metrics().to_json()
    tested = evaluate_run(run)
    test = pd.read_csv(run / "evaluation" / "test_predictions.csv")
    image_oof = metrics["branches"]["image"]["oof"]
    out: dict[str, Any] = {
        "mode": mode,
        "image_params": metrics["branches"]["image"]["params"],
        "seconds_train": seconds,
        "development_patients": metrics["development_patients"],
        "image_oof": {k: image_oof[k] for k in ("roc_auc", "roc_auc_ci", "n", "positives")},
        "image_locked_test": {
            k: tested["branches"]["image"][k] for k in ("roc_auc", "roc_auc_ci", "n", "positives")
        },
        "locked_test_patients": tested["scored"],
        "split": config.split.model_dump(
            include={"group_duplicates", "near_duplicate_bits", "label_noise"}
        ),
        "patients_set_aside": metrics.get("label_noise", {}).get("patients_set_aside", 0),
    }
    if "tabular" in metrics["branches"]:
        out["fusion_oof"] = {k: metrics["fusion"]["oof"][k] for k in ("roc_auc", "roc_auc_ci")}
        out["fusion_locked_test"] = tested["fusion"]["roc_auc"]
        out["fusion_method"] = metrics["fusion"]["method"]
    if config.split.group_duplicates and len(cohort.images):
        out["image_oof_within_largest_groups"] = _within_largest_groups(config, cohort, run)
    out["at_decision_threshold"] = _threshold_metrics(test, tested["threshold"], config.seed)
    out["at_risk_0_5"] = _threshold_metrics(test, 0.5, config.seed)
    print(name, label or mode, json.dumps(out), flush=True)
    return out


def demo_times(work: Path, modes: list[str]) -> dict[str, Any]:
    """`deeppcos demo --image-mode M` as a user runs it (a fresh process, a fresh folder)."""
    out = {}
    for mode in modes:
        folder = work / f"demo-{mode}"
        cache = work / f"demo-cache-{mode}"
        env = {**os.environ, "DEEPPCOS_CACHE": str(cache)}
        start = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "deeppcos"), "demo", "--out", str(folder),
             "--image-mode", mode],
            check=True, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = round(time.perf_counter() - start, 1)
        metrics = Run(folder / "run").metrics().to_json()
        tested = json.loads((folder / "run" / "evaluation" / "metrics.json").read_text())
        out[mode] = {
            "seconds": seconds,
            "image_oof_roc_auc": metrics["branches"]["image"]["oof"]["roc_auc"],
            "image_locked_test_roc_auc": tested["branches"]["image"]["roc_auc"],
            "fusion_locked_test_roc_auc": tested["fusion"]["roc_auc"]["value"],
        }
        print("demo", mode, json.dumps(out[mode]), flush=True)
    return out


def throughput(work: Path, name: str = "pcosgen", n: int = 1000) -> dict[str, Any]:
    """Images per second: embed_table from files (uncached, then cached) against
    model.predict on the same preprocessed images held in memory."""
    import keras

    from deeppcos.image import ImageParams, frozen
    from deeppcos.image.backbones import build_model
    from deeppcos.image.pipeline import images_of, inference_dataset, table_from

    cohort = cohort_for(load_config(REPO / "configs" / f"{name}.yaml"))
    table = table_from(images_of(cohort, None).head(n))
    out: dict[str, Any] = {"cohort": name, "images": len(table)}
    for size in (128, FROZEN_SIZE):
        params = ImageParams(**{**MODE_PARAMS["frozen"], "image_size": size})
        model, embedding = build_model("mobilenet", size, "imagenet", width=0.25)
        embedder = keras.Model(model.input, model.get_layer(embedding).output)
        key = frozen.EmbeddingKey(
            "mobilenet", 0.25, "bench", params.preprocess.model_dump_json(), 1
        )
        cache = frozen.EmbeddingCache(work / f"tp-{size}", key)
        common = {"batch_size": params.batch_size, "tta": 1, "chunk_size": params.chunk_size}
        start = time.perf_counter()
        frozen.embed_table(table, embedder, params.preprocess, cache=cache, **common)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        frozen.embed_table(table, embedder, params.preprocess, cache=cache, **common)
        warm = time.perf_counter() - start
        pixels = np.concatenate(
            [np.asarray(b) for b in inference_dataset(table, params.preprocess, 64)]
        )
        start = time.perf_counter()
        embedder.predict(pixels, batch_size=params.batch_size, verbose=0)
        raw = time.perf_counter() - start
        start = time.perf_counter()
        np.concatenate([np.asarray(b) for b in inference_dataset(table, params.preprocess, 64)])
        decode = time.perf_counter() - start
        out[f"{size}px"] = {
            "embed_table_images_per_s": round(len(table) / cold, 1),
            "raw_predict_in_memory_images_per_s": round(len(table) / raw, 1),
            "decode_and_preprocess_images_per_s": round(len(table) / decode, 1),
            "cached_rerun_seconds": round(warm, 2),
            "cached_rerun_images_per_s": round(len(table) / warm, 1),
        }
        print("throughput", size, json.dumps(out[f"{size}px"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohorts", nargs="+", default=["chestxr8", "pcosgen", "synthetic"])
    parser.add_argument("--modes", nargs="+", default=["scratch", "frozen", "finetune"])
    parser.add_argument(
        "--parts", nargs="+", default=["modes", "random_split", "demo", "throughput"]
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["cpus"] = os.cpu_count()

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "modes" in args.parts:
            for name in args.cohorts:
                for mode in args.modes:
                    results.setdefault(name, {})[mode] = run_mode(name, mode, work)
                    save()
        if "random_split" in args.parts and "pcosgen" in args.cohorts:
            pcosgen = results.setdefault("pcosgen", {})
            pcosgen["config_random_frame_split"] = run_mode(
                "pcosgen", "config", work, "random", group_duplicates=False
            )
            pcosgen["config_2bit_groups"] = run_mode(
                "pcosgen", "config", work, "2bit", near_duplicate_bits=2
            )
            # Every frame, the label-noise groups kept: grouped, and split at random.
            pcosgen["config_all_frames"] = run_mode(
                "pcosgen", "config", work, "all", label_noise="keep"
            )
            pcosgen["config_all_frames_random_frame_split"] = run_mode(
                "pcosgen", "config", work, "all-random", label_noise="keep", group_duplicates=False
            )
            for stale in ("frozen_random_frame_split", "frozen_2bit_groups"):
                results["pcosgen"].pop(stale, None)  # measured with the older config
            save()
        if "demo" in args.parts:
            results["demo"] = demo_times(work, args.modes)
            save()
        if "throughput" in args.parts:
            results["throughput"] = throughput(work)
            save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
