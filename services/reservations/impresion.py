"""A ticket as a QR image (SVG or PNG) and as a PDF, one page per ticket. No I/O: bytes in, bytes out.

segno (pure Python, no dependencies, writes SVG and PNG itself) makes the QR; fpdf2 (pure Python) the PDF,
with the QR drawn as vector squares from segno's matrix, so it prints sharp at any size and needs no image
codec. Error correction M (15 %): a phone screen or a crumpled printout still scans.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

import segno
from fpdf import FPDF

QR_ERROR = "m"


@dataclass(frozen=True)
class Impreso:
    """What a printed ticket shows: no buyer data (a ticket may change hands; the door needs none)."""

    ticket_id: str
    codigo: str
    evento: str
    fecha: str  # ISO 8601 with the venue's offset
    lugar: str
    asiento: str | None


def qr_svg(codigo: str, scale: int = 4) -> bytes:
    out = io.BytesIO()
    segno.make(codigo, error=QR_ERROR).save(out, kind="svg", scale=scale, border=4, xmldecl=True, svgns=True)
    return out.getvalue()


def qr_png(codigo: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make(codigo, error=QR_ERROR).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def _latin1(text: str) -> str:
    """The PDF's core fonts are Latin-1 (every Spanish letter is in it); anything else becomes '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _fecha(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%d/%m/%Y %H:%M")
    except ValueError:
        return iso


def pdf(entradas: list[Impreso]) -> bytes:
    doc = FPDF(orientation="P", unit="mm", format=(148, 210))  # A5
    doc.set_auto_page_break(False)
    doc.set_title("Entradas EventFlow")
    doc.set_creator("EventFlow")
    for n, entrada in enumerate(entradas, start=1):
        doc.add_page()
        doc.set_font("Helvetica", "B", 18)
        doc.set_xy(12, 14)
        doc.multi_cell(124, 8, _latin1(entrada.evento or "Evento"))
        doc.set_font("Helvetica", "", 12)
        doc.set_x(12)
        doc.multi_cell(124, 6, _latin1(f"{_fecha(entrada.fecha)}  ·  {entrada.lugar}"))
        doc.set_font("Helvetica", "B", 14)
        doc.set_x(12)
        asiento = f"Asiento {entrada.asiento}" if entrada.asiento else "Entrada general"
        doc.cell(124, 10, _latin1(asiento))
        _draw_qr(doc, entrada.codigo, x=24, y=70, size=100)
        doc.set_font("Helvetica", "", 8)
        doc.set_xy(12, 176)
        doc.cell(124, 5, _latin1(f"Entrada {n} de {len(entradas)}  ·  {entrada.ticket_id}"), align="C")
        doc.set_xy(12, 182)
        doc.cell(124, 5, _latin1("Presentá este código en la puerta. Vale para una sola entrada."), align="C")
    return bytes(doc.output())


def _draw_qr(doc: FPDF, codigo: str, x: float, y: float, size: float) -> None:
    qr = segno.make(codigo, error=QR_ERROR)
    rows = [list(row) for row in qr.matrix_iter(scale=1, border=4)]
    module = size / len(rows)
    doc.set_fill_color(0, 0, 0)
    for r, row in enumerate(rows):
        c = 0
        while c < len(row):  # one rectangle per run of dark modules: a smaller file than one per module
            if not row[c]:
                c += 1
                continue
            start = c
            while c < len(row) and row[c]:
                c += 1
            doc.rect(x + start * module, y + r * module, (c - start) * module, module, style="F")
