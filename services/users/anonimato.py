"""Anonymization of the users export: generalized quasi-identifiers and k-anonymity (pure, no I/O).

The quasi-identifiers of a user are (tipo_documento, email domain, registration month). Generalization is
global recoding along one ladder of levels (month -> quarter -> year, then the domain, then the document type
become "*"); the export uses the lowest level at which at most MAX_SUPRIMIDAS of the rows fall in classes
smaller than k, and suppresses those rows. Counting needs only the level-0 combinations, so the plan is
computed from a Counter whose size is the number of distinct combinations, not the number of rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

OTRO = "otro"
TODO = "*"
MAX_SUPRIMIDAS = 0.05  # the share of rows the export may drop before it generalizes one level further
NIVELES = (
    "mes de registro, dominio del email (raros: otro)",
    "trimestre de registro",
    "año de registro",
    "año de registro, dominio suprimido (*)",
    "año de registro, dominio y tipo_documento suprimidos (*)",
)

Cuasi = tuple[str, str, str]  # (tipo_documento, dominio, mes "YYYY-MM")


def dominio(email: str) -> str:
    return email.rpartition("@")[2].casefold()


def mes(instante: str) -> str:
    """'2026-03-14T10:00:00+00:00' -> '2026-03' (ISO 8601 instants as every contract writes them)."""
    return instante[:7]


def cuasi(tipo_documento: str, email: str, registrado_en: str) -> Cuasi:
    return tipo_documento, dominio(email), mes(registrado_en)


def _periodo(mes_: str, nivel: int) -> str:
    if nivel == 0:
        return mes_
    year, _, month = mes_.partition("-")
    if nivel == 1 and month.isdigit():
        return f"{year}-T{(int(month) - 1) // 3 + 1}"
    return year


def generalizar(q: Cuasi, nivel: int, frecuentes: frozenset[str]) -> Cuasi:
    """The combination at `nivel`; domains outside `frecuentes` (fewer than k users) are always `otro`."""
    tipo, dom, mes_ = q
    dom = dom if dom in frecuentes else OTRO
    return (
        tipo if nivel < 4 else TODO,
        dom if nivel < 3 else TODO,
        _periodo(mes_, nivel),
    )


@dataclass(frozen=True)
class Plan:
    """What pass 2 applies: the level, the frequent domains and the size of every class at that level."""

    k: int
    nivel: int
    frecuentes: frozenset[str]
    clases: Counter[Cuasi] = field(repr=False)
    total: int
    suprimidas: int
    max_suprimidas: float

    def conserva(self, q: Cuasi) -> Cuasi | None:
        """The generalized combination of a row, or None when the row is suppressed (class smaller than k)."""
        g = generalizar(q, self.nivel, self.frecuentes)
        return g if self.clases[g] >= self.k else None

    def resumen(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "cuasi_identificadores": ["tipo_documento", "dominio_email", "registro"],
            "nivel_de_generalizacion": self.nivel,
            "generalizaciones": list(NIVELES[: self.nivel + 1]),
            "filas_totales": self.total,
            "filas_suprimidas": self.suprimidas,
            "filas_exportadas": self.total - self.suprimidas,
            "suprimir_hasta": self.max_suprimidas,
            "clase_minima": min((n for n in self.clases.values() if n >= self.k), default=0),
        }


def planificar(conteos: Counter[Cuasi], k: int, max_suprimidas: float = MAX_SUPRIMIDAS) -> Plan:
    """The lowest level whose small classes hold at most `max_suprimidas` of the rows (the last level otherwise)."""
    total = sum(conteos.values())
    por_dominio: Counter[str] = Counter()
    for (_, dom, _), n in conteos.items():
        por_dominio[dom] += n
    frecuentes = frozenset(d for d, n in por_dominio.items() if n >= k)
    plan: Plan | None = None
    for nivel in range(len(NIVELES)):
        clases: Counter[Cuasi] = Counter()
        for q, n in conteos.items():
            clases[generalizar(q, nivel, frecuentes)] += n
        suprimidas = sum(n for n in clases.values() if n < k)
        plan = Plan(k, nivel, frecuentes, clases, total, suprimidas, max_suprimidas)
        if suprimidas <= max_suprimidas * total:
            break
    assert plan is not None
    return plan
