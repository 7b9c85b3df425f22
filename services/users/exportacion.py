"""The anonymized users export: two streaming passes over the read model, nothing held per row.

Pass 1 counts the level-0 quasi-identifier combinations (anonimato.planificar decides the generalization);
pass 2 writes each kept user with a random id (new for every export: two exports cannot be joined) and their
purchases as category, event month, quantity, amount and outcome. The email is opened only to take its domain;
no name, email, document, user id, reservation id, pseudonym or ciphertext leaves this module.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from redis.asyncio import Redis

from eventflow.crypto import FieldCipher
from eventflow.generations import read_generation
from services.users import anonimato
from services.users import projections as keys
from services.users.privacy import DataKeys, cache_key

log = logging.getLogger(__name__)
SCAN_BATCH = 500
CHUNK_BYTES = 64 * 1024
SIN_DATO = "desconocida"
CSV_COLUMNS = (
    "id",
    "tipo_documento",
    "dominio_email",
    "registro",
    "categoria",
    "mes_evento",
    "cantidad",
    "importe",
    "estado",
)

InfoEvento = Callable[[str], Awaitable[dict[str, Any] | None]]  # evento_id -> EventoCreado data, or None


class Formato(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"


MEDIA_TYPES = {
    Formato.JSON: "application/json",
    Formato.NDJSON: "application/x-ndjson",
    Formato.CSV: "text/csv; charset=utf-8",
}


@dataclass
class _Usuario:
    cuasi: anonimato.Cuasi
    historial: list[bytes | str]  # the stored purchases (JSON), read in pass 2 only


@dataclass
class Exportador:
    redis: Redis
    data_keys: DataKeys
    info_evento: InfoEvento
    _eventos: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def _usuarios(self, with_history: bool = False) -> AsyncIterator[_Usuario]:
        """Every user in the read model, with their quasi-identifiers; erased users (no data key) are skipped."""
        generation = read_generation(self.redis)
        batch: list[str] = []
        async for key in self.redis.scan_iter(match=keys.doc_key("*", generation), count=SCAN_BATCH):
            batch.append(key.decode() if isinstance(key, bytes) else key)
            if len(batch) >= SCAN_BATCH:
                async for usuario in self._batch(batch, generation, with_history):
                    yield usuario
                batch = []
        async for usuario in self._batch(batch, generation, with_history):
            yield usuario

    async def _batch(self, doc_keys: list[str], generation: int, with_history: bool) -> AsyncIterator[_Usuario]:
        """One pipeline per batch: the documents, the cached data keys and (pass 2) the purchase histories."""
        if not doc_keys:
            return
        ids = [k.rpartition(":")[2] for k in doc_keys]
        async with self.redis.pipeline(transaction=False) as pipe:
            for usuario_id, doc_key in zip(ids, doc_keys, strict=True):
                pipe.get(doc_key)
                pipe.get(cache_key(usuario_id))
                if with_history:
                    pipe.hvals(keys.historial_key(usuario_id, generation))
            raw = await pipe.execute()
        step = 3 if with_history else 2
        for i, usuario_id in enumerate(ids):
            doc, wrapped = raw[step * i], raw[step * i + 1]
            if doc is None:
                continue
            cached = wrapped.decode() if isinstance(wrapped, bytes) else wrapped
            dek = await self.data_keys.get(usuario_id, cached=cached)
            if dek is None:  # erased: their data opens no more, so they are no longer a person here
                continue
            data = orjson.loads(doc)
            email = FieldCipher(dek, usuario_id).open("email", data["cifrado"]["email"])
            q = anonimato.cuasi(data["tipo_documento"], email, data["registrado_en"])
            yield _Usuario(q, raw[step * i + 2] if with_history else [])

    async def planificar(self, k: int, max_suprimidas: float = anonimato.MAX_SUPRIMIDAS) -> anonimato.Plan:
        conteos: Counter[anonimato.Cuasi] = Counter()
        async for usuario in self._usuarios():
            conteos[usuario.cuasi] += 1
        return anonimato.planificar(conteos, k, max_suprimidas)

    async def _evento(self, evento_id: str) -> tuple[str, str]:
        if evento_id not in self._eventos:
            data = await self.info_evento(evento_id)
            categoria = str(data.get("categoria") or SIN_DATO) if data else SIN_DATO
            self._eventos[evento_id] = (categoria, anonimato.mes(data["fecha"]) if data else SIN_DATO)
        return self._eventos[evento_id]

    async def _compras(self, historial: list[bytes | str]) -> list[dict[str, Any]]:
        compras = []
        for raw in historial:
            c = orjson.loads(raw)
            categoria, mes_evento = await self._evento(c["evento_id"])
            compras.append(
                {
                    "categoria": categoria,
                    "mes_evento": mes_evento,
                    "cantidad": c["cantidad"],
                    "importe": c["importe"],
                    "estado": c["estado"],
                }
            )
        # A canonical order, not the stored one (reservation ids, purchase times): nothing to line up with the log.
        compras.sort(key=lambda c: (c["mes_evento"], c["categoria"], c["estado"], c["cantidad"], c["importe"]))
        return compras

    async def registros(self, plan: anonimato.Plan) -> AsyncIterator[dict[str, Any]]:
        """Pass 2: the kept users, generalized as the plan says, each under a fresh random id."""
        async for usuario in self._usuarios(with_history=True):
            g = plan.conserva(usuario.cuasi)
            if g is None:
                continue
            tipo, dom, periodo = g
            yield {
                "id": uuid.uuid4().hex,
                "tipo_documento": tipo,
                "dominio_email": dom,
                "registro": periodo,
                "compras": await self._compras(usuario.historial),
            }


async def _chunks(parts: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for part in parts:
        buffer += part
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _csv_line(values: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)  # RFC 4180: CRLF, quotes doubled where needed
    return out.getvalue().encode()


async def serializar(
    registros: AsyncIterator[dict[str, Any]], formato: Formato, resumen: dict[str, Any], contador: list[int]
) -> AsyncIterator[bytes]:
    """The export as bytes in chunks; `contador[0]` counts the users written (for the audit record)."""

    async def parts() -> AsyncIterator[bytes]:
        if formato is Formato.JSON:
            yield b'{"resumen":' + orjson.dumps(resumen) + b',"usuarios":['
        if formato is Formato.CSV:
            yield _csv_line(list(CSV_COLUMNS))
        async for r in registros:
            contador[0] += 1
            if formato is Formato.CSV:
                base = [r["id"], r["tipo_documento"], r["dominio_email"], r["registro"]]
                for c in r["compras"] or [None]:
                    yield _csv_line(base + ([c[col] for col in CSV_COLUMNS[4:]] if c else [""] * 5))
            elif formato is Formato.NDJSON:
                yield orjson.dumps(r) + b"\n"
            else:
                yield (b"," if contador[0] > 1 else b"") + orjson.dumps(r)
        if formato is Formato.JSON:
            yield b"]}"
        elif formato is Formato.NDJSON:
            yield orjson.dumps({"resumen": {**resumen, "filas_exportadas": contador[0]}}) + b"\n"

    async for chunk in _chunks(parts()):
        yield chunk


def auditar(quien: str, formato: str, k: int, filas: int, suprimidas: int) -> None:
    """Who exported what: an audit record in the structured log (no personal data in it)."""
    log.info(
        "users export",
        extra={
            "audit": "usuarios.exportar",
            "por": quien,
            "formato": formato,
            "k": k,
            "filas": filas,
            "suprimidas": suprimidas,
        },
    )
