"""The organizer's sales dashboard (GET /api/eventos/{id}/ventas) follows RESERVAS: each reservation counted once,
a cancellation taking back what its confirmation counted, in the hour it happened."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.events.helpers import cancel_sale, confirm_sale, evento_body


async def test_the_dashboard_counts_sales_revenue_and_refunds_once_each_in_hourly_buckets(app, client, js):
    evento_id = (await client.post("/api/eventos", json=evento_body(aforo_total=10))).json()["id"]
    first, _ = await confirm_sale(js, evento_id, 3)
    await confirm_sale(js, evento_id, 2)
    await confirm_sale(js, evento_id, 3, reserva_id=first)  # a duplicate confirmation: counted once
    seq = await cancel_sale(js, evento_id, first, 3)
    await cancel_sale(js, evento_id, first, 3)  # and a duplicate cancellation: refunded once
    seq = await cancel_sale(js, evento_id, "never-confirmed", 4)
    dashboard = app.state.runners[3]
    assert await dashboard.wait_for(seq, 10)

    body = (await client.get(f"/api/eventos/{evento_id}/ventas")).json()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0).isoformat()
    expected = {"vendidas": 5, "ingresos_centimos": 5000, "canceladas": 3, "reembolsado_centimos": 3000}
    assert {k: body[k] for k in ("vendidas", "reservas", "canceladas", "ingresos_centimos", "neto_centimos")} == {
        "vendidas": 2,
        "reservas": 2,
        "canceladas": 3,
        "ingresos_centimos": 5000,
        "neto_centimos": 2000,
    }
    assert body["por"] == "hora" and body["serie"][-1]["desde"] <= hour
    assert {k: sum(b[k] for b in body["serie"]) for k in expected} == expected  # one bucket, or two across an hour
    assert all(b["desde"].endswith(":00:00+00:00") for b in body["serie"])
    per_day = (await client.get(f"/api/eventos/{evento_id}/ventas", params={"por": "dia"})).json()
    assert per_day["por"] == "dia" and sum(b["vendidas"] for b in per_day["serie"]) == 5
    assert (await client.get("/api/eventos/nada/ventas")).status_code == 404
