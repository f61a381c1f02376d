"""The service under bad input and load: what a careless or hostile client sends must get a 4xx
that names the field, never a 500 or a dropped connection; concurrent requests are batched
without mixing patients up; a long explanation does not hold up short predictions."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from deeppcos.inference.microbatch import MicroBatcher
from deeppcos.inference.request_batch import merge_requests, split_predictions
from deeppcos.inference.serve import ServiceLimits, create_app
from deeppcos.knowledge.catalog import CATALOG

KEY = "k" * 24


@pytest.fixture(scope="module")
def client(tabular_run: Path) -> TestClient:
    return TestClient(create_app(tabular_run), raise_server_exceptions=False)


def _features(run: Path) -> tuple[str, dict[str, float]]:
    table = pd.read_csv(run.parent / "cohort" / "patients.csv").head(1)
    row = table.drop(columns=["pcos", "severity", "site"]).iloc[0]
    pid = str(row.pop("patient_id"))
    return pid, {k: float(v) for k, v in row.items() if pd.notna(v)}


# --- numbers JSON cannot carry ----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, raw: str) -> None:
    body = '{"patients": [{"patient_id": "a", "features": {"amh_ng_ml": RAW}}]}'.replace("RAW", raw)
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]  # the error body is valid JSON (no bare NaN)
    assert detail[0]["loc"][-1] == "amh_ng_ml"
    assert "finite" in detail[0]["msg"]


def test_non_finite_window_is_422(client: TestClient) -> None:
    body = '{"fhir": {"resourceType": "Bundle"}, "fhir_window_days": NaN}'
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "fhir_window_days"


def test_a_boolean_is_not_a_measurement(client: TestClient) -> None:
    body = {"patients": [{"patient_id": "a", "features": {"acne": True}}]}
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == "acne" and "boolean" in detail["msg"]


def test_a_feature_the_model_does_not_use_is_reported(client: TestClient, tabular_run) -> None:
    pid, features = _features(tabular_run)
    features.pop("pulse_rate_bpm", None)
    plain = client.post("/predict", json={"patients": [{"patient_id": pid, "features": features}]})
    extra = {**features, "pulse_rate_bpm": 72.0}
    sent = client.post("/predict", json={"patients": [{"patient_id": pid, "features": extra}]})
    assert sent.status_code == 200
    notes = [e for e in sent.json()["report"] if e["action"] == "dropped_column"]
    assert len(notes) == 1 and "pulse_rate_bpm" in notes[0]["message"]
    assert sent.json()["predictions"] == plain.json()["predictions"]  # and it changed nothing


# --- the key, before anything else ------------------------------------------------------------


def test_the_key_is_checked_before_the_body_is_read(tabular_run: Path) -> None:
    keyed = TestClient(create_app(tabular_run, api_key=KEY))
    broken = keyed.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 401  # not 422: an unauthenticated body is never parsed
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert keyed.get(path).status_code == 401, path
    assert keyed.get("/openapi.json", headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.get("/health").status_code == 200


# --- micro-batching ---------------------------------------------------------------------------


def test_a_merged_batch_scores_each_request_as_alone(tabular_run: Path) -> None:
    """Two requests using the same patient id for different patients get their own rows."""
    from contextlib import ExitStack

    from deeppcos.inference.serve import PredictRequest, _request_cohort

    app = create_app(tabular_run)
    service = app.state.service
    table = pd.read_csv(tabular_run.parent / "cohort" / "patients.csv").head(6)
    table = table.drop(columns=["pcos", "severity", "site"])
    requests = []
    for start in (0, 3):
        rows = table.iloc[start : start + 3]
        patients = [
            {
                "patient_id": f"P{i}",  # the same ids in both requests
                "features": {k: float(v) for k, v in row.items() if k != "patient_id" and v == v},
            }
            for i, (_, row) in enumerate(rows.iterrows())
        ]
        requests.append(PredictRequest.model_validate({"patients": patients}))
    cohorts = [_request_cohort(service, r, ExitStack()) for r in requests]
    alone = [service.predictor.predict(c) for c in cohorts]
    spec = cohorts[0].spec
    merged, parts = merge_requests(cohorts, service.inputs, spec)
    together = split_predictions(service.predictor.predict(merged), parts)
    for own, batched in zip(alone, together, strict=True):
        pd.testing.assert_frame_equal(
            pd.DataFrame(own.to_dict("records")), pd.DataFrame(batched), check_dtype=False
        )
    assert not np.allclose(alone[0]["risk"], alone[1]["risk"])  # different patients


def test_the_batcher_groups_concurrent_jobs_and_isolates_a_failure() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def score(items):
        seen.append(list(items))
        if len(seen) == 1:
            release.wait(5)  # hold the first batch so the others queue behind it
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(score, max_wait_s=0.05)
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            results[i] = batcher.submit(i)
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(0,))]
    threads[0].start()
    time.sleep(0.2)  # the first job is being scored
    for i in (1, 2, -1, 3):
        threads.append(threading.Thread(target=call, args=(i,)))
        threads[-1].start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(5)
    batcher.close()
    assert results[0] == 0 and results[1] == 10 and results[2] == 20 and results[3] == 30
    assert isinstance(results[-1], ValueError)
    assert sorted(seen[1]) == [-1, 1, 2, 3]  # the four waiting jobs went in one batch
    assert [-1] in seen  # which failed, then was scored alone


def test_the_scorer_does_not_wait_when_no_request_is_on_its_way() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: list(items), max_wait_s=5.0)
    start = time.perf_counter()
    assert batcher.submit(7) == 7
    assert time.perf_counter() - start < 1.0  # not the 5 s bound
    batcher.close()


# --- explanations beside predictions ----------------------------------------------------------


def test_explanations_are_limited_per_request(tabular_run: Path) -> None:
    pytest.importorskip("shap")
    limited = TestClient(create_app(tabular_run, limits=ServiceLimits(max_explained_patients=1)))
    pid, features = _features(tabular_run)
    patients = [
        {"patient_id": pid, "features": features},
        {"patient_id": pid + "-b", "features": features},
    ]
    response = limited.post("/predict", json={"patients": patients, "explain": True})
    assert response.status_code == 422
    assert "at most 1 patients" in json.dumps(response.json())
    ok = limited.post("/predict", json={"patients": patients})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


def test_a_long_explanation_does_not_block_predictions(tabular_run: Path) -> None:
    pytest.importorskip("shap")
    app = create_app(tabular_run)
    service = app.state.service
    client = TestClient(app)
    pid, features = _features(tabular_run)
    body = {"patients": [{"patient_id": pid, "features": features}]}
    assert client.post("/predict", json=body).status_code == 200
    with service.explain_lock:  # an explanation in progress, for as long as this block runs
        start = time.perf_counter()
        response = client.post("/predict", json=body)
        waited = time.perf_counter() - start
    assert response.status_code == 200 and waited < 2.0


# --- crafted UCUM units -----------------------------------------------------------------------

CRAFTED_UNITS = ["10*999.[IU]/L", "[IU]/L999999999", "10*" + "9" * 5000]


def _bundle_with_unit(unit: str) -> dict:
    from tests.conftest import REPO

    bundle = json.loads((REPO / "tests" / "data" / "fhir" / "two_patients.json").read_text())
    for entry in bundle["entry"]:
        quantity = entry["resource"].get("valueQuantity")
        if quantity is not None:
            quantity["unit"] = quantity["code"] = unit
            break
    return bundle


@pytest.mark.parametrize("unit", CRAFTED_UNITS, ids=["power-999", "glued-digits", "5000-digits"])
def test_crafted_units_in_a_bundle_never_give_500(client: TestClient, unit: str) -> None:
    response = client.post("/predict", json={"fhir": _bundle_with_unit(unit)})
    assert response.status_code in (200, 422), response.text[:300]
    text = json.dumps(response.json())
    assert "entry[" in text  # the bundle entry is named, in the report or the error
    if response.status_code == 200:
        notes = [e for e in response.json()["report"] if "unit" in e["message"].lower()]
        assert notes, response.json()["report"]


def test_crafted_units_give_the_cli_a_message_not_a_traceback(tabular_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from deeppcos.cli import app as cli_app

    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(_bundle_with_unit(CRAFTED_UNITS[2])))
    result = CliRunner().invoke(
        cli_app,
        ["predict", str(tabular_run), "--fhir", str(bundle), "--out", str(tmp_path / "p.csv")],
    )
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


def test_a_dead_explanation_process_is_a_503_and_is_replaced(tabular_run: Path) -> None:
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from fastapi import HTTPException

    service = create_app(tabular_run).state.service
    broken = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    with pytest.raises(BrokenProcessPool):
        broken.submit(os._exit, 1).result()
    service._explainer_process = broken
    with pytest.raises(HTTPException) as error:
        service.explain(None)
    assert error.value.status_code == 503 and service._explainer_process is None


def test_labs_only_requests_merged_as_rows_score_as_alone(tabular_run: Path) -> None:
    """The service's labs-only path: requests kept as checked matrices and stacked into one
    model call give each request what scoring it alone gives, whatever features each sent (one
    lacks some, one sends an input the model ignores, one a value out of range)."""
    from deeppcos.inference.request_batch import RequestRows
    from deeppcos.inference.serve import PredictRequest, _json_rows

    service = create_app(tabular_run).state.service
    table = pd.read_csv(tabular_run.parent / "cohort" / "patients.csv").head(7)
    labs = table.drop(columns=["pcos", "severity", "site"]).set_index("patient_id")
    first = labs.iloc[:3].drop(columns=["amh_ng_ml", "bmi_kg_m2"])  # fewer features
    bodies = [
        [
            {"patient_id": f"P{i}", "features": row.dropna().to_dict()}
            for i, (_, row) in enumerate(part.iterrows())
        ]
        for part in (first, labs.iloc[3:5], labs.iloc[5:7])
    ]
    bodies[1][0]["features"]["fsh_iu_l"] = 5052.0  # out of range: reported, scored missing
    extra = next(n for n, f in CATALOG.items() if n not in service.accepted and f.plausible)
    low, high = CATALOG[extra].plausible
    bodies[2][1]["features"][extra] = (low + high) / 2  # not a model input: reported, ignored
    requests = [
        _json_rows(service, PredictRequest.model_validate({"patients": body}).patients)
        for body in bodies
    ]
    assert all(isinstance(r, RequestRows) for r in requests)
    assert [e.action for e in requests[1].report] == ["out_of_range"]
    assert [e.action for e in requests[2].report] == ["dropped_column"]
    assert np.isnan(requests[1].values[0, requests[1].numeric.index("fsh_iu_l")])
    alone = [service.predictor.predict(r.cohort()) for r in requests]
    together = service._score_batch(requests)
    for own, batched in zip(alone, together, strict=True):
        pd.testing.assert_frame_equal(
            pd.DataFrame(own.to_dict("records")), pd.DataFrame(batched), check_dtype=False
        )
    # A batch that also holds a cohort (a request with images or FHIR) is merged frame by frame.
    mixed, parts = merge_requests(
        [requests[0], requests[2].cohort()], service.inputs, service.batch_spec
    )
    rows = split_predictions(service.predictor.predict(mixed), parts)
    pd.testing.assert_frame_equal(pd.DataFrame(rows[1]), pd.DataFrame(together[2]))


def test_split_predictions_gives_what_to_dict_gives() -> None:
    frame = pd.DataFrame(
        {
            "patient_id": ["0/a", "0/b"],
            "risk": [0.25, np.nan],
            "decision": pd.array([True, None], dtype="boolean"),
            "severity": pd.Categorical(["mild", None]),
            "note": pd.array([None, "x"], dtype="string"),
        }
    )
    (records,) = split_predictions(frame, [["a", "b"]])
    expected = frame.assign(patient_id=["a", "b"]).to_dict("records")
    assert str(records) == str(expected)
    assert records[1]["decision"] is None and records[0]["note"] is None
