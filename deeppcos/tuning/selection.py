"""The keep-the-default rule, and the tuned config it produces.

On a few hundred patients, the best of N trials is the maximum of N noisy estimates: its score
is optimistic, and a naive search often "finds" parameters that only suited its own folds (on
the Kaggle table, a plain 30-trial search lost to the default XGBoost under nested evaluation).
So the best trial replaces the run config's own parameters only when its gain is beyond the
noise:

1. the best trial and the default are scored on the same folds with the same model seeds —
   ``confirm_repeats`` fresh repeats of the folds the search never saw (or, with 0, the search's
   own folds, whose scores are stored in each trial) — giving paired per-fold differences
   ``d_i = score(best)_i − score(default)_i`` (sign flipped for metrics to minimise);
2. ``paired_se``: keep the tuned parameters iff ``mean(d) > min_gain_se · sd(d) / √n``;
   ``bootstrap``: iff the 95% bootstrap interval of ``mean(d)`` over folds lies above 0;
   ``best``: always (no protection).

The decision, its figures and its reason are stored in the study's user attributes
(``decision``) and written at the top of the tuned config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from deeppcos.config import load_config
from deeppcos.exceptions import ConfigError
from deeppcos.stats import bootstrap_intervals
from deeppcos.tuning.objective import DEFAULT_ROLE, Evaluator
from deeppcos.tuning.spaces import MAXIMISE, ObjectiveSettings, SelectionSettings

if TYPE_CHECKING:
    import optuna


@dataclass
class Decision:
    """What the rule chose and why (JSON-ready via :meth:`to_dict`)."""

    chosen: str  # "tuned" or "default"
    reason: str
    rule: str
    metric: str
    best_trial: int | None
    default_trial: int | None
    best_value: float | None
    default_value: float | None
    params: dict[str, Any]  # the Optuna params of the chosen trial
    mean_gain: float | None = None
    standard_error: float | None = None
    gain_ci95: list[float] | None = None
    n_folds: int = 0
    folds: str = ""  # "confirmation" or "search"
    fold_gains: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def best_trial(study: optuna.Study, objective: ObjectiveSettings) -> optuna.trial.FrozenTrial:
    """The best complete trial by the primary metric (among the Pareto-optimal ones when there
    are two objectives)."""
    sign = 1.0 if MAXIMISE[objective.primary] else -1.0
    pool = study.best_trials if len(objective.metrics) > 1 else finished_trials(study)
    if not pool:
        raise ConfigError(f"study {study.study_name!r} has no complete trial yet")
    return max(pool, key=lambda t: (sign * t.values[0], -t.number))


def default_trial(
    study: optuna.Study, objective: ObjectiveSettings
) -> optuna.trial.FrozenTrial | None:
    """The best complete default trial (there are two for ``fusion.method: best``)."""
    sign = 1.0 if MAXIMISE[objective.primary] else -1.0
    defaults = [t for t in finished_trials(study) if t.user_attrs.get("role") == DEFAULT_ROLE]
    return max(defaults, key=lambda t: sign * t.values[0]) if defaults else None


def decide(
    study: optuna.Study,
    evaluator: Evaluator,
    selection: SelectionSettings,
    objective: ObjectiveSettings,
) -> Decision:
    """Apply the rule (module notes) to a finished study."""
    best = best_trial(study, objective)
    default = default_trial(study, objective)
    metric = objective.primary
    common = {
        "rule": selection.rule,
        "metric": metric,
        "best_trial": best.number,
        "default_trial": default.number if default else None,
        "best_value": round(best.values[0], 6),
        "default_value": round(default.values[0], 6) if default else None,
    }
    if default is not None and best.number == default.number:
        return Decision(
            "default", "the default was the best trial", params=dict(best.params), **common
        )
    default_params = dict(default.params) if default else evaluator.default_points()[0]
    if selection.rule == "best":
        return Decision(
            "tuned", "rule 'best': the best trial is always taken", params=best.params, **common
        )
    gains, source = _paired_gains(best, default, default_params, evaluator, selection, metric)
    decision = _apply(gains, selection)
    chosen = "tuned" if decision["keep"] else "default"
    return Decision(
        chosen,
        decision["reason"],
        params=dict(best.params if chosen == "tuned" else default_params),
        mean_gain=decision["mean"],
        standard_error=decision["se"],
        gain_ci95=decision["ci"],
        n_folds=len(gains),
        folds=source,
        fold_gains=[round(float(g), 6) for g in gains],
        **common,
    )


def _paired_gains(
    best: optuna.trial.FrozenTrial,
    default: optuna.trial.FrozenTrial | None,
    default_params: dict[str, Any],
    evaluator: Evaluator,
    selection: SelectionSettings,
    metric: str,
) -> tuple[np.ndarray, str]:
    sign = 1.0 if MAXIMISE[metric] else -1.0
    if selection.confirm_repeats > 0:
        folds = evaluator.confirm_folds(selection.confirm_repeats)
        tuned = evaluator.score(dict(best.params), folds)
        base = evaluator.score(default_params, folds)
        source = "confirmation"
    else:
        if default is None:
            base = evaluator.score(default_params, evaluator.search_folds())
        else:
            base = default.user_attrs["fold_metrics"]
        tuned = best.user_attrs["fold_metrics"]
        source = "search"
    pairs = [
        (t[metric], b[metric])
        for t, b in zip(tuned, base, strict=True)
        if t[metric] is not None
        and b[metric] is not None
        and not (math.isnan(t[metric]) or math.isnan(b[metric]))
    ]
    return sign * np.array([t - b for t, b in pairs], dtype=float), source


def _apply(gains: np.ndarray, selection: SelectionSettings) -> dict[str, Any]:
    n = len(gains)
    if n < 2:
        return {
            "keep": False,
            "mean": float(gains.mean()) if n else None,
            "se": None,
            "ci": None,
            "reason": f"only {n} paired fold(s): too few to tell a gain from noise",
        }

    def mean_gain(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean": weights @ gains / weights.sum(axis=1)}

    # Folds resampled by the shared core (seed 0); its jackknife over folds gives the BCa
    # acceleration (leave-one-fold-out means). The mean is its estimate, to the last bit.
    interval = bootstrap_intervals(mean_gain, n, seed=0, n_boot=selection.n_boot)["mean"]
    mean = interval.value
    se = float(gains.std(ddof=1) / math.sqrt(n))
    ci = None if interval.ci is None else [round(c, 6) for c in interval.ci]
    out: dict[str, Any] = {"mean": round(mean, 6), "se": round(se, 6), "ci": ci}
    if selection.rule == "paired_se":
        keep = mean > selection.min_gain_se * se
        verdict = "beyond" if keep else "within"
        out["reason"] = (
            f"mean gain {mean:+.4f} over {n} paired folds is {verdict} "
            f"{selection.min_gain_se:g} standard error(s) ({se:.4f})"
        )
    elif ci is None:
        keep = False
        out["reason"] = f"no 95% bootstrap interval of the mean gain ({n} folds): {interval.note}"
    else:
        keep = ci[0] > 0
        out["reason"] = (
            f"95% bootstrap interval of the mean gain over {n} paired folds is "
            f"{ci[0]:+.4f} to {ci[1]:+.4f}: {'above 0' if keep else 'includes 0 or below'}"
        )
    out["keep"] = keep
    return out


# --- the tuned config -----------------------------------------------------------------------------


def tuned_config(
    config_path: Path | str,
    sections: dict[str, Any],
    decision: Decision,
    out: Path | str,
    study: str,
    storage: str,
) -> Path:
    """Write the input config with ``sections`` merged in (``{"tabular": {"params": {...}}}``,
    ``{"fusion": {"method": m, m: {...}}}``) to ``out``; relative paths keep resolving from the
    input config's folder (``config_dir``). The decision heads the file as comments and is
    summarised in ``description``. Returns ``out``, validated by loading it back."""
    config_path = Path(config_path)
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    raw.setdefault("config_dir", str(config_path.resolve().parent))
    merged = _merge(raw, sections)
    summary = f"tuned by study {study!r}: {decision.chosen} parameters kept ({decision.reason})"
    base = str(raw.get("description", "")).split(" [tuned by study")[0]
    merged["description"] = f"{base} [{summary}]" if base else f"[{summary}]"
    header = [
        f"# Tuned config written by `deeppcos tune` from {config_path}",
        f"# study {study!r} in {storage}",
        f"# decision: {decision.chosen} — {decision.reason}",
        f"# best trial {decision.best_trial} ({decision.metric} {decision.best_value}); "
        f"default trial {decision.default_trial} ({decision.metric} {decision.default_value})",
    ]
    if decision.mean_gain is not None:
        header.append(
            f"# paired gain {decision.mean_gain:+.4f} (SE {decision.standard_error}, 95% CI "
            f"{decision.gain_ci95 or 'not defined'}) over {decision.n_folds} {decision.folds} "
            "folds"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    out.write_text("\n".join(header) + "\n" + text, encoding="utf-8")
    load_config(out)  # a tuned config that does not load is a bug here, not the user's
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
