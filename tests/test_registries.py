"""The branch and fusion-method registries: every name a run can hold is registered, a lookup of
an unknown one says which exist, and the fusion a run loads is the registered method's."""

from __future__ import annotations

import pytest

from deeppcos.branches import BRANCHES, branch_kind
from deeppcos.config import FusionConfig
from deeppcos.exceptions import ConfigError
from deeppcos.fusion.intermediate import IntermediateFusion
from deeppcos.fusion.late import LateFusion
from deeppcos.fusion.stage import FUSION_METHODS, METHODS, fusion_method
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
