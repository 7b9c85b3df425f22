"""Dropping the users read model and rebuilding it from the log gives identical documents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA
from eventflow.eventstore import EventStore, NewEvent
from eventflow.jetstream import RESERVAS
from eventflow.projections import ProjectionRunner
from services.users.bootstrap import read_models
from tests.users import factories
from tests.users.signed_in import admin_headers

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def buy(js, usuario_id: str, n: int) -> int:
    store = EventStore(js, RESERVAS)
    reserva_id = str(uuid.uuid4())
    base = {"reserva_id": reserva_id, "usuario_id": usuario_id, "evento_id": f"ev-{n}", "cantidad": 1}
    now = datetime.now(UTC).isoformat()
    seq = await store.append(
        reserva_id,
        [NewEvent(RESERVA_CONFIRMADA, {**base, "asientos": [], "importe_centimos": 500 * n, "confirmada_en": now})],
        None,
    )
    if n % 3 == 0:
        cancel = {**base, "asientos": [], "importe_reembolsado_centimos": 500 * n, "cancelada_en": now}
        seq = await store.append(reserva_id, [NewEvent(RESERVA_CANCELADA, cancel)], None)
    return seq


async def snapshot(client, ids: list[str], boss: dict[str, str]) -> dict[str, tuple]:
    views = {}
    for usuario_id in ids:
        user = await client.get(f"/api/usuarios/{usuario_id}", headers=boss)
        history = await client.get(f"/api/usuarios/{usuario_id}/historial?tamano=100", headers=boss)
        assert user.status_code == history.status_code == 200
        views[usuario_id] = (user.json(), user.headers["etag"], history.json(), history.headers["etag"])
    return views


async def test_drop_and_rebuild_gives_identical_documents(app, client, js, rds):
    ids = [(await client.post("/api/usuarios", json=factories.usuario())).json()["id"] for _ in range(4)]
    seq = 0
    for i, usuario_id in enumerate(ids[:3]):
        for n in range(1, 4 + 3 * i):
            seq = await buy(js, usuario_id, n)
    assert await app.state.runners["usuarios-historial"].wait_for(seq, 10)
    boss = await admin_headers(client)
    before = await snapshot(client, ids, boss)
    assert any(len(view[0]["historial_compras"]) > 1 for view in before.values())

    dropped = [key async for key in rds.scan_iter(match="usuarios:*")]
    dropped += [key async for key in rds.scan_iter(match="proj:usuarios*")]
    await rds.delete(*dropped)
    assert (await client.get(f"/api/usuarios/{ids[0]}", headers=boss)).status_code == 404

    # The replay a wiped Redis gets (`make rebuild` instead builds a new generation: test_rebuild_live.py).
    runners = [ProjectionRunner(js, rds, stream, projection) for stream, projection in read_models()]
    assert {r.checkpoint_key for r in runners} == {"proj:usuarios:USUARIOS", "proj:usuarios-historial:RESERVAS"}
    for runner in runners:
        await runner.reset()
    for runner in runners:
        await runner.catch_up(timeout=60)
    assert await snapshot(client, ids, boss) == before
