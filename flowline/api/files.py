"""Files: upload a PDF (its text is extracted once, here), read its metadata, delete it."""

from __future__ import annotations

import hashlib
import logging
import math
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.datastructures import FileStorage

from ..core.config import settings_of
from ..data import db
from . import contract, pdf, schemas
from .errors import ApiError, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType, unavailable_response
from .http import parse_id, query_json_response, row_json_response

bp = Blueprint("files", __name__)
log = logging.getLogger("flowline.files")

# Room for the multipart framing around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def _safe_filename(raw: str | None) -> str:
    """Return the client's file name without any folder part or control characters, at most 255 characters."""
    name = PureWindowsPath(PurePosixPath(raw or "").name).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:255] or "upload.pdf"


def _safe_content_type(raw: str | None) -> str:
    """Return the part's declared content type without control characters (PostgreSQL text cannot hold NUL),
    at most 255 characters; it is advisory only."""
    kept = "".join(ch for ch in raw or "" if unicodedata.category(ch)[0] != "C").strip()
    return kept[:255] or "application/octet-stream"


@bp.post("/files")
@contract.operation(
    "Upload a PDF (multipart field `file`); its text is extracted now, in a bounded child process",
    body={
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "A PDF (its bytes must start with %PDF-)."}
        },
    },
    body_media_type="multipart/form-data",
)
@contract.responds(201, schemas.FileCreatedSchema, "The file was stored.", "Location")
@contract.responds(
    422,
    schemas.ErrorSchema,
    "No `file` field, or a PDF that cannot be used (nothing is stored; `detail` says which): empty, "
    "corrupt, encrypted or page-less; too complex to extract within PDF_EXTRACT_TIMEOUT_S (`The PDF "
    "is too complex to extract within 5 s`) or PDF_EXTRACT_MEMORY_MB (`... within 512 MB of "
    "memory`); or text longer than MAX_INPUT_CHARS, more than a run accepts.",
)
@contract.responds(
    500,
    schemas.ErrorSchema,
    "The extraction process failed unexpectedly (a bug, or an installation it cannot run in): nothing is "
    "stored; the request id identifies it in the logs.",
)
@contract.responds(
    503,
    schemas.ErrorSchema,
    "The server process already runs PDF_EXTRACT_CONCURRENCY extractions (refused at once, not "
    "queued), or the database is unreachable or busy; retry after Retry-After seconds.",
    "Retry-After",
)
@contract.errors(400, 413, 415)
def upload_file() -> Response:
    """Upload a PDF as multipart field ``file``; 201 ``{file_id, filename, size}`` with ``Location``.

    :raise 413: larger than MAX_UPLOAD_MB (refused before the body is read when Content-Length says so).
    :raise 415: not multipart/form-data, or bytes that do not start with ``%PDF-``.
    :raise 422: no ``file`` field; an empty, corrupt, encrypted or page-less PDF, one too complex to extract
        within PDF_EXTRACT_TIMEOUT_S or PDF_EXTRACT_MEMORY_MB, or one whose text is longer than MAX_INPUT_CHARS
        (``detail`` says which); nothing is stored.
    :raise 503: PDF_EXTRACT_CONCURRENCY extractions already run in this process; with ``Retry-After``.
    :raise 500: the extraction process failed unexpectedly; nothing is stored.
    """
    bound_upload_body()
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("Upload the file as multipart/form-data, in a field named 'file'.")
    upload = request.files.get("file")
    if upload is None:
        raise Unprocessable(
            "The multipart field 'file' is missing.", errors={"file": ["Missing data for required field."]}
        )
    try:
        row = store_pdf(upload.filename, upload.mimetype, read_upload(upload))
    except ExtractorBusy as exc:
        return unavailable_response(exc.detail, retry_after_s=exc.retry_after_s)
    return row_json_response(row, status=201, headers={"Location": f"/files/{row['id']}"})


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"The file is larger than {settings_of(current_app).max_upload_mb} MB.")


def bound_upload_body() -> None:
    """Bound this request's body to one upload of MAX_UPLOAD_MB and its multipart framing; call it before the body
    is parsed. A body that Content-Length says is larger is refused unread; one sent without it (chunked) is cut
    by werkzeug with a 413.

    :raise PayloadTooLarge: Content-Length says more.
    """
    bound = settings_of(current_app).max_upload_mb * 1024 * 1024 + MULTIPART_OVERHEAD
    if request.content_length is not None and request.content_length > bound:
        raise _too_large()
    request.max_content_length = bound


def read_upload(upload: FileStorage) -> bytes:
    """Return the bytes of ``upload``, a file of a multipart body.

    :raise PayloadTooLarge: more than MAX_UPLOAD_MB.
    """
    limit = settings_of(current_app).max_upload_mb * 1024 * 1024
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise _too_large()
    return data


class ExtractorBusy(ApiError):
    """Every PDF extraction slot of this process is taken (PDF_EXTRACT_CONCURRENCY)."""

    status = 503

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("The server is extracting as many PDFs as it allows at once; retry shortly.")
        self.retry_after_s = retry_after_s


def store_pdf(filename: str | None, mimetype: str | None, data: bytes) -> dict[str, Any]:
    """Extract the text of the PDF ``data`` (at most MAX_UPLOAD_MB, already checked) and store it as an uploaded
    file named ``filename`` (a client's name: made safe here); return its row (``body``, ``id``).

    :raise UnsupportedMediaType: not a PDF.
    :raise Unprocessable: an unreadable PDF, one too complex to extract within its bounds, or one whose text is
        longer than MAX_INPUT_CHARS; nothing is stored.
    :raise ExtractorBusy: PDF_EXTRACT_CONCURRENCY extractions already run in this process.
    """
    extractor = current_app.extensions[pdf.EXTENSION]
    try:
        page_count, text = extractor.extract(data)
    except pdf.NotAPdf as exc:
        raise UnsupportedMediaType(f"Only PDF files are accepted: {exc}.") from None
    except pdf.UnreadablePdf as exc:
        raise Unprocessable(f"The PDF cannot be read: {exc}.") from None
    except pdf.TooComplex as exc:
        log.warning("PDF upload refused: extraction went past its bound of %s (%d bytes)", exc, len(data))
        raise Unprocessable(f"The PDF is too complex to extract within {exc}; nothing was stored.") from None
    except pdf.TextTooLong:
        raise Unprocessable(
            f"The PDF's text is longer than {extractor.max_chars} characters (MAX_INPUT_CHARS), "
            "more than a run accepts; nothing was stored."
        ) from None
    except pdf.Busy as exc:
        log.warning("PDF upload refused: %s", exc)
        # A slot frees within one extraction's time bound at most.
        raise ExtractorBusy(retry_after_s=math.ceil(extractor.timeout_s)) from None
    with db.connection() as conn:
        row = db.one(
            conn,
            "create_file",
            filename=_safe_filename(filename),
            content_type=_safe_content_type(mimetype),
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            page_count=page_count,
            data=data,
            text_content=text,
        )
    assert row is not None  # an INSERT ... RETURNING: always one row
    return row


@bp.get("/files/<file_id>")
@contract.operation("Read a file's metadata")
@contract.responds(200, schemas.FileSchema, "The file's metadata.")
@contract.errors(404, 503)
def get_file(file_id: str) -> Response:
    """Return a file's metadata: ``{file_id, filename, content_type, size, sha256, page_count, created_at}``.

    :raise 404: unknown file.
    """
    return query_json_response("get_file_json", "File not found", file_id=parse_id(file_id, "File"))


@bp.delete("/files/<file_id>")
@contract.operation("Delete a file")
@contract.responds(204, None, "Deleted.")
@contract.errors(404, 503)
def delete_file(file_id: str) -> tuple[str, int]:
    """Delete a file; 204. Nodes that name it fail their step from then on.

    :raise 404: unknown file.
    """
    with db.connection() as conn:
        if db.one(conn, "delete_file", file_id=parse_id(file_id, "File")) is None:
            raise NotFound("File not found")
    return "", 204
