"""The HTTP API (FastAPI): ``POST /predict``, ``POST /explain``, ``GET /health``, ``GET /models``.

The model is loaded and checked once, by ``create_app`` (a broken bundle stops it), and shared by all
requests; the PyTorch model for heatmaps loads beside the server at start-up. Predictions on ONNX Runtime never
wait for a heatmap (heatmaps run one at a time), and the endpoints run in the thread pool so the event loop
keeps accepting uploads; heatmaps run on one low-priority thread (``heatmap_worker``), so the CPU serves
predictions first, and at most a few wait (then 503, ``reason: "busy"``). Uploads are limited in bytes while they are received, before any parsing.
Every error is JSON ``{"detail": message, "reason": code}`` with a 4xx status (validation, unknown route and
method errors included). Only the out-of-distribution gate withholds: ``abstain: true`` and
``out_of_distribution: true`` say the image does not look like dermoscopy of one lesion, and then the class
fields are not an answer. An answer the model is unsure of is still given, with ``uncertain: true``, its
``uncertain_reasons`` and a ``differential`` (the most probable classes holding 90% of the probability). Score-CAM is not served (minutes per request on a CPU; use
``dermxai explain``). ``/docs`` serves Swagger UI 5 (reads OpenAPI 3.1) from the pinned ``fastapi-offline`` package: no CDN.
"""

from __future__ import annotations

import asyncio
import io
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dermxai import __version__
from dermxai.app.heatmap_worker import Busy, HeatmapWorker
from dermxai.inference.bundles import default_bundle
from dermxai.inference.cams import METHODS
from dermxai.inference.inputs import MAX_BYTES, InvalidImage
from dermxai.inference.predictor import Explanation, Predictor

REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_many_bytes",
    415: "unsupported_media_type",
    422: "invalid_request",
}
STATUS = {
    "empty": 400,
    "corrupt": 400,
    "not_an_image": 415,
    "unsupported_format": 415,
    "too_many_bytes": 413,
    "too_many_pixels": 413,
}
"""HTTP status of each InvalidImage reason."""
ImageFile = Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, GIF, BMP or TIFF).")]
API_METHODS = [m for m in METHODS if m != "scorecam"]  # Score-CAM would hold the model for ~1-2 minutes
Method = Annotated[
    str | None, Query(description=f"CAM method, one of {', '.join(API_METHODS)} (default: the model's).")
]
TargetClass = Annotated[str | None, Query(description="Class to explain (default: the top class).")]
Opacity = Annotated[float, Query(ge=0, le=1, description="Heatmap opacity.")]
MULTIPART_OVERHEAD = 64 * 1024
CHUNK = 1024 * 1024
BODY_TIMEOUT_S = 30.0
"""Longest wait for the next piece of a request body."""


class TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The upload is larger than the limit of {limit / 1024 / 1024:.1f} MiB.")


class Stalled(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"The upload stalled: no data for {seconds:g} s.")


class BodyLimit:
    """ASGI middleware: 413 as soon as a request body exceeds ``limit`` bytes (declared or streamed), and 408
    when a body stops arriving for ``timeout`` seconds (a stalled client holds no connection for ever)."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float = BODY_TIMEOUT_S) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": TooLarge(self.limit).detail, "reason": "too_many_bytes"}, 413)
            return await response(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise Stalled(self.timeout) from None
            received += len(message.get("body", b""))
            if received > self.limit:
                raise TooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


async def read_upload(request: Request, upload: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes, read in chunks; 413 as soon as they exceed ``limit``; 400 for several files."""
    if len((await request.form()).getlist("file")) > 1:
        raise HTTPException(400, "Send one image per request (several files were sent as 'file').")
    parts, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise InvalidImage(f"The file is larger than the limit of {limit / 1024 / 1024:.1f} MiB.", "too_many_bytes")
        parts.append(chunk)
    return b"".join(parts)


def create_app(
    model_dir: str | Path | None = None, max_bytes: int = MAX_BYTES, body_timeout_s: float = BODY_TIMEOUT_S
) -> FastAPI:
    """The API serving one bundle (default: ``$DERMXAI_MODEL`` or the installed default model), loaded now;
    a request body that stops arriving for ``body_timeout_s`` seconds is answered 408."""
    predictor = Predictor(model_dir or default_bundle(), max_bytes=max_bytes)  # a broken bundle raises here
    heatmaps = HeatmapWorker()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # the heatmap model loads on the heatmap thread: neither /predict nor the first /explain waits on start-up
        heatmaps.submit(predictor.warm)
        yield

    api = FastAPIOffline(  # FastAPI with Swagger UI 5 and ReDoc served from the package: no CDN
        lifespan=lifespan,
        title="dermxai",
        version=__version__,
        redoc_url=None,
        static_url="/static/docs",
        description="Skin-lesion classification (HAM10000 classes) with calibrated probabilities and "
        "Grad-CAM heatmaps. A research and teaching tool, not a medical device. "
        "When `abstain` is true the answer is withheld: the image does not look like dermoscopy of one "
        "lesion (`out_of_distribution`). When `uncertain` is true the answer is given with a `differential` "
        '(the classes holding 90% of the probability). Errors: `{"detail", "reason"}` with a 4xx status.',
    )

    api.state.predictor = predictor
    api.add_middleware(BodyLimit, limit=max_bytes + MULTIPART_OVERHEAD, timeout=body_timeout_s)

    @api.exception_handler(InvalidImage)
    async def invalid_image(request: Request, error: InvalidImage) -> JSONResponse:
        return JSONResponse({"detail": str(error), "reason": error.reason}, STATUS.get(error.reason, 400))

    @api.exception_handler(Busy)
    async def busy(request: Request, error: Busy) -> JSONResponse:
        detail = f"The server is busy making heatmaps ({error}); try again in a few seconds."
        return JSONResponse({"detail": detail, "reason": "busy"}, 503, headers={"Retry-After": "5"})

    @api.exception_handler(Stalled)
    async def stalled(request: Request, error: Stalled) -> JSONResponse:
        return JSONResponse({"detail": error.detail, "reason": "timeout"}, 408)

    @api.exception_handler(TooLarge)
    async def too_large(request: Request, error: TooLarge) -> JSONResponse:
        return JSONResponse({"detail": error.detail, "reason": "too_many_bytes"}, 413)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(error.detail), "reason": REASONS.get(error.status_code, "error")},
            error.status_code,
            headers=getattr(error, "headers", None),
        )

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse(
            {"detail": f"{where}: {first.get('msg', 'invalid request')}", "reason": "invalid_request"}, 422
        )

    @api.api_route("/health", methods=["GET", "HEAD"])
    def health() -> dict:
        """Liveness and what is loaded: the model, its backend, its gate, and whether heatmaps are ready."""
        return {
            "status": "ok",
            "model_id": predictor.model_id,
            "backend": predictor.backend.name,
            "ood_gate": predictor.gate is not None,
            "heatmaps_ready": predictor.heatmaps_ready,
        }

    @api.get("/models")
    def models() -> list[dict]:
        """The served model: id, architecture, classes, input size, calibration and abstention settings."""
        c = predictor.config
        return [
            {
                "model_id": predictor.model_id,
                "arch": c.arch,
                "classes": predictor.classes,
                "input_size": {"height": c.height, "width": c.width},
                "temperature": c.temperature,
                "thresholds": c.thresholds,
                "abstain": c.abstain,
                "val_bacc": c.val_bacc,
                "cam_methods": API_METHODS,
                "cam_method": c.cam_method,
                "ood_gate": predictor.gate is not None,
            }
        ]

    @api.post("/predict")
    async def predict(request: Request, file: ImageFile) -> dict:
        """Calibrated probabilities, top class, malignant score (akiec+bcc+mel) and the abstention decision."""
        data = await read_upload(request, file, max_bytes)
        return (await run_in_threadpool(predictor.predict, data)).to_dict()

    @api.post(
        "/explain",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "The heatmap over the image (PNG)."}},
    )
    async def explain(
        request: Request,
        file: ImageFile,
        method: Method = None,
        target_class: TargetClass = None,
        opacity: Opacity = 0.45,
    ) -> Response:
        """The CAM overlay as a PNG; the prediction is in the X-Dermxai-* headers."""
        method = predictor.config.cam_method if method is None else method
        if method not in API_METHODS:
            raise HTTPException(400, f"unknown or unserved method {method!r}: use one of {', '.join(API_METHODS)}")
        if target_class is not None and target_class not in predictor.classes:
            raise HTTPException(400, f"unknown class {target_class!r}: use one of {', '.join(predictor.classes)}")
        data = await read_upload(request, file, max_bytes)

        def heatmap() -> tuple[Explanation, bytes]:
            explanation = predictor.explain(data, method, target_class)
            buffer = io.BytesIO()
            explanation.overlay(opacity).save(buffer, format="PNG")  # PNG encoding off the event loop too
            return explanation, buffer.getvalue()

        explanation, png = await heatmaps.run(heatmap)
        p = explanation.prediction
        headers = {
            "X-Dermxai-Top-Class": p.top_class,
            "X-Dermxai-Confidence": f"{p.confidence:.4f}",
            "X-Dermxai-Target-Class": explanation.target_class,
            "X-Dermxai-Model-Id": p.model_id,
            "X-Dermxai-Abstain": str(p.abstain).lower(),
        }
        return Response(png, media_type="image/png", headers=headers)

    return api
