"""Real files of every supported kind, made at run time."""

from __future__ import annotations

import io
import random
import zipfile

import docx
from PIL import Image
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas


def make_pdf(pages: list[str], *, title: str | None = None, heading: str | None = None) -> bytes:
    """Return a PDF of ``pages`` in 12-point type, the first under ``heading`` set large."""
    buffer = io.BytesIO()
    canvas = Canvas(buffer)
    if title is not None:
        canvas.setTitle(title)
    for n, page in enumerate(pages):
        top = 800
        if heading is not None and n == 0:
            canvas.setFont("Helvetica-Bold", 20)
            canvas.drawString(72, top, heading)
            canvas.setFont("Helvetica", 12)
            top -= 30
        for number, line in enumerate(page.split("\n")):
            canvas.drawString(72, top - 14 * number, line)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def make_image_only_pdf() -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer)
    scan = Image.new("L", (200, 100), 255)
    scan.paste(0, (20, 40, 180, 60))
    canvas.drawImage(ImageReader(scan), 72, 600)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Quarterly report"
    document.add_heading("Results", level=1)
    document.add_paragraph("Revenue grew in every region.")
    document.add_heading("Next steps", level=2)
    document.add_paragraph("Hire two engineers.")
    table = document.add_table(rows=2, cols=3)
    for row, values in zip(table.rows, [("Region", "Q2", "Q3"), ("EMEA", "10", "12")], strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    merged = document.add_table(rows=1, cols=3)
    merged.cell(0, 0).merge(merged.cell(0, 1)).text = "Spans two columns"
    merged.cell(0, 2).text = "Alone"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_bomb(*, part_megabytes: int) -> bytes:
    """Return a real .docx with one more part of zeros, written and compressed streaming."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(make_docx())) as source,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for member in source.infolist():
            bomb.writestr(member, source.read(member))
        megabyte = bytes(1024 * 1024)
        with bomb.open("word/bomb.xml", "w", force_zip64=True) as part:
            for _ in range(part_megabytes):
                part.write(megabyte)
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def garbage(size: int) -> bytes:
    return random.Random(0).randbytes(size)
