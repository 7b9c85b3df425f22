"""The simulated card processor on the real nats-server: every test card, idempotency by key (also under
concurrency and ambiguous failures), the authorization state machine, and no PAN/CVC in its ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid

import orjson
import pytest
from nats.js.errors import NotFoundError

from eventflow.jetstream import connect
from services.reservations.payments import (
    Authorization,
    CardDetails,
    Declined,
    InvalidCard,
    PaymentGateway,
    PaymentPermanentError,
    PaymentRetryableError,
)
from services.reservations.payments_sim import (
    BUCKET,
    SIGNING_KEY,
    SimulatedPaymentGateway,
    record_key,
    sign_token,
    verify_token,
)

OK = "4242424242424242"
DECLINED_CARD = "4000000000000002"
FUTURE = "12/39"


@pytest.fixture
async def js(settings):
    nc = await connect(settings.nats_url, "test-payments")
    yield nc.jetstream()
    await nc.drain()


@pytest.fixture
def gateway(js):
    port: PaymentGateway = SimulatedPaymentGateway(js)  # mypy checks the adapter against the port
    return port


def card(numero: str = OK, vencimiento: str = FUTURE, cvc: str = "123") -> CardDetails:
    return CardDetails(numero, vencimiento, cvc)


async def authorized(gateway, amount: int = 5000) -> tuple[str, Authorization]:
    rid = str(uuid.uuid4())
    method = await gateway.tokenize(card())
    auth = await gateway.authorize(f"{rid}:authorize", method.token, amount)
    assert isinstance(auth, Authorization)
    return rid, auth


@pytest.mark.parametrize(
    ("numero", "marca"),
    [("4242 4242 4242 4242", "visa"), ("5555555555554444", "mastercard"), ("378282246310005", "amex")],
)
async def test_tokenize_keeps_only_brand_and_last_four(gateway, numero, marca):
    method = await gateway.tokenize(card(numero, cvc="1234" if marca == "amex" else "123"))
    assert (method.marca, method.ultimos4) == (marca, numero[-4:])
    assert method.token.startswith("tok_")


@pytest.mark.parametrize(
    ("numero", "vencimiento", "cvc", "codigo"),
    [
        ("4242424242424241", FUTURE, "123", "incorrect_number"),
        ("4242", FUTURE, "123", "incorrect_number"),
        ("4242x42424242424", FUTURE, "123", "incorrect_number"),
        (OK, "01/20", "123", "expired_card"),
        (OK, "13/30", "123", "invalid_expiry"),
        (OK, "2030-01", "123", "invalid_expiry"),
        (OK, FUTURE, "12", "invalid_cvc"),
        (OK, FUTURE, "12a", "invalid_cvc"),
        ("6011111111111117", FUTURE, "123", "card_not_supported"),
    ],
)
async def test_cards_that_cannot_be_tokenized_are_invalid_with_a_code(gateway, numero, vencimiento, cvc, codigo):
    with pytest.raises(InvalidCard) as err:
        await gateway.tokenize(card(numero, vencimiento, cvc))
    assert err.value.codigo == codigo and err.value.status == 422
    assert numero not in str(err.value)


@pytest.mark.parametrize(
    ("numero", "codigo"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
        ("4000000000000127", "incorrect_cvc"),
    ],
)
async def test_declining_test_cards_decline_with_their_code_and_keep_declining_for_that_key(gateway, numero, codigo):
    method = await gateway.tokenize(card(numero))
    key = f"{uuid.uuid4()}:authorize"
    assert await gateway.authorize(key, method.token, 1000) == Declined(codigo)
    assert await gateway.authorize(key, method.token, 1000) == Declined(codigo)


async def test_the_processing_error_card_fails_retryably_on_every_authorize(gateway):
    method = await gateway.tokenize(card("4000000000000119"))
    rid = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(PaymentRetryableError, match="processing_error"):
            await gateway.authorize(f"{rid}:authorize", method.token, 1000)
    assert await gateway.payments_for(rid) == []


async def test_authorize_is_idempotent_by_key_even_when_called_concurrently(gateway):
    method = await gateway.tokenize(card())
    rid = str(uuid.uuid4())
    results = await asyncio.gather(*(gateway.authorize(f"{rid}:authorize", method.token, 4200) for _ in range(10)))
    assert len(set(results)) == 1 and results[0].importe_centimos == 4200
    ledger = await gateway.payments_for(rid)
    assert [(r["tipo"], r["estado"]) for r in ledger] == [("authorize", "authorized")]


async def test_capture_then_refund_and_the_illegal_moves_around_them(gateway):
    rid, auth = await authorized(gateway)
    await gateway.capture(f"{rid}:capture", auth.id)
    await gateway.capture(f"{rid}:capture", auth.id)  # retried: nothing more happens
    with pytest.raises(PaymentPermanentError, match="captured"):
        await gateway.void(f"{rid}:void", f"{rid}:authorize")  # the saga must refund instead
    with pytest.raises(PaymentPermanentError):
        await gateway.capture(f"{rid}:capture-again", auth.id)
    with pytest.raises(PaymentPermanentError):
        await gateway.refund(f"{rid}:refund", auth.id, 5001)
    await gateway.refund(f"{rid}:refund", auth.id, 5000)
    await gateway.refund(f"{rid}:refund", auth.id, 5000)
    ledger = await gateway.payments_for(rid)
    assert [r["tipo"] for r in ledger] == ["authorize", "capture", "refund"]
    assert ledger[0]["estado"] == "refunded" and ledger[2]["importe_centimos"] == 5000


async def test_void_then_capture_is_permanent_and_refund_needs_a_capture(gateway):
    rid, auth = await authorized(gateway)
    with pytest.raises(PaymentPermanentError, match="authorized"):
        await gateway.refund(f"{rid}:refund", auth.id, 100)
    await gateway.void(f"{rid}:void", f"{rid}:authorize")
    await gateway.void(f"{rid}:void", f"{rid}:authorize")
    await gateway.void(f"{rid}:void-again", f"{rid}:authorize")  # voiding a voided authorization moves nothing
    with pytest.raises(PaymentPermanentError, match="voided"):
        await gateway.capture(f"{rid}:capture", auth.id)
    assert [(r["tipo"], r["estado"]) for r in await gateway.payments_for(rid)] == [
        ("authorize", "voided"),
        ("void", "voided"),
        ("void", "voided"),
    ]


async def test_void_by_the_authorize_key_finds_an_authorization_whose_answer_was_lost(gateway):
    """The saga never learnt the authorization id (every answer lost): the void still finds the money."""
    method = await gateway.tokenize(card())
    rid = str(uuid.uuid4())
    await gateway.authorize(f"{rid}:authorize", method.token, 700)  # the answer is thrown away
    await gateway.void(f"{rid}:void", f"{rid}:authorize")
    assert [(r["tipo"], r["estado"]) for r in await gateway.payments_for(rid)] == [
        ("authorize", "voided"),
        ("void", "voided"),
    ]


async def test_a_void_before_the_authorize_arrived_makes_the_late_authorize_decline(gateway):
    """A request still in flight when the saga gave up must not hold the buyer's money once it lands."""
    method = await gateway.tokenize(card())
    rid = str(uuid.uuid4())
    await gateway.void(f"{rid}:void", f"{rid}:authorize")
    await gateway.void(f"{rid}:void", f"{rid}:authorize")
    late = await gateway.authorize(f"{rid}:authorize", method.token, 700)
    assert late == Declined("authorization_voided")
    assert [(r["tipo"], r["estado"]) for r in await gateway.payments_for(rid)] == [
        ("authorize", "voided"),
        ("void", "voided"),
    ]


async def test_void_of_a_declined_authorization_moves_nothing(gateway):
    method = await gateway.tokenize(card(DECLINED_CARD))
    rid = str(uuid.uuid4())
    assert isinstance(await gateway.authorize(f"{rid}:authorize", method.token, 700), Declined)
    await gateway.void(f"{rid}:void", f"{rid}:authorize")
    assert [r["resultado"] for r in await gateway.payments_for(rid)] == ["rechazada"]


async def test_a_racing_capture_and_void_cannot_both_win(gateway):
    rid, auth = await authorized(gateway)
    results = await asyncio.gather(
        gateway.capture(f"{rid}:capture", auth.id),
        gateway.void(f"{rid}:void", f"{rid}:authorize"),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert sum(isinstance(r, PaymentPermanentError) for r in results) == 1


async def test_unknown_authorizations_tokens_and_reused_keys_are_permanent_errors(gateway):
    with pytest.raises(PaymentPermanentError):
        await gateway.capture(f"{uuid.uuid4()}:capture", "au_nope")
    with pytest.raises(PaymentPermanentError):
        await gateway.void(f"{uuid.uuid4()}:void", "bad id with spaces")
    with pytest.raises(PaymentPermanentError):
        await gateway.authorize(f"{uuid.uuid4()}:authorize", "tok_unknown", 100)
    rid, auth = await authorized(gateway)
    with pytest.raises(PaymentPermanentError, match="authorize"):
        await gateway.capture(f"{rid}:authorize", auth.id)


async def test_payments_for_lists_only_that_reference_whatever_the_key_characters(gateway):
    method = await gateway.tokenize(card())
    rid = str(uuid.uuid4())
    await gateway.authorize(f"{rid}:authorize", method.token, 100)
    await gateway.authorize(f"{rid}-2:authorize", method.token, 100)
    await gateway.authorize(f"{rid}:odd key.with/dots:x", method.token, 100)
    assert {r["key"] for r in await gateway.payments_for(rid)} == {f"{rid}:authorize", f"{rid}:odd key.with/dots:x"}
    assert record_key(f"{rid}:authorize") == record_key(f"{rid}:capture") == f"pay.{rid}"


async def ledger_writes(js) -> int:
    return (await js.stream_info(f"KV_{BUCKET}")).state.last_seq


async def test_a_sale_costs_the_ledger_two_writes_and_retries_cost_none(js, gateway):
    await gateway.tokenize(card())  # the bucket and its token key exist from here on
    rid, before = str(uuid.uuid4()), await ledger_writes(js)
    method = await gateway.tokenize(card())
    assert await ledger_writes(js) == before  # a token is self-contained: nothing stored
    auth = await gateway.authorize(f"{rid}:authorize", method.token, 900)
    assert await ledger_writes(js) == before + 1
    await gateway.capture(f"{rid}:capture", auth.id)
    assert await ledger_writes(js) == before + 2
    assert await gateway.authorize(f"{rid}:authorize", method.token, 900) == auth
    await asyncio.gather(*(gateway.capture(f"{rid}:capture", auth.id) for _ in range(5)))
    assert await ledger_writes(js) == before + 2


async def test_concurrent_captures_with_one_key_capture_once(gateway):
    rid, auth = await authorized(gateway)
    await asyncio.gather(*(gateway.capture(f"{rid}:capture", auth.id) for _ in range(10)))
    ledger = await gateway.payments_for(rid)
    assert [(r["tipo"], r["key"], r["estado"]) for r in ledger] == [
        ("authorize", f"{rid}:authorize", "captured"),
        ("capture", f"{rid}:capture", "captured"),
    ]


async def test_tokens_survive_a_restart_and_cannot_be_forged(settings, gateway):
    method = await gateway.tokenize(card("4000000000000002"))
    nc = await connect(settings.nats_url, "test-payments-restarted")
    try:
        restarted = SimulatedPaymentGateway(nc.jetstream())  # another process: the key comes from the bucket
        assert await restarted.authorize(f"{uuid.uuid4()}:authorize", method.token, 100) == Declined("card_declined")
        payload, mac = method.token.removeprefix("tok_").split(".")
        forged = verify_token(await signing_key(nc.jetstream()), method.token) | {"comportamiento": "approve"}
        tampered = sign_token(b"k" * 32, forged).split(".")[0] + "." + mac
        foreign = SimulatedPaymentGateway(nc.jetstream(), signing_key=b"k" * 32)
        for token in (tampered, (await foreign.tokenize(card())).token, method.token[:-2], "tok_x.y", payload):
            with pytest.raises(PaymentPermanentError, match="unknown payment method token"):
                await restarted.authorize(f"{uuid.uuid4()}:authorize", token, 100)
    finally:
        await nc.drain()


async def test_keys_belong_to_one_reference_and_one_kind_of_operation(gateway):
    rid, auth = await authorized(gateway)
    method = await gateway.tokenize(card())
    with pytest.raises(PaymentPermanentError, match="does not belong"):
        await gateway.capture(f"{uuid.uuid4()}:capture", auth.id)
    with pytest.raises(PaymentPermanentError, match="already has a payment"):
        await gateway.authorize(f"{rid}:authorize-again", method.token, 100)
    await gateway.capture(f"{rid}:capture", auth.id)
    with pytest.raises(PaymentPermanentError, match="was used for a capture"):
        await gateway.authorize(f"{rid}:capture", method.token, 100)
    with pytest.raises(PaymentPermanentError, match="was used for a capture"):
        await gateway.refund(f"{rid}:capture", auth.id, 100)
    assert [r["tipo"] for r in await gateway.payments_for(rid)] == ["authorize", "capture"]
    assert [r["tipo"] for r in await gateway.payments_for(f"{rid}:capture")] == ["capture"]


async def raw_ledger(js, *markers: str) -> list[bytes]:
    """The stored bytes of every message in the bucket's stream whose subject names one of `markers`.

    Scoped to one test's records: short secrets such as a CVC would otherwise match, by chance, digits of
    other tests' ids and timestamps in the session-wide bucket.
    """
    info = await js.stream_info(f"KV_{BUCKET}")
    raw = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(NotFoundError):  # superseded revisions are gone (history 1)
            msg = await js.get_msg(f"KV_{BUCKET}", seq=seq)
            if any(marker in (msg.subject or "") for marker in markers):
                raw.append((msg.subject or "").encode() + b" " + (msg.data or b""))
    return raw


async def signing_key(js) -> bytes:
    return (await (await js.key_value(BUCKET)).get(SIGNING_KEY)).value


async def test_the_ledger_never_holds_the_card_number_cvc_or_expiry(js, gateway, caplog):
    pan, cvc, expiry = "5555 5555 5555 4444", "7319", "08/37"
    caplog.set_level(logging.DEBUG)
    details = CardDetails(pan, expiry, cvc)
    logging.getLogger("test").info("paying with %s / %r / %s", details, details, f"{details}")
    method = await gateway.tokenize(details)
    rid = str(uuid.uuid4())
    auth = await gateway.authorize(f"{rid}:authorize", method.token, 100)
    await gateway.capture(f"{rid}:capture", auth.id)
    records = await raw_ledger(js, rid)
    assert len(records) == 1 and b'"capture"' in records[0]  # the payment record, with its capture, was read
    payload = verify_token(await signing_key(js), method.token)
    assert payload is not None and set(payload) == {"marca", "ultimos4", "comportamiento", "en"}
    blob = b"\n".join([*records, method.token.encode(), orjson.dumps(payload)])
    for secret in (pan.replace(" ", ""), pan, cvc, expiry, "0837"):
        assert secret.encode() not in blob
        assert secret not in caplog.text
    assert "4444" in repr(details) and pan not in repr(details) and cvc not in str(details)


async def test_failure_rate_one_fails_every_call_retryably(js):
    always = SimulatedPaymentGateway(js, failure_rate=1.0, rng=random.Random(7))
    for _ in range(5):
        with pytest.raises(PaymentRetryableError):
            await always.tokenize(card())


async def test_retrying_through_random_failures_moves_money_exactly_once(js):
    flaky = SimulatedPaymentGateway(js, failure_rate=0.5, rng=random.Random(42))

    async def retry(call):
        for _ in range(50):
            try:
                return await call()
            except PaymentRetryableError:
                continue
        raise AssertionError("never succeeded")

    rid = str(uuid.uuid4())
    method = await retry(lambda: flaky.tokenize(card()))
    auth = await retry(lambda: flaky.authorize(f"{rid}:authorize", method.token, 777))
    await retry(lambda: flaky.capture(f"{rid}:capture", auth.id))
    ledger = await flaky.payments_for(rid)
    assert [(r["tipo"], r["estado"]) for r in ledger] == [("authorize", "captured"), ("capture", "captured")]


async def test_latency_is_added_to_every_call(js):
    slow = SimulatedPaymentGateway(js, latency_s=0.05)
    started = time.monotonic()
    await slow.tokenize(card())
    assert time.monotonic() - started >= 0.05
