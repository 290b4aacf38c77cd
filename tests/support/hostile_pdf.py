"""A small PDF that is slow to extract: every page's /Contents names one FlateDecode stream that inflates to
megabytes of graphics operators, so pypdf parses that stream again for each page (the file of issue #11).

A plain module (no pytest), so bench/pdf_bench.py builds the same file the tests do.
"""

import zlib

# Drawing operators that draw no text: parsing them is the whole cost, and extraction yields almost nothing.
_OPERATORS = b"q 1 0 0 1 0 0 cm 0 0 m 1 1 l S Q\n"


def hostile_pdf(pages=8, inflated_bytes=2 * 1024 * 1024):
    """Return the bytes of a ``pages``-page PDF whose pages all share one content stream of about
    ``inflated_bytes`` once inflated (a few KiB compressed)."""
    body = b"BT /F1 12 Tf 72 720 Td (shared page) Tj ET\n" + _OPERATORS * (inflated_bytes // len(_OPERATORS))
    stream = zlib.compress(body, 9)
    page_ids = [4 + i for i in range(pages)]
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % i for i in page_ids) + b"] /Count %d >>" % pages,
        3: b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    }
    font = 4 + pages
    for page_id in page_ids:
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents 3 0 R >>" % font
        )
    objects[font] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in sorted(objects))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
