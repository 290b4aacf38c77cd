"""PDF text extraction with pypdf, and the checks an upload must pass first."""

import io
import logging

from pypdf import PdfReader
from pypdf.errors import DependencyError, PyPdfError

PDF_MAGIC = b"%PDF-"

# pypdf logs every oddity of a damaged file as a warning; the upload's answer already says what was wrong.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class NotAPdf(Exception):
    """The bytes are not a PDF at all."""


class UnreadablePdf(Exception):
    """The bytes claim to be a PDF, but no text can be read from them; the message says why."""


def extract(data):
    """Return ``(page_count, text)`` of the PDF ``data``: each page's text without its trailing newlines,
    pages joined by one newline.

    :raise UnreadablePdf: empty, corrupt, encrypted or page-less.
    :raise NotAPdf: bytes that do not start with ``%PDF-``.
    """
    if not data:
        raise UnreadablePdf("the file is empty")
    if not data.startswith(PDF_MAGIC):
        raise NotAPdf("the file is not a PDF (it does not start with %PDF-)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadablePdf("the PDF is encrypted; upload it without a password")
        pages = reader.pages
        if len(pages) == 0:
            raise UnreadablePdf("the PDF has no pages")
        text = "\n".join(page.extract_text().rstrip("\n") for page in pages)
        # What PostgreSQL cannot store (NUL, unpaired surrogates from broken font maps) is dropped or replaced.
        return len(pages), text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    except (PyPdfError, DependencyError) as exc:
        raise UnreadablePdf(f"the PDF is corrupt or truncated ({type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf raises plain Python errors on some malformed structures.
        raise UnreadablePdf(f"the PDF is corrupt ({type(exc).__name__})") from None
