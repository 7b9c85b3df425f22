"""Property-based: random hold/confirm/release/settle/return/advance-clock sequences against a naive model.

The port is driven through the in-memory fake, which composes the pure `Inventory` and `UserQuota` exactly as
the store does (quota first, then the hold; refused holds, releases and returns give the quota back). After
every step the invariants must hold: sold + active holds <= capacity, a seat in at most one hold or sale, the
sold-seat bitmap is exactly the seats of the sales, and under a limit every user's quota stays within it and
covers all of that user's live reservations. The state goes through its JSON form at random points.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.reservations.inventory import (
    EXPIRED_HOLD_GRACE_S,
    Confirmed,
    Held,
    HoldLost,
    HoldRequest,
    Inventory,
    LimitExceeded,
    SaleRecord,
    SeatsTaken,
    SoldOut,
    UnknownSeats,
    VentaInconsistente,
)
from services.reservations.quota import UserQuota
from tests.reservations.fake_inventory import FakeInventario

RIDS = [f"r{i}" for i in range(8)]
USERS = ["u0", "u1", "u2"]


def owner(rid: str) -> str:
    return USERS[int(rid[1:]) % len(USERS)]  # a reservation belongs to one user


def run(call: Coroutine[Any, Any, Any]) -> Any:
    """The fake never suspends: drive its coroutine to the end without an event loop."""
    try:
        call.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the fake suspended")


@dataclass
class Res:
    user: str
    n: int
    seats: tuple[str, ...]
    exp: float
    status: str  # held | expired | confirmed (sold, unsettled) | settled | returned (un-sold, unsettled) | gone
    settled_at: float | None = None  # a return's settle: its marker is kept for the grace period after it


@dataclass
class Model:
    capacity: int
    seats: list[str] | None
    limit: int | None
    now: float = 0.0
    res: dict[str, Res] = field(default_factory=dict)
    quota: dict[str, dict[str, int]] = field(default_factory=lambda: {u: {} for u in USERS})
    released_after_settle: set[str] = field(default_factory=set)  # outside the saga's protocol: no quota

    def expire(self) -> None:
        for rid, r in list(self.res.items()):
            if r.status == "held" and r.exp <= self.now:
                r.status = "expired"
            forgotten_at = r.exp if r.status == "expired" else r.settled_at if r.status == "gone" else None
            if forgotten_at is not None and forgotten_at + EXPIRED_HOLD_GRACE_S <= self.now:
                del self.res[rid]

    def live(self) -> list[Res]:
        return [r for r in self.res.values() if r.status in ("held", "confirmed", "settled")]

    def free(self) -> int:
        return self.capacity - sum(r.n for r in self.live())

    def taken(self) -> set[str]:
        return {s for r in self.live() for s in r.seats}

    def hold(self, q: HoldRequest) -> object:
        self.expire()
        mine = self.quota[q.usuario_id]
        if self.limit is not None and q.reserva_id not in mine:
            if sum(mine.values()) + q.cantidad > self.limit:
                return LimitExceeded(self.limit, sum(mine.values()))
            mine[q.reserva_id] = q.cantidad
        outcome = self._hold(q)
        if not isinstance(outcome, Held):
            mine.pop(q.reserva_id, None)
        return outcome

    def _hold(self, q: HoldRequest) -> object:
        r = self.res.get(q.reserva_id)
        if r and r.status == "confirmed":
            return Held(q.reserva_id, self.now + q.ttl_s, r.seats)
        if r and r.status == "held":
            return Held(q.reserva_id, r.exp, r.seats)
        self.res.pop(q.reserva_id, None)  # an expired one is replaced, even if refused
        if q.asientos and (unknown := tuple(s for s in q.asientos if s not in (self.seats or []))):
            return UnknownSeats(unknown)
        if busy := tuple(s for s in q.asientos if s in self.taken()):
            return SeatsTaken(busy)
        if q.cantidad > self.free():
            return SoldOut(self.free())
        seats = q.asientos
        if self.seats is not None and not seats:
            seats = tuple(s for s in self.seats if s not in self.taken())[: q.cantidad]
        self.res[q.reserva_id] = Res(q.usuario_id, q.cantidad, seats, self.now + q.ttl_s, "held")
        return Held(q.reserva_id, self.now + q.ttl_s, seats)

    def confirm(self, rid: str) -> object:
        self.expire()
        r = self.res.get(rid)
        if r is None or r.status in ("settled", "returned", "gone"):
            return HoldLost(rid)  # a settled sale is only counts: the inventory no longer knows it
        if r.status == "expired" and (r.n > self.free() or set(r.seats) & self.taken()):
            return HoldLost(rid)
        r.status = "confirmed"
        return Confirmed(rid, r.seats)

    def release(self, rid: str) -> None:
        self.expire()
        r = self.res.get(rid)
        if r is not None and r.status in ("held", "expired", "confirmed"):
            del self.res[rid]
        elif r is not None and r.status == "settled":
            self.released_after_settle.add(rid)
        self.quota[owner(rid)].pop(rid, None)

    def settle(self, rid: str) -> None:
        self.expire()
        r = self.res.get(rid)
        if r is not None and r.status == "confirmed":
            r.status = "settled"
        elif r is not None and r.status == "returned":
            r.status, r.settled_at = "gone", self.now  # settled, but its marker stays for the grace period

    def return_sale(self, rid: str) -> None:
        self.expire()
        if self.res[rid].status != "gone":  # a late replay after the settle finds the marker: a no-op
            self.res[rid].status = "returned"
        self.quota[owner(rid)].pop(rid, None)


layouts = st.one_of(
    st.integers(1, 10).map(lambda n: (n, None)),
    st.lists(st.integers(1, 4), min_size=1, max_size=3).map(
        lambda sizes: (sum(sizes), [{"nombre": "ABC"[i], "asientos": s} for i, s in enumerate(sizes)])
    ),
)


def hold_args(universe: list[str]) -> st.SearchStrategy[tuple[tuple[str, ...], int]]:
    seat_choices = st.lists(st.sampled_from([*universe, "Z-1"]), min_size=1, max_size=3, unique=True)
    return st.one_of(st.integers(1, 4).map(lambda n: ((), n)), seat_choices.map(lambda s: (tuple(s), len(s))))


KINDS = ["hold", "hold", "buy", "confirm", "confirm", "release", "settle", "return", "bad_return", "advance"]
KINDS += ["roundtrip"]


def draw_op(data: st.DataObject, universe: list[str], model: Model) -> tuple:
    """Mostly ops on reservations that exist, so that sequences reach confirmations, settles and returns."""
    kind = data.draw(st.sampled_from(KINDS))
    known = sorted(model.res)
    rid = data.draw(st.sampled_from(known) if known and data.draw(st.booleans()) else st.sampled_from(RIDS))
    if kind in ("hold", "buy"):
        return kind, rid, data.draw(hold_args(universe)), data.draw(st.sampled_from([5.0, 20.0]))
    if kind == "advance":
        return kind, data.draw(st.sampled_from([0.0, 1.0, 4.0, 10.0, 30.0, EXPIRED_HOLD_GRACE_S]))
    return kind, rid


def check_invariants(fake: FakeInventario, model: Model) -> None:
    inv = fake.inventarios["ev"]
    avail = inv.availability("ev", model.now)  # prunes, as every op does
    kinds = ("held", "expired", "confirmed", "returned")
    by = {s: {rid for rid, r in model.res.items() if r.status == s} for s in kinds}
    by["returned"] |= {rid for rid, r in model.res.items() if r.status == "gone"}
    stored = (inv.retenidas, inv.caducadas, inv.confirmadas, inv.devueltas)
    assert [set(m) for m in stored] == [by[s] for s in kinds]
    assert inv.n_vendidas + inv.n_retenidas <= inv.capacidad
    assert all(h.expires_at > model.now for h in inv.retenidas.values()), "an expired hold is still counted"
    sold = [r for r in model.res.values() if r.status in ("confirmed", "settled")]
    assert avail.vendidas == sum(r.n for r in sold)
    assert avail.retenidas == sum(r.n for r in model.res.values() if r.status == "held")
    seats = [s for r in model.live() for s in r.seats]
    assert len(seats) == len(set(seats)), "a seat is in two holds or sales"
    if inv.venue is not None:
        everything = range(inv.venue.size)
        assert {inv.venue.name(i) for i in everything if inv.is_sold(i)} == {s for r in sold for s in r.seats}
        assert {inv.venue.name(i) for i in everything if inv.is_taken(i)} == set(seats)
    for user in USERS:
        quota = fake.cupos.get(("ev", user), UserQuota()).reservas
        assert quota == model.quota[user]
        if model.limit is not None:
            assert sum(quota.values()) <= model.limit
            covered = {rid for rid, r in model.res.items() if r.user == user and r.status in ("held", "confirmed")}
            covered |= {
                rid
                for rid, r in model.res.items()
                if r.user == user and r.status == "settled" and rid not in model.released_after_settle
            }
            assert covered <= set(quota), "a live reservation is not counted in its user's quota"


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_random_op_sequences_keep_the_invariants_and_match_the_model(data):
    capacity, sections = data.draw(layouts)
    limit = data.draw(st.sampled_from([None, 2, 4]))
    universe = [f"{s['nombre']}-{n}" for s in sections or [] for n in range(1, s["asientos"] + 1)]
    model = Model(capacity, universe if sections else None, limit)
    fake = FakeInventario(lambda: model.now)
    fake.inventarios["ev"] = Inventory.for_event(capacity, sections)
    for _ in range(data.draw(st.integers(1, 50))):
        model.expire()
        op = draw_op(data, universe, model)
        kind, rid = op[0], op[1]
        r = model.res.get(rid) if isinstance(rid, str) else None
        if kind in ("hold", "buy"):
            if r is not None and r.status in ("settled", "returned", "gone"):
                continue  # the saga never holds again a reservation it recorded
            (seats, n), ttl = op[2], op[3]
            q = HoldRequest(rid, "ev", owner(rid), n, seats, ttl, limit)
            held = run(fake.hold(q))
            assert held == model.hold(q), op
            if kind == "buy" and isinstance(held, Held):  # the saga's happy path, in one step
                assert run(fake.confirm("ev", rid)) == model.confirm(rid), op
                run(fake.settle("ev", rid))
                model.settle(rid)
        elif kind == "confirm":
            assert run(fake.confirm("ev", rid)) == model.confirm(rid), op
        elif kind == "release":
            run(fake.release("ev", rid, owner(rid)))
            model.release(rid)
        elif kind == "settle":
            run(fake.settle("ev", rid))
            model.settle(rid)
        elif kind == "return":
            if r is None:
                continue  # nothing was sold or held: a cancellation has nothing to return
            run(fake.return_sale("ev", SaleRecord(rid, r.user, r.n, r.seats)))
            model.return_sale(rid)
        elif kind == "bad_return":
            before = fake.inventarios["ev"].to_json()
            try:
                run(fake.return_sale("ev", SaleRecord("bad", "u0", capacity + 1, ())))
                raise AssertionError("a return of more than was ever sold must be refused")
            except VentaInconsistente:
                assert fake.inventarios["ev"].to_json() == before
        elif kind == "advance":
            model.now += op[1]
        else:
            fake.inventarios["ev"] = Inventory.from_json(fake.inventarios["ev"].to_json())
            fake.cupos = {k: UserQuota.from_json(v.to_json()) for k, v in fake.cupos.items()}
        model.expire()
        check_invariants(fake, model)
