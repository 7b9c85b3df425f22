"""The event document: one shape for the read model, the POST answer, GET and every listing item.

Built only from the EventoCreado payload, so a rebuild from the log gives byte-identical documents.
Availability is never stored in it: it is merged at read time from the sales keys (see keys.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventflow.contracts import (
    EVENTO_CREADO,
    LIMITE_POR_USUARIO_PREDETERMINADO,
    MAX_POR_SOLICITUD_PREDETERMINADO,
    EventoCreadoData,
)
from eventflow.eventstore import StoredEvent
from services.events import keys

LIMITES_PREDETERMINADOS = {
    "limite_por_usuario": LIMITE_POR_USUARIO_PREDETERMINADO,
    "max_por_solicitud": MAX_POR_SOLICITUD_PREDETERMINADO,
}


def documento(evento_id: str, data: EventoCreadoData) -> dict[str, Any]:
    secciones = data["secciones"]
    return {
        "id": evento_id,
        "nombre": data["nombre"],
        "descripcion": data["descripcion"],
        "fecha": data["fecha"],
        "lugar": data["lugar"],
        "categoria": data["categoria"],
        "aforo_total": int(data["aforo_total"]),
        "precio": int(data["precio_centimos"]) / 100,
        "precio_centimos": int(data["precio_centimos"]),
        "secciones": None
        if secciones is None
        else [dict(nombre=s["nombre"], asientos=int(s["asientos"])) for s in secciones],
        "venta_desde": data["venta_desde"],
        # Events created before the limits existed lack them in the log: they get the defaults.
        "limite_por_usuario": int(data.get("limite_por_usuario", LIMITE_POR_USUARIO_PREDETERMINADO)),
        "max_por_solicitud": int(data.get("max_por_solicitud", MAX_POR_SOLICITUD_PREDETERMINADO)),
        # Who created it (the reservations service lets them read its reservations); None before accounts.
        "organizador_id": data.get("organizador_id"),
    }


def documento_creado(event: StoredEvent) -> dict[str, Any] | None:
    """The document an EventoCreado makes, None for any other event: what the catalog projection stores and what
    a read folded from the log answers (services/events/log_fallback.py), so the two cannot drift apart."""
    if event.type != EVENTO_CREADO:
        return None
    return documento(event.aggregate_id, event.data)  # type: ignore[arg-type]


def date_score(fecha: str) -> float:
    """The listing indexes' score: the instant as epoch seconds, whatever offset it was written with."""
    return datetime.fromisoformat(fecha).timestamp()


def with_availability(doc: Mapping[str, Any], sales: Mapping[str, str]) -> dict[str, Any]:
    """Merge the sales counters; never below 0 even if the projection saw more sales than seats."""
    sold = int(sales.get(keys.TOTAL_FIELD, 0))
    out = {**LIMITES_PREDETERMINADOS, "organizador_id": None, **doc}  # projected before these fields existed
    out["entradas_disponibles"] = max(0, int(doc["aforo_total"]) - sold)
    if doc.get("secciones") is not None:
        out["secciones"] = [
            {**s, "disponibles": max(0, s["asientos"] - int(sales.get(keys.SECTION_FIELD + s["nombre"], 0)))}
            for s in doc["secciones"]
        ]
    return out
