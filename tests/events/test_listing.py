"""GET /api/eventos: filters, paging and order, served from the Redis indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.events import views
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


async def several_words(client) -> tuple[list[str], list[dict]]:
    """Twelve events and three words with sets of different sizes: the first word is in every name, the
    second in 8 (i % 3 != 2), the third in 6 (even i); dates in pairs, so ties are ordered by id."""
    words = [unique("wa"), unique("wb"), unique("wc")]
    docs = []
    for i in range(12):
        nombre = " ".join(w for w, on in zip(words, (True, i % 3 != 2, i % 2 == 0), strict=True) if on)
        docs.append(await create(client, nombre=f"Show {nombre}", fecha=at(i // 2), categoria="Par" if i % 4 else "x"))
    return words, docs


def expected(docs: list[dict], *words: str, desde: int = -1, categoria: str | None = None) -> list[str]:
    """The old semantics: every word in the name (and the filters), by date, then id."""
    hits = [
        d
        for d in docs
        if all(w in d["nombre"] for w in words)
        and datetime.fromisoformat(d["fecha"]) >= BASE + timedelta(days=desde)
        and categoria in (None, d["categoria"])
    ]
    return [d["id"] for d in sorted(hits, key=lambda d: (datetime.fromisoformat(d["fecha"]), d["id"]))]


async def test_several_words_match_the_intersection_in_date_order(client):
    (wa, wb, wc), docs = await several_words(client)
    for query, want in [
        ([wa, wb], expected(docs, wa, wb)),  # 8 of 12
        ([wb, wa], expected(docs, wa, wb)),  # the words' order does not matter
        ([wa, wc], expected(docs, wa, wc)),  # 6 of 12
        ([wc, wb, wa], expected(docs, wa, wb, wc)),  # 4: i in {0, 4, 6, 10}
    ]:
        page = await listing(client, q=" ".join(query), limit=100)
        assert [d["id"] for d in page["items"]] == want, query
        assert page["total"] == len(want) and page["total_exacto"] is True and page["next_offset"] is None
    assert len(expected(docs, wa, wb, wc)) == 4 and len(expected(docs, wa, wb)) == 8
    # A date range starts the walk mid-set; a category is one more set to intersect.
    ranged = await listing(client, q=f"{wa} {wb}", desde=at(2), limit=100)
    assert [d["id"] for d in ranged["items"]] == expected(docs, wa, wb, desde=2) and ranged["total"] == 5
    by_cat = await listing(client, q=f"{wb} {wa}", categoria="par", desde=at(1), limit=100)
    assert [d["id"] for d in by_cat["items"]] == expected(docs, wa, wb, desde=1, categoria="par")
    assert by_cat["total"] == 5


async def test_several_words_page_without_gaps_or_duplicates(client):
    (wa, wb, _), docs = await several_words(client)
    seen, offset, totals = [], 0, set()
    while offset is not None:
        page = await listing(client, q=f"{wa} {wb}", limit=3, offset=offset)
        assert page["offset"] == offset and len(page["items"]) == min(3, 8 - offset)
        seen += [d["id"] for d in page["items"]]
        totals.add((page["total"], page["total_exacto"]))
        offset = page["next_offset"]
    assert seen == expected(docs, wa, wb) and totals == {(8, True)}  # pages 0, 3, 6: every match once, in order
    assert (await listing(client, q=f"{wa} {wb}", offset=8))["items"] == []


async def test_a_capped_walk_keeps_the_pages_right_and_says_the_total_is_a_lower_bound(client, monkeypatch):
    (wa, wb, wc), docs = await several_words(client)
    monkeypatch.setattr(views, "MAX_EXAMINED", 6)
    # The smallest set (wc, 6 members) is the one walked: it fits under the cap, so the total is exact.
    whole = await listing(client, q=f"{wa} {wc}", limit=2)  # walking wa would stop at 6 of 12, inexact
    assert [d["id"] for d in whole["items"]] == expected(docs, wa, wc)[:2]
    assert whole["total"] == 6 and whole["total_exacto"] is True

    monkeypatch.setattr(views, "MAX_EXAMINED", 3)
    want = expected(docs, wa, wb)  # the walk goes over wb's 8 members, all of them matches
    seen, offset = [], 0
    while offset is not None:
        page = await listing(client, q=f"{wa} {wb}", limit=2, offset=offset)
        ids = [d["id"] for d in page["items"]]
        assert ids == want[offset : offset + 2]  # still exactly the page the uncapped walk gives
        if not page["total_exacto"]:  # stopped early: counted what it examined, left the next page open
            assert offset + 2 <= page["total"] < len(want) and page["next_offset"] == offset + 2
        seen += ids
        offset = page["next_offset"]
    assert seen == want
    first = await listing(client, q=f"{wa} {wb}", limit=2)
    assert first["total_exacto"] is False and first["total"] == 3  # 3 examined, 3 matches: a lower bound
    three = await listing(client, q=f"{wa} {wb}", limit=3)  # the page ends where the count stopped: more may follow
    assert three["total"] == 3 and three["total_exacto"] is False and three["next_offset"] == 3
