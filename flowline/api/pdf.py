"""PDF text extraction with pypdf, and the checks an upload must pass first.

An upload's text is extracted in a child process (``python -m flowline.api.pdf``, see :class:`Extractor`), bounded
in time, memory and text length, so a PDF that is slow to parse cannot hold an API thread: a few KiB whose pages
all name one stream inflating to megabytes take pypdf tens of seconds.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pypdf import PdfReader
from pypdf.errors import DependencyError, PyPdfError

if TYPE_CHECKING:
    from ..core.config import Settings

PDF_MAGIC = b"%PDF-"

# pypdf logs every oddity of a damaged file as a warning; the upload's answer already says what was wrong.
logging.getLogger("pypdf").setLevel(logging.ERROR)

log = logging.getLogger("flowline.pdf")

# app.extensions key of the app's Extractor.
EXTENSION = "flowline.pdf"

# The child's exit status when it ran out of memory (RLIMIT_AS): it cannot be trusted to write a result then.
_EXIT_OUT_OF_MEMORY = 3
# Where `python -m flowline.api.pdf` finds the package, whatever the server's working directory.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# The only variables the child gets: it needs to find Python's packages, never the service's secrets.
_CHILD_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")


class NotAPdf(Exception):
    """The bytes are not a PDF at all."""


class UnreadablePdf(Exception):
    """The bytes claim to be a PDF, but no text can be read from them; the message says why."""


class TooComplex(Exception):
    """Extraction went past its time or memory bound; the message names the bound ("5 s", "512 MB of memory")."""


class TextTooLong(Exception):
    """The PDF's text is longer than the extraction's character bound."""


class Busy(Exception):
    """Every extraction slot of this process is taken."""


def check(data: bytes) -> None:
    """Refuse what is not worth parsing.

    :raise UnreadablePdf: empty.
    :raise NotAPdf: bytes that do not start with ``%PDF-``.
    """
    if not data:
        raise UnreadablePdf("the file is empty")
    if not data.startswith(PDF_MAGIC):
        raise NotAPdf("the file is not a PDF (it does not start with %PDF-)")


def extract(data: bytes, max_chars: int | None = None) -> tuple[int, str]:
    """Return ``(page_count, text)`` of the PDF ``data``, in this process: each page's text without its trailing
    newlines, pages joined by one newline.

    :raise UnreadablePdf: empty, corrupt, encrypted or page-less.
    :raise NotAPdf: bytes that do not start with ``%PDF-``.
    :raise TextTooLong: the text is longer than ``max_chars`` (None: no bound); raised as soon as the pages read
        so far are, so a long text is never built whole.
    """
    check(data)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnreadablePdf("the PDF is encrypted; upload it without a password")
        pages = reader.pages
        if len(pages) == 0:
            raise UnreadablePdf("the PDF has no pages")
        texts, length = [], -1
        for page in pages:
            # What PostgreSQL cannot store (NUL, unpaired surrogates from broken font maps) is dropped or replaced.
            text = page.extract_text().rstrip("\n").replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
            length += 1 + len(text)
            if max_chars is not None and length > max_chars:
                raise TextTooLong(f"the text is longer than {max_chars} characters")
            texts.append(text)
        return len(pages), "\n".join(texts)
    except (PyPdfError, DependencyError) as exc:
        raise UnreadablePdf(f"the PDF is corrupt or truncated ({type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf raises plain Python errors on some malformed structures.
        raise UnreadablePdf(f"the PDF is corrupt ({type(exc).__name__})") from None


class Extractor:
    """Extracts uploads' text in child processes, at most ``concurrency`` at a time in this process.

    A child per upload (``python -m flowline.api.pdf``), not a pool: a fresh interpreter (about 0.2 s) inherits no
    thread, database connection or listening socket of the gunicorn worker, and killing it at the time bound
    leaves nothing to repair. Its memory is bounded by RLIMIT_AS, which the child sets on itself before it reads
    the file (a ``preexec_fn`` would be unsafe in a threaded server).
    """

    def __init__(self, timeout_s: float, memory_mb: int, concurrency: int, max_chars: int) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_chars = max_chars
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)

    @classmethod
    def from_config(cls, config: Settings) -> Extractor:
        """Return the extractor the settings ask for (PDF_EXTRACT_*, MAX_INPUT_CHARS)."""
        return cls(
            config.pdf_extract_timeout_s,
            config.pdf_extract_memory_mb,
            config.pdf_extract_concurrency,
            config.max_input_chars,
        )

    def extract(self, data: bytes) -> tuple[int, str]:
        """Return ``(page_count, text)`` of the PDF ``data``, extracted in a child process.

        :raise NotAPdf, UnreadablePdf: as :func:`extract`.
        :raise TextTooLong: the text is longer than MAX_INPUT_CHARS.
        :raise TooComplex: the child ran past the time bound (it is killed) or out of memory.
        :raise Busy: ``concurrency`` extractions already run in this process (nothing waits for a slot).
        """
        check(data)
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{self.concurrency} PDF extractions are already running in this process")
        try:
            return self._in_child(data)
        finally:
            self._slots.release()

    def _in_child(self, data: bytes) -> tuple[int, str]:
        # The CPU limit only matters if this process dies first (killed mid-request): the child then still ends.
        cpu_s = math.ceil(self.timeout_s) + 1
        command = [sys.executable, "-m", "flowline.api.pdf", str(self.memory_mb), str(cpu_s), str(self.max_chars)]
        env = {name: os.environ[name] for name in _CHILD_ENV if name in os.environ}
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=_PACKAGE_PARENT, env=env
        )
        try:
            out, err = child.communicate(data, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise TooComplex(f"{self.timeout_s:g} s") from None
        if child.returncode == -signal.SIGXCPU:
            raise TooComplex(f"{self.timeout_s:g} s")
        if child.returncode == _EXIT_OUT_OF_MEMORY or child.returncode < 0:
            # Out of memory, or killed by a signal it did not ask for (the OOM killer, an abort in a failed
            # allocation): either way over what it may use.
            if child.returncode < 0:
                log.warning("PDF extraction process killed by signal %d", -child.returncode)
            raise TooComplex(f"{self.memory_mb} MB of memory")
        if child.returncode != 0:
            raise RuntimeError(
                f"the PDF extraction process exited with status {child.returncode}: "
                f"{err.decode('utf-8', 'replace')[-2000:]}"
            )
        result = json.loads(out)
        if "unreadable" in result:
            raise UnreadablePdf(result["unreadable"])
        if "too_long" in result:
            raise TextTooLong(result["too_long"])
        return result["page_count"], result["text"]


def _child(argv: list[str]) -> None:
    """``python -m flowline.api.pdf MEMORY_MB CPU_S MAX_CHARS``: extract the PDF on stdin, write the result to stdout
    as JSON (``{page_count, text}``, ``{unreadable}`` or ``{too_long}``); exit 3 when out of memory."""
    memory_mb, cpu_s, max_chars = (int(arg) for arg in argv)
    # Set before the file is read: nothing of it is parsed outside the bounds.
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    # The API's requests come first when the cores are busy: they are quick, this is the slow one.
    os.nice(10)
    try:
        data = sys.stdin.buffer.read()
        try:
            page_count, text = extract(data, max_chars)
            result = {"page_count": page_count, "text": text}
        except UnreadablePdf as exc:
            result = {"unreadable": str(exc)}
        except TextTooLong as exc:
            result = {"too_long": str(exc)}
        sys.stdout.buffer.write(json.dumps(result, ensure_ascii=False).encode("utf-8"))
        sys.stdout.buffer.flush()
    except MemoryError:
        os._exit(_EXIT_OUT_OF_MEMORY)


if __name__ == "__main__":
    _child(sys.argv[1:])
