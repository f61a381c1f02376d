"""The prediction service: FastAPI's test client, then a real uvicorn server on loopback."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deeppcos.cli import app as cli_app
from deeppcos.exceptions import ConfigError, DataFileError
from deeppcos.inference.serve import ServiceLimits, create_app, resolve_api_key
from tests.conftest import REPO, write_image

FHIR_EXAMPLE = REPO / "tests" / "data" / "fhir" / "two_patients.json"
KEY = "k" * 24


@pytest.fixture(scope="module")
def client(tabular_run: Path) -> TestClient:
    return TestClient(create_app(tabular_run, limits=ServiceLimits(max_request_bytes=400_000)))


def _patients(run: Path, n: int = 5) -> tuple[list[dict], pd.DataFrame]:
    """The first ``n`` synthetic patients as request JSON, and as the table they came from."""
    table = pd.read_csv(run.parent / "cohort" / "patients.csv").head(n)
    features = table.drop(columns=["patient_id", "pcos", "severity", "site"])
    body = [
        {
            "patient_id": pid,
            "features": {k: (None if pd.isna(v) else float(v)) for k, v in row.items()},
        }
        for pid, (_, row) in zip(table["patient_id"], features.iterrows(), strict=True)
    ]
    return body, table


def _png(tmp_path: Path, seed: int = 0) -> str:
    return base64.b64encode(write_image(tmp_path / f"{seed}.png", seed=seed).read_bytes()).decode()


# --- endpoints --------------------------------------------------------------------------------


def test_health_model_and_openapi(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    model = client.get("/model").json()
    assert model["run"]["branches"] == ["tabular"] and 0 < model["run"]["threshold"] < 1
    schema = {f["name"]: f for f in model["input_schema"]["features"]}
    assert schema["amh_ng_ml"]["unit"] == "ng/mL" and schema["amh_ng_ml"]["loinc"] == ["38476-8"]
    assert schema["bmi_kg_m2"]["computed_from"] == ["weight_kg", "height_cm"]
    card = model["model_card"]
    assert 0.5 < card["out_of_fold"]["roc_auc"]["value"] <= 1 and card["out_of_fold"]["n"] > 0
    tabular = card["branches_out_of_fold"]["tabular"]["roc_auc"]
    assert tabular["ci"][0] <= tabular["value"] <= tabular["ci"][1]
    assert card["locked_test"] is None and "not a diagnosis" in card["intended_use"]
    document = client.get("/openapi.json").json()
    assert {"/health", "/model", "/predict"} <= set(document["paths"])
    # The endpoint reads its body raw (for speed): the request model is still documented, and
    # every reference in the document resolves.
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    schemas = document["components"]["schemas"]
    assert {"patients", "fhir", "explain"} <= set(schemas["PredictRequest"]["properties"])
    references = re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document))
    assert set(references) <= set(schemas) and "PatientIn" in references


def test_predict_matches_the_library(client: TestClient, tabular_run: Path) -> None:
    from deeppcos.data.loaders import load_cohort
    from deeppcos.data.spec import spec_from_dict
    from deeppcos.inference.predictor import load_run

    body, table = _patients(tabular_run, 8)
    response = client.post("/predict", json={"patients": body})
    assert response.status_code == 200, response.text
    served = pd.DataFrame(response.json()["predictions"]).set_index("patient_id")
    path = tabular_run.parent / "eight.csv"
    table.drop(columns=["pcos", "severity", "site"]).to_csv(path, index=False)
    spec = spec_from_dict({"name": "x", "patients": {"path": str(path), "label_column": None}})
    direct = load_run(tabular_run).predict(load_cohort(spec)).set_index("patient_id")
    np.testing.assert_allclose(
        served["risk"].astype(float), direct.loc[served.index, "risk"], rtol=1e-12
    )
    assert list(served["modalities"]) == list(direct.loc[served.index, "modalities"])
    assert served["severity"].notna().any()
    assert set(served.iloc[0]["severity_probabilities"]) == {"none", "mild", "moderate", "severe"}


def test_predict_reports_out_of_range_and_scores_empty_patients(client: TestClient) -> None:
    body = {"patients": [{"patient_id": "a", "features": {"fsh_iu_l": 5052}}, {"patient_id": "b"}]}
    result = client.post("/predict", json=body).json()
    assert [p["modalities"] for p in result["predictions"]] == ["none", "none"]
    assert result["predictions"][1]["probability"] is None
    (entry,) = result["report"]
    assert entry["action"] == "out_of_range" and entry["column"] == "fsh_iu_l"


def test_predict_from_a_fhir_bundle(client: TestClient) -> None:
    bundle = json.loads(FHIR_EXAMPLE.read_text())
    result = client.post("/predict", json={"fhir": bundle}).json()
    assert [p["patient_id"] for p in result["predictions"]] == ["p1", "p2"]
    assert all(p["modalities"] == "tabular" for p in result["predictions"])
    actions = {e["action"] for e in result["report"]}
    assert {"converted", "unknown_column"} <= actions


# --- errors name the field ---------------------------------------------------------------------


def _one(**patient) -> dict:
    return {"patients": [{"patient_id": "a", **patient}]}


GIF = base64.b64encode(b"GIF89a..").decode()  # an image, but not a format deeppcos reads


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (_one(features={"lh_iu": 3}), ["patients", 0, "features", "lh_iu"]),
        (_one(features={"lh_iu_l": "x"}), ["patients", 0, "features", "lh_iu_l"]),
        (_one(sex="F"), ["patients", 0, "sex"]),
        ({"patients": [{"patient_id": ""}]}, ["patients", 0, "patient_id"]),
        (_one() | {"fhir": {}}, []),
        (_one(images=[{"data": "@@@"}]), ["patients", 0, "images", 0, "data"]),
        (_one(images=[{"data": GIF}]), ["patients", 0, "images", 0, "data"]),
    ],
)
def test_validation_errors_are_422_naming_the_field(client: TestClient, body, loc) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", *loc]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[]", b'{"patients": [{"patient_id": "a"}]'])
def test_a_body_that_is_not_a_request_is_422(client: TestClient, raw: bytes) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_duplicate_ids_and_malformed_fhir_are_422(client: TestClient) -> None:
    twice = {"patients": [{"patient_id": "a"}, {"patient_id": "a"}]}
    response = client.post("/predict", json=twice)
    assert response.status_code == 422 and "repeats patients[0]" in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "patients", 1, "patient_id"]
    bundle = json.loads(FHIR_EXAMPLE.read_text())
    bundle["entry"][2]["resource"]["valueQuantity"]["value"] = "12,5"
    detail = client.post("/predict", json={"fhir": bundle}).json()["detail"]
    assert detail[0]["loc"] == ["body", "fhir", "entry", 2, "resource", "valueQuantity", "value"]


def test_corrupt_image_is_refused_by_the_image_checks(client: TestClient, tmp_path: Path) -> None:
    good = base64.b64decode(_png(tmp_path))
    truncated = base64.b64encode(good[:40]).decode()  # a PNG signature, then nothing decodable
    body = _one(images=[{"data": _png(tmp_path)}, {"data": truncated}])
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "patients", 0, "images", 1, "data"]
    assert str(tmp_path) not in detail["msg"] and "deeppcos-request" not in detail["msg"]


def test_valid_images_are_accepted(client: TestClient, tmp_path: Path) -> None:
    body = _one(images=[{"data": _png(tmp_path), "side": "left"}])
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["modalities"] == "none"  # tabular-only model


def test_request_size_limits_are_413(client: TestClient, tmp_path: Path) -> None:
    big = _one(features={"lh_iu_l": 1.0}) | {"pad": "x" * 500_000}
    assert client.post("/predict", json=big).status_code == 413  # declared Content-Length

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"patients": [{"patient_id": "a", "features": {}}], "x": "'
        for _ in range(100):
            yield b"y" * 5000
        yield b'"}'

    headers = {"content-type": "application/json"}
    response = client.post("/predict", content=chunks(), headers=headers)
    assert response.status_code == 413


def test_more_patients_than_the_limit_is_422(tabular_run: Path) -> None:
    limited = TestClient(create_app(tabular_run, limits=ServiceLimits(max_patients=2)))
    body, _ = _patients(tabular_run, 3)
    response = limited.post("/predict", json={"patients": body})
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "patients"] and "at most 2 patients" in detail["msg"]
    assert limited.post("/predict", json={"patients": body[:2]}).status_code == 200


def test_image_over_its_own_limit_is_413(tabular_run: Path, tmp_path: Path) -> None:
    small = TestClient(create_app(tabular_run, limits=ServiceLimits(max_image_bytes=1000)))
    image = write_image(tmp_path / "big.png", size=(200, 200))
    body = _one(images=[{"data": base64.b64encode(image.read_bytes()).decode()}])
    response = small.post("/predict", json=body)
    assert response.status_code == 413 and "patients.0.images.0.data" in response.text


def test_explain_returns_the_explanation_or_501(client: TestClient, tabular_run: Path) -> None:
    body, _ = _patients(tabular_run, 1)
    response = client.post("/predict", json={"patients": body, "explain": True})
    try:
        import deeppcos.explain.patient  # noqa: F401
    except ImportError:
        assert response.status_code == 501 and "explanations are not available" in response.text
        return
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    explanation = prediction["explanation"]
    assert explanation["patient_id"] == body[0]["patient_id"]
    assert explanation["prediction"]["risk"] == pytest.approx(prediction["risk"])


# --- the API key ------------------------------------------------------------------------------


def test_api_key_is_required_when_configured(tabular_run: Path) -> None:
    keyed = TestClient(create_app(tabular_run, api_key=KEY))
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/model").status_code == 401
    assert keyed.get("/model", headers={"X-API-Key": "wrong" * 5}).status_code == 401
    assert keyed.get("/model", headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.post("/predict", json={"patients": [{"patient_id": "a"}]}).status_code == 401
    schema = keyed.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    security = schema["components"]["securitySchemes"]
    assert any(s.get("name") == "X-API-Key" for s in security.values())


def test_binding_beyond_loopback_needs_a_key() -> None:
    assert resolve_api_key("127.0.0.1", None, environ={}) is None
    assert resolve_api_key("::1", None, environ={}) is None
    for host in ("0.0.0.0", "10.1.2.3", "example.org"):
        with pytest.raises(ConfigError, match="without an API key"):
            resolve_api_key(host, None, environ={})
    assert resolve_api_key("0.0.0.0", None, environ={"DEEPPCOS_API_KEY": KEY}) == KEY
    assert resolve_api_key("0.0.0.0", "MY_KEY", environ={"MY_KEY": KEY}) == KEY
    with pytest.raises(ConfigError, match="MY_KEY"):
        resolve_api_key("127.0.0.1", "MY_KEY", environ={})
    with pytest.raises(ConfigError, match="too short"):
        resolve_api_key("0.0.0.0", None, environ={"DEEPPCOS_API_KEY": "short"})


def test_cli_refuses_to_serve_beyond_loopback_without_a_key(tabular_run: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DEEPPCOS_API_KEY"}
    result = CliRunner().invoke(cli_app, ["serve", str(tabular_run), "--host", "0.0.0.0"], env=env)
    assert result.exit_code == 2 and "without an API key" in result.output


# --- a real server on loopback ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live(tabular_run: Path) -> Iterator[str]:
    """``deeppcos serve`` in a subprocess on a free loopback port, with an API key."""
    port = _free_port()
    env = {**os.environ, "TEST_DEEPPCOS_KEY": KEY, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deeppcos.cli", "serve", str(tabular_run), "--port", str(port)]
    command += ["--api-key-env", "TEST_DEEPPCOS_KEY"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_up(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not start within 90 s")


def test_live_server_answers_with_the_key_only(live: str, tabular_run: Path) -> None:
    body, _ = _patients(tabular_run, 2)
    with httpx.Client(base_url=live, timeout=30) as http:
        assert http.post("/predict", json={"patients": body}).status_code == 401
        response = http.post("/predict", json={"patients": body}, headers={"X-API-Key": KEY})
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
        bundle = json.loads(FHIR_EXAMPLE.read_text())
        fhir = http.post("/predict", json={"fhir": bundle}, headers={"X-API-Key": KEY})
        assert [p["patient_id"] for p in fhir.json()["predictions"]] == ["p1", "p2"]
        # With a key, the OpenAPI pages need it too.
        assert http.get("/docs").status_code == 401
        assert http.get("/openapi.json", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.slow
def test_live_server_under_bounded_concurrent_load(
    live: str, tabular_run: Path, tmp_path: Path, record_property
) -> None:
    body, _ = _patients(tabular_run, 1)
    url = f"{live}/predict"
    with httpx.Client(timeout=30, headers={"X-API-Key": KEY}) as http:
        first = http.post(url, json={"patients": body}).json()

    def worker(n: int) -> list[tuple[int, float, float | None]]:
        out = []
        with httpx.Client(timeout=60, headers={"X-API-Key": KEY}) as http:
            for _ in range(n):
                start = time.perf_counter()
                response = http.post(url, json={"patients": body})
                ok = response.is_success
                risk = response.json()["predictions"][0]["risk"] if ok else None
                out.append((response.status_code, time.perf_counter() - start, risk))
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:  # 8 clients × 25 = 200 requests
        results = [r for chunk in pool.map(worker, [25] * 8) for r in chunk]
    statuses = [status for status, _, _ in results]
    assert len(results) == 200 and statuses == [200] * 200
    assert {risk for _, _, risk in results} == {first["predictions"][0]["risk"]}
    latency = np.array([seconds for _, seconds, _ in results]) * 1000
    percentiles = {f"p{q}": round(float(np.percentile(latency, q)), 1) for q in (50, 95, 99)}
    record_property("latency_ms", percentiles)
    (tmp_path / "latency.json").write_text(json.dumps(percentiles))
    print(f"\nlive server, 200 requests from 8 clients: latency ms {percentiles}")


@pytest.mark.slow
def test_tabular_and_image_request(image_run: Path, tmp_path: Path) -> None:
    client = TestClient(create_app(image_run))
    # The image model is loaded with the service, not at the first image request.
    assert client.app.state.service.predictor.branches["image"].loaded
    body, _ = _patients(image_run, 1)
    body[0]["images"] = [{"data": _png(tmp_path, 1), "side": "left"}, {"data": _png(tmp_path, 2)}]
    result = client.post("/predict", json={"patients": body})
    assert result.status_code == 200, result.text
    prediction = result.json()["predictions"][0]
    assert prediction["p_image"] is not None and prediction["p_tabular"] is not None
    assert "image" in prediction["modalities"] and "tabular" in prediction["modalities"]


@pytest.mark.slow
def test_a_broken_image_model_fails_the_start(image_run: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(image_run, broken)
    (model,) = [p for p in (broken / "image").iterdir() if p.suffix in (".keras", ".h5")]
    model.write_bytes(b"not a model")
    with pytest.raises(DataFileError, match=f"{model.name}: not a readable Keras model"):
        create_app(broken)


def test_several_worker_processes_serve_the_same_answers(tabular_run: Path) -> None:
    """``--workers 2``: each process loads the run and answers as the library does; the
    settings reach the workers through the environment, the key through its own variable."""
    port = _free_port()
    env = {**os.environ, "TEST_DEEPPCOS_KEY": KEY, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deeppcos.cli", "serve", str(tabular_run), "--port", str(port)]
    command += ["--api-key-env", "TEST_DEEPPCOS_KEY", "--workers", "2"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, url)
        body, _ = _patients(tabular_run, 3)
        expected = TestClient(create_app(tabular_run)).post("/predict", json={"patients": body})
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as http:
            answers = [http.post("/predict", json={"patients": body}) for _ in range(6)]
        assert all(a.status_code == 200 for a in answers), answers[0].text
        assert all(a.json()["predictions"] == expected.json()["predictions"] for a in answers)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
