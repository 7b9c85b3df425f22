"""GET /api/eventos: filters, paging and order, served from the Redis indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.events.helpers import evento_body, unique

BASE = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0)


def at(days: int, tz: str = "+00:00") -> str:
    zone = datetime.fromisoformat(f"2000-01-01T00:00:00{tz}").tzinfo
    return (BASE + timedelta(days=days)).astimezone(zone).isoformat()


async def create(client, **overrides) -> dict:
    response = await client.post("/api/eventos", json=evento_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def listing(client, **params) -> dict:
    response = await client.get("/api/eventos", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_category_is_listed_by_date_and_paged(client):
    categoria = unique("Cat")
    created = [
        await create(client, categoria=categoria.upper(), fecha=at(days, tz), nombre=f"Evento {days}")
        for days, tz in [(3, "-03:00"), (1, "+09:00"), (5, "Z"), (2, "-05:00"), (4, "+01:00")]
    ]
    by_date = sorted(created, key=lambda doc: datetime.fromisoformat(doc["fecha"]))
    full = await listing(client, categoria=categoria)
    assert full["total"] == 5 and full["next_offset"] is None
    assert full["items"] == by_date  # every item is the same document GET returns

    pages, offset = [], 0
    while offset is not None:
        page = await listing(client, categoria=f"  {categoria.lower()} ", limit=2, offset=offset)
        assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == offset
        pages.append([doc["id"] for doc in page["items"]])
        offset = page["next_offset"]
    assert pages == [[d["id"] for d in by_date[i : i + 2]] for i in (0, 2, 4)]
    assert (await listing(client, categoria=categoria, offset=10))["items"] == []
    assert (await listing(client, categoria=unique("nadie")))["total"] == 0


async def test_date_range_is_inclusive_and_offset_aware(client):
    categoria = unique("cat")
    ids = [(await create(client, categoria=categoria, fecha=at(days)))["id"] for days in (1, 2, 3, 4)]
    # Day 2 written in another zone, and with an unencoded "+" that the query string turns into a space.
    desde = at(2, "+05:00")
    page = await listing(client, categoria=categoria, desde=desde, hasta=at(3))
    assert [d["id"] for d in page["items"]] == ids[1:3] and page["total"] == 2
    url = f"/api/eventos?categoria={categoria}&desde={desde}"  # '+' left raw on purpose
    raw = await client.get(url)
    assert [d["id"] for d in raw.json()["items"]] == ids[1:]
    assert [d["id"] for d in (await listing(client, categoria=categoria, hasta=at(1)))["items"]] == ids[:1]


async def test_q_matches_word_prefixes_ignoring_case_and_accents(client):
    tag = unique("zq")
    cancion = await create(client, nombre=f"Canción de Ñandú {tag}", fecha=at(2), categoria="Folklore")
    rock = await create(client, nombre=f"ROCK en el río {tag.upper()}", fecha=at(1), categoria="rock")
    otra = await create(client, nombre=f"Otra canción {tag}", fecha=at(3), categoria="folklore")

    def ids(page: dict) -> list[str]:
        return [doc["id"] for doc in page["items"]]

    assert ids(await listing(client, q=tag)) == [rock["id"], cancion["id"], otra["id"]]
    assert ids(await listing(client, q=f"CANCIÓN {tag}")) == [cancion["id"], otra["id"]]
    assert ids(await listing(client, q=f"{tag} nandu")) == [cancion["id"]]
    assert ids(await listing(client, q=f"canc ñan {tag[:6]}")) == [cancion["id"]]  # prefixes of every word
    assert ids(await listing(client, q=f"rio {tag}")) == [rock["id"]]
    assert ids(await listing(client, q=f"{tag} jazz")) == []  # every word must match
    assert ids(await listing(client, q=f"ancion {tag}")) == []  # prefixes, not infixes
    assert ids(await listing(client, q=tag, categoria="FOLKLORE", desde=at(3))) == [otra["id"]]
    assert (await listing(client, q=tag, limit=1, offset=1))["items"][0]["id"] == cancion["id"]


async def test_events_on_the_same_date_have_a_stable_order(client):
    categoria = unique("cat")
    ids = [(await create(client, categoria=categoria, fecha=at(7)))["id"] for _ in range(3)]
    first = await listing(client, categoria=categoria)
    assert [d["id"] for d in first["items"]] == sorted(ids)


async def test_bad_queries_are_422_problems(client):
    for params, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"desde": "2030-01-01T00:00:00"}, "desde"),
        ({"hasta": "mañana"}, "hasta"),
        ({"desde": at(2), "hasta": at(1)}, "hasta"),
        ({"q": " ".join(f"w{i}" for i in range(9))}, "q"),  # nine words: one index read each, refused
    ]:
        response = await client.get("/api/eventos", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_listing_never_scans_the_keyspace(client, redis):
    tag = unique("zq")
    await create(client, nombre=f"Sin escaneo {tag}", categoria=tag)
    await redis.config_resetstat()
    for params in ({}, {"q": tag}, {"categoria": tag, "q": "sin"}, {"desde": at(0), "limit": 100}):
        assert (await client.get("/api/eventos", params=params)).status_code == 200
    used = {name.removeprefix("cmdstat_") for name in await redis.info("commandstats")}
    assert not used & {"scan", "keys", "sscan", "zscan", "hscan"}, used
    assert "zrangebyscore" in used or "evalsha" in used
