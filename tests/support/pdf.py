"""PDFs made on the fly."""

import io


def make_pdf(*pages):
    """Return the bytes of a PDF with one line of ``pages[i]`` on page i, in a CID font that draws Japanese and
    accented Latin alike (reportlab's built-in HeiseiKakuGo-W5: no font file needed)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for text in pages:
        pdf.setFont("HeiseiKakuGo-W5", 12)
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()
