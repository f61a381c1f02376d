"""The cohort's own words (issue 18 §6): reports, pages, plot labels and model cards name the
cohort's label (``label_name``) and its images (``image_modality``); the Rotterdam checklist
appears only for a PCOS cohort; under intermediate fusion the images' share is said in words
not to be the image model's opinion; a run trained before the keys existed reads as PCOS.

The non-PCOS run is the session's tiny run copied with its records saying 'cardiomegaly' and
'chest X-ray' (the words come from the run's metrics.json, as they do for a real chest X-ray
run), so nothing is trained here but one small intermediate-fusion booster.
"""

from __future__ import annotations

import dataclasses
import html as htmllib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from deeppcos.explain.patient import PatientExplanation, explain_patient
from deeppcos.explain.report import _pdf_page_images, _pdf_page_one, _pdf_page_text, render_html
from deeppcos.explain.wording import CohortWords, run_words
from deeppcos.runs.reader import Run

CHEST = {"label_name": "cardiomegaly", "pcos": False, "image_modality": "chest X-ray"}
NEW_KEYS = ("pcos", "image_modality")
PCOS_ONLY = ("ultrasound", "rotterdam", "scan", "phenotype", "follicle")


def _copy_run(run_dir: Path, folder: Path, update: dict[str, Any], drop: tuple = ()) -> Path:
    """The run folder copied, its metrics.json and cohort.json rewritten."""
    copy = folder / "run"
    shutil.copytree(run_dir, copy)
    for name in ("metrics.json", "cohort.json"):
        path = copy / name
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in drop:
            data.pop(key, None)
        data.update(update)
        path.write_text(json.dumps(data), encoding="utf-8")
    return copy


def visible_text(page: str) -> str:
    """What a reader sees of an HTML report: no tags, no styles, no base64 images."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"<img[^>]*>", " ", page)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", page))


def says_pcos(text: str) -> bool:
    """'PCOS' as a word ('deeppcos', the tool's name, is not)."""
    return re.search(r"\bpcos\b", text, flags=re.I) is not None


def pdf_text(expl: PatientExplanation) -> str:
    """Every string drawn on the PDF's three pages: figure texts, titles, labels, ticks."""
    parts: list[str] = []
    for figure in (_pdf_page_one(expl, 8), _pdf_page_images(expl), _pdf_page_text(expl)):
        parts += [t.get_text() for t in figure.texts]
        for axes in figure.axes:
            parts += [axes.get_title(), axes.get_xlabel(), axes.get_ylabel()]
            parts += [t.get_text() for t in axes.get_yticklabels() + axes.texts]
    return "\n".join(parts)


def _patient(cohort: Any, predictor: Any) -> str:
    """A patient with labs and images."""
    with_images = set(cohort.images["patient_id"].astype(str))
    scored = predictor.branches["tabular"].predict_proba(cohort).dropna().index
    return sorted(with_images & {str(i) for i in scored})[0]


@pytest.fixture(scope="module")
def patient(cohort: Any, predictor: Any) -> str:
    return _patient(cohort, predictor)


@pytest.fixture(scope="module")
def chest_run(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_run(run_dir, tmp_path_factory.mktemp("chest_words"), CHEST)


@pytest.fixture(scope="module")
def chest_predictor(predictor: Any, chest_run: Path) -> Any:
    """The session's models, read as the run at ``chest_run`` (only its records differ)."""
    return _as_run(predictor, chest_run)


def _as_run(predictor: Any, run: Path) -> Any:
    """``predictor`` with the records of the run folder ``run`` (as load_run reads them)."""
    folder = Run(run)
    return dataclasses.replace(
        predictor, run=run, metrics=folder.metrics(), cohort_summary=folder.cohort_summary()
    )


@pytest.fixture(scope="module")
def chest(chest_predictor: Any, cohort: Any, patient: str) -> PatientExplanation:
    return explain_patient(chest_predictor, patient, cohort, max_images=1)


@pytest.fixture(scope="module")
def pcos(predictor: Any, cohort: Any, patient: str) -> PatientExplanation:
    return explain_patient(predictor, patient, cohort, max_images=1)


def test_words_come_from_the_run_with_pcos_defaults(tmp_path: Path) -> None:
    assert run_words(tmp_path) == CohortWords() == CohortWords("pcos", True, "ultrasound")
    (tmp_path / "metrics.json").write_text(json.dumps(CHEST), encoding="utf-8")
    words = run_words(tmp_path)
    assert (words.label, words.no_label, words.pcos) == ("cardiomegaly", "no cardiomegaly", False)
    assert (words.images, words.images_title) == ("chest X-ray images", "Chest X-ray images")
    # A run trained before pcos/image_modality were recorded: PCOS defaults from label_name.
    old = CohortWords.from_record({"label_name": "pcos"})
    assert (old.pcos, old.images, old.label) == (True, "ultrasound images", "PCOS")
    other = CohortWords.from_record({"label_name": "any_finding"})
    assert (other.pcos, other.images, other.label, other.no_label) == (
        False,
        "images",
        "any finding",
        "no finding",
    )
    frames = CohortWords.from_record({"label_name": "unhealthy", "image_modality": "ultrasound"})
    assert (frames.pcos, frames.images) == (False, "ultrasound images")  # PCOSGen: no checklist


def test_a_chest_xray_report_speaks_its_own_words(chest: PatientExplanation) -> None:
    assert chest.words == CohortWords(**CHEST)
    assert chest.criteria is None  # no Rotterdam checklist outside a PCOS cohort
    assert "ultrasound" in chest.shares  # the images' share keeps its key in every format
    text = visible_text(render_html(chest))
    assert "Explanation of a cardiomegaly risk prediction" in text
    assert "Chest X-ray images" in text and "chest X-ray images" in text
    assert "evidence for cardiomegaly" in text
    assert "it does not diagnose cardiomegaly" in text
    lowered = text.lower()
    assert not [w for w in PCOS_ONLY if w in lowered], [w for w in PCOS_ONLY if w in lowered]
    assert not says_pcos(text)
    drawn = pdf_text(chest)
    assert "Chest X-ray images" in drawn and "cardiomegaly" in drawn
    assert not says_pcos(drawn) and "ultrasound" not in drawn.lower()
    assert "rotterdam" not in drawn.lower()
    data = chest.to_dict(images=False)
    assert {k: data[k] for k in CHEST} == CHEST
    words = " ".join([*chest.caveats, chest.modality_summary(), json.dumps(data["severity"])])
    assert not says_pcos(words) and "ultrasound" not in words.lower()


def test_typical_ranges_only_for_a_pcos_cohort(
    chest: PatientExplanation, pcos: PatientExplanation
) -> None:
    """The catalog's typical ranges describe women of reproductive age: not a chest cohort's."""
    assert chest.features and all(f.typical == "" for f in chest.features)
    assert any(f.typical for f in pcos.features)


def test_a_pcos_report_keeps_its_rotterdam_section(pcos: PatientExplanation) -> None:
    assert pcos.words.pcos and pcos.criteria is not None
    text = visible_text(render_html(pcos))
    assert "Rotterdam criteria from the data present" in text
    assert "Ultrasound images" in text and "evidence for PCOS" in text
    assert "Explanation of a PCOS risk prediction" in text
    assert "Rotterdam criteria" in pdf_text(pcos)


def test_an_old_run_without_the_new_keys_reads_as_pcos(
    run_dir: Path, predictor: Any, cohort: Any, patient: str, tmp_path: Path
) -> None:
    old = _copy_run(run_dir, tmp_path / "old", {"label_name": "pcos"}, drop=NEW_KEYS)
    assert "pcos" not in json.loads((old / "metrics.json").read_text(encoding="utf-8"))
    expl = explain_patient(_as_run(predictor, old), patient, cohort, saliency=None)
    assert expl.words == CohortWords() and expl.criteria is not None
    text = visible_text(render_html(expl))
    assert "Rotterdam criteria from the data present" in text and "Ultrasound images" in text
    # An old run of another label: no checklist, images named plainly.
    other = _copy_run(run_dir, tmp_path / "other", {"label_name": "cardiomegaly"}, NEW_KEYS)
    other_predictor = _as_run(predictor, other)
    expl = explain_patient(other_predictor, patient, cohort, saliency=None)
    assert expl.words == CohortWords("cardiomegaly", False, "image") and expl.criteria is None
    text = visible_text(render_html(expl))
    assert "rotterdam" not in text.lower() and "ultrasound" not in text.lower()


def test_intermediate_fusion_says_the_image_share_is_not_the_image_models_opinion(
    chest_predictor: Any, cohort: Any, patient: str, chest: PatientExplanation
) -> None:
    from deeppcos.fusion.intermediate import IntermediateFusion

    ids = [str(i) for i in cohort.patients["patient_id"]]
    tabular = chest_predictor.branches["tabular"].design_matrix(cohort, ids)
    embeddings = chest_predictor.branches["image"].transform(cohort, ids)
    labels = cohort.patients.set_index("patient_id")["label"].reindex(ids)
    fusion = IntermediateFusion(n_components=4, n_estimators=30, early_stopping_rounds=None)
    fusion.fit(tabular, embeddings, labels.to_numpy())
    swapped = dataclasses.replace(chest_predictor, fusion=fusion, fusion_method="intermediate")
    expl = explain_patient(swapped, patient, cohort, saliency=None)
    assert expl.fusion_method == "intermediate" and "ultrasound" in expl.shares
    text = " ".join(visible_text(render_html(expl)).split())
    assert (
        "Under intermediate fusion the chest X-ray images and the tabular data are read by one "
        "model: the bar for the chest X-ray images is how much they moved this patient's score "
        "inside that model, not the image model's own opinion." in text
    )
    assert "separate models' own estimates (not part of this score): image model" in text
    assert expl.to_dict(images=False)["fusion_note"] == expl.fusion_note
    assert "Under intermediate fusion" in pdf_text(expl)
    # Late fusion: the branch outputs are what the fusion combines, and no such note.
    late = " ".join(visible_text(render_html(chest)).split())
    assert "Under intermediate fusion" not in late and chest.fusion_note is None
    assert "each model's own estimate, which the fusion combines: image model" in late


def test_global_view_and_model_card_wording(
    chest_predictor: Any, cohort: Any, tmp_path: Path
) -> None:
    from deeppcos.evaluation.model_card import write_model_card
    from deeppcos.explain.global_view import (
        _importance_figure,
        _shares_figure,
        global_explanation,
    )
    from deeppcos.fusion.routing import missingness_sentence
    from deeppcos.pipeline.evaluate import _severity_limits, intended_use

    view = global_explanation(chest_predictor, cohort, part="test")
    assert view.words == CohortWords(**CHEST)
    assert {k: view.to_dict()[k] for k in CHEST} == CHEST
    importance = _importance_figure(view)
    ticks = [t.get_text() for axes in importance.axes for t in axes.get_yticklabels()]
    assert "Chest X-ray images" in ticks and "Ultrasound images" not in ticks
    shares = _shares_figure(view).axes[0]
    assert shares.get_ylabel().startswith("chest X-ray images")
    legend = [t.get_text() for t in shares.get_legend().get_texts()]
    assert {"cardiomegaly", "no cardiomegaly"} <= set(legend)

    words = CohortWords(**CHEST)
    use = intended_use(words)
    assert "cardiomegaly" in use and "chest X-ray images" in use
    assert not says_pcos(use) and "ultrasound" not in use
    assert "PCOS from ovarian ultrasound" in intended_use()  # a PCOS run's card is unchanged
    limits = " ".join(_severity_limits(chest_predictor, words))
    assert not says_pcos(limits.replace("Rotterdam-criteria labeller", ""))
    card = write_model_card(
        tmp_path / "card.md",
        run_name="chest",
        cohort_summary={},
        provenance="NIH ChestX-ray8 sample",
        intended_use=use,
        metrics={},
        subgroups=[],
        audit_findings=[],
        limits=[],
        label=words.label,
    ).read_text(encoding="utf-8")
    assert "grade cardiomegaly" in card and not says_pcos(card)
    entry = {"with": 50, "without": 10, "positive_share_with": 0.2, "positive_share_without": 0.3}
    entry |= {"fisher_p": 0.5, "informative": False}
    sentence = missingness_sentence("image", entry, "cardiomegaly", noun=words.images)
    assert "no chest X-ray images" in sentence and "ultrasound" not in sentence
    assert "no images:" in missingness_sentence("image", entry, "cardiomegaly")
    assert "no ultrasound images" in missingness_sentence("image", entry, "pcos")


def test_the_dashboards_patient_page_in_chest_words(
    chest_run: Path, patient: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from tests.dashboard.dashboard_helpers import APP, TIMEOUT, no_exception, texts

    monkeypatch.setenv("DEEPPCOS_RUN", str(chest_run))
    before = config.get_option("runner.postScriptGC")
    config.set_option("runner.postScriptGC", False)
    try:
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
        at.switch_page("views/patient.py").run()
        no_exception(at)
        at.selectbox(key="patient_by_id").set_value(patient).run()
        no_exception(at)
        shown = texts(at) + " ".join(str(m.help or "") for m in at.metric)
    finally:
        config.set_option("runner.postScriptGC", before)
    assert "Grad-CAM on the chest X-ray images" in shown
    assert "Colour marks where the image model found evidence for cardiomegaly" in shown
    assert "which the fusion combines" in shown and "Recorded label: **" in shown
    assert "rotterdam" not in shown.lower() and "ultrasound" not in shown.lower()
    body = shown.replace("**deeppcos** · decision support, not a diagnosis", "")
    assert not says_pcos(body), [line for line in body.splitlines() if says_pcos(line)]
