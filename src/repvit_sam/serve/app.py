"""The web demo's FastAPI app: one static page and a small JSON API.

    app = create_app(model)                       # any Sam model (tests: a tiny random one)
    uvicorn.run(app, host="127.0.0.1", port=7860)

API (all JSON; errors are ``{"detail": "one line saying what was wrong and what to do"}``):

* ``POST /api/images`` (multipart field ``file``) -> ``{"image_id", "width", "height"}``:
  decodes the upload, embeds it once (cached by content hash: the same picture uploaded again
  gets the same id and no encoder pass).
* ``POST /api/images/{image_id}/predict`` ``{"points": [[x, y, label], ...], "box": [x0, y0,
  x1, y1] | null, "multimask": bool}`` -> ``{"masks": [COCO RLE, ...], "scores": [...]}`` in
  original-image pixels: a decoder pass only.
* ``POST /api/images/{image_id}/everything`` (optional JSON parameters) -> every mask of the
  image (SamAutomaticMaskGenerator); ``GET /api/images/{image_id}/everything/progress``
  reports the running job's decoded batches, for the page's progress bar.
* ``DELETE /api/images/{image_id}`` forgets an image.
* ``GET /api/info``, ``GET /api/samples``, ``GET /api/samples/{name}`` (PNG), ``GET /`` (the page).

Status codes: 404 unknown image id or sample, 413 upload or request body too large or too
many pixels, 415 not a decodable image, 422 malformed request (the detail names the field).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple

from fastapi import Body, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, WithJsonSchema, create_model,
    model_validator,
)

from ..inference.amg.options import AmgOptions

from ..inference.prompts import PromptError
from ..modeling.sam import Sam
from .samples import available_samples, png_bytes
from .service import ImageEntry, SegmentationService, UploadError, decode_upload

STATIC_DIR = Path(__file__).resolve().parent / "static"

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_CACHE_SIZE = 16
MAX_POINTS = 64
MAX_EVERYTHING_BATCHES = 64
# Request bodies other than uploads are small JSON documents.
MAX_JSON_BYTES = 256 * 1024
# Multipart framing around the file (boundaries, part headers).
MULTIPART_OVERHEAD = 64 * 1024

# --------------------------------------------------------------------------- schemas
# Request fields are strict (no "1" for 1, no true for 1): what the schema says is what passes.


def _check_label(value: int) -> int:
    if value not in (0, 1):
        raise ValueError(f"point label must be 1 (foreground) or 0 (background), got {value}")
    return value


Label = Annotated[StrictInt, AfterValidator(_check_label), WithJsonSchema({"type": "integer", "enum": [0, 1]})]


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong with the request and what to do")


class ImageInfo(BaseModel):
    image_id: str = Field(description="content hash of the decoded picture (32 hex digits)")
    width: int = Field(description="image width in pixels (after the EXIF orientation)")
    height: int = Field(description="image height in pixels")


class RLE(BaseModel):
    size: Tuple[int, int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed run-length counts (column-major)")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    points: List[Tuple[StrictFloat, StrictFloat, Label]] = Field(
        default_factory=list, max_length=MAX_POINTS,
        description="[x, y, label] in original-image pixels; label 1 = foreground, 0 = background",
    )
    box: Optional[Tuple[StrictFloat, StrictFloat, StrictFloat, StrictFloat]] = Field(
        default=None, description="[x0, y0, x1, y1] in original-image pixels, x0 <= x1, y0 <= y1"
    )
    multimask: StrictBool = Field(default=True, description="three candidate masks (true) or one (false)")

    @model_validator(mode="after")
    def _some_prompt(self) -> "PredictRequest":
        if not self.points and self.box is None:
            raise ValueError("give at least one point [x, y, label] or a box [x0, y0, x1, y1]")
        return self


class PredictResponse(BaseModel):
    masks: List[RLE] = Field(description="one COCO RLE per candidate, in original-image pixels")
    scores: List[float] = Field(description="the model's predicted IoU of each mask")


# The generator options a client may set, with the server's own defaults and bounds (tighter
# than the generator's, to bound the work of one request); help text, types and the
# generator's own bounds come from AmgOptions.
SERVED_AMG_OPTIONS: Dict[str, Dict[str, Any]] = {
    "points_per_side": dict(default=16, le=64),
    "points_per_batch": dict(le=256),
    "pred_iou_thresh": dict(ge=0.0, le=1.0),
    "stability_score_thresh": dict(ge=0.0, le=1.0),
    "box_nms_thresh": {},
    "min_mask_region_area": dict(le=100_000),
    "use_m2m": {},
}


def _amg_fields() -> Dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(AmgOptions)}
    out: Dict[str, Any] = {}
    for name, bounds in SERVED_AMG_OPTIONS.items():
        f = fields[name]
        meta = {k: v for k, v in (("ge", f.metadata["lo"]), ("le", f.metadata["hi"])) if v is not None}
        meta.update(bounds)
        default = meta.pop("default", f.default)
        kind = StrictBool if "bool" in str(f.type) else StrictInt if "int" in str(f.type) else StrictFloat
        out[name] = (kind, Field(default, description=f.metadata["help"], **meta))
    return out


_EverythingFields = create_model(
    "_EverythingFields", __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **_amg_fields()
)


class EverythingRequest(_EverythingFields):  # type: ignore[misc,valid-type]
    @model_validator(mode="after")
    def _bounded_work(self) -> "EverythingRequest":
        batches = -(-self.points_per_side**2 // self.points_per_batch)
        if batches > MAX_EVERYTHING_BATCHES:
            raise ValueError(
                f"points_per_side^2 / points_per_batch = {batches} decoder batches, more than "
                f"{MAX_EVERYTHING_BATCHES}; use fewer points per side or more points per batch"
            )
        return self


class EverythingResponse(BaseModel):
    masks: List[RLE] = Field(description="every mask found, largest first (COCO RLE)")
    scores: List[float] = Field(description="predicted IoU of each mask")
    stability_scores: List[float]
    point_coords: List[Tuple[float, float]] = Field(description="the grid point that produced each mask")


class ProgressResponse(BaseModel):
    state: Literal["idle", "running", "done", "failed"]
    done: int = Field(description="point batches decoded")
    total: int = Field(description="point batches in all")


class InfoResponse(BaseModel):
    model: str
    backend: Optional[str]
    img_size: int
    max_upload_bytes: int
    max_pixels: int
    cache_size: int
    cached_images: int
    images_embedded: int = Field(description="image-encoder passes since the start (one per new picture)")
    samples: List[str]


class SampleList(BaseModel):
    samples: List[str]


def _errors(*codes: int) -> Dict[int | str, Dict[str, Any]]:
    return {c: {"model": ErrorResponse} for c in codes}


# --------------------------------------------------------------------------- body limit
class _BodyLimit:
    """ASGI middleware: 413 for request bodies above a limit (uploads: ``upload_limit``; other
    requests: ``json_limit``), checked from Content-Length and while streaming, so an oversized
    body is refused before it is parsed or spooled."""

    def __init__(self, app: Any, upload_limit: int, json_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        is_upload = scope["path"].rstrip("/") == "/api/images"
        limit = self.upload_limit if is_upload else self.json_limit
        what = "upload" if is_upload else "request body"
        message = f"{what} too large: the limit is {limit:,} bytes" + (
            "; upload a smaller image (or start the server with a larger --max-upload-mb)" if is_upload else ""
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
                    return

        received = 0

        async def limited_receive() -> Dict[str, Any]:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, limited_receive, send)


# --------------------------------------------------------------------------- app
def _one_line_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = loc[0] + "".join(f"[{p}]" for p in loc[1:]) if loc else "request"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def create_app(
    model: Sam,
    *,
    model_name: str = "model",
    backend: Optional[str] = None,
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_size: int = DEFAULT_CACHE_SIZE,
    serialize_model: bool = True,
) -> FastAPI:
    """The demo app around ``model`` (any :class:`Sam`; already fused for inference if wanted).

    ``backend``: the image encoder's backend (see :mod:`repvit_sam.backends`); ``None`` runs
    the encoder module as it is. ``cache_size``: embedded images kept (LRU).
    ``serialize_model``: one model call at a time (default; ``False`` only for measurements). The service is
    ``app.state.service`` (tests count its ``encoder_calls``).
    """
    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels), ("cache_size", cache_size)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    service = SegmentationService(model, backend=backend, cache_size=cache_size, serialize_model=serialize_model)
    samples = available_samples()
    sample_png: Dict[str, bytes] = {}
    sample_lock = threading.Lock()

    app = FastAPI(
        title="repvit-sam serve",
        version="1",
        description="Click to segment: each image is embedded once, each prompt is one decoder pass.",
    )
    app.state.service = service
    app.add_middleware(_BodyLimit, upload_limit=max_upload_bytes + MULTIPART_OVERHEAD, json_limit=MAX_JSON_BYTES)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line_validation_error(exc)}, status_code=422)

    def entry_or_404(image_id: str) -> ImageEntry:
        entry = service.get(image_id)
        if entry is None:
            raise HTTPException(
                404, f"unknown image id {image_id[:64]!r}: upload the image first (POST /api/images); "
                f"ids are forgotten when deleted or evicted from the cache"
            )
        return entry

    # ------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'",
                "Cache-Control": "no-cache",
            },
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info", response_model=InfoResponse, summary="Server settings")
    def info() -> InfoResponse:
        return InfoResponse(
            model=model_name, backend=backend, img_size=int(model.image_encoder.img_size),
            max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, cache_size=cache_size,
            cached_images=len(service.cache), images_embedded=service.encoder_calls, samples=list(samples),
        )

    @app.get("/api/samples", response_model=SampleList, summary="Names of the sample images")
    def sample_list() -> SampleList:
        return SampleList(samples=list(samples))

    @app.get(
        "/api/samples/{name}", summary="A sample image (PNG)", response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **_errors(404)},
    )
    def sample(name: str) -> Response:
        if name not in samples:
            raise HTTPException(404, f"unknown sample {name[:64]!r}; choose from {', '.join(samples)}")
        with sample_lock:
            if name not in sample_png:
                sample_png[name] = png_bytes(samples[name]())
        return Response(sample_png[name], media_type="image/png")

    # ------------------------------------------------------------------ images
    @app.post(
        "/api/images", response_model=ImageInfo, summary="Upload and embed an image",
        responses=_errors(400, 413, 415, 422),
    )
    def upload(file: UploadFile = File(description="JPEG, PNG, TIFF, WebP or BMP; checked by decoding it")) -> ImageInfo:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is {max_upload_bytes:,} bytes; upload a smaller image")
        try:
            image = decode_upload(data, max_pixels, file.filename)
        except UploadError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        entry, _ = service.add_image(image)
        return ImageInfo(image_id=entry.image_id, width=entry.width, height=entry.height)

    @app.post(
        "/api/images/{image_id}/predict", response_model=PredictResponse,
        summary="Masks for points and/or a box (one decoder pass)", responses=_errors(400, 404, 413, 422),
    )
    def predict(image_id: str, req: PredictRequest) -> PredictResponse:
        entry = entry_or_404(image_id)
        try:
            masks, scores = service.predict(entry, req.points, req.box, req.multimask)
        except PromptError as exc:
            raise HTTPException(422, str(exc)) from None
        return PredictResponse(masks=[RLE(**m) for m in masks], scores=scores)

    @app.post(
        "/api/images/{image_id}/everything", response_model=EverythingResponse,
        summary="Segment everything (automatic mask generator)", responses=_errors(400, 404, 413, 422),
    )
    def everything(image_id: str, req: Optional[EverythingRequest] = Body(default=None)) -> EverythingResponse:
        entry = entry_or_404(image_id)
        params = req or EverythingRequest()
        records = service.everything(entry, **params.model_dump())
        return EverythingResponse(
            masks=[RLE(**r["segmentation"]) for r in records],
            scores=[float(r["predicted_iou"]) for r in records],
            stability_scores=[float(r["stability_score"]) for r in records],
            point_coords=[tuple(r["point_coords"][0]) for r in records],
        )

    @app.get(
        "/api/images/{image_id}/everything/progress", response_model=ProgressResponse,
        summary="Progress of the image's segment-everything job", responses=_errors(404),
    )
    def everything_progress(image_id: str) -> ProgressResponse:
        p = entry_or_404(image_id).progress
        return ProgressResponse(state=p.state, done=p.done, total=p.total)  # type: ignore[arg-type]

    @app.delete(
        "/api/images/{image_id}", status_code=204, response_class=Response,
        summary="Forget an image", responses=_errors(404),
    )
    def delete(image_id: str) -> Response:
        if not service.delete(image_id):
            entry_or_404(image_id)
        return Response(status_code=204)

    return app
