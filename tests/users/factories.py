"""Distinctive, valid registration data: random enough that a grep of raw files cannot match by chance."""

from __future__ import annotations

import random
import string
import uuid
from datetime import UTC, datetime
from typing import Any

from eventflow.contracts import ReservaCanceladaData, ReservaConfirmadaData
from services.users.documentos import cedula_check_digit


def letras(n: int = 12) -> str:
    return random.choice(string.ascii_uppercase) + "".join(random.choices(string.ascii_lowercase, k=n - 1))


def dni() -> str:
    return str(random.randint(10_000_000, 99_999_999))


def cedula() -> str:
    """A valid Uruguayan cédula: 7 digits and their check digit."""
    body = str(random.randint(1_000_000, 9_999_999))
    return body + str(cedula_check_digit(body))


def password() -> str:
    """Meets the policy (services/users/contrasenas.py) and is distinctive enough to grep raw files for."""
    return f"clave {letras(9)} {uuid.uuid4().hex[:12]}"


def usuario(**overrides: Any) -> dict[str, Any]:
    body = {
        "tipo_documento": "DNI",
        "nro_documento": dni(),
        "nombre": letras(),
        "apellido": letras(),
        "email": f"{letras(10).lower()}.{uuid.uuid4().hex[:8]}@ejemplo-{letras(6).lower()}.com",
        "password": password(),
    }
    body.update(overrides)
    return body


def confirmada(usuario_id: str, n: int = 1, reserva_id: str | None = None) -> ReservaConfirmadaData:
    """A purchase as the reservations service records it (eventflow.contracts)."""
    return ReservaConfirmadaData(
        reserva_id=reserva_id or str(uuid.uuid4()),
        usuario_id=usuario_id,
        evento_id=f"evento-{n}",
        cantidad=1 + n % 3,
        asientos=[],
        importe_centimos=500 * n,
        confirmada_en=datetime.now(UTC).isoformat(),
    )


def cancelada(compra: ReservaConfirmadaData) -> ReservaCanceladaData:
    return ReservaCanceladaData(
        reserva_id=compra["reserva_id"],
        usuario_id=compra["usuario_id"],
        evento_id=compra["evento_id"],
        cantidad=compra["cantidad"],
        asientos=compra["asientos"],
        importe_reembolsado_centimos=compra["importe_centimos"],
        cancelada_en=datetime.now(UTC).isoformat(),
    )
