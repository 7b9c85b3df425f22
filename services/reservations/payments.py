"""The payment provider port: what the saga needs from a card processor, and nothing about any one processor.

Money operations are idempotent by a caller-chosen `key` (f"{reserva_id}:authorize", ":capture", ":void",
":refund"): retrying after a timeout never moves money twice. Card details exist only in memory on their way
to `tokenize`; everything after that uses the token.

`void` names the authorization by the key of the authorize call, not by its id: when every answer to an
authorize was lost (or a timeout cancelled the call after it was sent), the saga has no id, and the money may
still be held. Processors offer this as a "technical cancel" by merchant reference (Adyen, for one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from eventflow.errors import Unprocessable


@dataclass(frozen=True)
class CardDetails:
    numero: str = field(repr=False)
    vencimiento: str = field(repr=False)  # "MM/YY"
    cvc: str = field(repr=False)

    def __repr__(self) -> str:
        digits = "".join(c for c in self.numero if c.isdigit())
        return f"CardDetails(numero='**** {digits[-4:]}', vencimiento='**/**', cvc='***')"

    __str__ = __repr__


@dataclass(frozen=True)
class PaymentMethod:
    token: str
    marca: str  # "visa" | "mastercard" | "amex"
    ultimos4: str


@dataclass(frozen=True)
class Authorization:
    id: str
    importe_centimos: int


@dataclass(frozen=True)
class Declined:
    codigo: str  # "card_declined" | "insufficient_funds" | "expired_card" | "incorrect_cvc"


class InvalidCard(Unprocessable):
    """The card cannot even be tokenized (bad number, past expiry, malformed CVC): a 422, never retried.

    A domain error (not a ValueError) so that an API letting it through answers one problem shape;
    `codigo` is a processor-style code: incorrect_number, expired_card, invalid_expiry, invalid_cvc,
    card_not_supported.
    """

    slug, title = "tarjeta-invalida", "Invalid card"

    def __init__(self, codigo: str) -> None:
        super().__init__(f"the card was rejected: {codigo}", codigo=codigo)
        self.codigo = codigo


class PaymentRetryableError(Exception):
    """Processing error, timeout, provider unavailable: retry the same call, with the same key, later."""


class PaymentPermanentError(Exception):
    """The operation can never succeed (e.g. capture of a voided authorization): do not retry it."""


class PaymentGateway(Protocol):
    async def tokenize(self, card: CardDetails) -> PaymentMethod: ...  # raises InvalidCard(codigo)
    async def authorize(self, key: str, method_token: str, importe_centimos: int) -> Authorization | Declined: ...
    async def capture(self, key: str, authorization_id: str) -> None: ...
    async def void(self, key: str, authorize_key: str) -> None:
        """Void whatever the authorize call with `authorize_key` authorized, and make sure that call can no
        longer authorize anything if it arrives late. A no-op when it declined. PaymentPermanentError if the
        authorization was captured (refund it instead)."""
        ...

    async def refund(self, key: str, authorization_id: str, importe_centimos: int) -> None: ...
    async def payments_for(self, reference: str) -> list[dict[str, Any]]: ...
