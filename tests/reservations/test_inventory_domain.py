"""The pure inventory and quota rules: every outcome, idempotency, expiry, seats, settle and returns (no I/O)."""

from __future__ import annotations

import orjson
import pytest

from services.reservations.inventory import (
    EXPIRED_HOLD_GRACE_S,
    Confirmed,
    ConfirmOp,
    Held,
    HoldLost,
    HoldRequest,
    Inventory,
    LimitExceeded,
    ReleaseOp,
    ReturnSaleOp,
    SaleRecord,
    SeatsTaken,
    SettleOp,
    SoldOut,
    UnknownSeats,
    VentaInconsistente,
    apply_batch,
    apply_op,
)
from services.reservations.quota import UserQuota

T0 = 1_000.0


def req(rid: str, user: str = "u1", n: int = 1, seats: tuple[str, ...] = (), ttl: float = 60.0, limit=None):
    return HoldRequest(rid, "ev", user, n, seats, ttl, limit)


def seated() -> Inventory:
    return Inventory.for_event(5, [{"nombre": "A", "asientos": 3}, {"nombre": "B", "asientos": 2}])


def roundtrip(inv: Inventory) -> Inventory:
    return Inventory.from_json(inv.to_json())


def sell(inv: Inventory, rid: str, n: int = 1, seats: tuple[str, ...] = (), settle: bool = True) -> Confirmed:
    assert isinstance(inv.hold(req(rid, n=n, seats=seats), T0), Held)
    confirmed = inv.confirm(rid, T0)
    assert isinstance(confirmed, Confirmed)
    if settle:
        inv.settle(rid, T0)
    return confirmed


def sold_seats(inv: Inventory) -> set[str]:
    assert inv.venue is not None
    return {inv.venue.name(i) for i in range(inv.venue.size) if inv.is_sold(i)}


def test_hold_takes_tickets_until_sold_out_then_reports_what_is_left():
    inv = Inventory(3)
    assert inv.hold(req("r1", n=2), T0) == Held("r1", T0 + 60, ())
    assert inv.hold(req("r2", n=2), T0) == SoldOut(1)
    assert inv.hold(req("r3", n=1), T0) == Held("r3", T0 + 60, ())
    assert inv.hold(req("r4"), T0) == SoldOut(0)
    assert (inv.n_retenidas, inv.disponibles) == (3, 0)


def test_every_op_is_idempotent_per_reserva_id():
    inv = Inventory(2)
    first = inv.hold(req("r1", n=2), T0)
    assert inv.hold(req("r1", n=2), T0 + 5) == first
    assert inv.confirm("r1", T0 + 6) == inv.confirm("r1", T0 + 7) == Confirmed("r1", ())
    assert inv.hold(req("r1", n=2), T0 + 8) == Held("r1", T0 + 68, ())  # replay after confirm: still its own
    assert (inv.n_vendidas, inv.n_retenidas) == (2, 0)
    inv.release("r1", T0 + 9)  # not settled yet: the compensation un-sells it
    inv.release("r1", T0 + 10)
    assert (inv.n_vendidas, inv.disponibles) == (0, 2)


def test_the_pure_form_leaves_the_input_state_untouched():
    before = Inventory(1)
    after, outcome = apply_op(before, req("r1"), T0)
    assert isinstance(outcome, Held) and before.disponibles == 1 and after.disponibles == 0
    after2, confirmed = apply_op(after, ConfirmOp("ev", "r1"), T0)
    assert confirmed == Confirmed("r1", ()) and after.n_vendidas == 0 and after2.n_vendidas == 1
    after3, released = apply_op(after2, ReleaseOp("ev", "r1"), T0)
    assert released is None and after3.disponibles == 1 and after2.disponibles == 0


def test_expired_holds_are_never_counted_and_free_their_tickets():
    inv = Inventory(1)
    inv.hold(req("r1", ttl=10), T0)
    assert inv.hold(req("r2", user="u2"), T0 + 9.9) == SoldOut(0)
    assert inv.availability("ev", T0 + 10).retenidas == 0
    assert inv.hold(req("r2", user="u2"), T0 + 10) == Held("r2", T0 + 70, ())


def test_confirm_after_expiry_reacquires_when_the_tickets_are_still_free():
    inv = Inventory(1)
    inv.hold(req("r1", ttl=10), T0)
    inv = roundtrip(inv)
    assert inv.confirm("r1", T0 + 30) == Confirmed("r1", ())
    assert inv.n_vendidas == 1


def test_confirm_after_expiry_is_hold_lost_when_someone_else_took_the_tickets():
    inv = seated()
    inv.hold(req("r1", n=2, seats=("A-1", "A-2"), ttl=10), T0)
    assert isinstance(inv.hold(req("r2", user="u2", seats=("A-2",)), T0 + 11), Held)
    assert inv.confirm("r1", T0 + 12) == HoldLost("r1")
    assert (inv.n_vendidas, inv.n_retenidas) == (0, 1)


def test_confirm_of_an_unknown_released_or_long_expired_hold_is_hold_lost():
    inv = Inventory(5)
    assert inv.confirm("nope", T0) == HoldLost("nope")
    inv.hold(req("r1"), T0)
    inv.release("r1", T0)
    assert inv.confirm("r1", T0) == HoldLost("r1")
    inv.hold(req("r2", ttl=1), T0)
    assert inv.confirm("r2", T0 + 1 + EXPIRED_HOLD_GRACE_S) == HoldLost("r2")
    assert not inv.caducadas


def test_release_of_an_unsettled_confirmation_gives_its_tickets_and_seats_back():
    inv = seated()
    sell(inv, "r1", 2, ("A-1", "A-2"), settle=False)
    inv.release("r1", T0)
    assert inv.disponibles == 5 and not sold_seats(inv) and not inv.confirmadas
    assert inv.hold(req("r2", user="u2", n=2, seats=("A-1", "A-2")), T0) == Held("r2", T0 + 60, ("A-1", "A-2"))


def test_settle_keeps_only_counts_and_seat_bits_and_makes_release_a_no_op():
    inv = seated()
    sell(inv, "r1", 2, ("A-1", "B-2"), settle=False)
    assert inv.confirm("r1", T0) == Confirmed("r1", ("A-1", "B-2"))  # unsettled: replays answer the same
    inv.settle("r1", T0)
    inv.settle("r1", T0)
    inv.settle("never-heard-of", T0)
    doc = orjson.loads(inv.to_json())
    assert (doc["vendidas"], doc["confirmadas"], doc["retenidas"]) == (2, {}, {})
    assert "r1" not in inv.to_json().decode()
    inv.release("r1", T0)  # a settled sale is undone only by return_sale, which is told its seats
    assert inv.n_vendidas == 2 and sold_seats(inv) == {"A-1", "B-2"}
    assert inv.hold(req("r2", user="u2", seats=("B-2",)), T0) == SeatsTaken(("B-2",))


def test_return_sale_un_sells_a_settled_sale_once_until_it_is_settled():
    inv = seated()
    sell(inv, "r1", 2, ("A-1", "A-2"))
    sell(inv, "r2", 1, ("B-1",))
    sale = SaleRecord("r1", "u1", 2, ("A-1", "A-2"))
    inv.return_sale(sale, T0)
    inv.return_sale(sale, T0)  # a replay: the marker says it is done
    assert inv.n_vendidas == 1 and sold_seats(inv) == {"B-1"} and inv.devueltas == {"r1": (2, None)}
    inv = roundtrip(inv)
    inv.return_sale(sale, T0)
    assert inv.n_vendidas == 1
    inv.settle("r1", T0)
    assert inv.hold(req("r3", user="u3", n=4), T0) == Held("r3", T0 + 60, ("A-1", "A-2", "A-3", "B-2"))
    inv.return_sale(sale, T0 + 1)  # a late replay (a step another driver had cancelled): still a no-op
    assert inv.n_vendidas == 1 and inv.devueltas == {"r1": (2, T0)}
    inv.release("r3", T0 + 2)
    inv.prune(T0 + EXPIRED_HOLD_GRACE_S + 1)
    assert not inv.devueltas, "forgotten once the grace period after its settle is over"


def test_return_sale_of_an_unsettled_confirmation_un_sells_what_was_confirmed():
    inv = seated()
    sell(inv, "r1", 2, ("A-1", "A-2"), settle=False)
    sell(inv, "r2", 1, ("B-1",))
    inv.return_sale(SaleRecord("r1", "u1", 2, ()), T0)  # the inventory still knows its seats
    assert inv.n_vendidas == 1 and sold_seats(inv) == {"B-1"} and not inv.confirmadas


def test_return_sale_of_a_hold_only_drops_the_hold():
    inv = Inventory(3)
    sell(inv, "r1", 2)
    inv.hold(req("r2"), T0)
    inv.return_sale(SaleRecord("r2", "u1", 1, ()), T0)
    assert (inv.n_vendidas, inv.n_retenidas) == (2, 0)


@pytest.mark.parametrize(
    "sale",
    [
        SaleRecord("rx", "u1", 3, ("A-1", "A-2", "A-3")),  # A-3 is not sold
        SaleRecord("rx", "u1", 1, ("B-1",)),  # B-1 belongs to an unsettled confirmation
        SaleRecord("rx", "u1", 1, ("Z-1",)),  # no such seat
        SaleRecord("rx", "u1", 2, ()),  # a seated sale names its seats
    ],
)
def test_a_returned_sale_that_does_not_fit_what_is_sold_changes_nothing(sale):
    inv = seated()
    sell(inv, "r1", 2, ("A-1", "A-2"))
    sell(inv, "r2", 1, ("B-1",), settle=False)
    before = inv.to_json()
    with pytest.raises(VentaInconsistente):
        inv.return_sale(sale, T0)
    assert inv.to_json() == before


@pytest.mark.parametrize("sale", [SaleRecord("rx", "u1", 3, ()), SaleRecord("rx", "u1", 1, ("A-1",))])
def test_a_general_admission_return_cannot_free_more_than_is_settled(sale):
    inv = Inventory(10)
    sell(inv, "r1", 2)
    sell(inv, "r2", 5, settle=False)  # unsettled tickets are the confirmation's own, not returnable by count
    before = inv.to_json()
    with pytest.raises(VentaInconsistente):
        inv.return_sale(sale, T0)
    assert inv.to_json() == before


def test_an_op_that_raises_in_a_batch_fails_alone_and_the_others_apply():
    inv = Inventory(10)
    sell(inv, "r0", 2)
    ops = [req("r1", n=3), ReturnSaleOp("ev", SaleRecord("bad", "u9", 7, ())), ConfirmOp("ev", "r1"), req("r2")]
    work, results = apply_batch(inv, ops, T0)
    assert isinstance(results[1], VentaInconsistente)
    assert results[0] == Held("r1", T0 + 60, ()) and results[2] == Confirmed("r1", ()) and isinstance(results[3], Held)
    expected = inv.copy()
    for op in (ops[0], ops[2], ops[3]):
        expected.apply(op, T0)
    assert work.to_json() == expected.to_json()
    assert inv.n_vendidas == 2, "the committed state is never touched"


class _Careless(Inventory):
    """An op that breaks the validate-before-mutate rule: the batch must still not keep its half-done change."""

    def settle(self, reserva_id: str, now: float) -> None:
        self.n_vendidas += 100
        raise RuntimeError("half done")


def test_a_batch_rebuilds_its_working_copy_when_an_op_raised_after_mutating():
    inv = _Careless(10)
    work, results = apply_batch(inv, [req("r1", n=2), SettleOp("ev", "r1"), req("r2")], T0)
    assert isinstance(results[1], RuntimeError)
    assert (work.n_vendidas, work.n_retenidas) == (0, 3)


def test_multi_seat_hold_is_all_or_nothing():
    inv = seated()
    inv.hold(req("r1", seats=("A-2",)), T0)
    assert inv.hold(req("r2", user="u2", n=3, seats=("A-1", "A-2", "A-3")), T0) == SeatsTaken(("A-2",))
    assert inv.disponibles == 4
    assert inv.hold(req("r3", user="u3", seats=("A-1",)), T0) == Held("r3", T0 + 60, ("A-1",))


@pytest.mark.parametrize("seat", ["C-1", "A-0", "A-4", "A-01", "A", "A-x", "B-3", "A-²", "A-" + "1" * 5000])
def test_seats_that_do_not_exist_are_reported(seat):
    inv = seated()
    assert inv.hold(req("r1", n=2, seats=("A-1", seat)), T0) == UnknownSeats((seat,))
    assert inv.disponibles == 5


def test_seats_on_a_general_admission_event_are_unknown():
    assert Inventory(10).hold(req("r1", seats=("A-1",)), T0) == UnknownSeats(("A-1",))


def test_a_seated_event_assigns_free_seats_when_none_are_named():
    inv = seated()
    inv.hold(req("r1", seats=("A-1",)), T0)
    assert inv.hold(req("r2", user="u2", n=3), T0) == Held("r2", T0 + 60, ("A-2", "A-3", "B-1"))
    assert inv.hold(req("r3", user="u3", n=2), T0) == SoldOut(1)


def test_seats_freed_before_the_search_cursor_are_assigned_first():
    inv = Inventory.for_event(6, [{"nombre": "A", "asientos": 6}])
    inv.hold(req("r1", n=4), T0)  # A-1..A-4; the cursor moves past them
    inv.hold(req("r2", n=1, ttl=5), T0)
    inv.release("r1", T0)
    assert inv.hold(req("r3", n=2), T0) == Held("r3", T0 + 60, ("A-1", "A-2"))
    inv = roundtrip(inv)
    assert inv.hold(req("r4", n=3), T0 + 5) == Held("r4", T0 + 65, ("A-3", "A-4", "A-5"))  # r2 expired


def test_the_document_size_does_not_grow_with_the_tickets_sold():
    ga, stadium = Inventory(100_000), Inventory(100_000, {f"S{k}": 1_000 for k in range(100)})
    sizes: dict[str, list[int]] = {"ga": [], "seated": []}
    for k in range(100):
        for name, inv in (("ga", ga), ("seated", stadium)):
            sell(inv, f"r{k}", 1_000)
            sizes[name].append(len(inv.to_json()))
    assert ga.disponibles == stadium.disponibles == 0
    assert max(sizes["ga"]) < 200
    assert max(sizes["seated"]) - min(sizes["seated"]) < 10  # the counter's digits: 12.5 KB of bits
    assert max(sizes["seated"]) < 18_000
    assert roundtrip(stadium).hold(req("one-more"), T0) == SoldOut(0)


def test_a_version_1_document_loads_as_settled_counts_and_bits():
    v1 = {
        "capacidad": 5,
        "secciones": {"A": 3, "B": 2},
        "vendidas": {"s1": ["u1", 2, ["A-1", "B-2"]], "s2": ["u2", 1, ["A-3"]]},
        "retenidas": {"h1": ["u3", 1, ["A-2"], T0 + 60, 4]},
        "caducadas": {"h2": ["u4", 1, ["B-1"], T0 - 1, None]},
    }
    inv = Inventory.from_json(orjson.dumps(v1))
    assert (inv.n_vendidas, inv.n_retenidas, inv.disponibles) == (3, 1, 1)
    assert sold_seats(inv) == {"A-1", "A-3", "B-2"} and not inv.confirmadas
    assert inv.hold(req("x", n=2, seats=("A-2", "B-1")), T0) == SeatsTaken(("A-2",))
    assert inv.confirm("h2", T0) == Confirmed("h2", ("B-1",))  # re-acquired: B-1 was free
    assert orjson.loads(inv.to_json())["v"] == 2


def test_json_roundtrip_keeps_the_state_and_rebuilds_the_derived_indexes():
    inv = seated()
    inv.hold(req("r1", n=2, seats=("A-1", "B-2")), T0)
    sell(inv, "r2", 1, ("A-3",), settle=False)
    sell(inv, "r6", 1, ("A-2",))
    inv.return_sale(SaleRecord("r6", "u1", 1, ("A-2",)), T0)
    inv.hold(req("r3", user="u3", ttl=1), T0)
    inv.prune(T0 + 2)
    assert inv.caducadas and inv.confirmadas and inv.devueltas and inv.retenidas
    again = roundtrip(inv)
    assert again.to_json() == inv.to_json()
    assert again.availability("ev", T0 + 2) == inv.availability("ev", T0 + 2)
    assert again.hold(req("r4", user="u4", seats=("A-1",)), T0 + 2) == SeatsTaken(("A-1",))
    assert again.hold(req("r5", user="u5", n=2), T0 + 2) == Held("r5", T0 + 62, ("A-2", "B-1"))


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": 2, "seats": ("A-1",)}, {"n": 2, "seats": ("A-1", "A-1")}, {"ttl": 0}, {"ttl": float("inf")}],
)
def test_malformed_hold_requests_are_rejected_before_reaching_the_inventory(kwargs):
    with pytest.raises(ValueError):
        req("r1", **kwargs)


@pytest.mark.parametrize("args", [(0, ()), (2, ("A-1",)), (2, ("A-1", "A-1"))])
def test_malformed_sale_records_are_rejected(args):
    with pytest.raises(ValueError):
        SaleRecord("r1", "u1", *args)


# -- the per-user quota ------------------------------------------------------------------------------------
def test_a_quota_counts_live_reservations_up_to_the_limit():
    quota = UserQuota()
    assert quota.take("r1", 3, 4) is None
    assert quota.take("r2", 2, 4) == LimitExceeded(4, 3)
    assert quota.take("r2", 1, 4) is None
    assert quota.take("r1", 3, 4) is None and quota.total == 4  # a replay takes nothing more
    assert quota.take("r3", 1, 4) == LimitExceeded(4, 4)


def test_a_quota_gives_back_once_and_survives_json():
    quota = UserQuota()
    quota.take("r1", 2, 4)
    quota.take("r2", 2, 4)
    assert quota.give_back("r1") and not quota.give_back("r1") and not quota.give_back("nope")
    again = UserQuota.from_json(quota.to_json())
    assert again.reservas == {"r2": 2} and again.take("r3", 3, 4) == LimitExceeded(4, 2)
