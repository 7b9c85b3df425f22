"""Identity documents: the known types and the format (and check digit, where there is one) of each.

Numbers are reduced to a canonical form before validation, uniqueness and storage, so that
"1.234.567-2" and "12345672" are the same document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum


class TipoDocumento(StrEnum):
    DNI = "DNI"  # Argentina: 7-8 digits
    CEDULA = "Cedula"  # Uruguay, cédula de identidad: 6-7 digits + check digit
    CUIT = "CUIT"  # Argentina, CUIT/CUIL: 11 digits, the last a mod-11 check digit
    NIF = "NIF"  # Spain, DNI/NIF: 8 digits + control letter
    NIE = "NIE"  # Spain, foreigners: X/Y/Z + 7 digits + control letter
    PASAPORTE = "Pasaporte"  # any country: 6-9 letters or digits (ICAO 9303 document number)


_SEPARATORS = re.compile(r"[\s.\-/]")
_NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def canonical(numero: str) -> str:
    """Drops the separators people type (spaces, dots, hyphens, slashes) and upper-cases letters."""
    return _SEPARATORS.sub("", numero).upper()


def _dni(n: str) -> str | None:
    return None if re.fullmatch(r"\d{7,8}", n) else "must be 7 or 8 digits"


def cedula_check_digit(body: str) -> int:
    weights = (2, 9, 8, 7, 6, 3, 4)
    total = sum(int(d) * w for d, w in zip(body.zfill(7), weights, strict=True))
    return (10 - total % 10) % 10


def _cedula(n: str) -> str | None:
    if not re.fullmatch(r"\d{7,8}", n):
        return "must be 6 or 7 digits followed by a check digit"
    return None if cedula_check_digit(n[:-1]) == int(n[-1]) else "check digit does not match"


def cuit_check_digit(body: str) -> int | None:
    """None when no check digit exists for this body (remainder 1: the authority issues another prefix)."""
    weights = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
    remainder = 11 - sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11
    return {11: 0, 10: None}.get(remainder, remainder)


def _cuit(n: str) -> str | None:
    if not re.fullmatch(r"(20|23|24|27|30|33|34)\d{9}", n):
        return "must be 11 digits starting with a valid prefix (20, 23, 24, 27, 30, 33, 34)"
    return None if cuit_check_digit(n[:10]) == int(n[10]) else "check digit does not match"


def nif_letter(number: int) -> str:
    return _NIF_LETTERS[number % 23]


def _nif(n: str) -> str | None:
    if not re.fullmatch(r"\d{8}[A-Z]", n):
        return "must be 8 digits followed by a letter"
    return None if nif_letter(int(n[:8])) == n[8] else "control letter does not match"


def _nie(n: str) -> str | None:
    if not re.fullmatch(r"[XYZ]\d{7}[A-Z]", n):
        return "must be X, Y or Z, 7 digits and a letter"
    number = int(str("XYZ".index(n[0])) + n[1:8])
    return None if nif_letter(number) == n[8] else "control letter does not match"


def _pasaporte(n: str) -> str | None:
    return None if re.fullmatch(r"[A-Z0-9]{6,9}", n) else "must be 6 to 9 letters or digits"


_RULES: dict[TipoDocumento, Callable[[str], str | None]] = {
    TipoDocumento.DNI: _dni,
    TipoDocumento.CEDULA: _cedula,
    TipoDocumento.CUIT: _cuit,
    TipoDocumento.NIF: _nif,
    TipoDocumento.NIE: _nie,
    TipoDocumento.PASAPORTE: _pasaporte,
}


def problem_with(tipo: TipoDocumento, numero: str) -> str | None:
    """What is wrong with a canonical `numero` for `tipo`, or None when it is well formed."""
    return _RULES[tipo](numero)
