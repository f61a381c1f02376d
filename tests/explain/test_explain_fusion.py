"""Score attribution: exact sums to the scoring model's logit for late and intermediate fusion
and for the single-branch routes; no term for a modality the patient does not have."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap

from deeppcos.explain.fusion import (
    BIAS,
    TABULAR_ADJUSTMENT,
    ULTRASOUND,
    explain_predictions,
    intermediate_attribution,
    late_attribution,
)
from deeppcos.fusion.intermediate import IntermediateFusion
from deeppcos.fusion.late import LateFusion, sigmoid


@pytest.fixture(scope="module")
def explained(predictor: Any, cohort: Any) -> Any:
    return explain_predictions(predictor, cohort)


def test_late_terms_sum_to_the_logit_and_reproduce_predict(
    explained: Any, predictor: Any, cohort: Any
) -> None:
    attribution = explained.attribution
    assert attribution.method == "late"
    scored = attribution.logit.notna()
    np.testing.assert_allclose(attribution.total()[scored], attribution.logit[scored], atol=1e-12)
    expected = predictor.predict(cohort)["probability"].to_numpy()
    both = (explained.predictions["modalities"] == "tabular+image").to_numpy()
    got = sigmoid(attribution.logit.to_numpy())
    np.testing.assert_allclose(got[both], expected[both], atol=1e-12)
    # A single branch's score is its float32 output; its TreeSHAP margin agrees to that precision.
    np.testing.assert_allclose(got[~both], expected[~both], atol=1e-7)
    shares = attribution.modality_shares()
    np.testing.assert_allclose(
        shares[[BIAS, ULTRASOUND, "tabular"]].sum(axis=1, min_count=1)[scored],
        attribution.logit[scored],
        atol=1e-12,
    )


def test_late_feature_terms_are_weight_times_shap(explained: Any, predictor: Any) -> None:
    fusion = predictor.fusion
    weight = fusion.coef_["tabular"]
    attribution = explained.attribution
    both = (explained.predictions["modalities"] == "tabular+image").to_numpy()
    phi = explained.tabular_shap.values
    features = attribution.frame[attribution.features].to_numpy()
    np.testing.assert_allclose(features[both], weight * phi[both], atol=1e-12)
    base = fusion.intercept_ + weight * explained.tabular_shap.base_values
    np.testing.assert_allclose(attribution.frame[BIAS][both], base[both], atol=1e-12)
    # What is left of the tabular term is the float32 rounding of the branch's probability.
    assert attribution.frame[TABULAR_ADJUSTMENT].abs().max() < 1e-4
    terms = fusion.contributions(explained.predictions[["p_tabular", "p_image"]])
    np.testing.assert_allclose(
        attribution.frame[ULTRASOUND][both], terms["image"][both], atol=1e-12
    )


def test_patient_without_labs_is_explained_by_the_image_model_alone(
    explained: Any, predictor: Any
) -> None:
    no_labs = explained.predictions["p_tabular"].isna().to_numpy()
    assert no_labs.any()
    frame = explained.attribution.frame[no_labs]
    assert frame[explained.attribution.features].isna().all().all()  # no tabular share at all
    base = predictor.router.routes["image"].base_rate
    np.testing.assert_allclose(frame[BIAS], np.log(base / (1 - base)))
    p_image = explained.predictions.loc[no_labs, "p_image"].to_numpy()
    np.testing.assert_allclose(
        frame[BIAS] + frame[ULTRASOUND], np.log(p_image / (1 - p_image)), atol=1e-9
    )
    shares = explained.attribution.modality_shares()[no_labs]
    assert shares["tabular"].isna().all() and shares["ultrasound_fraction"].isna().all()


def test_patient_without_images_is_explained_by_the_tabular_model_alone(
    explained: Any,
) -> None:
    no_images = (explained.predictions["modalities"] == "tabular").to_numpy()
    assert no_images.any()
    attribution = explained.attribution
    frame = attribution.frame[no_images]
    assert frame[ULTRASOUND].isna().all()  # no "no scan" term: the absence is not evidence
    phi = explained.tabular_shap.values[no_images]
    np.testing.assert_allclose(frame[attribution.features].to_numpy(), phi, atol=1e-12)
    np.testing.assert_allclose(frame[BIAS], explained.tabular_shap.base_values[no_images])
    p_tabular = explained.predictions.loc[no_images, "p_tabular"].to_numpy()
    np.testing.assert_allclose(
        sigmoid(attribution.logit[no_images].to_numpy()), p_tabular, atol=1e-6
    )
    shares = attribution.modality_shares()[no_images]
    assert shares[ULTRASOUND].isna().all() and shares["ultrasound_fraction"].isna().all()


def test_late_clipping_is_kept_as_an_adjustment() -> None:
    """A branch margin beyond the fusion's ±9.2 cap: the feature shares stay weight × SHAP and
    the adjustment holds what the cap took off, so the sum is still the logit."""
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"p_tabular": rng.uniform(0.05, 0.95, 60), "p_image": np.nan})
    fusion = LateFusion().fit(train, (train["p_tabular"] > 0.5).astype(int))
    margins = np.array([12.0, -1.0])
    values = np.array([[10.0, 2.5], [-0.5, -0.2]])
    base = margins - values.sum(axis=1)
    explanation = shap.Explanation(
        values=values, base_values=base, feature_names=["a", "b"], instance_names=["p1", "p2"]
    )
    outputs = pd.DataFrame(
        {"p_tabular": sigmoid(margins), "p_image": np.nan}, index=pd.Index(["p1", "p2"])
    )
    attribution = late_attribution(fusion, outputs, explanation)
    np.testing.assert_allclose(attribution.total(), attribution.logit, atol=1e-12)
    np.testing.assert_allclose(fusion.decision_function(outputs), attribution.logit, atol=1e-12)
    weight = fusion.coef_["tabular"]
    capped = np.log((1 - 1e-4) / 1e-4)
    adjustment = attribution.frame[TABULAR_ADJUSTMENT].to_numpy()
    assert adjustment[0] == pytest.approx(weight * (capped - 12.0), abs=1e-6)
    assert abs(adjustment[1]) < 1e-9
    np.testing.assert_allclose(attribution.frame[["a", "b"]].to_numpy(), weight * values)


def _tiny_intermediate() -> tuple[IntermediateFusion, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    n = 80
    index = pd.Index([f"p{k}" for k in range(n)], name="patient_id")
    y = rng.integers(0, 2, n)
    tabular = pd.DataFrame(
        {"amh_ng_ml": rng.normal(3 + 2 * y, 1), "lh_iu_l": rng.normal(6, 2, n)}, index=index
    )
    tabular.iloc[:6] = np.nan  # no labs
    embeddings = pd.DataFrame(
        rng.normal(0, 1, (n, 6)) + y[:, None],
        index=index,
        columns=[f"img_emb_{k}" for k in range(6)],
    )
    embeddings.iloc[6:12] = np.nan  # no images
    embeddings.iloc[3] = np.nan  # neither: no prediction
    fusion = IntermediateFusion(n_components=3, n_estimators=40, early_stopping_rounds=None)
    return fusion.fit(tabular, embeddings, y), tabular, embeddings


def test_intermediate_terms_sum_to_the_booster_margin() -> None:
    fusion, tabular, embeddings = _tiny_intermediate()
    attribution = intermediate_attribution(fusion, tabular, embeddings)
    logit = fusion.decision_function(tabular, embeddings)
    np.testing.assert_allclose(attribution.logit, logit)
    assert attribution.frame.loc["p3"].isna().all() and np.isnan(attribution.logit["p3"])
    scored = ~np.isnan(logit)
    np.testing.assert_allclose(attribution.total()[scored], logit[scored], atol=1e-5)
    # "ultrasound" is every image PC's TreeSHAP value, summed.
    x = fusion.design_matrix(tabular, embeddings)
    import xgboost as xgb

    phi = fusion.booster_.predict(
        xgb.DMatrix(x.to_numpy()[scored], feature_names=fusion.feature_names_, missing=np.nan),
        pred_contribs=True,
    )
    np.testing.assert_allclose(
        attribution.frame[ULTRASOUND][scored], phi[:, 2:-1].sum(axis=1), atol=1e-6
    )
    assert attribution.features == ["amh_ng_ml", "lh_iu_l"]
    shares = attribution.modality_shares()
    both = (
        scored & embeddings.notna().all(axis=1).to_numpy() & tabular.notna().any(axis=1).to_numpy()
    )
    np.testing.assert_allclose(
        (shares[BIAS] + shares[ULTRASOUND] + shares["tabular"])[both], logit[both], atol=1e-5
    )


def test_intermediate_through_the_predictor(predictor: Any, cohort: Any, run_dir: Any) -> None:
    """An IntermediateFusion put into the run's predictor (as the lead's predictor loads one
    from a run trained with fusion method 'intermediate')."""
    if "fusion_method" not in {f.name for f in dataclasses.fields(predictor)}:
        pytest.skip("this Predictor has no fusion_method yet (late fusion only)")
    ids = [str(i) for i in cohort.patients["patient_id"]]
    tabular = predictor.branches["tabular"].design_matrix(cohort, ids)
    embeddings = predictor.branches["image"].transform(cohort, ids)
    labels = cohort.patients.set_index("patient_id")["label"].reindex(ids)
    fusion = IntermediateFusion(n_components=4, n_estimators=30, early_stopping_rounds=None)
    fusion.fit(tabular, embeddings, labels.to_numpy())
    swapped = dataclasses.replace(predictor, fusion=fusion, fusion_method="intermediate")
    explained = explain_predictions(swapped, cohort, ids[:30])
    attribution = explained.attribution
    assert attribution.method == "intermediate"
    scored = attribution.logit.notna()
    np.testing.assert_allclose(attribution.total()[scored], attribution.logit[scored], atol=1e-5)
    np.testing.assert_allclose(
        sigmoid(attribution.logit.to_numpy()),
        explained.predictions["probability"].to_numpy(),
        atol=1e-7,  # float32 outputs of the single-branch routes
    )


@pytest.mark.slow
def test_intermediate_run_end_to_end(tmp_path: Any, make_config: Any) -> None:
    """A run trained with intermediate fusion, explained through the loaded predictor."""
    from deeppcos.config import FusionConfig
    from deeppcos.explain.patient import explain_patient
    from deeppcos.explain.report import render_html
    from deeppcos.inference.predictor import load_run
    from deeppcos.pipeline.training import train

    if "method" not in FusionConfig.model_fields:
        pytest.skip("this deeppcos trains late fusion only")
    run = train(make_config(tmp_path, "intermediate"), tmp_path / "run")
    predictor = load_run(run)
    assert predictor.fusion_method == "intermediate"
    cohort = predictor.cohort()
    explained = explain_predictions(predictor, cohort)
    attribution = explained.attribution
    scored = attribution.logit.notna()
    np.testing.assert_allclose(attribution.total()[scored], attribution.logit[scored], atol=1e-5)
    patient = str(cohort.images["patient_id"].iloc[0])
    explanation = explain_patient(predictor, patient, cohort)
    shares = explanation.shares
    assert shares["bias"] + shares.get("ultrasound", 0.0) + shares.get("tabular", 0.0) == (
        pytest.approx(explanation.logit, abs=1e-5)
    )
    assert "intermediate fusion" in render_html(explanation)
