"""The branch and fusion-method registries: every name a run can hold is registered, a lookup of
an unknown one says which exist, and the fusion a run loads is the registered method's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from deeppcos.branches import BRANCHES, branch_kind
from deeppcos.config import FusionConfig, RunConfig
from deeppcos.exceptions import ConfigError, DeepPCOSError
from deeppcos.fusion.intermediate import IntermediateFusion
from deeppcos.fusion.late import LateFusion
from deeppcos.fusion.stage import FUSION_METHODS, METHODS, FusionMethod, fusion_method
from deeppcos.image.params import ImageParams
from deeppcos.tabular.branch import TabularBranch, TabularParams


def test_every_branch_and_method_is_registered() -> None:
    assert set(BRANCHES) == {"tabular", "image"}
    assert set(FUSION_METHODS) == set(METHODS)
    # Each method has its settings section in the run config, under its own name.
    assert set(FUSION_METHODS) <= set(FusionConfig.model_fields)


def test_branch_kinds_make_what_they_say() -> None:
    tabular = branch_kind("tabular")
    params = tabular.params_model()(n_estimators=5)
    assert isinstance(params, TabularParams)
    assert isinstance(tabular.new(params, 3), TabularBranch)
    assert tabular.early_stops(params) and not tabular.embeds
    image = branch_kind("image")
    assert image.params_model() is ImageParams and image.embeds
    frozen = ImageParams(backbone="mobilenet", width=0.25, weights="imagenet", mode="frozen")
    assert not image.early_stops(frozen)  # a frozen head trains on every training patient
    assert image.early_stops(ImageParams())


def test_fusion_methods_make_their_models() -> None:
    assert isinstance(fusion_method("late").make({"C": 2.0}, 0), LateFusion)
    model = fusion_method("intermediate").make({"n_components": 3}, 0)
    assert isinstance(model, IntermediateFusion) and fusion_method("intermediate").needs_embeddings
    assert not fusion_method("late").needs_embeddings


def test_unknown_names_say_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"unknown branch 'text'; the branches are \['image'"):
        branch_kind("text")
    with pytest.raises(ConfigError, match=r"unknown fusion method 'early'.*'late', 'intermediate'"):
        fusion_method("early")


# --- behaviour chosen by what a kind or method can do, not by its name (issue 17) ---------------


def _fake_method(name: str, needs_embeddings: bool) -> FusionMethod:
    def unused(*args: object) -> Any:
        raise AssertionError("a fake fusion method is never run")

    return FusionMethod(name, needs_embeddings, make=unused, load=unused, oof=unused)


def test_a_new_fusion_method_on_embeddings_is_explained_as_one_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deeppcos.explain.fusion import fusion_method as run_fusion
    from deeppcos.explain.fusion import reads_embeddings
    from deeppcos.explain.patient import fusion_note

    monkeypatch.setitem(FUSION_METHODS, "attention", _fake_method("attention", True))
    monkeypatch.setitem(FUSION_METHODS, "voting", _fake_method("voting", False))
    assert reads_embeddings("attention") and reads_embeddings("intermediate")
    assert not reads_embeddings("voting") and not reads_embeddings("late")
    assert not reads_embeddings(None) and not reads_embeddings("unregistered")
    note = fusion_note("attention")
    assert note is not None and note.startswith("Under attention fusion")
    assert fusion_note("voting") is None and fusion_note("late") is None
    # A run fused by a registered method is explainable; an unregistered one is refused.
    assert run_fusion(SimpleNamespace(fusion_method="attention", run="r")) == "attention"
    with pytest.raises(DeepPCOSError, match="unknown fusion method 'early'"):
        run_fusion(SimpleNamespace(fusion_method="early", run="r"))


def test_training_embeds_every_patient_when_a_method_may_need_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deeppcos.pipeline.training import _wants_intermediate

    def config(method: str, enabled: bool = True) -> RunConfig:
        fusion = {"method": method, "enabled": enabled}
        return RunConfig.model_validate({"name": "x", "synthetic": {}, "fusion": fusion})

    both = ["tabular", "image"]
    assert _wants_intermediate(config("intermediate"), both)
    assert _wants_intermediate(config("best"), both)
    assert not _wants_intermediate(config("late"), both)
    assert not _wants_intermediate(config("best"), ["image"])
    assert not _wants_intermediate(config("best", enabled=False), both)
    # "best" may choose any registered method: without one on embeddings, nothing to embed.
    monkeypatch.delitem(FUSION_METHODS, "intermediate")
    assert not _wants_intermediate(config("best"), both)


def test_branch_kinds_say_what_training_reads_beyond_the_protocol() -> None:
    tabular, image = branch_kind("tabular"), branch_kind("image")
    assert tabular.designs and not image.designs
    assert tabular.fit_progress is None and image.fit_progress is not None
    frozen = ImageParams(backbone="mobilenet", width=0.25, weights="imagenet", mode="frozen")
    assert image.fit_progress(frozen) == "images embedded"
    assert image.fit_progress(ImageParams()) == "epochs"


def test_every_branch_has_a_tuning_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    from deeppcos.tuning.objective import BRANCH_TUNING, branch_tuning

    assert set(BRANCH_TUNING) == set(BRANCHES)
    assert branch_tuning("tabular").threads_param == "n_jobs"
    assert branch_tuning("image").threads_param is None
    # A name that is no branch: the registry's own ConfigError.
    with pytest.raises(ConfigError, match=r"unknown branch 'text'; the branches are \['image'"):
        branch_tuning("text")
    # A registered kind without a strategy says so.
    monkeypatch.setitem(BRANCHES, "text", BRANCHES["tabular"])
    with pytest.raises(ConfigError, match=r"the text branch cannot be tuned; tune one of"):
        branch_tuning("text")


def test_tuning_strategies_check_and_lay_out_steps() -> None:
    from deeppcos.tuning.objective import branch_tuning
    from deeppcos.tuning.spaces import BranchTarget

    rounds = BranchTarget(space={}, report_every_rounds=10)
    branch_tuning("tabular").check(rounds)  # a booster may report every 10 rounds
    with pytest.raises(ConfigError, match=r"image.report_every_rounds: .*set it to 0"):
        branch_tuning("image").check(rounds)
    branch_tuning("image").check(BranchTarget(space={}))
    tabular = branch_tuning("tabular")
    base = {"n_estimators": 40}
    assert tabular.stride(TabularParams, base, {}, 10) == 40 // 10 + 1
    assert tabular.stride(TabularParams, base, {}, 0) == 1  # per-fold reports only
    image = ImageParams()
    epochs = (
        image.max_epochs_compact
        if image.backbone == "compact" and image.weights is None
        else image.epochs_head + image.epochs_finetune
    )
    assert branch_tuning("image").stride(ImageParams, {}, {}, 0) == epochs + 1
