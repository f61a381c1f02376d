"""What a tuning study evaluates: the target's evaluator, built from a job (the config, the
search space, the target), and for the fusion the branches' out-of-fold outputs, computed once
and cached. Shared by the study (:mod:`deeppcos.tuning.study`) and its worker processes
(:mod:`deeppcos.tuning.workers`), which both import it and nothing of each other's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeppcos.config import RunConfig, config_to_dict, load_config
from deeppcos.exceptions import ConfigError
from deeppcos.tuning.objective import (
    BranchEvaluator,
    Evaluator,
    FusionEvaluator,
    load_development,
)
from deeppcos.tuning.spaces import TuningSettings, load_tuning_settings

if TYPE_CHECKING:
    from deeppcos.fusion.stage import FusionInputs
    from deeppcos.tuning.workers import Job

__all__ = ["build_evaluator", "fusion_inputs"]

Progress = Callable[[str, int, int], None]


def build_evaluator(job: Job, progress: Progress | None = None) -> tuple[Evaluator, TuningSettings]:
    """The target's evaluator for ``job`` (loads the cohort; for the fusion, the cached branch
    outputs, computing them first when absent)."""
    settings = load_tuning_settings(job.space)
    config = load_config(job.config)
    seed = settings.study.seed
    dev = load_development(config)
    try:
        if job.target == "fusion":
            inputs = fusion_inputs(config, dev, Path(job.cache) if job.cache else None, progress)
            evaluator: Evaluator = FusionEvaluator(
                config, inputs, settings.fusion, settings.objective, seed
            )
        else:
            spec = getattr(settings, job.target)
            evaluator = BranchEvaluator(
                job.target, dev, spec, settings.objective, seed, job.threads
            )
    except ConfigError as exc:
        source = job.space or "the built-in tuning settings (configs/tuning.yaml)"
        raise ConfigError(f"{source} with config {job.config}: {exc}") from exc
    evaluator.fingerprint = dev.cohort.fingerprint()
    return evaluator, settings


def fusion_inputs(
    config: RunConfig, dev: Any, cache: Path | None, progress: Progress | None
) -> FusionInputs:
    """The branches' out-of-fold outputs for the fusion, cross-validated once and cached in
    ``cache/<key>/`` (key: cohort fingerprint, split and branch settings)."""
    from deeppcos.pipeline.training import collect_fusion_inputs

    key = _inputs_key(config, dev)
    folder = cache / key if cache is not None else None
    if folder is not None and (folder / "manifest.json").is_file():
        return _load_inputs(folder)
    inputs = collect_fusion_inputs(config, dev.cohort, dev.split, dev.groups, progress)
    if folder is not None:
        _save_inputs(inputs, folder)
    return inputs


def _inputs_key(config: RunConfig, dev: Any) -> str:
    data = config_to_dict(config)
    relevant = {k: data.get(k) for k in ("seed", "split", "tabular", "image")}
    relevant["cohort"] = dev.cohort.fingerprint()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _save_inputs(inputs: FusionInputs, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    inputs.oof.to_parquet(folder / "oof.parquet")
    if inputs.tabular is not None:
        inputs.tabular.to_parquet(folder / "tabular.parquet")
    folds = []
    for i, (fold, frame) in enumerate((inputs.fold_embeddings or {}).items()):
        frame.to_parquet(folder / f"embeddings-{i}.parquet")
        folds.append(fold)
    manifest = {"tabular": inputs.tabular is not None, "folds": folds}
    (folder / "manifest.json").write_text(json.dumps(manifest, default=str), encoding="utf-8")


def _load_inputs(folder: Path) -> FusionInputs:
    import pandas as pd

    from deeppcos.fusion.stage import FusionInputs

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    embeddings = {
        fold: pd.read_parquet(folder / f"embeddings-{i}.parquet")
        for i, fold in enumerate(manifest["folds"])
    }
    return FusionInputs(
        oof=pd.read_parquet(folder / "oof.parquet"),
        tabular=pd.read_parquet(folder / "tabular.parquet") if manifest["tabular"] else None,
        fold_embeddings=embeddings or None,
    )
