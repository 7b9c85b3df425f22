"""The rules a new event must satisfy. Every broken rule is reported, not only the first."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal

from eventflow.contracts import LIMITE_POR_USUARIO_PREDETERMINADO, MAX_POR_SOLICITUD_PREDETERMINADO, TOPE_POR_SOLICITUD
from services.events.domain import CrearEvento, DatosInvalidos, Evento, FieldError, FiltroEventos, Seccion
from services.events.text import MAX_QUERY_WORDS, normalize_category, words

MAX_AFORO = 1_000_000
MAX_ASIENTOS = 100_000  # seated events: every seat is a key somewhere, keep it bounded
MAX_SECCIONES = 100
MAX_PRECIO = Decimal("1000000")
MAX_ANTICIPACION = timedelta(days=3650)
MAX_LIMITE_POR_USUARIO = 1000
LIMITES_TEXTO = {"nombre": (1, 200), "lugar": (1, 200), "descripcion": (0, 5000), "categoria": (1, 50)}
# Letters, digits, "_" and inner spaces: no "-", so a seat id splits back into section and number.
NOMBRE_SECCION = re.compile(r"^[^\W_][\w ]{0,29}$")


def parse_instant(text: str, field: str, errors: list[FieldError]) -> datetime | None:
    """ISO 8601 with an explicit offset; a naive time is ambiguous for a venue in another zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        errors.append(FieldError(field, "must be an ISO 8601 date-time with offset", "datetime_parsing"))
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        errors.append(FieldError(field, "must include a UTC offset (e.g. Z or -03:00)", "timezone_aware"))
        return None
    return value


def _text(cmd: CrearEvento, errors: list[FieldError]) -> dict[str, str]:
    values = {name: str(getattr(cmd, name)).strip() for name in LIMITES_TEXTO}
    values["categoria"] = normalize_category(values["categoria"])
    for name, (low, high) in LIMITES_TEXTO.items():
        if not low <= len(values[name]) <= high:
            errors.append(FieldError(name, f"must have {low} to {high} characters (blank ignored)", "string_length"))
    return values


def _precio_centimos(precio: Decimal, errors: list[FieldError]) -> int:
    if not precio.is_finite() or precio < 0 or precio > MAX_PRECIO:
        errors.append(FieldError("precio", f"must be between 0 and {MAX_PRECIO}", "out_of_range"))
        return 0
    cents = precio * 100
    if cents != cents.to_integral_value():
        errors.append(FieldError("precio", "must have at most 2 decimals", "decimal_places"))
        return 0
    return int(cents)


def _secciones(secciones: list[Seccion], errors: list[FieldError]) -> tuple[Seccion, ...]:
    if not 1 <= len(secciones) <= MAX_SECCIONES:
        errors.append(FieldError("secciones", f"must have 1 to {MAX_SECCIONES} sections", "too_long"))
    seen: set[str] = set()
    clean = []
    for i, seccion in enumerate(secciones):
        nombre = seccion.nombre.strip()
        if not NOMBRE_SECCION.match(nombre):
            errors.append(
                FieldError(f"secciones.{i}.nombre", "1-30 letters, digits, '_' or spaces; no '-'", "string_pattern")
            )
        elif nombre.casefold() in seen:
            errors.append(FieldError(f"secciones.{i}.nombre", "repeats another section's name", "duplicate"))
        seen.add(nombre.casefold())
        if not 1 <= seccion.asientos <= MAX_ASIENTOS:
            errors.append(FieldError(f"secciones.{i}.asientos", f"must be 1 to {MAX_ASIENTOS}", "out_of_range"))
        clean.append(Seccion(nombre, seccion.asientos))
    total = sum(s.asientos for s in clean)
    if total > MAX_ASIENTOS:
        errors.append(FieldError("secciones", f"at most {MAX_ASIENTOS} seats in all", "out_of_range"))
    return tuple(clean)


def _aforo(cmd: CrearEvento, secciones: tuple[Seccion, ...] | None, errors: list[FieldError]) -> int:
    """Seated events may omit aforo_total (it is the seats' sum); if given it must equal that sum."""
    if secciones is not None:
        seats = sum(s.asientos for s in secciones)
        if cmd.aforo_total is not None and cmd.aforo_total != seats:
            errors.append(
                FieldError("aforo_total", f"must equal the sections' seats ({seats}) or be omitted", "mismatch")
            )
        return seats
    if cmd.aforo_total is None:
        errors.append(FieldError("aforo_total", "is required when there are no sections", "missing"))
        return 0
    if not 1 <= cmd.aforo_total <= MAX_AFORO:
        errors.append(FieldError("aforo_total", f"must be 1 to {MAX_AFORO}", "out_of_range"))
    return cmd.aforo_total


def _limites(cmd: CrearEvento, errors: list[FieldError]) -> tuple[int, int]:
    """(limite_por_usuario, max_por_solicitud). The one not sent follows the one sent, so that they agree
    (limite 4 -> max 4; max 20 -> limite 20); neither sent: the defaults. Only what was sent can be wrong."""
    limite, maximo = cmd.limite_por_usuario, cmd.max_por_solicitud
    if maximo is None:
        maximo = MAX_POR_SOLICITUD_PREDETERMINADO if limite is None else min(limite, MAX_POR_SOLICITUD_PREDETERMINADO)
    elif not 1 <= maximo <= TOPE_POR_SOLICITUD:
        errors.append(FieldError("max_por_solicitud", f"must be 1 to {TOPE_POR_SOLICITUD}", "out_of_range"))
    if limite is None:
        limite = max(maximo, LIMITE_POR_USUARIO_PREDETERMINADO)
    elif not 1 <= limite <= MAX_LIMITE_POR_USUARIO:
        errors.append(FieldError("limite_por_usuario", f"must be 1 to {MAX_LIMITE_POR_USUARIO}", "out_of_range"))
    if maximo > limite:  # only when both were sent: a derived value always agrees with the other
        errors.append(FieldError("max_por_solicitud", "must not exceed limite_por_usuario", "above_limit"))
    return limite, maximo


def _fechas(cmd: CrearEvento, now: datetime, errors: list[FieldError]) -> tuple[datetime, datetime | None]:
    fecha = parse_instant(cmd.fecha, "fecha", errors)
    if fecha is not None and fecha <= now:
        errors.append(FieldError("fecha", "must be in the future", "date_in_past"))
    elif fecha is not None and fecha > now + MAX_ANTICIPACION:
        errors.append(FieldError("fecha", "must be within 10 years", "date_too_far"))
    venta_desde = None if cmd.venta_desde is None else parse_instant(cmd.venta_desde, "venta_desde", errors)
    if fecha is not None and venta_desde is not None and venta_desde >= fecha:
        errors.append(FieldError("venta_desde", "must be before fecha", "after_event"))
    return fecha or now, venta_desde


def nuevo_evento(cmd: CrearEvento, evento_id: str, now: datetime, organizador_id: str | None = None) -> Evento:
    """Judge the command; raises DatosInvalidos with every broken rule."""
    errors: list[FieldError] = []
    text = _text(cmd, errors)
    fecha, venta_desde = _fechas(cmd, now, errors)
    precio = _precio_centimos(cmd.precio, errors)
    secciones = None if cmd.secciones is None else _secciones(cmd.secciones, errors)
    aforo = _aforo(cmd, secciones, errors)
    limite, maximo = _limites(cmd, errors)
    if errors:
        raise DatosInvalidos(errors)
    return Evento(
        id=evento_id,
        nombre=text["nombre"],
        descripcion=text["descripcion"],
        fecha=fecha,
        lugar=text["lugar"],
        aforo_total=aforo,
        precio_centimos=precio,
        categoria=text["categoria"],
        secciones=secciones,
        venta_desde=venta_desde,
        limite_por_usuario=limite,
        max_por_solicitud=maximo,
        organizador_id=organizador_id,
    )


def _plus_restored(text: str) -> str:
    """An unencoded "+03:00" in a query string arrives as " 03:00"; give the sign back."""
    return re.sub(r"(T[\d:.]+) (\d\d:?\d\d)$", r"\1+\2", text.strip())


def filtro(
    q: str | None,
    categoria: str | None,
    desde: str | None,
    hasta: str | None,
    limit: int,
    offset: int,
    organizador_id: str | None = None,
) -> FiltroEventos:
    errors: list[FieldError] = []
    start = None if desde is None else parse_instant(_plus_restored(desde), "desde", errors)
    end = None if hasta is None else parse_instant(_plus_restored(hasta), "hasta", errors)
    if start is not None and end is not None and start > end:
        errors.append(FieldError("hasta", "must not be before desde", "range"))
    if q is not None and len(words(q)) > MAX_QUERY_WORDS:  # each word costs one index read: bound the cost
        errors.append(FieldError("q", f"at most {MAX_QUERY_WORDS} words", "too_many_words"))
    if errors:
        raise DatosInvalidos(errors, "query")
    category = normalize_category(categoria) if categoria is not None else None
    return FiltroEventos(q or None, category or None, start, end, limit, offset, organizador_id or None)
