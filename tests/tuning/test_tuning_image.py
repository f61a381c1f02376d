"""The image target: Optuna's Keras pruning callback under Keras 3, and a tiny CNN search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from deeppcos.tuning import tune
from deeppcos.tuning.objective import keras_pruning_callback
from tests.tuning.conftest import write_config, write_settings


class _Trial:
    """Stands in for an optuna.Trial: records reports, prunes when told."""

    def __init__(self, prune_at: int | None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_at is not None and len(self.reports) >= self.prune_at


def _fit(callback: object, epochs: int) -> None:
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    model.fit(x, y, validation_data=(x, y), epochs=epochs, verbose=0, callbacks=[callback])


def test_keras_pruning_callback_works_with_keras_3() -> None:
    trial = _Trial(prune_at=None)
    callback = keras_pruning_callback(trial, offset=100)  # type: ignore[arg-type]
    _fit(callback, epochs=2)
    _fit(callback, epochs=1)  # a second phase (fit) continues the step count
    assert [s for s, _ in trial.reports] == [100, 101, 102]
    assert all(0.0 <= v <= 1.0 for _, v in trial.reports)

    pruned = _Trial(prune_at=2)
    with pytest.raises(optuna.TrialPruned):
        _fit(keras_pruning_callback(pruned, offset=0), epochs=5)  # type: ignore[arg-type]
    assert len(pruned.reports) == 2
    never = _Trial(prune_at=1)  # the default trial reports but is never pruned
    _fit(keras_pruning_callback(never, offset=0, prunable=False), epochs=3)  # type: ignore[arg-type]
    assert len(never.reports) == 3


@pytest.mark.slow
def test_tiny_image_search(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort, image=True)
    storage = str(tmp_path / "journal.log")
    (result,) = tune(config, "image", 2, space=write_settings(tmp_path), storage=storage)
    study = optuna.load_study(study_name="tiny-image", storage=_journal(storage))
    first = study.trials[0]
    assert first.user_attrs["role"] == "default" and first.params == {"dropout": 0.3}
    assert len(first.user_attrs["fold_metrics"]) == 2
    # per-epoch reports (inner validation AUC) and one per fold, at fixed steps
    stride = 3  # max_epochs_compact 2, plus the fold's own step
    assert {stride - 1, 2 * stride - 1} <= set(first.intermediate_values)
    assert result.tuned_config.is_file()


def _journal(path: str) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))
