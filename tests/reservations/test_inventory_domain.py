"""The pure inventory rules: every outcome, idempotency, expiry, seats, limits (no I/O)."""

from __future__ import annotations

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
    SeatsTaken,
    SoldOut,
    UnknownSeats,
    apply_op,
)

T0 = 1_000.0


def req(rid: str, user: str = "u1", n: int = 1, seats: tuple[str, ...] = (), ttl: float = 60.0, limit=None):
    return HoldRequest(rid, "ev", user, n, seats, ttl, limit)


def seated() -> Inventory:
    return Inventory.for_event(5, [{"nombre": "A", "asientos": 3}, {"nombre": "B", "asientos": 2}])


def roundtrip(inv: Inventory) -> Inventory:
    return Inventory.from_json(inv.to_json())


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
    inv.release("r1", T0 + 9)
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
    inv = Inventory(1)
    inv.hold(req("r1", ttl=10), T0)
    assert isinstance(inv.hold(req("r2", user="u2"), T0 + 11), Held)
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


def test_release_of_a_sold_reservation_gives_its_tickets_and_seats_back():
    inv = seated()
    inv.hold(req("r1", n=2, seats=("A-1", "A-2")), T0)
    inv.confirm("r1", T0)
    inv.release("r1", T0)
    assert inv.disponibles == 5
    assert inv.hold(req("r2", user="u2", n=2, seats=("A-1", "A-2")), T0) == Held("r2", T0 + 60, ("A-1", "A-2"))


def test_multi_seat_hold_is_all_or_nothing():
    inv = seated()
    inv.hold(req("r1", seats=("A-2",)), T0)
    assert inv.hold(req("r2", user="u2", n=3, seats=("A-1", "A-2", "A-3")), T0) == SeatsTaken(("A-2",))
    assert inv.disponibles == 4
    assert inv.hold(req("r3", user="u3", seats=("A-1",)), T0) == Held("r3", T0 + 60, ("A-1",))


@pytest.mark.parametrize("seat", ["C-1", "A-0", "A-4", "A-01", "A", "A-x", "B-3", "A-²"])
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


def test_the_per_user_limit_counts_sold_and_active_holds_but_not_expired_ones():
    inv = Inventory(100)
    inv.hold(req("r1", n=2, limit=4), T0)
    inv.confirm("r1", T0)
    inv.hold(req("r2", n=1, ttl=10, limit=4), T0)
    assert inv.hold(req("r3", n=2, limit=4), T0) == LimitExceeded(4, 3)
    assert inv.hold(req("r3", user="other", n=4, limit=4), T0) == Held("r3", T0 + 60, ())
    assert inv.hold(req("r4", n=2, limit=4), T0 + 10) == Held("r4", T0 + 70, ())  # r2 expired
    assert inv.availability("ev", T0 + 10, "u1").por_usuario == 4


def test_a_late_confirm_does_not_break_the_limit_the_user_has_used_up_meanwhile():
    inv = Inventory(100)
    inv.hold(req("r1", n=2, ttl=10, limit=2), T0)
    inv.hold(req("r2", n=2, limit=2), T0 + 11)
    assert inv.confirm("r1", T0 + 12) == HoldLost("r1")


def test_json_roundtrip_keeps_the_state_and_rebuilds_the_counters():
    inv = seated()
    inv.hold(req("r1", n=2, seats=("A-1", "B-2"), limit=3), T0)
    inv.hold(req("r2", user="u2"), T0)
    inv.confirm("r2", T0)
    inv.hold(req("r3", user="u3", ttl=1), T0)
    inv.prune(T0 + 2)
    again = roundtrip(inv)
    assert again.to_json() == inv.to_json()
    assert again.availability("ev", T0 + 2, "u1") == inv.availability("ev", T0 + 2, "u1")
    assert again.hold(req("r4", user="u4", seats=("A-1",)), T0 + 2) == SeatsTaken(("A-1",))


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"n": 2, "seats": ("A-1",)}, {"n": 2, "seats": ("A-1", "A-1")}, {"ttl": 0}]
)
def test_malformed_hold_requests_are_rejected_before_reaching_the_inventory(kwargs):
    with pytest.raises(ValueError):
        req("r1", **kwargs)
