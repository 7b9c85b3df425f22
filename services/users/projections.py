"""The users read models in Redis: the user documents (from USUARIOS) and purchase histories (from RESERVAS).

The two live in different keys so neither projection depends on the order between the two streams: a
purchase may be projected before its buyer's document and the GET still joins them correctly.
Personal fields stay sealed here; only the service, holding the data key, opens them.
Both belong to the family `usuarios` and switch generation together: generation 3's keys are the same
under `usuarios:g3:` (eventflow.generations). `usuarios:clave:<id>` (privacy.py) is a cache, in no generation.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from eventflow.contracts import RESERVA_CANCELADA, RESERVA_CONFIRMADA, USUARIO_REGISTRADO
from eventflow.eventstore import StoredEvent
from eventflow.generations import keyspace

FAMILY = "usuarios"
USUARIO_BORRADO = "UsuarioBorrado"  # stream USUARIOS: the user was erased (no personal data in it)
RECIENTES_MAX = 20


def doc_key(usuario_id: str, generation: int = 0) -> str:
    return f"{keyspace(FAMILY, generation)}:doc:{usuario_id}"


def borrado_key(usuario_id: str, generation: int = 0) -> str:
    """Tombstone of an erased user (their id only): later purchase events of theirs are not projected."""
    return f"{keyspace(FAMILY, generation)}:borrado:{usuario_id}"


def historial_key(usuario_id: str, generation: int = 0) -> str:
    """Hash reserva_id -> purchase (JSON): the full history."""
    return f"{keyspace(FAMILY, generation)}:historial:{usuario_id}"


def orden_key(usuario_id: str, generation: int = 0) -> str:
    """Sorted set reserva_id by stream sequence: the history's order, for paging."""
    return f"{keyspace(FAMILY, generation)}:historial-orden:{usuario_id}"


def recientes_key(usuario_id: str, generation: int = 0) -> str:
    """The last RECIENTES_MAX purchases, newest first, ready to embed in the user document."""
    return f"{keyspace(FAMILY, generation)}:recientes:{usuario_id}"


class UsuariosProjection:
    name: str = "usuarios"
    family: str = FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.key_patterns: tuple[str, ...] = (doc_key("*", generation), borrado_key("*", generation))

    def at(self, generation: int) -> UsuariosProjection:
        return UsuariosProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        if event.type == USUARIO_BORRADO:  # the read model forgets the user, their purchase history included
            keys = (doc_key, historial_key, orden_key, recientes_key)
            tx.delete(*(key(event.aggregate_id, self.generation) for key in keys))
            tx.set(borrado_key(event.aggregate_id, self.generation), b"1")
            return
        if event.type != USUARIO_REGISTRADO:
            return
        data = event.data
        doc = {
            "id": event.aggregate_id,
            "tipo_documento": data["tipo_documento"],
            "cifrado": data["cifrado"],
            "registrado_en": data["registrado_en"],
        }
        tx.set(doc_key(event.aggregate_id, self.generation), orjson.dumps(doc))


def compra(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "reserva_id": data["reserva_id"],
        "evento_id": data["evento_id"],
        "cantidad": data["cantidad"],
        "asientos": data["asientos"],
        "importe": data["importe_centimos"] / 100,
        "fecha": data["confirmada_en"],
        "estado": "confirmada",
    }


def cancelada(previa: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Cancelled purchases stay in the history (it is a record), marked, with what was refunded."""
    return {
        **previa,
        "estado": "cancelada",
        "cancelada_en": data["cancelada_en"],
        "importe_reembolsado": data["importe_reembolsado_centimos"] / 100,
    }


class HistorialProjection:
    name: str = "usuarios-historial"
    family: str = FAMILY

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        keys = (historial_key, orden_key, recientes_key)
        self.key_patterns: tuple[str, ...] = tuple(key("*", generation) for key in keys)

    def at(self, generation: int) -> HistorialProjection:
        return HistorialProjection(generation)

    async def apply(self, event: StoredEvent, redis: Redis, tx: Pipeline) -> None:
        data, generation = event.data, self.generation
        if event.type not in (RESERVA_CONFIRMADA, RESERVA_CANCELADA):
            return
        if await redis.exists(borrado_key(data["usuario_id"], generation)):
            return  # erased: the read model keeps nothing of theirs (in a rebuild, either stream may come first)
        if event.type == RESERVA_CONFIRMADA:
            entry = compra(data)
            tx.zadd(orden_key(data["usuario_id"], generation), {entry["reserva_id"]: event.seq})
        elif event.type == RESERVA_CANCELADA:
            stored = await redis.hget(historial_key(data["usuario_id"], generation), data["reserva_id"])
            if stored is None:
                return  # never confirmed: not a purchase
            entry = cancelada(orjson.loads(stored), data)
        else:
            return
        usuario_id = data["usuario_id"]
        tx.hset(historial_key(usuario_id, generation), entry["reserva_id"], orjson.dumps(entry))
        key = recientes_key(usuario_id, generation)
        await self._update_recientes(key, entry, redis, tx, new=event.type == RESERVA_CONFIRMADA)

    @staticmethod
    async def _update_recientes(key: str, entry: dict[str, Any], redis: Redis, tx: Pipeline, new: bool) -> None:
        """Only this projection writes these keys and the runner serializes it, so read-modify-write is safe."""
        raw = await redis.get(key)
        recientes: list[dict[str, Any]] = orjson.loads(raw) if raw else []
        if new:
            recientes = [entry, *(c for c in recientes if c["reserva_id"] != entry["reserva_id"])]
        else:
            recientes = [entry if c["reserva_id"] == entry["reserva_id"] else c for c in recientes]
        tx.set(key, orjson.dumps(recientes[:RECIENTES_MAX]))
