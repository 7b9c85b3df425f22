"""The read side: user documents and purchase histories, straight from the Redis read model.

Eventually consistent (AP): a read sees every event its projection has applied; a client's own
registration is there as soon as the POST answered (the write waits for its projection). The generation
read is the process's cached one (eventflow.generations.read_generation): no extra round trip.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from redis.asyncio import Redis

from eventflow.generations import read_generation
from services.users import projections as keys
from services.users.domain import ClavesNoDisponibles, UsuarioNoEncontrado, es_id
from services.users.privacy import DataKeys, cache_key, open_sealed

Lectura = tuple[dict[str, Any], str]  # (body, ETag)


def historial_url(usuario_id: str) -> str:
    return f"/api/usuarios/{usuario_id}/historial"


def etag(*parts: str | bytes | None) -> str:
    """A strong validator from what is stored (ciphertext for users, never a hash of personal data)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else (part or b""))
        digest.update(b"\x00")
    return f'"{digest.hexdigest()}"'


async def usuario(redis: Redis, data_keys: DataKeys, usuario_id: str) -> Lectura:
    """The decrypted user with its recent purchases embedded; one Redis round trip when warm."""
    if not es_id(usuario_id):
        raise UsuarioNoEncontrado(usuario_id)
    generation = read_generation(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.doc_key(usuario_id, generation))
        pipe.get(keys.recientes_key(usuario_id, generation))
        pipe.get(cache_key(usuario_id))
        raw_doc, raw_recientes, wrapped = await pipe.execute()
    if raw_doc is None:
        raise UsuarioNoEncontrado(usuario_id)
    try:
        dek = await data_keys.get(usuario_id, cached=wrapped)
    except Exception as err:  # the key store (CP side) is unreachable and the key is not cached
        raise ClavesNoDisponibles() from err
    if dek is None:  # the data key is gone: the user was erased
        raise UsuarioNoEncontrado(usuario_id)
    doc = orjson.loads(raw_doc)
    body = {
        "id": usuario_id,
        "tipo_documento": doc["tipo_documento"],
        **open_sealed(dek, usuario_id, doc["cifrado"]),
        "registrado_en": doc["registrado_en"],
        "historial_compras": orjson.loads(raw_recientes) if raw_recientes else [],
        "historial_url": historial_url(usuario_id),
    }
    return body, etag(raw_doc, raw_recientes)


async def existe(redis: Redis, usuario_id: str) -> bool:
    """Whether the user is in the read model: one EXISTS, nothing decrypted."""
    return es_id(usuario_id) and bool(await redis.exists(keys.doc_key(usuario_id, read_generation(redis))))


async def historial(redis: Redis, usuario_id: str, pagina: int, tamano: int) -> Lectura:
    """One page of the full purchase history, newest first."""
    if not es_id(usuario_id):
        raise UsuarioNoEncontrado(usuario_id)
    start, generation = (pagina - 1) * tamano, read_generation(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.doc_key(usuario_id, generation))
        pipe.zcard(keys.orden_key(usuario_id, generation))
        pipe.zrevrange(keys.orden_key(usuario_id, generation), start, start + tamano - 1)
        exists, total, ids = await pipe.execute()
    if not exists:
        raise UsuarioNoEncontrado(usuario_id)
    compras = await redis.hmget(keys.historial_key(usuario_id, generation), ids) if ids else []
    body = {
        "usuario_id": usuario_id,
        "pagina": pagina,
        "tamano": tamano,
        "total": total,
        "compras": [orjson.loads(c) for c in compras if c is not None],
    }
    return body, etag(orjson.dumps(body))
