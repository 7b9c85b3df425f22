"""Domain unit tests: the rules of a new event and of a listing query, no servers involved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.events.domain import CrearEvento, DatosInvalidos, Seccion
from services.events.rules import MAX_AFORO, MAX_LIMITE_POR_USUARIO, filtro, nuevo_evento
from services.events.text import normalize_category, prefixes, query_words

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def command(**overrides) -> CrearEvento:
    values: dict[str, Any] = {
        "nombre": "  Concierto  ",
        "fecha": "2027-04-01T21:00:00-03:00",
        "lugar": "Teatro Solís",
        "precio": Decimal("25.50"),
        "categoria": " Música  en Vivo ",
        "aforo_total": 100,
    }
    values.update(overrides)
    return CrearEvento(**values)


def broken(**overrides) -> dict[str, str]:
    with pytest.raises(DatosInvalidos) as caught:
        nuevo_evento(command(**overrides), "e1", NOW)
    return {e.field: e.code for e in caught.value.errors}


def test_a_valid_event_is_normalized_and_priced_in_cents():
    evento = nuevo_evento(command(), "e1", NOW)
    assert evento.nombre == "Concierto"
    assert evento.categoria == "musica en vivo"
    assert evento.precio_centimos == 2550
    assert evento.fecha == datetime(2027, 4, 2, 0, 0, tzinfo=UTC)
    assert evento.fecha.utcoffset() == timedelta(hours=-3)  # the venue's offset is kept
    assert evento.aforo_total == 100 and evento.secciones is None and evento.venta_desde is None


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"fecha": "2027-02-28T21:00:00Z"}, "fecha", "date_in_past"),
        ({"fecha": "2027-03-01T12:00:00Z"}, "fecha", "date_in_past"),  # now is not the future
        ({"fecha": "2027-04-01T21:00:00"}, "fecha", "timezone_aware"),
        ({"fecha": "2027-04-01"}, "fecha", "timezone_aware"),
        ({"fecha": "next friday"}, "fecha", "datetime_parsing"),
        ({"fecha": "2040-01-01T00:00:00Z"}, "fecha", "date_too_far"),
        ({"aforo_total": 0}, "aforo_total", "out_of_range"),
        ({"aforo_total": -5}, "aforo_total", "out_of_range"),
        ({"aforo_total": MAX_AFORO + 1}, "aforo_total", "out_of_range"),
        ({"aforo_total": None}, "aforo_total", "missing"),
        ({"precio": Decimal("-0.01")}, "precio", "out_of_range"),
        ({"precio": Decimal("10.123")}, "precio", "decimal_places"),
        ({"precio": Decimal("Infinity")}, "precio", "out_of_range"),
        ({"nombre": "   "}, "nombre", "string_length"),
        ({"lugar": "x" * 201}, "lugar", "string_length"),
        ({"categoria": "\u0301"}, "categoria", "string_length"),  # only an accent: nothing left
        ({"venta_desde": "2027-04-01T21:00:00-03:00"}, "venta_desde", "after_event"),
        ({"venta_desde": "2027-03-02T10:00"}, "venta_desde", "timezone_aware"),
    ],
)
def test_each_broken_rule_names_its_field(overrides, field, code):
    assert broken(**overrides) == {field: code}


def test_every_broken_rule_is_reported_at_once():
    errors = broken(fecha="2020-01-01T00:00:00Z", aforo_total=0, precio=Decimal("-1"), nombre="")
    assert errors == {
        "fecha": "date_in_past",
        "aforo_total": "out_of_range",
        "precio": "out_of_range",
        "nombre": "string_length",
    }


def test_zero_price_trailing_zeros_and_past_sales_start_are_fine():
    evento = nuevo_evento(command(precio=Decimal("0"), venta_desde="2027-01-01T00:00:00Z"), "e1", NOW)
    assert evento.precio_centimos == 0 and evento.venta_desde == datetime(2027, 1, 1, tzinfo=UTC)
    assert nuevo_evento(command(precio=Decimal("19.990")), "e1", NOW).precio_centimos == 1999


def test_sections_derive_the_capacity_when_it_is_omitted():
    secciones = [Seccion("Platea", 3), Seccion(" VIP ", 2)]
    evento = nuevo_evento(command(aforo_total=None, secciones=secciones), "e1", NOW)
    assert evento.aforo_total == 5
    assert evento.secciones == (Seccion("Platea", 3), Seccion("VIP", 2))
    assert evento.secciones[1].asiento(2) == "VIP-2"
    assert nuevo_evento(command(aforo_total=5, secciones=secciones), "e1", NOW).aforo_total == 5


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"aforo_total": 6}, "aforo_total", "mismatch"),
        ({"secciones": []}, "secciones", "too_long"),
        ({"secciones": [Seccion("A", 0)]}, "secciones.0.asientos", "out_of_range"),
        ({"secciones": [Seccion("A-B", 1)]}, "secciones.0.nombre", "string_pattern"),
        ({"secciones": [Seccion("", 1)]}, "secciones.0.nombre", "string_pattern"),
        ({"secciones": [Seccion("Vip", 1), Seccion("VIP", 1)]}, "secciones.1.nombre", "duplicate"),
        ({"secciones": [Seccion("A", 60_000), Seccion("B", 60_000)]}, "secciones", "out_of_range"),
    ],
)
def test_broken_section_rules(overrides, field, code):
    values = {"aforo_total": None, "secciones": [Seccion("Platea", 3), Seccion("VIP", 2)], **overrides}
    assert broken(**values) == {field: code}


def limites(**overrides) -> tuple[int, int]:
    evento = nuevo_evento(command(**overrides), "e1", NOW)
    return evento.limite_por_usuario, evento.max_por_solicitud


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (10, 10)),  # the defaults agree: every request size allowed is also allowed per buyer
        ({"limite_por_usuario": 4}, (4, 4)),  # a request may not ask for more than the buyer may hold
        ({"limite_por_usuario": 100}, (100, 10)),
        ({"max_por_solicitud": 20}, (20, 20)),
        ({"max_por_solicitud": 5}, (10, 5)),
        ({"limite_por_usuario": 30, "max_por_solicitud": 30}, (30, 30)),
        ({"limite_por_usuario": MAX_LIMITE_POR_USUARIO, "max_por_solicitud": 50}, (1000, 50)),
        ({"limite_por_usuario": 1, "max_por_solicitud": 1}, (1, 1)),
    ],
)
def test_purchase_limits_default_consistently(overrides, expected):
    limite, maximo = limites(**overrides)
    assert (limite, maximo) == expected and 1 <= maximo <= limite


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        ({"max_por_solicitud": 0}, [("max_por_solicitud", "out_of_range")]),
        ({"max_por_solicitud": 51}, [("max_por_solicitud", "out_of_range")]),  # 50 seats per request, whatever
        ({"limite_por_usuario": 0}, [("limite_por_usuario", "out_of_range")]),
        ({"limite_por_usuario": 1001}, [("limite_por_usuario", "out_of_range")]),
        ({"limite_por_usuario": 8, "max_por_solicitud": 10}, [("max_por_solicitud", "above_limit")]),
        (
            {"limite_por_usuario": 2000, "max_por_solicitud": 60},
            [("max_por_solicitud", "out_of_range"), ("limite_por_usuario", "out_of_range")],
        ),
        (
            {"limite_por_usuario": 30, "max_por_solicitud": 60},
            [("max_por_solicitud", "out_of_range"), ("max_por_solicitud", "above_limit")],
        ),
    ],
)
def test_broken_purchase_limits_name_only_the_fields_sent(overrides, errors):
    with pytest.raises(DatosInvalidos) as caught:
        nuevo_evento(command(**overrides), "e1", NOW)
    assert [(e.field, e.code) for e in caught.value.errors] == errors


def test_purchase_limits_are_reported_with_every_other_broken_rule():
    with pytest.raises(DatosInvalidos) as caught:
        nuevo_evento(command(aforo_total=0, precio=Decimal("-1"), max_por_solicitud=51, limite_por_usuario=0), "e", NOW)
    assert sorted((e.field, e.code) for e in caught.value.errors) == [
        ("aforo_total", "out_of_range"),
        ("limite_por_usuario", "out_of_range"),
        ("max_por_solicitud", "above_limit"),
        ("max_por_solicitud", "out_of_range"),
        ("precio", "out_of_range"),
    ]


def test_limits_sent_are_part_of_the_request_fingerprint_and_absent_ones_are_not():
    plain = command()
    assert plain.huella() == "e6f76ca4b35545629c1e2916d642360f"  # as before the limits existed: retries still match
    assert command(limite_por_usuario=None, max_por_solicitud=None).huella() == plain.huella()
    assert command(limite_por_usuario=10).huella() != plain.huella()  # sent, even if equal to the default
    assert command(max_por_solicitud=4).huella() != command(max_por_solicitud=5).huella()


def test_listing_query_rules():
    page = filtro("Rock", " Música ", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00 03:00", 10, 5)
    assert page.categoria == "musica" and page.hasta == datetime(2027, 1, 31, 21, 0, tzinfo=UTC)
    assert filtro(None, "", None, None, 20, 0).categoria is None
    with pytest.raises(DatosInvalidos) as caught:
        filtro(None, None, "2027-02-01T00:00:00Z", "2027-01-01T00:00:00Z", 20, 0)
    assert [e.field for e in caught.value.errors] == ["hasta"]
    with pytest.raises(DatosInvalidos) as caught:
        filtro(None, None, "ayer", "2027-01-01T00:00:00", 20, 0)
    assert {e.field: e.code for e in caught.value.errors} == {"desde": "datetime_parsing", "hasta": "timezone_aware"}


def test_search_text_folding():
    assert normalize_category("  ROCK   Nacional ") == "rock nacional"
    assert query_words("Música ROCK música!") == ["musica", "rock"]
    assert prefixes("Ñandú") == {"n", "na", "nan", "nand", "nandu"}
    assert "s" not in prefixes("Los Piojos") and "piojos" in prefixes("Los Piojos")  # prefixes, not infixes
