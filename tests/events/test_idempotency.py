"""Idempotency-Key on POST /api/eventos, on the real NATS and Redis: one key, one event in the log, per organizer."""

from __future__ import annotations

import asyncio
import uuid

from eventflow.contracts import EVENTO_CREADO
from eventflow.crypto import Pseudonymizer
from eventflow.eventstore import EventStore
from eventflow.jetstream import EVENTOS
from services.events.domain import evento_id_para
from tests.events.helpers import evento_body, unique


def expected_id(settings, organizer, idempotency_key: str) -> str:
    return evento_id_para(Pseudonymizer(settings.pseudonym_key_bytes), organizer.id, idempotency_key)


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def test_same_key_and_body_twice_answers_the_same_event_once_in_the_log(client, js, settings, organizer):
    body, headers = evento_body(nombre=unique("Idem")), key()
    first = await client.post("/api/eventos", json=body, headers=headers)
    again = await client.post("/api/eventos", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json() == first.json()
    assert first.json()["id"] == expected_id(settings, organizer, headers["Idempotency-Key"])
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotency-key"] == headers["Idempotency-Key"]
    events, _ = await EventStore(js, EVENTOS).load(first.json()["id"])
    assert [e.type for e in events] == [EVENTO_CREADO]
    assert (await client.get(first.headers["location"])).json()["nombre"] == body["nombre"]


async def test_concurrent_requests_with_one_key_create_one_event(client, js, settings, organizer):
    body, headers = evento_body(nombre=unique("Race")), key()
    answers = await asyncio.gather(*(client.post("/api/eventos", json=body, headers=headers) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert {a.json()["id"] for a in answers} == {expected_id(settings, organizer, headers["Idempotency-Key"])}
    events, _ = await EventStore(js, EVENTOS).load(answers[0].json()["id"])
    assert len(events) == 1


async def test_same_key_with_a_different_body_is_a_problem_and_writes_nothing(client, js):
    headers = key()
    first = await client.post("/api/eventos", json=evento_body(aforo_total=100), headers=headers)
    assert first.status_code == 201, first.text
    other = await client.post("/api/eventos", json=evento_body(aforo_total=101), headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    events, _ = await EventStore(js, EVENTOS).load(first.json()["id"])
    assert len(events) == 1 and events[0].data["aforo_total"] == 100
    assert (await client.get(first.headers["location"])).json()["aforo_total"] == 100


async def test_a_refused_request_leaves_the_key_free(client):
    headers = key()
    refused = await client.post("/api/eventos", json=evento_body(aforo_total=0), headers=headers)
    assert refused.status_code == 422 and refused.json()["type"] == "/problems/validation"
    created = await client.post("/api/eventos", json=evento_body(), headers=headers)
    assert created.status_code == 201, created.text


async def test_without_a_key_every_request_creates_a_new_event(client):
    body = evento_body(nombre=unique("NoKey"))
    ids = {(await client.post("/api/eventos", json=body)).json()["id"] for _ in range(2)}
    assert len(ids) == 2


async def test_the_purchase_limits_sent_are_part_of_the_request(client):
    headers = key()
    first = await client.post("/api/eventos", json=evento_body(limite_por_usuario=4), headers=headers)
    again = await client.post("/api/eventos", json=evento_body(limite_por_usuario=4), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200) and again.json() == first.json()
    assert (first.json()["limite_por_usuario"], first.json()["max_por_solicitud"]) == (4, 4)
    other = await client.post("/api/eventos", json=evento_body(limite_por_usuario=5), headers=headers)
    assert other.status_code == 422 and other.json()["type"] == "/problems/idempotency-key-reused"
