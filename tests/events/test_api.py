"""HTTP tests of creating and reading one event, on the real NATS and Redis."""

from __future__ import annotations

import uuid

from eventflow.contracts import EVENTO_CREADO, EventoCreadoData
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import EVENTOS
from tests.events.helpers import evento_body, iso_in


async def test_create_answers_201_with_location_and_is_readable_at_once(client, organizer):
    body = evento_body(fecha=iso_in(40, tz="+05:30"), precio=19.99)
    created = await client.post("/api/eventos", json=body)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert created.headers["location"] == f"/api/eventos/{doc['id']}"
    assert doc["fecha"] == body["fecha"] and doc["fecha"].endswith("+05:30")
    assert (doc["precio"], doc["precio_centimos"]) == (19.99, 1999)
    assert doc["categoria"] == "musica"
    assert (doc["aforo_total"], doc["entradas_disponibles"]) == (100, 100)
    assert doc["secciones"] is None and doc["venta_desde"] is None
    assert (doc["limite_por_usuario"], doc["max_por_solicitud"]) == (10, 10)
    assert doc["organizador_id"] == organizer.id

    read = await client.get(created.headers["location"])  # read-your-writes: no retry loop
    assert read.status_code == 200
    assert read.json() == doc


async def test_the_log_holds_exactly_the_contract_payload(client, js, organizer):
    body = evento_body(
        aforo_total=None,
        secciones=[{"nombre": "Platea", "asientos": 3}, {"nombre": "VIP", "asientos": 2}],
        venta_desde=iso_in(1, tz="Z").replace("+00:00", "Z"),
        precio="0",
    )
    created = await client.post("/api/eventos", json=body)
    assert created.status_code == 201, created.text
    evento_id = created.json()["id"]
    events, version = await EventStore(js, EVENTOS).load(evento_id)
    assert version == events[0].seq and [e.type for e in events] == [EVENTO_CREADO]
    data = events[0].data
    # Every field but `huella` (no Idempotency-Key); the limits and the organizer are NotRequired only for older
    # events.
    always = {"limite_por_usuario", "max_por_solicitud", "organizador_id"}
    assert set(data) == EventoCreadoData.__required_keys__ | always
    assert EventoCreadoData.__optional_keys__ == {"huella", *always}
    assert data == {
        "nombre": "Concierto de prueba",
        "descripcion": "Una noche de música",
        "fecha": body["fecha"],
        "lugar": "Teatro Solís",
        "aforo_total": 5,
        "precio_centimos": 0,
        "categoria": "musica",
        "secciones": [{"nombre": "Platea", "asientos": 3}, {"nombre": "VIP", "asientos": 2}],
        "venta_desde": body["venta_desde"].replace("Z", "+00:00"),
        "limite_por_usuario": 10,
        "max_por_solicitud": 10,
        "organizador_id": organizer.id,
    }
    doc = (await client.get(f"/api/eventos/{evento_id}")).json()
    assert doc["secciones"] == [
        {"nombre": "Platea", "asientos": 3, "disponibles": 3},
        {"nombre": "VIP", "asientos": 2, "disponibles": 2},
    ]


def assert_validation_problem(response, fields: set[str]) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "/problems/validation" and problem["status"] == 422
    assert {e["field"] for e in problem["errors"]} == fields
    assert all({"field", "message", "code"} <= set(e) for e in problem["errors"])


async def test_every_broken_rule_is_a_422_with_field_errors_and_nothing_is_written(client, js):
    before = await EventStore(js, EVENTOS).last_sequence()
    cases = [
        (evento_body(fecha=iso_in(-1)), {"fecha"}),
        (evento_body(fecha=iso_in(3)[:19]), {"fecha"}),  # no offset
        (evento_body(aforo_total=0), {"aforo_total"}),
        (evento_body(precio=-1), {"precio"}),
        (evento_body(precio=10.123), {"precio"}),
        (evento_body(nombre=" "), {"nombre"}),
        (evento_body(aforo_total=5, secciones=[{"nombre": "A", "asientos": 2}]), {"aforo_total"}),
        (evento_body(secciones=[{"nombre": "A-1", "asientos": 2}], aforo_total=None), {"secciones.0.nombre"}),
        (evento_body(venta_desde=iso_in(60)), {"venta_desde"}),
        (evento_body(fecha=iso_in(-1), precio=-1, aforo_total=-1), {"fecha", "precio", "aforo_total"}),
        (evento_body(max_por_solicitud=51), {"max_por_solicitud"}),
        (evento_body(limite_por_usuario=8, max_por_solicitud=10), {"max_por_solicitud"}),
        (evento_body(limite_por_usuario=1001), {"limite_por_usuario"}),
    ]
    for body, fields in cases:
        assert_validation_problem(await client.post("/api/eventos", json=body), fields)
    assert await EventStore(js, EVENTOS).last_sequence() == before


async def test_the_organizer_sets_the_purchase_limits_and_the_document_shows_them(client, js):
    cases = [
        ({"limite_por_usuario": 30, "max_por_solicitud": 25}, (30, 25)),
        ({"limite_por_usuario": 4}, (4, 4)),  # the one not sent follows the one sent
        ({"max_por_solicitud": 20}, (20, 20)),
        ({"limite_por_usuario": None, "max_por_solicitud": None}, (10, 10)),  # null = not sent
    ]
    for limits, (limite, maximo) in cases:
        created = await client.post("/api/eventos", json=evento_body(**limits))
        assert created.status_code == 201, created.text
        doc = created.json()
        assert (doc["limite_por_usuario"], doc["max_por_solicitud"]) == (limite, maximo), limits
        assert (await client.get(created.headers["location"])).json() == doc
        events, _ = await EventStore(js, EVENTOS).load(doc["id"])
        assert (events[0].data["limite_por_usuario"], events[0].data["max_por_solicitud"]) == (limite, maximo)
        listed = await client.get("/api/eventos", params={"q": doc["nombre"], "limit": 100})
        assert next(i for i in listed.json()["items"] if i["id"] == doc["id"]) == doc


async def test_every_broken_limit_rule_is_listed_in_one_problem_and_nothing_is_written(client, js):
    before = await EventStore(js, EVENTOS).last_sequence()
    body = evento_body(limite_por_usuario=2000, max_por_solicitud=60, aforo_total=0)
    response = await client.post("/api/eventos", json=body)
    assert_validation_problem(response, {"limite_por_usuario", "max_por_solicitud", "aforo_total"})
    both_wrong = evento_body(limite_por_usuario=30, max_por_solicitud=60)
    codes = sorted(e["code"] for e in (await client.post("/api/eventos", json=both_wrong)).json()["errors"])
    assert codes == ["above_limit", "out_of_range"]  # beyond the cap of 50, and above the buyer's limit
    assert await EventStore(js, EVENTOS).last_sequence() == before


async def test_an_event_created_before_the_limits_existed_shows_the_defaults(app, client, js):
    evento_id = str(uuid.uuid4())
    old_payload = {
        "nombre": "Evento antiguo",
        "descripcion": "",
        "fecha": iso_in(30),
        "lugar": "Teatro",
        "aforo_total": 50,
        "precio_centimos": 1000,
        "categoria": "teatro",
        "secciones": None,
        "venta_desde": None,
    }
    seq = await EventStore(js, EVENTOS).append(evento_id, [NewEvent(EVENTO_CREADO, old_payload)], 0)
    assert await app.state.runners[0].wait_for(seq, 10)
    doc = (await client.get(f"/api/eventos/{evento_id}")).json()
    assert (doc["limite_por_usuario"], doc["max_por_solicitud"]) == (10, 10)
    assert doc["organizador_id"] is None  # created before accounts: no organizer


async def test_malformed_requests_are_422_in_the_same_shape(client):
    missing = evento_body()
    del missing["nombre"], missing["fecha"]
    assert_validation_problem(await client.post("/api/eventos", json=missing), {"nombre", "fecha"})
    assert_validation_problem(await client.post("/api/eventos", json=evento_body(aforo_total="many")), {"aforo_total"})
    assert_validation_problem(await client.post("/api/eventos", json=evento_body(precio="NaN")), {"precio"})
    not_a_number = evento_body(limite_por_usuario="many", max_por_solicitud=2.5)
    assert_validation_problem(
        await client.post("/api/eventos", json=not_a_number), {"limite_por_usuario", "max_por_solicitud"}
    )
    bad_section = evento_body(secciones=[{"nombre": "A"}])
    assert_validation_problem(await client.post("/api/eventos", json=bad_section), {"secciones.0.asientos"})
    not_json = await client.post("/api/eventos", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


async def test_unknown_event_is_a_404_problem(client):
    response = await client.get("/api/eventos/no-such-event")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/evento-no-encontrado"
    assert "etag" not in response.headers


async def test_reads_carry_etag_and_cache_control_and_revalidate_with_304(client):
    evento_id = (await client.post("/api/eventos", json=evento_body())).json()["id"]
    first = await client.get(f"/api/eventos/{evento_id}")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=5"
    again = await client.get(f"/api/eventos/{evento_id}", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    listed = await client.get("/api/eventos", params={"limit": 1}, headers={"if-none-match": f'"x", W/{etag}'})
    assert listed.status_code == 200 and listed.headers["etag"] != etag
    listed_again = await client.get(
        "/api/eventos", params={"limit": 1}, headers={"if-none-match": listed.headers["etag"]}
    )
    assert listed_again.status_code == 304
    stale = await client.get(f"/api/eventos/{evento_id}", headers={"if-none-match": '"stale"'})
    assert stale.status_code == 200 and stale.json() == first.json()


async def test_health(client):
    assert (await client.get("/health/live")).status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"store": "ok", "nats": "ok", "redis": "ok", "projections": "ok"}
