"""In-memory fakes of the reservations service's own ports, for fast unit tests of the chain and the saga.

The inventory fake runs R1's pure `Inventory` domain; the payments fake follows the simulator's test cards
and can be told to fail an operation forever (for requiere_intervencion).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from services.reservations.domain import EventoInfo
from services.reservations.payments import (
    Authorization,
    CardDetails,
    Declined,
    PaymentMethod,
    PaymentPermanentError,
    PaymentRetryableError,
)
from services.reservations.payments_sim import APPROVE, PROCESSING_ERROR, TEST_CARDS, check_card
from tests.reservations.fake_inventory import FakeInventario

__all__ = ["FakeCatalogo", "FakeDirectorio", "FakeInventario", "FakePagos", "evento_info"]


def evento_info(evento_id: str = "ev1", **overrides: Any) -> EventoInfo:
    values: dict[str, Any] = {
        "id": evento_id,
        "aforo_total": 100,
        "entradas_disponibles": 100,
        "precio_centimos": 2000,
        "fecha": datetime.now(UTC) + timedelta(days=30),
        "venta_desde": None,
        "numerado": False,
        "limite_por_usuario": 10,
        "max_por_solicitud": 10,
    }
    values.update(overrides)
    return EventoInfo(**values)


class FakeDirectorio:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    async def existe(self, usuario_id: str) -> bool:
        return usuario_id in self.ids


class FakeCatalogo:
    def __init__(self, *eventos: EventoInfo) -> None:
        self.eventos = {e.id: e for e in eventos}

    async def evento(self, evento_id: str) -> EventoInfo | None:
        return self.eventos.get(evento_id)


class FakePagos:
    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.ops: dict[str, dict[str, Any]] = {}
        self.estado: dict[str, str] = {}
        self.failing: set[str] = set()  # operation names ("void", "capture", ...) that always fail
        self.calls: defaultdict[str, int] = defaultdict(int)

    async def tokenize(self, card: CardDetails) -> PaymentMethod:
        digits, brand = check_card(card, datetime.now(UTC))
        token = f"tok_{uuid.uuid4().hex}"
        self.tokens[token] = TEST_CARDS.get(digits, APPROVE)
        return PaymentMethod(token, brand, digits[-4:])

    async def authorize(self, key: str, method_token: str, importe_centimos: int) -> Authorization | Declined:
        self._call("authorize")
        behaviour = self.tokens[method_token]
        if behaviour == PROCESSING_ERROR:
            raise PaymentRetryableError(PROCESSING_ERROR)
        if key not in self.ops:
            if behaviour != APPROVE:
                self.ops[key] = {"codigo": behaviour}
            else:
                self.ops[key] = {"auth": f"au_{key}"}
                self.estado[f"au_{key}"] = "authorized"
        op = self.ops[key]
        return Authorization(op["auth"], importe_centimos) if "auth" in op else Declined(op["codigo"])

    async def capture(self, key: str, authorization_id: str) -> None:
        self._move("capture", authorization_id, "authorized", "captured")

    async def void(self, key: str, authorize_key: str) -> None:
        """By the authorize call's key, like the simulator: a void before the authorize makes it decline."""
        self._call("void")
        op = self.ops.setdefault(authorize_key, {"codigo": "authorization_voided"})
        if "auth" in op and self.estado[op["auth"]] != "voided":
            self._move("void", op["auth"], "authorized", "voided", counted=False)

    async def refund(self, key: str, authorization_id: str, importe_centimos: int) -> None:
        self._move("refund", authorization_id, "captured", "refunded")

    async def payments_for(self, reference: str) -> list[dict[str, Any]]:
        return [{"key": k, **v} for k, v in self.ops.items() if k.startswith(reference)]

    def _call(self, op: str) -> None:
        self.calls[op] += 1
        if op in self.failing:
            raise PaymentRetryableError(f"{op} keeps failing")

    def _move(self, op: str, auth: str, source: str, target: str, counted: bool = True) -> None:
        if counted:
            self._call(op)
        if self.estado.get(auth) == target:
            return
        if self.estado.get(auth) != source:
            raise PaymentPermanentError(f"cannot {op} a {self.estado.get(auth)} authorization")
        self.estado[auth] = target
