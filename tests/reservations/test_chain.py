"""Each handler of the chain alone, on in-memory fakes of the ports; then the composed chain's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.reservations.chain import (
    CalculadorDePrecio,
    Manejador,
    Solicitud,
    TokenizadorDePago,
    ValidadorDeDatos,
    ValidadorDeEvento,
    ValidadorDeInventario,
    ValidadorDeLimite,
    ValidadorDeUsuario,
    encadenar,
)
from services.reservations.domain import RechazoDeCadena, ReservarEntradas, Tarjeta
from services.reservations.inventory import HoldRequest
from tests.reservations.fakes import FakeCatalogo, FakeDirectorio, FakeInventario, FakePagos, evento_info
from tests.reservations.helpers import BAD_LUHN, VISA_OK


def solicitud(cantidad: int = 1, asientos: tuple[str, ...] = (), numero: str = VISA_OK, **card: str) -> Solicitud:
    tarjeta = Tarjeta(numero, card.get("vencimiento", "12/34"), card.get("cvc", "123"))
    return Solicitud(ReservarEntradas("u1", "ev1", cantidad, asientos, tarjeta, "k1", "r1"))


async def rejected(handler: Manejador, s: Solicitud) -> RechazoDeCadena:
    with pytest.raises(RechazoDeCadena) as caught:
        await handler.manejar(s)
    assert caught.value.handler == type(handler).__name__
    return caught.value


@pytest.mark.parametrize(
    ("s", "motivo"),
    [
        (solicitud(cantidad=0), "cantidad_invalida"),
        (solicitud(cantidad=11), "cantidad_invalida"),
        (solicitud(cantidad=2, asientos=("A-1",)), "asientos_invalidos"),
        (solicitud(cantidad=2, asientos=("A-1", "A-1")), "asientos_invalidos"),
        (solicitud(numero="4242"), "tarjeta_invalida"),
        (solicitud(vencimiento="2034-12"), "tarjeta_invalida"),
        (solicitud(cvc="12a"), "tarjeta_invalida"),
    ],
)
async def test_validador_de_datos_rejects_shape_and_ranges(s: Solicitud, motivo: str) -> None:
    err = await rejected(ValidadorDeDatos(max_por_solicitud=10), s)
    assert (err.motivo, err.status) == (motivo, 422)


class Registro(Manejador):
    """The next handler in a test chain: records that the request got this far."""

    def __init__(self) -> None:
        super().__init__()
        self.vistas: list[Solicitud] = []

    async def procesar(self, solicitud: Solicitud) -> None:
        self.vistas.append(solicitud)


async def test_validador_de_datos_passes_a_good_request_on() -> None:
    siguiente = Registro()
    s = solicitud(cantidad=2, asientos=("A-1", "A-2"))
    await encadenar(ValidadorDeDatos(), siguiente).manejar(s)
    assert siguiente.vistas == [s]


async def test_validador_de_datos_caps_a_request_at_the_service_maximum() -> None:
    await ValidadorDeDatos(max_por_solicitud=50).manejar(solicitud(cantidad=50))
    err = await rejected(ValidadorDeDatos(max_por_solicitud=50), solicitud(cantidad=51))
    assert err.motivo == "cantidad_invalida"


async def test_validador_de_usuario() -> None:
    await ValidadorDeUsuario(FakeDirectorio("u1")).manejar(solicitud())
    err = await rejected(ValidadorDeUsuario(FakeDirectorio("otro")), solicitud())
    assert err.motivo == "usuario_inexistente"


async def test_validador_de_evento_fills_the_event_and_rejects_missing_past_and_not_on_sale() -> None:
    now = datetime.now(UTC)
    s = solicitud()
    await ValidadorDeEvento(FakeCatalogo(evento_info())).manejar(s)
    assert s.evento is not None and s.evento.id == "ev1"
    cases = [
        (FakeCatalogo(), "evento_inexistente", 422),
        (FakeCatalogo(evento_info(fecha=now - timedelta(hours=1))), "evento_pasado", 422),
        (FakeCatalogo(evento_info(venta_desde=now + timedelta(days=1))), "venta_no_iniciada", 409),
    ]
    for catalogo, motivo, status in cases:
        err = await rejected(ValidadorDeEvento(catalogo), solicitud())
        assert (err.motivo, err.status) == (motivo, status)
    err = await rejected(ValidadorDeEvento(FakeCatalogo(evento_info())), solicitud(2, ("A-1", "A-2")))
    assert err.motivo == "evento_sin_asientos"


async def test_validador_de_evento_uses_its_clock_for_venta_desde() -> None:
    opens = datetime.now(UTC) + timedelta(days=1)
    catalogo = FakeCatalogo(evento_info(venta_desde=opens))
    s = solicitud()
    await ValidadorDeEvento(catalogo, reloj=lambda: opens + timedelta(1)).manejar(s)
    assert s.evento is not None and s.evento.venta_desde == opens
    err = await rejected(ValidadorDeEvento(catalogo, reloj=lambda: opens - timedelta(seconds=1)), solicitud())
    assert err.motivo == "venta_no_iniciada"


async def test_validador_de_evento_applies_the_events_own_maximum_per_request() -> None:
    catalogo = FakeCatalogo(evento_info(limite_por_usuario=4, max_por_solicitud=4))
    s = solicitud(cantidad=4)
    await ValidadorDeEvento(catalogo).manejar(s)
    assert s.evento is not None and s.evento.max_por_solicitud == 4
    err = await rejected(ValidadorDeEvento(catalogo), solicitud(cantidad=5))
    assert (err.motivo, err.status, err.extra["max_por_solicitud"]) == ("cantidad_invalida", 422, 4)


async def test_validador_de_limite_counts_held_and_sold_tickets_of_the_user() -> None:
    inventario = FakeInventario(ev1=100)
    await inventario.hold(HoldRequest("r1", "ev1", "u1", 3, (), 60, 4))

    def con_evento(cantidad: int, limite: int = 4, evento_id: str = "ev1") -> Solicitud:
        s = solicitud(cantidad=cantidad)
        s.evento = evento_info(evento_id, limite_por_usuario=limite, max_por_solicitud=min(limite, 10))
        return s

    siguiente = Registro()
    s = con_evento(1)
    await encadenar(ValidadorDeLimite(inventario), siguiente).manejar(s)
    assert siguiente.vistas == [s]
    err = await rejected(ValidadorDeLimite(inventario), con_evento(2))
    assert (err.motivo, err.status, err.extra["actuales"], err.extra["limite"]) == ("limite_por_usuario", 409, 3, 4)
    await ValidadorDeLimite(inventario, activo=False).manejar(con_evento(9))
    err = await rejected(ValidadorDeLimite(FakeInventario()), con_evento(1))
    assert err.motivo == "evento_inexistente"


async def test_validador_de_inventario_fails_fast_on_the_read_model() -> None:
    s = solicitud(cantidad=3)
    s.evento = evento_info(entradas_disponibles=3)
    await ValidadorDeInventario().manejar(s)
    s.evento = evento_info(entradas_disponibles=2)
    err = await rejected(ValidadorDeInventario(), s)
    assert (err.motivo, err.status) == ("agotado", 409)


@pytest.mark.parametrize(
    ("precio", "cantidad", "importe"),
    [(2000, 1, 2100), (2000, 3, 6300), (500, 2, 1100), (0, 4, 0), (1999, 1, 2099)],
)
async def test_calculador_de_precio_in_integer_cents(precio: int, cantidad: int, importe: int) -> None:
    s = solicitud(cantidad=cantidad)
    s.evento = evento_info(precio_centimos=precio)
    await CalculadorDePrecio(tasa_bp=500, cargo_minimo_centimos=50).manejar(s)
    assert s.importe_centimos == importe


async def test_tokenizador_swaps_the_card_for_a_token() -> None:
    s = solicitud(numero="4242 4242 4242 4242")
    await TokenizadorDePago(FakePagos()).manejar(s)
    assert s.metodo is not None and (s.metodo.marca, s.metodo.ultimos4) == ("visa", "4242")
    err = await rejected(TokenizadorDePago(FakePagos()), solicitud(numero=BAD_LUHN))
    assert (err.motivo, err.status, err.extra["codigo"]) == ("tarjeta_invalida", 402, "incorrect_number")
    err = await rejected(TokenizadorDePago(FakePagos()), solicitud(vencimiento="01/20"))
    assert err.extra["codigo"] == "expired_card"


async def test_the_chain_runs_in_order_and_stops_at_the_first_rejection() -> None:
    pagos = FakePagos()
    chain = encadenar(
        ValidadorDeDatos(),
        ValidadorDeUsuario(FakeDirectorio("u1")),
        ValidadorDeEvento(FakeCatalogo(evento_info(entradas_disponibles=0))),
        ValidadorDeInventario(),
        TokenizadorDePago(pagos),
    )
    err = await rejected_by(chain, solicitud())
    assert err.handler == "ValidadorDeInventario"
    assert not pagos.tokens, "nothing reaches the payment provider before the chain passes"


async def rejected_by(chain: Manejador, s: Solicitud) -> RechazoDeCadena:
    with pytest.raises(RechazoDeCadena) as caught:
        await chain.manejar(s)
    return caught.value
