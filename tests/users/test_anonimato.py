"""k-anonymity planning (pure): generalization first, suppression of what is left, never a class below k."""

from __future__ import annotations

from collections import Counter

from services.users.anonimato import OTRO, TODO, cuasi, generalizar, planificar


def population() -> Counter:
    rows = [cuasi("DNI", f"u{i}@a.com", "2026-01-15T10:00:00+00:00") for i in range(5)]
    rows += [cuasi("DNI", f"v{i}@A.com", "2026-02-15T10:00:00+00:00") for i in range(5)]
    rows += [cuasi("DNI", f"w{i}@a.com", "2026-03-01T00:00:00+00:00") for i in range(3)]
    rows += [cuasi("Pasaporte", "x@raro.org", "2026-12-01T00:00:00+00:00")]
    return Counter(rows)


def test_rare_domains_become_otro_and_months_quarters():
    frecuentes = frozenset({"a.com"})
    assert generalizar(("DNI", "raro.org", "2026-05"), 0, frecuentes) == ("DNI", OTRO, "2026-05")
    assert generalizar(("DNI", "a.com", "2026-05"), 1, frecuentes) == ("DNI", "a.com", "2026-T2")
    assert generalizar(("DNI", "a.com", "2026-05"), 2, frecuentes) == ("DNI", "a.com", "2026")
    assert generalizar(("DNI", "a.com", "2026-05"), 4, frecuentes) == (TODO, TODO, "2026")


def test_generalizes_to_the_lowest_level_that_keeps_suppression_within_bounds():
    plan = planificar(population(), k=5, max_suprimidas=0.1)
    # Months: classes 5, 5, 3 and 1 -> 4 of 14 suppressed (29 %). Quarters: 13 in 2026-T1, 1 in T4 -> 7 %.
    assert plan.nivel == 1 and plan.suprimidas == 1
    assert plan.conserva(cuasi("DNI", "z@a.com", "2026-03-09T00:00:00+00:00")) == ("DNI", "a.com", "2026-T1")
    assert plan.conserva(cuasi("Pasaporte", "x@raro.org", "2026-12-01T00:00:00+00:00")) is None


def test_every_kept_class_has_at_least_k_rows():
    for k in (2, 3, 5, 8, 20):
        for share in (0.0, 0.05, 0.5):
            plan = planificar(population(), k=k, max_suprimidas=share)
            kept = Counter()
            for q, n in population().items():
                if (g := plan.conserva(q)) is not None:
                    kept[g] += n
            assert all(n >= k for n in kept.values())
            assert sum(kept.values()) == plan.total - plan.suprimidas
            assert plan.resumen()["filas_suprimidas"] == plan.suprimidas


def test_no_suppression_allowed_generalizes_to_the_last_level_then_suppresses():
    plan = planificar(population(), k=20, max_suprimidas=0.0)
    assert plan.nivel == 4 and plan.suprimidas == 14
