"""deeppcos: multimodal PCOS detection and severity grading from ovarian ultrasound and labs.

The package root stays light (no pandas, TensorFlow or shap on import) so that the command line
answers at once; import what you need from the subpackages, e.g.
``from deeppcos.data import load_cohort``.
"""

from deeppcos._version import __version__

__all__ = ["MultimodalClassifier", "TabularClassifier", "__version__", "load_run"]


def load_run(run):  # -> inference.predictor.Predictor; imported on use: the root stays light
    """Load a run folder into a predictor (see ``deeppcos.inference.predictor``)."""
    from deeppcos.inference.predictor import load_run as _load_run

    return _load_run(run)


def __getattr__(name):  # the estimators, imported on first use (they pull in pandas, sklearn)
    if name in ("MultimodalClassifier", "TabularClassifier"):
        from deeppcos import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'deeppcos' has no attribute {name!r}")
