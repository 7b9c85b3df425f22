"""Property-based: random hold/confirm/release/advance-clock sequences against a naive model.

After every step the invariants must hold (sold + active holds <= capacity, a seat in at most one hold or
sale, per-user limits) and the inventory must agree with a model that recomputes everything by scanning.
The state goes through its JSON form at random points, so (de)serialization is checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    SeatsTaken,
    SoldOut,
    UnknownSeats,
)

RIDS = [f"r{i}" for i in range(8)]
USERS = ["u0", "u1", "u2"]


@dataclass
class Res:
    user: str
    n: int
    seats: tuple[str, ...]
    exp: float
    limit: int | None
    status: str  # held | sold | expired


@dataclass
class Model:
    capacity: int
    seats: list[str] | None
    now: float = 0.0
    res: dict[str, Res] = field(default_factory=dict)

    def expire(self) -> None:
        for rid, r in list(self.res.items()):
            if r.status == "held" and r.exp <= self.now:
                r.status = "expired"
            if r.status == "expired" and r.exp + EXPIRED_HOLD_GRACE_S <= self.now:
                del self.res[rid]

    def live(self) -> list[Res]:
        return [r for r in self.res.values() if r.status in ("held", "sold")]

    def free(self) -> int:
        return self.capacity - sum(r.n for r in self.live())

    def taken(self) -> set[str]:
        return {s for r in self.live() for s in r.seats}

    def of(self, user: str) -> int:
        return sum(r.n for r in self.live() if r.user == user)

    def hold(self, q: HoldRequest) -> object:
        self.expire()
        r = self.res.get(q.reserva_id)
        if r and r.status == "sold":
            return Held(q.reserva_id, self.now + q.ttl_s, r.seats)
        if r and r.status == "held":
            return Held(q.reserva_id, r.exp, r.seats)
        if q.asientos and (unknown := tuple(s for s in q.asientos if s not in (self.seats or []))):
            return UnknownSeats(unknown)
        if q.limite_por_usuario is not None and self.of(q.usuario_id) + q.cantidad > q.limite_por_usuario:
            return LimitExceeded(q.limite_por_usuario, self.of(q.usuario_id))
        if busy := tuple(s for s in q.asientos if s in self.taken()):
            return SeatsTaken(busy)
        if q.cantidad > self.free():
            return SoldOut(self.free())
        seats = q.asientos
        if self.seats is not None and not seats:
            seats = tuple(s for s in self.seats if s not in self.taken())[: q.cantidad]
            if len(seats) < q.cantidad:
                return SoldOut(len(seats))
        self.res[q.reserva_id] = Res(q.usuario_id, q.cantidad, seats, self.now + q.ttl_s, q.limite_por_usuario, "held")
        return Held(q.reserva_id, self.now + q.ttl_s, seats)

    def confirm(self, rid: str) -> object:
        self.expire()
        r = self.res.get(rid)
        if r is None:
            return HoldLost(rid)
        if r.status == "expired":
            others = self.of(r.user)
            if r.n > self.free() or set(r.seats) & self.taken() or (r.limit is not None and others + r.n > r.limit):
                return HoldLost(rid)
        r.status = "sold"
        return Confirmed(rid, r.seats)

    def release(self, rid: str) -> None:
        self.expire()
        self.res.pop(rid, None)


layouts = st.one_of(
    st.integers(1, 10).map(lambda n: (n, None)),
    st.lists(st.integers(1, 4), min_size=1, max_size=3).map(
        lambda sizes: (sum(sizes), [{"nombre": "ABC"[i], "asientos": s} for i, s in enumerate(sizes)])
    ),
)


def hold_ops(universe: list[str]) -> st.SearchStrategy[tuple]:
    seat_choices = st.lists(st.sampled_from([*universe, "Z-1"]), min_size=1, max_size=3, unique=True)
    return st.tuples(
        st.just("hold"),
        st.sampled_from(RIDS),
        st.sampled_from(USERS),
        st.one_of(st.integers(1, 4).map(lambda n: ((), n)), seat_choices.map(lambda s: (tuple(s), len(s)))),
        st.sampled_from([5.0, 20.0]),
        st.sampled_from([None, 2, 4]),
    )


def ops(universe: list[str]) -> st.SearchStrategy[list[tuple]]:
    other = st.one_of(
        st.tuples(st.sampled_from(["confirm", "release"]), st.sampled_from(RIDS)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 1.0, 4.0, 10.0, 30.0, EXPIRED_HOLD_GRACE_S])),
        st.tuples(st.just("roundtrip")),
    )
    return st.lists(st.one_of(hold_ops(universe), hold_ops(universe), other), min_size=1, max_size=40)


def check_invariants(inv: Inventory, model: Model) -> None:
    avail = inv.availability("ev", model.now)  # prunes, as every op does
    live = [s.asientos for s in inv.vendidas.values()] + [h.asientos for h in inv.retenidas.values()]
    assert inv.n_vendidas == sum(s.cantidad for s in inv.vendidas.values())
    assert inv.n_retenidas == sum(h.cantidad for h in inv.retenidas.values())
    assert inv.n_vendidas + inv.n_retenidas <= inv.capacidad
    seats = [a for asientos in live for a in asientos]
    assert len(seats) == len(set(seats)), "a seat is in two holds or sales"
    assert all(h.expires_at > model.now for h in inv.retenidas.values()), "an expired hold is still counted"
    assert all(model.res[rid].status == "sold" for rid in inv.vendidas)
    assert all(model.res[rid].status == "held" for rid in inv.retenidas)
    live_model = model.live()
    assert avail.vendidas == sum(r.n for r in live_model if r.status == "sold")
    assert avail.retenidas == sum(r.n for r in live_model if r.status == "held")
    for user in USERS:
        assert inv.por_usuario(user) == model.of(user)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_random_op_sequences_keep_the_invariants_and_match_the_model(data):
    capacity, sections = data.draw(layouts)
    universe = [f"{s['nombre']}-{n}" for s in sections or [] for n in range(1, s["asientos"] + 1)]
    inv = Inventory.for_event(capacity, sections)
    model = Model(capacity, universe if sections else None)
    for op in data.draw(ops(universe)):
        kind = op[0]
        if kind == "hold":
            _, rid, user, (seats, n), ttl, limit = op
            q = HoldRequest(rid, "ev", user, n, seats, ttl, limit)
            model.expire()
            replay = rid in model.res and model.res[rid].status in ("held", "sold")  # answered as first asked
            got, expected = inv.hold(q, model.now), model.hold(q)
            assert got == expected, op
            if isinstance(got, Held) and limit is not None and not replay:
                assert inv.por_usuario(user) <= limit
        elif kind == "confirm":
            assert inv.confirm(op[1], model.now) == model.confirm(op[1]), op
        elif kind == "release":
            inv.release(op[1], model.now)
            model.release(op[1])
        elif kind == "advance":
            model.now += op[1]
        else:
            inv = Inventory.from_json(inv.to_json())
        model.expire()
        check_invariants(inv, model)
