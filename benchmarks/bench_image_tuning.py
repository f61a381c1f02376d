"""How much can tuning a frozen-embedding image branch gain? Written to
benchmarks/results/image_tuning.json.

    .venv/bin/python benchmarks/bench_image_tuning.py [--configs chestxr8 pcosgen]

For each config (its image branch in ``mode: frozen``): every patient (development and locked
test parts together, as the table's ceiling in bench_tuning.py; the groups the config sets
aside as label noise left out) is split into patient-grouped,
label-stratified outer folds — 2 assignments × 5 folds, duplicate-image groups kept whole, with
the config's own near-duplicate threshold — and every point of the space of
``configs/tuning-image-frozen.yaml`` on a grid (head_c × image size × views) is trained on each
outer training part as ``deeppcos train`` trains the branch (``fit_head`` on every training
image's cached embedding; a patient's probability is the mean of her images') and scored on
the outer test fold (patient-level ROC AUC).

* ``ceiling``: each point's mean fold AUC and its paired difference to the config's default,
  and the best point chosen *by the outer test folds themselves* — an oracle no tuner has.
* ``nested``: a tuner inside each outer training part — every grid point cross-validated on 5
  inner grouped folds (an exhaustive search of this small space, stronger than a sampler), the
  best kept only if its mean paired gain over the default exceeds 2 standard errors (the rule
  of ``deeppcos tune``) — then scored on the outer test fold.

Embeddings are computed once per image size and view count (the frozen-mode cache) and held in
memory; the heads are what is searched.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from deeppcos.config import load_config
from deeppcos.image import ImageBranch, ImageParams, frozen
from deeppcos.image.pipeline import image_labels, images_of, table_from
from deeppcos.pipeline.training import cohort_for, development_split, resolve_branch_params
from deeppcos.stats import weighted_auc

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "image_tuning.json"
HEAD_C = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
SIZES = (128, 160, 224)
VIEWS = (1, 2)
OUTER_SEEDS = (0, 1)
FOLDS = 5
MIN_GAIN_SE = 2.0


def _frozen_params(config: Any) -> Any:
    """The config's image parameters in frozen mode (MobileNet v1 at width 0.25 with ImageNet
    weights, 224 px, as benchmarks/bench_image_modes.py, when the config trains another way)."""
    params = resolve_branch_params(config)["image"]
    if params.frozen:
        return params
    frozen_mode = {"backbone": "mobilenet", "width": 0.25, "weights": "imagenet"}
    return ImageParams(
        **frozen_mode, mode="frozen", image_size=224, preprocess=params.preprocess.model_dump()
    )


def _embeddings(config: Any, cohort: Any, images: pd.DataFrame, cache: Path) -> dict:
    """(size, views) -> per-image embedding matrix, through the frozen-mode cache."""
    base = _frozen_params(config)
    table = table_from(images)
    out = {}
    for size, views in itertools.product(SIZES, VIEWS):
        params = base.model_copy(update={"image_size": size, "tta": views})
        params = type(base).model_validate({**params.model_dump(), "embedding_cache": str(cache)})
        branch = ImageBranch(params)
        branch.embedding_key_ = branch.embedding_key()
        from deeppcos.image.backbones import build_model

        # The config's pooling too (pool_grid, pool_layers): the cache key names it, and a
        # model built without it would embed something else under that key.
        branch.model_, branch.embedding_layer_name_ = build_model(
            params.backbone, size, params.weights, width=params.width, **params.pooling
        )
        start = time.perf_counter()
        out[(size, views)] = branch._embed(table)
        print(f"embedded {len(table)} images at {size} px, {views} view(s) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    return out


def _patient_auc(
    x: np.ndarray, y_img: np.ndarray, pid: np.ndarray, train: np.ndarray, test: np.ndarray,
    c: float, y_patient: pd.Series,
) -> float:  # fmt: skip
    """Train the head on the training patients' images; patient-level AUC on the test ones."""
    weights, bias = frozen.fit_head(x[train], y_img[train], c, balanced=True)
    p = frozen.head_probability(x[test], weights, bias)
    per_patient = pd.Series(p).groupby(pid[test]).mean()
    return weighted_auc(y_patient.reindex(per_patient.index).to_numpy(), per_patient.to_numpy())


def _folds(patients: pd.DataFrame, groups: pd.Series, seed: int, k: int) -> list:
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    ids = patients["patient_id"].astype(str).to_numpy()
    y = patients["label"].astype(int).to_numpy()
    g = groups.reindex(ids).astype(str).to_numpy()
    return [(ids[a], ids[b]) for a, b in splitter.split(ids, y, g)]


def bench(name: str, work: Path) -> dict[str, Any]:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    cohort = cohort_for(config)
    # The config's duplicate groups, and its label-noise groups left out (split.label_noise).
    split, groups = development_split(config, cohort)
    usable = cohort.patients["label"].notna() & ~cohort.patients["patient_id"].astype(str).isin(
        split.set_aside_ids
    )
    patients = cohort.patients[usable].reset_index(drop=True)
    images = images_of(cohort, patients["patient_id"].tolist())
    labels = image_labels(cohort, images)
    images, labels = images[labels.notna()], labels[labels.notna()]
    pid = images["patient_id"].astype(str).to_numpy()
    y_img = labels.to_numpy()
    y_patient = patients.set_index(patients["patient_id"].astype(str))["label"].astype(float)
    embeddings = _embeddings(config, cohort, images, work / "cache")
    base = _frozen_params(config)
    default = (base.head_c, base.image_size, base.tta)
    grid = list(itertools.product(HEAD_C, SIZES, VIEWS))
    if default not in grid:
        grid.append(default)

    def score(point: tuple, train_ids: np.ndarray, test_ids: np.ndarray) -> float:
        c, size, views = point
        train, test = np.isin(pid, train_ids), np.isin(pid, test_ids)
        return _patient_auc(embeddings[(size, views)], y_img, pid, train, test, c, y_patient)

    outer = [f for seed in OUTER_SEEDS for f in _folds(patients, groups, seed, FOLDS)]
    table = pd.DataFrame(
        [[score(point, tr, te) for tr, te in outer] for point in grid],
        index=pd.MultiIndex.from_tuples(grid, names=["head_c", "image_size", "views"]),
    )
    gains = table.sub(table.loc[default], axis=1)
    oracle = table.mean(axis=1).idxmax()
    nested = []
    for k, (train_ids, test_ids) in enumerate(outer):
        inner_patients = patients[patients["patient_id"].astype(str).isin(train_ids)]
        inner = _folds(inner_patients.reset_index(drop=True), groups, 100 + k, FOLDS)
        inner_scores = pd.DataFrame(
            [[score(point, tr, te) for tr, te in inner] for point in grid], index=table.index
        )
        best = inner_scores.mean(axis=1).idxmax()
        d = (inner_scores.loc[best] - inner_scores.loc[default]).to_numpy()
        se = d.std(ddof=1) / math.sqrt(len(d))
        chosen = best if d.mean() > MIN_GAIN_SE * se else default
        nested.append(
            {
                "outer_fold": k,
                "inner_best": _plain(best),
                "inner_gain": round(float(d.mean()), 4),
                "inner_se": round(float(se), 4),
                "chosen": _plain(chosen),
                "kept_default": chosen == default,
                "outer_auc_default": round(float(table.loc[default].iloc[k]), 4),
                "outer_auc_tuned": round(float(score(chosen, train_ids, test_ids)), 4),
            }
        )
        print(name, json.dumps(nested[-1]), flush=True)
    tuned = np.array([n["outer_auc_tuned"] for n in nested])
    own = table.loc[default].to_numpy()
    return {
        "patients": len(patients),
        "images": len(images),
        "outer_folds": len(outer),
        "default": {"head_c": default[0], "image_size": default[1], "views": default[2]},
        "pooling": base.pooling,
        "patients_set_aside_as_label_noise": len(split.set_aside_ids),
        "default_mean_fold_auc": round(float(own.mean()), 4),
        "default_fold_auc_sd": round(float(own.std(ddof=1)), 4),
        "grid": [
            {
                "head_c": c,
                "image_size": s,
                "views": v,
                "mean_fold_auc": round(float(table.loc[(c, s, v)].mean()), 4),
                "mean_gain": round(float(gains.loc[(c, s, v)].mean()), 4),
                "folds_ahead": int((gains.loc[(c, s, v)] > 0).sum()),
            }
            for c, s, v in grid
        ],
        "oracle": {
            "point": _plain(oracle),
            "mean_gain_per_fold": round(float(gains.loc[oracle].mean()), 4),
            "folds_ahead": int((gains.loc[oracle] > 0).sum()),
        },
        "nested": {
            "folds": nested,
            "mean_gain_per_fold": round(float((tuned - own).mean()), 4),
            "kept_default": sum(n["kept_default"] for n in nested),
        },
    }


def _plain(point: tuple) -> list:
    """A grid point as JSON-ready numbers (pandas hands back numpy scalars)."""
    return [v.item() if hasattr(v, "item") else v for v in point]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=["chestxr8", "pcosgen"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["cpus"] = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            start = time.perf_counter()
            results[name] = bench(name, Path(tmp))
            results[name]["seconds"] = round(time.perf_counter() - start, 1)
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
