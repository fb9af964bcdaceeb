"""FastAPI app: REST API under /api/v1 and the static web page at /.

Uploads are sniffed by content (never by name), size-limited, decoded in a private temp
folder under fixed names, and every failure becomes a 4xx JSON body {"error": ...}.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..data.check import T1_CHANNELS, fewer_sequences_note
from ..data.lgg import select_channels
from ..errors import MissingExtraError, TooLargeError, TumorsegError
from ..infer import Predictor, default_weights, volume_order
from ..io import read_image
from ..shipped import DEFAULT_WEIGHTS, LICENSE, MODEL_CARD
from ..viz import (
    AXIAL_RADIOLOGICAL,
    data_url,
    display_slice,
    display_window,
    flair_of,
    mask_overlay,
    orientation_letters,
    png_bytes,
)
from ..volume import need_medical
from .card import card_html, no_card_html
from .middleware import BodyLimit, Guard, error

STATIC = Path(__file__).parent / "static"
HOW_TO_SEND = "send the image as multipart/form-data, in the field 'file' (curl -F file=@scan.png)"
MAX_UPLOAD = 50 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
MAX_VOXELS = 512 * 512 * 160  # a volume's values (x channels): about 2 GB of memory at the peak
RESULT_TTL = 3600.0  # seconds a volume's mask stays downloadable
MAX_RESULTS_BYTES = 2 * 1024**3  # the results kept: beyond it, the oldest go first (512x512x160: about 50 MB each)
MAX_BUSY = 2  # uploads decoded and answered at once: each may take up to about 2 GB
SEQUENCES = {"all": [T1_CHANNELS[0], "FLAIR", T1_CHANNELS[2]], "flair": ["FLAIR"]}  # a slice's channels, in order
BUSY_WAIT = 60.0  # seconds an upload waits for a free slot before a 503


def sniff(head: bytes) -> str | None:
    """The upload's type from its first bytes: png, jpeg, tiff, nifti, nifti.gz, or None.

    For gzip, only the first few hundred bytes are inflated, to read the NIfTI header."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF and BigTIFF
        return "tiff"
    if len(head) >= 348 and _nifti_header(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b") and _nifti_header(_gunzip_head(head)):
        return "nifti.gz"
    return None


def _nifti_header(head: bytes) -> bool:
    """NIfTI-1 or -2 by the header's size field, in either byte order."""
    return len(head) >= 4 and any(int.from_bytes(head[:4], order) in (348, 540) for order in ("little", "big"))


def _gunzip_head(data: bytes, n: int = 600) -> bytes:
    import zlib

    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, n)
    except zlib.error:
        return b""


RESULT_NAME = re.compile(r"[0-9a-f]{32}")  # a volume result's folder: uuid4().hex


def expire_results(folder: Path, ttl: float | None = None, max_bytes: int = MAX_RESULTS_BYTES) -> None:
    """Delete volume results (a folder each: the mask volume and the arrays its slice images are
    drawn from) older than `ttl` seconds (default RESULT_TTL), unfinished ones a crashed worker
    left, and then the oldest finished ones while all of them hold more than `max_bytes`."""
    limit = time.time() - (RESULT_TTL if ttl is None else ttl)
    try:
        paths = list(folder.iterdir())
    except FileNotFoundError:  # the server is shutting down
        return
    kept = []  # (mtime, bytes, folder) of the finished results left
    for path in paths:
        if not RESULT_NAME.fullmatch(path.name.removesuffix(".part")):  # only results: never another file put there
            continue
        try:
            if not path.is_dir():
                continue
            mtime = path.stat().st_mtime
            if mtime < limit:
                shutil.rmtree(path, ignore_errors=True)
            elif not path.name.endswith(".part"):
                kept.append((mtime, sum(f.stat().st_size for f in path.iterdir()), path))
        except FileNotFoundError:  # another worker removed it first
            pass
    total = sum(size for _, size, _ in kept)
    for _, size, path in sorted(kept):
        if total <= max_bytes:
            break
        shutil.rmtree(path, ignore_errors=True)
        total -= size


def _result(results: Path, rid: str, name: str) -> Path | JSONResponse:
    """A file of a volume's result, or the 404 to answer; an expired result is removed."""
    if not RESULT_NAME.fullmatch(rid):
        return error(404, "no such result")
    folder = results / rid
    try:
        expired = folder.stat().st_mtime < time.time() - RESULT_TTL
    except FileNotFoundError:
        return error(404, "no such result: results are kept for an hour at most, and not across server restarts")
    if expired:
        shutil.rmtree(folder, ignore_errors=True)
        return error(404, "no such result: results are kept for an hour")
    if not (folder / name).is_file():
        return error(404, "no such result")
    return folder / name


class ErrorBody(BaseModel):
    """Every error answer's body."""

    error: str


class ModelInfo(BaseModel):
    """The model that answers (GET /api/v1/model)."""

    model: str = Field(description="the weights' file name and the start of their SHA-256")
    version: str = Field(description="tumorseg's version")
    backend: str = Field(description="the inference backend: torch, onnx or onnx-int8")
    channels: list[str] = Field(description="the sequences a slice holds, in order")
    image_size: int = Field(description="the size the model works at; masks come back at the upload's size")
    shipped: bool = Field(description="whether these are the shipped weights")
    license: str | None = Field(description="the shipped weights' license; null for other weights")
    model_card: str | None = Field(description="the address of the shipped model's card; null for other weights")


class SliceAnswer(BaseModel):
    """The answer for a slice (PNG, TIFF or JPEG). Images are PNG data URLs at the upload's size."""

    kind: Literal["image"]
    notes: list[str]
    width: int
    height: int
    mri: str
    mask: str
    overlay: str
    tumor_area_px: int
    max_probability: float
    runtime_ms: float
    model: str


ORDER = (
    "axial slices counted from 0 at the most inferior (feet) end, not in the file's own order (a file stored "
    "head first, or with its axial axis first, numbers them otherwise; the mask at mask_url keeps the file's); "
    "in the file's own order where `oriented` is false"
)


class VolumeSlice(BaseModel):
    """One axial slice of a volume's answer, in canonical order (the most inferior first, as the
    notes count them). Its images are URLs relative to the server
    (`/api/v1/results/{id}/slices/{i}/mri.png`, `mask.png`, `overlay.png`), served for an hour,
    so a large volume's answer stays small."""

    mri: str = Field(description="URL, relative to the server, of the slice's MRI (FLAIR) as PNG")
    mask: str = Field(description="URL, relative to the server, of the slice's mask as PNG (0 or 255)")
    overlay: str = Field(description="URL, relative to the server, of the MRI with the mask in red (what the "
                         "largest-region step dropped outlined in white), as PNG")  # fmt: skip
    tumor_area_px: int = Field(description="tumor pixels in this slice")
    dropped_px: int = Field(description="pixels of this slice in regions the largest-region step dropped "
                            "(outlined in white on the overlay; 0 with all_parts)")  # fmt: skip


class VolumeAnswer(BaseModel):
    """The answer for a NIfTI volume; `mask_url` serves its mask volume for an hour."""

    kind: Literal["volume"]
    notes: list[str]
    slices: list[VolumeSlice] = Field(description=f"one per axial slice: {ORDER}")
    tumor_volume_ml: float = Field(description="the mask's volume in mL, from the file's voxel size")
    slices_with_tumor: list[int] = Field(description=f"indices into `slices` with tumor: {ORDER}")
    oriented: bool = Field(
        description="false when the file states no orientation (no qform or sform code above "
        "0): slices are then counted in the file's order, and no end is known to be inferior"
    )
    max_probability: float
    runtime_ms: float
    mask_url: str = Field(description="URL, relative to the server, of the mask volume (.nii.gz, uint8 0/1, the "
                          "upload's own voxel order and affine), served for an hour")  # fmt: skip
    model: str


class HealthAnswer(BaseModel):
    """The server is up: the model it answers with, tumorseg's version, the inference backend, and
    how many uploads are being segmented now out of the most it segments at once."""

    status: Literal["ok"]
    model: str
    version: str
    backend: str
    busy: int = Field(description="uploads being segmented now")
    max_busy: int = Field(description="uploads segmented at once (TUMORSEG_SERVE_MAX_BUSY)")
    waiting: int = Field(description="uploads waiting for a slot (each gets 503 after TUMORSEG_SERVE_BUSY_WAIT s)")


BINARY = {"schema": {"type": "string", "format": "binary"}}  # a file, not JSON
Answer = Annotated[SliceAnswer | VolumeAnswer, Field(discriminator="kind")]  # "image" or "volume"

SEGMENT_RESPONSES: dict = {
    200: {"model": Answer,
          "description": "JSON: SliceAnswer or VolumeAnswer; with `?format=png` the mask as PNG for a slice, "
          "or the mask volume as .nii.gz for a volume",
          "content": {"image/png": BINARY, "application/gzip": BINARY}},
    400: {"model": ErrorBody, "description": "empty upload, more than one file, an unknown parameter, or a Host "
          "name this server does not answer to (serve --allowed-host)"},
    403: {"model": ErrorBody, "description": "sent by another site's page (Sec-Fetch-Site cross-site or same-site)"},
    413: {"model": ErrorBody, "description": "upload, image or volume too large"},
    415: {"model": ErrorBody, "description": "not a PNG, TIFF, JPEG or NIfTI file, not sent as multipart/form-data, "
          "or a NIfTI volume on a server installed without the medical extra"},
    422: {"model": ErrorBody, "description": "a readable type whose content cannot be segmented, or a query value "
          "out of range (format, all_parts)"},
    503: {"model": ErrorBody, "description": "busy: other uploads held every decoding slot for BUSY_WAIT seconds; "
          "try again after Retry-After seconds"},
}  # fmt: skip
SEGMENT_PARAMS = {"format", "all_parts"}


async def one_upload(request: Request) -> None:
    """Refuse what would otherwise be ignored silently: unknown query parameters or form
    fields, and a second file (FastAPI has parsed the form already; this reads its cache)."""
    unknown = sorted(set(request.query_params) - SEGMENT_PARAMS)
    if unknown:
        raise HTTPException(400, f"unknown query parameter {', '.join(unknown)}: this endpoint takes "
                            f"{' and '.join(sorted(SEGMENT_PARAMS))}")  # fmt: skip
    for name in sorted(SEGMENT_PARAMS):
        if (n := len(request.query_params.getlist(name))) > 1:
            raise HTTPException(400, f"query parameter {name} given {n} times: give it once")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(415, HOW_TO_SEND)
    form = await request.form()
    if any(isinstance(v, str) for v in form.getlist("file")):
        raise HTTPException(400, "the field 'file' holds text, not a file upload: a file part needs a filename "
                            "(curl -F file=@scan.png; note the @)")  # fmt: skip
    fields = sorted(set(form) - {"file"})
    if fields:
        raise HTTPException(400, f"unknown form field {', '.join(fields)}: send the image as the field 'file'")
    if len(form.getlist("file")) > 1:
        raise HTTPException(400, f"{len(form.getlist('file'))} files in one request: send one file per request")


async def wait_for_slot(slots: asyncio.Semaphore, request: Request, wait: float) -> str:
    """`slot` once one of `slots` is taken, `gone` if the client disconnects first, `busy` after
    `wait` seconds. The body has been read: all the connection can still bring is its end."""
    if not slots.locked():
        await slots.acquire()
        return "slot"

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    acquire, gone = asyncio.ensure_future(slots.acquire()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({acquire, gone}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request cancelled (the server stopping): no slot is kept for it
        gone.cancel()
        if not acquire.cancel() and not acquire.cancelled() and acquire.exception() is None:
            slots.release()
        raise
    if acquire.done() and not gone.done():
        gone.cancel()
        return "slot"
    gone.cancel()
    if not acquire.cancel():  # taken just as the client left or the wait ended: given back
        slots.release()
    if gone.done() and not gone.cancelled():
        gone.exception()  # retrieved: a receive that failed is a client gone too
        return "gone"
    return "busy"


def create_app(
    weights: str | Path | None = None,
    backend: str = "auto",
    max_upload: int = MAX_UPLOAD,
    max_pixels: int = MAX_PIXELS,
    results_dir: str | Path | None = None,
    max_voxels: int = MAX_VOXELS,
    max_busy: int = MAX_BUSY,
    busy_wait: float = BUSY_WAIT,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The app with the model loaded once; `weights` None means the shipped model; a Host header
    not in `allowed_hosts` is refused (None: any).

    Volume masks are kept in `results_dir` for RESULT_TTL seconds (a folder shared by every
    worker of `serve`, which removes it at exit); without one, the app makes its own temporary
    folder and removes it when it shuts down."""
    weights = Path(weights) if weights else default_weights()
    predictor = Predictor.from_checkpoint(weights, backend)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    model_id = f"{weights.stem}-{digest[:12]}"
    shipped = DEFAULT_WEIGHTS.is_file() and (
        weights.resolve() == DEFAULT_WEIGHTS.resolve()
        or hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest() == digest
    )
    lock = threading.Lock()  # one inference at a time: the cores are shared anyway
    slots = asyncio.Semaphore(max_busy)  # uploads read, decoded and answered at once: bounds a burst's memory
    free = [max_busy]  # slots not taken, for /api/v1/health (the semaphore's own count is private)
    waiting = [0]  # uploads read whole and waiting for a slot, for /api/v1/health
    owned = results_dir is None
    results = Path(tempfile.mkdtemp(prefix="tumorseg-serve-")) if owned else Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)

    # no /docs or /redoc: they load scripts from a CDN, which an offline network cannot reach
    app = FastAPI(title="tumorseg", version=__version__, description="Brain tumor segmentation in MRI. "
                  "Not a medical device; for research use only.", docs_url=None, redoc_url=None)  # fmt: skip
    if owned:
        app.router.on_shutdown.append(lambda: shutil.rmtree(results, ignore_errors=True))

    # python-multipart logs a malformed body to stderr as well; the client's 400 says it, not the server's log
    logging.getLogger("python_multipart").setLevel(logging.ERROR)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and "multipart" in detail.lower() and "curl" not in detail:  # Starlette's parser
            detail = f"{detail.rstrip('.')}: {HOW_TO_SEND}"
        response = error(exc.status_code, detail)
        response.headers.update(exc.headers or {})  # such as Allow on a 405
        if exc.status_code == 405:  # Starlette names the first route's methods only: GET without its HEAD twin
            from starlette.routing import Match

            allowed = {m for r in app.router.routes if r.matches(request.scope)[0] != Match.NONE
                       for m in getattr(r, "methods", None) or ()}  # fmt: skip
            if allowed:
                response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}")

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        if any(tuple(e["loc"]) == ("body", "file") for e in exc.errors()):  # sent, but not whole
            where += (" (no file in the field 'file': send the image as multipart/form-data in the field 'file', "
                      "curl -F file=@scan.png; or the upload was cut short)")  # fmt: skip
        return error(422, f"invalid request: {where}")

    @app.get("/api/v1/health")
    async def health() -> HealthAnswer:
        """The loaded model's id and version, and the inference backend (async: it answers while
        uploads are segmented in the threadpool)."""
        return HealthAnswer(status="ok", model=model_id, version=__version__, backend=predictor.backend,
                            busy=max_busy - free[0], max_busy=max_busy, waiting=waiting[0])  # fmt: skip

    app.head("/api/v1/health", include_in_schema=False)(health)  # one operation in the schema

    @app.get("/api/v1/model")
    def model() -> ModelInfo:
        """The model that answers: its id, the input it takes (channels, in order, and the size it
        works at), and for the shipped model its license and the address of its model card."""
        cfg = predictor.config
        card = "/model-card/" if shipped and MODEL_CARD.is_file() else None
        return ModelInfo(model=model_id, version=__version__, backend=predictor.backend,
                         channels=SEQUENCES[cfg.channels], image_size=cfg.image_size, shipped=shipped,
                         license=LICENSE if shipped else None, model_card=card)  # fmt: skip

    app.head("/api/v1/model", include_in_schema=False)(model)

    def why_no_card() -> str:
        if shipped:  # a wheel is not built without it, but a checkout's file may have been moved
            return f"{MODEL_CARD.name} is missing from this installation"  # the server's paths are not shown
        return f"{model_id} is not the shipped model (its card is for that one)"

    @functools.cache  # rendered at the first request, then kept
    def card_page() -> str:
        return card_html(MODEL_CARD.read_text(encoding="utf-8"))

    @app.api_route("/model-card", methods=["GET", "HEAD"], include_in_schema=False)
    def model_card_root() -> RedirectResponse:
        return RedirectResponse("/model-card/", status_code=308)

    @app.api_route("/model-card/", methods=["GET", "HEAD"], include_in_schema=False)
    def model_card() -> HTMLResponse:
        if not shipped or not MODEL_CARD.is_file():  # a page, as the card would be: a browser shows it
            return HTMLResponse(no_card_html(why_no_card()), 404)
        return HTMLResponse(card_page())

    @app.api_route("/model-card/{name}.png", methods=["GET", "HEAD"], include_in_schema=False)
    def model_card_image(name: str) -> FileResponse:
        """The card's figures, which lie beside it (failure_modes.png, curves.png)."""
        path = MODEL_CARD.parent / f"{name}.png"
        if not shipped:
            raise HTTPException(404, f"no model card: {why_no_card()}")
        if not re.fullmatch(r"[\w-]+", name) or not path.is_file():
            raise HTTPException(404, f"the model card has no figure {name}.png")
        return FileResponse(path, media_type="image/png")

    too_large = f"upload larger than {max_upload // (1024 * 1024)} MiB"
    app.add_middleware(BodyLimit, limit=max_upload + 1024 * 1024, message=too_large)  # + the form's own bytes
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)  # the outermost: before the body is read

    @app.post("/api/v1/segment", responses=SEGMENT_RESPONSES, dependencies=[Depends(one_upload)])
    async def segment(
        request: Request,
        file: UploadFile = File(..., description="A PNG, TIFF or JPEG slice, or a NIfTI volume"),
        format: Literal["json", "png"] = Query("json", description="json, or png for the mask alone"),
        all_parts: bool = Query(False, description="a volume keeps every 3D region, not only the largest"),
    ):
        """Segment one upload. Returns the mask and overlay as PNG data URLs, the tumor area
        (or volume in mL), the max probability and the runtime; `?format=png` returns the mask.
        `notes` says what the user should know: a volume's close call of the largest-region step,
        or input with FLAIR alone."""
        # async: an upload waiting for a slot holds no thread (the page and result images need them)
        # and no memory: its body stays in the form's spooled temporary file until its turn
        if file.size is not None and file.size > max_upload:
            return error(413, too_large)
        head = await file.read(64 * 1024)
        if not head:
            return error(400, "empty upload")
        kind = sniff(head)
        if kind is None:
            return error(415, "not a supported image: send a PNG, TIFF or JPEG slice, or a NIfTI volume")
        if kind.startswith("nifti"):  # refused before it waits for a slot
            try:
                need_medical("upload", "reading NIfTI")
            except MissingExtraError as exc:
                return error(415, str(exc))
        waiting[0] += 1
        try:
            got = await wait_for_slot(slots, request, busy_wait)
        finally:
            waiting[0] -= 1
        if got == "busy":
            being = f"{max_busy} uploads are" if max_busy > 1 else "1 upload is"
            return error(503, f"busy: {being} being segmented; try again shortly", {"Retry-After": "5"})
        if got == "gone":  # the client gave up while it waited: nothing is segmented for nobody
            return Response(status_code=499)
        free[0] -= 1
        try:
            return await run_in_threadpool(read_and_segment, file, kind, format, all_parts)
        finally:
            free[0] += 1
            slots.release()

    def read_and_segment(file: UploadFile, kind: str, format: str, all_parts: bool):
        file.file.seek(0)
        data = file.file.read(max_upload + 1)
        if len(data) > max_upload:
            return error(413, too_large)
        return segment_upload(data, kind, format, all_parts)

    def segment_upload(data: bytes, kind: str, format: str, all_parts: bool):
        with tempfile.TemporaryDirectory(prefix="tumorseg-upload-") as tmp:
            suffix = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "nifti": ".nii", "nifti.gz": ".nii.gz"}[kind]
            path = Path(tmp) / f"upload{suffix}"  # never the client's name
            path.write_bytes(data)
            try:
                if kind.startswith("nifti"):
                    return segment_volume(path, format, all_parts)
                img = read_image(path, max_pixels=max_pixels)
                chw = select_channels(img, predictor.config.channels, path)
            except TumorsegError as exc:
                return error(413 if isinstance(exc, TooLargeError) else 422, str(exc).replace(str(path), "upload"))
        t0 = time.perf_counter()
        with lock:
            prob = predictor.predict(chw[None])[0]
        mask = predictor.mask(prob[None])[0]
        runtime = time.perf_counter() - t0
        mask_png = png_bytes((mask * 255).astype(np.uint8))
        if format == "png":
            return Response(mask_png, media_type="image/png")
        return {
            "kind": "image",
            "notes": [note] if (note := fewer_sequences_note(chw[None])) else [],
            "width": int(mask.shape[1]),
            "height": int(mask.shape[0]),
            "mri": data_url(png_bytes(display_slice(chw, window=True))),
            "mask": data_url(mask_png),
            "overlay": data_url(png_bytes(mask_overlay(chw, mask, window=True))),
            "tumor_area_px": int(mask.sum()),
            "max_probability": float(prob.max()),
            "runtime_ms": runtime * 1000,
            "model": model_id,
        }

    def segment_volume(path: Path, format: str, all_parts: bool = False):
        from ..volume import mask_summary, mask_to_volume, read_nifti, volume_slices, write_nifti

        vol = read_nifti(path, max_voxels=max_voxels, max_slice_pixels=max_pixels)  # a slice as large as a 2D upload
        slices, notes = volume_slices(vol, predictor.config.channels)
        t0 = time.perf_counter()
        with lock:
            probs = predictor.predict(slices, volume=True)
        masks, said, dropped = predictor.mask_parts(probs, volume=True, largest=not all_parts,
                                                 order=volume_order(vol.oriented))  # fmt: skip
        notes = [*notes, *said]
        runtime = time.perf_counter() - t0
        expire_results(results)
        rid = uuid.uuid4().hex
        part = results / f"{rid}.part"  # renamed when whole: a result is served complete or not at all
        part.mkdir(parents=True)  # the results folder too, should a tmp cleaner have removed it
        try:
            write_nifti(part / "mask.nii.gz", mask_to_volume(masks, vol), vol)
            if format != "png":  # the arrays the slice images are drawn from, each image when asked for
                flair = flair_of(slices)
                np.save(part / "flair.npy", flair)
                # one display window for the volume's images (its slices stay comparable); edge
                # letters where the file states the orientation
                view = {"window": display_window(flair), "letters": vol.oriented}
                (part / "view.json").write_text(json.dumps(view))
                np.save(part / "masks.npy", np.packbits(np.asarray(masks, bool), axis=-1))  # a bit a pixel
                np.save(part / "dropped.npy", np.packbits(dropped, axis=-1))  # outlined on the overlays
            part.rename(results / rid)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        if format == "png":
            return FileResponse(results / rid / "mask.nii.gz", media_type="application/gzip", filename="mask.nii.gz")
        summary = mask_summary(masks, vol)
        base = f"/api/v1/results/{rid}/slices"
        return {
            "kind": "volume",
            "notes": notes,
            "slices": [
                {
                    "mri": f"{base}/{i}/mri.png",
                    "mask": f"{base}/{i}/mask.png",
                    "overlay": f"{base}/{i}/overlay.png",
                    "tumor_area_px": int(m.sum()),
                    "dropped_px": int(d.sum()),
                }  # fmt: skip
                for i, (m, d) in enumerate(zip(masks, dropped))
            ],
            "tumor_volume_ml": summary["tumor_volume_ml"],
            "oriented": vol.oriented,
            "slices_with_tumor": summary["slices_with_tumor"],
            "max_probability": float(probs.max()) if probs.size else 0.0,
            "runtime_ms": runtime * 1000,
            "mask_url": f"/api/v1/results/{rid}/mask.nii.gz",
            "model": model_id,
        }

    @app.get("/api/v1/results/{rid}/mask.nii.gz", response_class=Response, responses={
        200: {"content": {"application/gzip": BINARY}, "description": "the mask volume (.nii.gz)"},
        404: {"model": ErrorBody, "description": "no such result, or older than an hour"},
        422: {"model": ErrorBody, "description": "an invalid request"}})  # fmt: skip
    def result_mask(rid: str):
        """The mask volume of an earlier volume upload."""
        path = _result(results, rid, "mask.nii.gz")
        if isinstance(path, JSONResponse):
            return path
        # no file name of its own: the page's link names it after the upload (scan_pred.nii.gz)
        return FileResponse(path, media_type="application/gzip")

    app.head("/api/v1/results/{rid}/mask.nii.gz", include_in_schema=False)(result_mask)  # link checkers use HEAD

    drawing = threading.BoundedSemaphore(4)  # slice images drawn at once (they run in the threadpool)

    @app.get("/api/v1/results/{rid}/slices/{i}/{name}.png", response_class=Response, responses={
        200: {"content": {"image/png": BINARY}, "description": "a slice's MRI, mask or overlay, at the volume's size"},
        404: {"model": ErrorBody, "description": "no such result or slice, or older than an hour"},
        422: {"model": ErrorBody, "description": "an invalid request"}})  # fmt: skip
    def result_slice(request: Request, rid: str, i: int, name: Literal["mri", "mask", "overlay"]):
        """An image of one slice of an earlier volume upload (the URLs in its `slices`), drawn when
        asked for: a volume's answer does not wait for the images of all its slices."""
        path = _result(results, rid, "masks.npy")
        if isinstance(path, JSONResponse):
            return path
        try:
            flair, masks, gone = (np.load(path.parent / f"{n}.npy", mmap_mode="r") for n in ("flair", "masks",
                                                                                             "dropped"))  # fmt: skip
            view = json.loads((path.parent / "view.json").read_text())
        except FileNotFoundError:  # expired by another worker just now
            return error(404, "no such result: results are kept for an hour at most")
        if not 0 <= i < len(masks):
            return error(404, f"no such slice: the volume has slices 0-{len(masks) - 1}")
        cache = {"Cache-Control": "private, max-age=3600"}
        if request.method == "HEAD":  # a link checker: the image exists; it is drawn only for a GET
            head = Response(b"", media_type="image/png", headers=cache)
            del head.headers["content-length"]  # not known without drawing it
            return head
        window, letters = view["window"], AXIAL_RADIOLOGICAL if view["letters"] else None
        with drawing:  # each may take 200 MB for a 4096x4096 slice: a few at once, the others wait
            mri = np.asarray(flair[i])
            mask = np.unpackbits(masks[i], axis=-1, count=mri.shape[-1]).astype(bool)
            if name == "mri":
                # grayscale, windowed and lettered as the overlay, which the page lays over it
                image = orientation_letters(display_slice(mri, window=window), letters)[..., 0]
            elif name == "mask":
                image = mask.astype(np.uint8) * 255
            else:
                dropped = np.unpackbits(gone[i], axis=-1, count=mri.shape[-1]).astype(bool)
                image = mask_overlay(mri[None], mask, dropped, window=window, letters=letters)
            png = png_bytes(image, level=3)
        return Response(png, media_type="image/png", headers=cache)

    app.head("/api/v1/results/{rid}/slices/{i}/{name}.png", include_in_schema=False)(result_slice)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings come from TUMORSEG_SERVE_* variables."""
    import os

    return create_app(
        os.environ.get("TUMORSEG_SERVE_WEIGHTS") or None,
        os.environ.get("TUMORSEG_SERVE_BACKEND", "auto"),
        int(os.environ.get("TUMORSEG_SERVE_MAX_UPLOAD", MAX_UPLOAD)),
        results_dir=os.environ.get("TUMORSEG_SERVE_RESULTS") or None,
        **busy_settings(),
        allowed_hosts=[h.strip() for h in os.environ.get("TUMORSEG_SERVE_ALLOWED_HOSTS", "").split(",") if h.strip()]
        or None,
    )


def busy_settings() -> dict[str, float]:
    """max_busy and busy_wait from TUMORSEG_SERVE_MAX_BUSY (an integer >= 1) and
    TUMORSEG_SERVE_BUSY_WAIT (seconds >= 0); a TumorsegError naming the variable for another value."""
    import math
    import os

    got = {}
    for name, key, kind, low, default in (("TUMORSEG_SERVE_MAX_BUSY", "max_busy", int, 1, MAX_BUSY),
                                          ("TUMORSEG_SERVE_BUSY_WAIT", "busy_wait", float, 0, BUSY_WAIT)):  # fmt: skip
        text = os.environ.get(name, "").strip()
        try:
            value = kind(text) if text else default
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            what = "a whole number of uploads, at least 1" if kind is int else "a number of seconds, at least 0"
            raise TumorsegError(f"{name}={text!r}: must be {what}")
        got[key] = value
    return got
