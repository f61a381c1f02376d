"""The prediction service: ``deeppcos serve RUN`` (FastAPI).

Endpoints
---------
``GET /health``   liveness; open, says nothing about the model.
``GET /model``    the run (name, cohort fingerprint, branches, fusion, threshold), a model-card
                  summary (out-of-fold and, when evaluated, locked-test metrics with intervals)
                  and the input schema (each model input's unit, plausible range and LOINC code
                  from the catalog; what images are accepted).
``POST /predict`` JSON patients (catalog features, optional base64 images) or a FHIR R4 Bundle;
                  per patient: probability, calibrated risk, decision, severity and its grade
                  probabilities when the run grades, modalities used; ``explain: true`` adds the
                  per-patient explanation where ``deeppcos.explain`` provides one (else 501). The
                  load report of the request (conversions, out-of-range values, unknown codes) is
                  returned with the predictions.
``/docs``, ``/openapi.json``: the OpenAPI schema.

Safety: the model is loaded once, when the app is built (a broken run fails at start-up, not at
the first request). Request bodies over ``max_request_bytes`` are refused with 413 whether or not
they declare a Content-Length; each image is base64-decoded, size-limited (413), checked by its
magic bytes and then probed by the project's image checks (``deeppcos.data.imageio``: header
size, decompression-bomb limit, decodes) in a temporary folder that lives only for the request.
Validation errors are 422 with FastAPI's ``detail`` list, whose ``loc`` names the field. An API
key (``X-API-Key``) is required whenever one is configured, and :func:`resolve_api_key` refuses
to bind beyond the loopback interface without one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hmac
import ipaddress
import json
import math
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import APIKeyHeader
except ModuleNotFoundError:  # without the 'serve' extra: a MissingExtraError that says so
    from deeppcos.extras import require

    require("fastapi", "serve", "the prediction service (deeppcos.inference.serve)")
    raise
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from deeppcos.data.imageio import sniff_format
from deeppcos.data.report import LoadReport
from deeppcos.exceptions import ConfigError, DeepPCOSError
from deeppcos.image.lazy import LazyImageBranch
from deeppcos.inference.batch import model_inputs
from deeppcos.inference.microbatch import MicroBatcher
from deeppcos.inference.predictor import given_pcos
from deeppcos.inference.request_batch import RequestRows, merge_requests, split_predictions
from deeppcos.knowledge.catalog import CATALOG
from deeppcos.knowledge.ranges import RangeRule

__all__ = ["ServiceLimits", "app_from_environment", "create_app", "resolve_api_key"]

API_KEY_HEADER = "X-API-Key"
DEFAULT_API_KEY_ENV = "DEEPPCOS_API_KEY"
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "DICOM": ".dcm"}


class ServiceLimits(BaseModel):
    """Limits on what one request may carry."""

    model_config = ConfigDict(extra="forbid")

    max_request_bytes: int = Field(32 << 20, gt=0)
    max_image_bytes: int = Field(16 << 20, gt=0)
    max_images_per_patient: int = Field(8, ge=0)
    max_patients: int = Field(1000, ge=1)
    max_pixels: int = Field(40_000_000, gt=0)
    max_explained_patients: int = Field(
        20, ge=1, description="patients one explain: true request may ask for"
    )
    batch_wait_ms: float = Field(
        2.0, ge=0, description="longest wait for requests on their way into a shared batch"
    )


# --- request and response models --------------------------------------------------------------


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="the image file, base64 (PNG, JPEG, BMP, TIFF or DICOM)")
    side: Literal["left", "right"] | None = Field(None, description="which ovary, if known")


MAX_CATEGORY_CHARS = 64


def _measurement_or_category(value: Any) -> float | str | None:
    """A number (finite, not a boolean) or a categorical input's label; one validator rather
    than a union, so an error's location ends at the feature's name."""
    if value is None:
        return None
    if isinstance(value, bool):  # pydantic would read true as 1.0: a unit error in waiting
        raise ValueError("a boolean is not a measurement; send the number in the catalog's unit")
    if isinstance(value, str):
        if not 0 < len(value.strip()) <= MAX_CATEGORY_CHARS:
            raise ValueError(
                f"a category is 1 to {MAX_CATEGORY_CHARS} characters; a measurement is a number"
            )
        return value
    if not isinstance(value, int | float):
        raise ValueError("expected a number in the catalog's unit, or a category's label")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("the number should be finite (not NaN or infinity)")
    return number


# A measurement in the catalog's unit, or a categorical input's label (GET /model lists each
# such input's categories).
FeatureValue = Annotated[
    float | str | None,
    PlainValidator(_measurement_or_category),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}),
]


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: str = Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")
    features: dict[str, FeatureValue] = Field(
        default_factory=dict,
        description="catalog feature name → value in the catalog's unit, or a categorical "
        "input's category (GET /model lists them); null or absent = not measured",
    )
    images: list[ImageIn] = Field(default_factory=list)


class PredictRequest(BaseModel):
    """Either ``patients`` or ``fhir`` (a FHIR R4 Bundle of Patient and Observation resources)."""

    model_config = ConfigDict(extra="forbid")

    patients: list[PatientIn] | None = Field(None, min_length=1)
    fhir: dict[str, Any] | None = Field(None, description="a FHIR R4 Bundle (JSON)")
    fhir_window_days: float | None = Field(None, gt=0, description="see deeppcos.data.fhir")
    explain: bool = Field(False, description="add each patient's explanation")

    @model_validator(mode="after")
    def _one_source(self) -> PredictRequest:
        if (self.patients is None) == (self.fhir is None):
            raise ValueError("give exactly one of 'patients' and 'fhir'")
        return self


class PredictionOut(BaseModel):
    patient_id: str
    probability: float | None
    risk: float | None
    decision: bool | None
    p_tabular: float | None
    p_image: float | None
    modalities: str = Field(
        description="the data that scored the patient; a missing modality is not evidence"
    )
    severity: str | None = Field(
        None,
        description="the lowest grade (no PCOS) unless the decision is positive, else the "
        "most probable grade given PCOS",
    )
    severity_probabilities: dict[str, float | None] | None = Field(
        None,
        description="every grade, summing to 1: the lowest is 1 − risk, the others risk × "
        "P(grade | PCOS)",
    )
    severity_given_pcos: dict[str, float | None] | None = Field(
        None, description="P(grade | PCOS) for the PCOS grades, summing to 1"
    )
    explanation: dict[str, Any] | None = None


class ReportEntryOut(BaseModel):
    level: str
    action: str
    message: str
    row: str | None = None
    column: str | None = None
    found: str | None = None
    expected: str | None = None


class PredictResponse(BaseModel):
    run: str
    threshold: float
    predictions: list[PredictionOut]
    report: list[ReportEntryOut]


# --- the API key and the bind address -------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: may resolve anywhere


def resolve_api_key(
    host: str, env_var: str | None, environ: dict[str, str] | None = None
) -> str | None:
    """The API key the service requires (None: no key, loopback only).

    ``env_var`` names the environment variable holding the key (default ``DEEPPCOS_API_KEY``,
    used when set). Binding beyond loopback without a key, or naming a variable that is unset,
    is a ConfigError: the service refuses to start.
    """
    environ = dict(os.environ) if environ is None else environ
    name = env_var or DEFAULT_API_KEY_ENV
    key = environ.get(name, "").strip() or None
    if env_var and key is None:
        raise ConfigError(f"--api-key-env {env_var}: that environment variable is unset or empty")
    if key is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host!r} without an API key: anyone who can reach that "
            f"address could use the model. Put a key in ${name} (or name another variable with "
            "--api-key-env), or bind to 127.0.0.1"
        )
    if key is not None and len(key) < 16:
        raise ConfigError(f"the API key in ${name} is too short ({len(key)} characters; use ≥16)")
    return key


# --- the request size limit -------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, declared or streamed (chunked)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"request body over the limit of {self.max_bytes:,} bytes"

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": self._detail()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


# --- the key check, before anything else -----------------------------------------------------


class ApiKeyGate:
    """ASGI middleware: with a key configured, every path but ``/health`` answers 401 to a
    request without the right ``X-API-Key`` — before its body is read or parsed, and for the
    OpenAPI pages too (``/docs``, ``/openapi.json``: fetch them with the header)."""

    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.key = None if api_key is None else api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(API_KEY_HEADER.lower().encode())
        if given is not None and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": f"missing or wrong {API_KEY_HEADER} header"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float spelled as JSON can carry it ("NaN", "Infinity",
    "-Infinity"): a validation error echoes the input, and NaN is not JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# --- the app ----------------------------------------------------------------------------------


class _Service:
    """What the endpoints share: the predictor (loaded once), scored from one thread through a
    micro-batcher, and a second copy of it for explanations behind its own lock — Keras and
    XGBoost models are not promised thread-safe, and a long explanation must not hold up the
    short predictions queued behind it."""

    def __init__(self, run: Path, limits: ServiceLimits) -> None:
        from deeppcos.inference.predictor import load_run

        self.run = run
        self.limits = limits
        self.predictor = load_run(run)
        self.record = self.predictor.record
        self.features: list[str] = model_inputs(self.predictor)
        self.accepted = _inputs_and_parts(self.features)  # what a request's features may feed
        # The columns of a merged batch: the inputs, then any part a derived input is computed
        # from (so a batch derives what a request alone would).
        self.inputs = [*self.features, *sorted(self.accepted - set(self.features))]
        self.batch_spec = _request_spec(limits.max_pixels, tuple(self.inputs))
        tabular = self.predictor.branches.get("tabular")
        self.categories: dict[str, list[str]] = dict(getattr(tabular, "categories_", {}))
        # The ranges training checked, for every input a request may send.
        self.ranges = self.predictor.input_ranges(sorted(set(CATALOG) | set(self.accepted)))
        self.uses_images = "image" in self.predictor.branches
        image = self.predictor.branches.get("image")
        if isinstance(image, LazyImageBranch):
            # Loaded now, not at the first image request: a broken image model fails the start,
            # and no request waits seconds for Keras (the CLI loads it lazily, for cold starts).
            image.load()
        self.batcher: MicroBatcher[Any, list[dict[str, Any]]] = MicroBatcher(
            self._score_batch, max_wait_s=limits.batch_wait_ms / 1000
        )
        self.explain_lock = threading.Lock()  # one explanation request at a time
        self._explainer_process: ProcessPoolExecutor | None = None  # started at first use
        self.started = time.time()

    def explain(self, cohort: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Predictions and explanations of a request's patients, from a separate process at a
        lower CPU priority with its own copy of the model: an explanation is seconds of
        Python, and in this process it would hold the interpreter from the short requests
        (measured on 2 cores: their p95 ×2.2–2.6 beside explanations run in a thread)."""
        with self.explain_lock:
            if self._explainer_process is None:
                self._explainer_process = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_explainer,
                    initargs=(str(self.run),),
                )
            try:
                return self._explainer_process.submit(_explain_request, cohort).result()
            except BrokenProcessPool:
                # The process died (killed, out of memory): the next request starts a new one.
                self._explainer_process = None
                raise HTTPException(
                    503, "the explanation process stopped; send the request again"
                ) from None

    def close(self) -> None:
        if self._explainer_process is not None:
            self._explainer_process.shutdown(cancel_futures=True)
            self._explainer_process = None

    def _score_batch(self, requests: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """Every request's predictions (one record per patient) from one model call (on the
        batcher's thread); a request is a :class:`RequestRows` or, with images or FHIR, a
        cohort."""
        if len(requests) == 1 and not isinstance(requests[0], RequestRows):
            return [self.predictor.predict(requests[0]).to_dict("records")]
        merged, parts = merge_requests(requests, self.inputs, self.batch_spec)
        return split_predictions(self.predictor.predict(merged), parts)

    @property
    def name(self) -> str:
        return str(self.record.get("name") or self.run.name)


def create_app(
    run: Path | str, *, api_key: str | None = None, limits: ServiceLimits | None = None
) -> FastAPI:
    """The FastAPI app serving one run; the run is loaded here, once."""
    # One inter-op thread for TensorFlow (unless set): after an image request its idle pool
    # threads keep spinning, and on 2 cores that slowed every labs-only request that followed
    # by about a third (p50 10.3 → 14.6 ms, measured in one process). Read when TensorFlow
    # starts, which is after this (the image branch loads at its first image).
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    service = _Service(Path(run), limits or ServiceLimits())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        service.close()  # the explainer process goes with the service

    app = FastAPI(
        title="deeppcos prediction service",
        version=str(service.record.get("versions", {}).get("deeppcos", "")),
        description="PCOS decision support from labs and ovarian ultrasound (research use; not "
        "a diagnosis). Model: " + service.name,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_request_bytes)
    app.add_middleware(ApiKeyGate, api_key=api_key)  # added last: runs first
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    # Declares the key in the OpenAPI schema; ApiKeyGate has already refused a wrong one, before
    # the body was read. A default, not an Annotated hint: hints are strings here (postponed
    # annotations) and FastAPI would not find the local ``header`` when it resolves them.
    # Async: FastAPI runs a plain function dependency on a worker thread, a thread hop per
    # request for nothing.
    async def check_key(key: str | None = Depends(header)) -> None:
        return None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422, content={"detail": json_safe(jsonable_encoder(exc.errors()))}
        )

    @app.exception_handler(DeepPCOSError)
    async def _deeppcos_error(request: Request, exc: DeepPCOSError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"detail": [{"loc": ["body"], "msg": str(exc), "type": "deeppcos"}]},
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:  # on the event loop: answers while threads are busy
        return {"status": "ok", "uptime_s": round(time.time() - service.started, 1)}

    @app.get("/model", dependencies=[Depends(check_key)])
    def model() -> dict[str, Any]:
        return model_summary(service)

    @app.post("/predict", response_model=PredictResponse, dependencies=[Depends(check_key)])
    async def predict(http: Request) -> Response:
        # The body is validated by the request model straight from its bytes (FastAPI's own
        # parse and validate cost more than the rest of a labs-only request). Labs-only
        # requests are checked on the event loop and wait for their micro-batch without
        # holding a thread; images, FHIR and explanations are slower work, done in a thread.
        with service.batcher.arrival() as arrival:
            request = parse_request(await http.body())
            if not _labs_only(request):
                arrival.withdraw()
                answer = await run_in_threadpool(_predict, service, request)
                return _json_response(answer)
            rows = _json_rows(service, request.patients or [])
            waiting = arrival.enqueue(rows, size=rows.patients)
        records = await asyncio.wrap_future(waiting)
        return _json_response(_response(service, records, {}, rows))

    app.openapi = functools.partial(_openapi_with_request_body, app, app.openapi)  # type: ignore[method-assign]
    return app


SERVE_SETTINGS_ENV = "DEEPPCOS_SERVE_SETTINGS"


def serve_settings(run: Path, host: str, api_key_env: str | None, limits: ServiceLimits) -> str:
    """What a worker process needs to build the app, as JSON (never the key itself: each
    worker reads it from the same environment variable)."""
    return json.dumps(
        {
            "run": str(Path(run).resolve()),
            "host": host,
            "api_key_env": api_key_env,
            "limits": limits.model_dump(),
        }
    )


def app_from_environment() -> FastAPI:
    """uvicorn's app factory for ``deeppcos serve --workers N``: each worker process loads the
    run itself, from the settings in ``$DEEPPCOS_SERVE_SETTINGS``."""
    settings = json.loads(os.environ[SERVE_SETTINGS_ENV])
    key = resolve_api_key(settings["host"], settings["api_key_env"])
    return create_app(settings["run"], api_key=key, limits=ServiceLimits(**settings["limits"]))


# --- /model -----------------------------------------------------------------------------------


def model_summary(service: _Service) -> dict[str, Any]:
    predictor, record = service.predictor, service.record
    return {
        "run": {
            "name": service.name,
            "started": record.get("started"),
            "cohort": record.get("cohort"),
            "cohort_fingerprint": record.get("cohort_fingerprint"),
            "branches": list(predictor.branches),
            "fusion_method": getattr(predictor, "fusion_method", "late"),
            "threshold": predictor.threshold,
            "severity_grades": _severity_levels(predictor),
            "severity_rule": "graded only with a positive decision; P(lowest grade) = 1 − risk",
            "guideline": predictor.config.severity.guideline,
            "routes": {
                route: predictor.router.describe(route, predictor.fusion_method)
                for route in predictor.router.routes
            },
            "versions": record.get("versions", {}),
        },
        "model_card": _model_card(predictor),
        "input_schema": _input_schema(service),
    }


def _severity_levels(predictor: Any) -> list[str] | None:
    if getattr(predictor, "severity", None) is None:
        return None
    return predictor.severity_levels()


def _model_card(predictor: Any) -> dict[str, Any]:
    from deeppcos.explain.card import model_card_summary

    return model_card_summary(predictor)


def _input_schema(service: _Service) -> dict[str, Any]:
    from deeppcos.tabular.features import DERIVED_BY_NAME

    features = []
    for name in service.features:
        feature = CATALOG.get(name)
        derived = DERIVED_BY_NAME.get(name)
        rule = service.ranges[name].to_json() if name in service.ranges else None
        features.append(
            {
                "name": name,
                "unit": feature.unit if feature else None,
                "description": feature.description if feature else None,
                "plausible_range": [rule["low"], rule["high"]] if rule else None,
                "plausible_range_source": rule["source"] if rule else None,
                "categories": service.categories.get(name),
                "loinc": [c for c in (feature.loinc, *feature.loinc_alt) if c] if feature else [],
                "computed_from": list(derived.parts) if derived else None,
            }
        )
    limits = service.limits
    return {
        "features": features,
        "images": {
            "used_by_model": service.uses_images,
            "formats": sorted(_EXTENSIONS),
            "encoding": "base64 of the file bytes",
            "max_bytes": limits.max_image_bytes,
            "max_per_patient": limits.max_images_per_patient,
            "max_pixels": limits.max_pixels,
        },
        "fhir": "a FHIR R4 Bundle of Patient and Observation resources (LOINC, UCUM)",
        "max_request_bytes": limits.max_request_bytes,
        "max_patients": limits.max_patients,
    }


# --- /predict ---------------------------------------------------------------------------------


def parse_request(body: bytes) -> PredictRequest:
    """The request model from the body's bytes; a 422 whose ``loc`` starts with ``body``, as
    FastAPI's own, when it is not one."""
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _labs_only(request: PredictRequest) -> bool:
    patients = request.patients
    return not request.explain and patients is not None and not any(p.images for p in patients)


def _json_response(answer: PredictResponse) -> Response:
    # Validated once, when the PredictResponse was built: returning the model would make
    # FastAPI dump, validate and encode it a second time.
    return Response(content=answer.model_dump_json(), media_type="application/json")


def _openapi_with_request_body(app: FastAPI, build: Any) -> dict[str, Any]:
    """The OpenAPI document with ``POST /predict``'s body: the endpoint reads the raw body
    (see ``predict``), so FastAPI cannot see its model."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = build()
    request = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(request.pop("$defs", {}))
    components["PredictRequest"] = request
    schema["paths"]["/predict"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
    app.openapi_schema = schema
    return schema


def _unprocessable(loc: list[Any], message: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(422, [{"loc": ["body", *loc], "msg": message, "type": kind}])


def _predict(service: _Service, request: PredictRequest) -> PredictResponse:
    """A request with images, a FHIR Bundle or ``explain: true`` (on a worker thread)."""
    if request.explain:
        return _predict_explained(service, request)
    with service.batcher.arrival() as arrival, ExitStack() as stack:
        cohort = _request_cohort(service, request, stack)
        predictions = arrival.submit(cohort, size=len(cohort.patients))
    return _response(service, predictions, {}, cohort)


def _predict_explained(service: _Service, request: PredictRequest) -> PredictResponse:
    """Explanations take seconds per patient: they run in their own process with their own
    copy of the model, one request at a time, and a request may ask for at most
    ``max_explained_patients``."""
    _explainer()  # 501 now when this installation cannot explain
    limit = service.limits.max_explained_patients
    with ExitStack() as stack:
        cohort = _request_cohort(service, request, stack)
        if len(cohort.patients) > limit:
            raise _unprocessable(
                ["explain"],
                f"explanations for at most {limit} patients per request; this one has "
                f"{len(cohort.patients)} (send explain: false for predictions alone, or split "
                "the patients over several requests)",
            )
        predictions, explanations = service.explain(cohort)
    return _response(service, predictions.to_dict("records"), explanations, cohort)


# The explainer process: the run loaded once, at a lower priority than the service.
_EXPLAINING: dict[str, Any] = {}


def _start_explainer(run: str) -> None:
    from deeppcos.inference.predictor import load_run

    with contextlib.suppress(OSError, AttributeError):  # not POSIX, or not allowed: as is
        os.nice(10)
    _EXPLAINING["predictor"] = load_run(run)


def _explain_request(cohort: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    predictor = _EXPLAINING["predictor"]
    explain = _explainer()
    predictions = predictor.predict(cohort)
    return predictions, {pid: explain(predictor, cohort, pid) for pid in predictions["patient_id"]}


def _request_cohort(service: _Service, request: PredictRequest, stack: ExitStack):  # -> Cohort
    """The request's patients as a cohort; a temporary folder for its images, when it has
    any, lives as long as ``stack``."""
    if request.fhir is not None:
        return _fhir_cohort(service, request)
    patients = request.patients or []
    folder = None
    if any(p.images for p in patients):
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deeppcos-request-")))
    return _json_cohort(service, patients, folder)


def _response(
    service: _Service, records: list[dict[str, Any]], explanations: dict[str, Any], request: Any
) -> PredictResponse:
    """The answer: each patient's prediction and the load report of ``request`` (the request's
    cohort or :class:`RequestRows`)."""
    threshold = service.predictor.threshold
    assert threshold is not None  # load_run always sets it
    return PredictResponse(
        run=service.name,
        threshold=float(threshold),
        predictions=[_prediction(row, explanations) for row in records],
        report=[_entry(e) for e in request.report],
    )


def _explainer() -> Any:
    """``(predictor, cohort, patient_id) -> dict``: ``deeppcos.explain``'s per-patient
    explanation (contributions, criteria, saliency maps as base64 PNG), or a 501."""
    try:
        from deeppcos.explain.patient import explain_patient
    except ImportError as exc:
        raise HTTPException(
            501, f"explanations are not available in this installation ({exc})"
        ) from None

    def explain(predictor: Any, cohort: Any, patient_id: str) -> dict[str, Any]:
        saliency = "gradcam" if "image" in predictor.branches else None
        return explain_patient(predictor, patient_id, cohort, saliency=saliency).to_dict()

    return explain


def _fhir_cohort(service: _Service, request: PredictRequest):  # -> Cohort
    from deeppcos.data.fhir import FhirError, FhirOptions, read_bundle
    from deeppcos.exceptions import EmptyCohortError

    try:
        options = FhirOptions(window_days=request.fhir_window_days, ranges=service.ranges)
        bundle = read_bundle(request.fhir or {}, options)
    except FhirError as exc:
        raise HTTPException(
            422,
            [
                {"loc": ["body", "fhir", *_path(p.path)], "msg": p.message, "type": "fhir"}
                for p in exc.problems
            ],
        ) from None
    except EmptyCohortError as exc:
        raise _unprocessable(["fhir", "entry"], str(exc)) from None
    if len(bundle.patients) > service.limits.max_patients:
        raise _unprocessable(["fhir", "entry"], f"over {service.limits.max_patients} patients")
    return bundle.to_cohort(service.features, name="request")


def _path(path: str) -> list[str | int]:
    """'entry[3].resource.valueQuantity.value' → ['entry', 3, 'resource', 'valueQuantity', …]."""
    parts: list[str | int] = []
    for piece in path.replace("]", "").split("."):
        name, _, index = piece.partition("[")
        parts.append(name)
        if index.isdigit():
            parts.append(int(index))
    return parts


def _json_cohort(service: _Service, patients: list[PatientIn], folder: Path | None):  # -> Cohort
    """The request's patients as a cohort, with their images when ``folder`` is given (they are
    decoded, checked and written there)."""
    from deeppcos.data.cohort import attach_images

    cohort = _json_rows(service, patients).cohort()
    images, where = _images(patients, folder, service.limits) if folder is not None else (None, {})
    if images is not None:
        cohort = attach_images(cohort, images, file="request")
        _refuse_bad_images(cohort.report, where)
    return cohort


def _json_rows(service: _Service, patients: list[PatientIn]) -> RequestRows:
    """The request's patients, checked: the values are numbers already (validated by the
    request model), so only ids, the features' names and the plausible ranges are checked here,
    on a matrix (a frame is built only when some value is out of range)."""
    from deeppcos.data.tables import check_ranges

    limits = service.limits
    if len(patients) > limits.max_patients:
        raise _unprocessable(["patients"], f"at most {limits.max_patients} patients per request")
    _check_patients(service, patients)
    given = [name for p in patients for name in p.features]
    columns = list(dict.fromkeys([*service.features, *given]))
    numeric = [c for c in columns if c not in service.categories]
    values = np.array(
        [[_request_number(p, i, c) for c in numeric] for i, p in enumerate(patients)],
        dtype="float64",
    ).reshape(len(patients), len(numeric))
    report = LoadReport()
    categorical = {
        column: _categories(service, patients, column, report)
        for column in columns
        if column in service.categories
    }
    rows = RequestRows(
        _request_spec(limits.max_pixels, tuple(columns)),
        [p.patient_id for p in patients],
        numeric,
        values,
        categorical,
        report,
    )
    outside = _outside(values, numeric, service.ranges)
    if outside:  # reported row by row, and set missing, as the file loaders do
        frame = rows.frame()
        check_ranges(frame, report, "request", "null", outside, service.ranges)
        rows.values = frame[numeric].to_numpy(dtype="float64")
    _report_unused(service, given, report)
    return rows


@functools.lru_cache(maxsize=64)
def _request_spec(max_pixels: int, columns: tuple[str, ...]):  # -> CohortSpec
    """The spec of a request cohort (cached: most requests send the same features)."""
    from deeppcos.data.spec import spec_from_dict

    return spec_from_dict(
        {
            "name": "request",
            "patients": {"label_column": None, "feature_columns": list(columns)},
            "images": {"max_pixels": max_pixels},
        }
    )


def _inputs_and_parts(features: list[str]) -> frozenset[str]:
    """The model's inputs and the parts its derived inputs are computed from."""
    from deeppcos.tabular.features import DERIVED_BY_NAME

    parts = [p for name in features if name in DERIVED_BY_NAME for p in DERIVED_BY_NAME[name].parts]
    return frozenset([*features, *parts])


def _report_unused(service: _Service, given: list[str], report: LoadReport) -> None:
    """A catalog feature the model does not use is accepted, and said to be unused."""
    unused = sorted(set(given) - service.accepted)
    if unused:
        report.add(
            "warning",
            "dropped_column",
            f"{len(unused)} feature(s) sent are not inputs of this model and did not affect "
            f"the predictions: {', '.join(unused)}",
            file="request",
        )


def _outside(values: np.ndarray, columns: list[str], ranges: dict[str, RangeRule]) -> list[str]:
    """Columns with a value outside the run's plausible range (a fast screen, so the
    per-column check and its report run only where needed)."""
    low = np.array([ranges[c].low if c in ranges else -np.inf for c in columns])
    high = np.array([ranges[c].high if c in ranges else np.inf for c in columns])
    with np.errstate(invalid="ignore"):
        flagged = np.asarray(((values < low) | (values > high)).any(axis=0))
    return [c for c, hit in zip(columns, flagged, strict=True) if hit]


def _request_number(patient: PatientIn, index: int, column: str) -> float:
    value = patient.features.get(column)
    if isinstance(value, str):
        raise _unprocessable(
            ["patients", index, "features", column],
            f"{column!r} is a number in the catalog's unit, not text ({value!r})",
        )
    return np.nan if value is None else value


def _categories(
    service: _Service, patients: list[PatientIn], column: str, report: LoadReport
) -> list[Any]:
    """A categorical input's labels; one the model never saw is reported (scored missing)."""
    from deeppcos.data.categorical import UNSEEN, category_text, report_each

    known = service.categories[column]
    labels = pd.Series([category_text(p.features.get(column)) for p in patients], dtype=object)
    unseen = labels.notna() & ~labels.isin(known)
    # Reported here, with the request's row, and scored missing.
    report_each(
        report,
        labels[unseen],
        "unseen_category",
        UNSEEN,
        file="request",
        column=column,
        expected=known,
    )
    labels[unseen] = None
    return labels.tolist()


def _check_patients(service: _Service, patients: list[PatientIn]) -> None:
    known = set(CATALOG) | set(service.features)
    seen: dict[str, int] = {}
    for i, patient in enumerate(patients):
        if patient.patient_id in seen:
            raise _unprocessable(
                ["patients", i, "patient_id"],
                f"patient id {patient.patient_id!r} repeats patients[{seen[patient.patient_id]}]",
            )
        seen[patient.patient_id] = i
        for name in patient.features:
            if name not in known:
                raise _unprocessable(
                    ["patients", i, "features", name],
                    f"unknown feature {name!r}; expected a catalog name (GET /model lists the "
                    "model's inputs with their units)",
                )
        if len(patient.images) > service.limits.max_images_per_patient:
            raise _unprocessable(
                ["patients", i, "images"],
                f"at most {service.limits.max_images_per_patient} images per patient",
            )


def _images(
    patients: list[PatientIn], folder: Path, limits: ServiceLimits
) -> tuple[pd.DataFrame | None, dict[str, list[Any]]]:
    """Decode and check each image, write it to ``folder``; the images table and each file's
    request location."""
    rows, where = [], {}
    for i, patient in enumerate(patients):
        for j, image in enumerate(patient.images):
            loc = ["patients", i, "images", j, "data"]
            content = _decode(image.data, loc, limits.max_image_bytes)
            kind = sniff_format(content[:132])
            if kind is None:
                raise _unprocessable(
                    loc,
                    f"not an image: no PNG, JPEG, BMP, TIFF or DICOM signature in its "
                    f"{len(content):,} bytes",  # never echo the bytes of what was sent
                )
            path = folder / f"p{i}_i{j}{_EXTENSIONS[kind]}"
            path.write_bytes(content)
            where[str(path)] = loc
            rows.append(
                {
                    "image_id": f"{patient.patient_id}#{j}",
                    "patient_id": patient.patient_id,
                    "path": str(path),
                    "frame": pd.NA,
                    "side": image.side,
                }
            )
    if not rows:
        return None, where
    images = pd.DataFrame(rows)
    images["frame"] = images["frame"].astype("Int64")
    return images, where


def _decode(data: str, loc: list[Any], max_bytes: int) -> bytes:
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise HTTPException(413, f"{'.'.join(map(str, loc))}: image over {max_bytes:,} bytes")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _unprocessable(loc, "not valid base64") from None
    if not content:
        raise _unprocessable(loc, "empty image")
    if len(content) > max_bytes:
        raise HTTPException(413, f"{'.'.join(map(str, loc))}: image over {max_bytes:,} bytes")
    return content


def _refuse_bad_images(report: LoadReport, where: dict[str, list[Any]]) -> None:
    """An image the image checks excluded is the caller's error, not a silent gap: 422."""
    for entry in report.by_action("excluded_image"):
        loc = where.get(str(entry.found))
        if loc is not None:
            raise _unprocessable(loc, entry.message.replace(str(entry.found), "image"))


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _prediction(row: dict[str, Any], explanations: dict[str, Any]) -> PredictionOut:
    grades = {
        str(k).removeprefix("p_severity_"): _number(v)
        for k, v in row.items()
        if str(k).startswith("p_severity_")
    }
    severity = row.get("severity")
    decision = row["decision"]
    return PredictionOut(
        patient_id=str(row["patient_id"]),
        probability=_number(row["probability"]),
        risk=_number(row["risk"]),
        decision=None if pd.isna(decision) else bool(decision),
        p_tabular=_number(row["p_tabular"]),
        p_image=_number(row["p_image"]),
        modalities=str(row["modalities"]),
        severity=None if severity is None or pd.isna(severity) else str(severity),
        severity_probabilities=grades or None,
        severity_given_pcos=given_pcos(grades) if grades else None,
        explanation=explanations.get(row["patient_id"]),
    )


def _entry(entry: Any) -> ReportEntryOut:
    return ReportEntryOut(
        level=entry.level,
        action=entry.action,
        message=entry.message,
        row=None if entry.row is None else str(entry.row),
        column=entry.column,
        found=entry.found,
        expected=entry.expected,
    )
