"""Users domain: the registration command, its validation rules, the user and the domain errors.

Pure: no FastAPI, Redis or NATS here. Every rule lives in `validar` so the HTTP layer and the unit tests
see the same ones, and all field errors of a request come back together.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, field, replace

from email_validator import EmailNotValidError, validate_email

from eventflow.errors import Conflict, NotFound, Unavailable, Unprocessable
from services.users import contrasenas, documentos
from services.users.documentos import TipoDocumento

NOMBRE_MAX = 100
EMAIL_MAX = 254
DOCUMENTO_MAX = 20
PERSONAL_FIELDS = ("nombre", "apellido", "email", "nro_documento")


# --- commands and entities ---------------------------------------------------------------------
@dataclass(frozen=True)
class RegistrarUsuario:
    tipo_documento: TipoDocumento
    nro_documento: str
    nombre: str
    apellido: str
    email: str
    password: str = field(default="", repr=False)  # checked here, hashed by the handler, never stored or logged


@dataclass(frozen=True)
class Usuario:
    """The decrypted user: exists only in memory, while answering a request."""

    id: str
    tipo_documento: TipoDocumento
    nro_documento: str
    nombre: str
    apellido: str
    email: str
    registrado_en: str

    def personal_data(self) -> dict[str, str]:
        return {field: getattr(self, field) for field in PERSONAL_FIELDS}


def forma_canonica(cmd: RegistrarUsuario) -> str:
    """What "the same request" means for an Idempotency-Key: the validated fields, exactly (hex-encoded, so a
    pseudonymizer's normalization cannot merge bodies that differ only in case or spacing)."""
    campos = (cmd.tipo_documento.value, cmd.nro_documento, cmd.nombre, cmd.apellido, cmd.email)
    return "\x00".join(campos).encode().hex()


# --- errors ------------------------------------------------------------------------------------
class DatosInvalidos(Unprocessable):
    """Same slug and `errors` shape as FastAPI's own 422, so a client handles one kind of body."""

    slug, title = "validation", "Validation failed"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("The request does not satisfy the registration rules.", errors=errors)


class EmailYaRegistrado(Conflict):
    slug, title = "email-taken", "Email already registered"

    def __init__(self) -> None:
        super().__init__("A user with this email already exists.")


class DocumentoYaRegistrado(Conflict):
    slug, title = "document-taken", "Document already registered"

    def __init__(self) -> None:
        super().__init__("A user with this document type and number already exists.")


class ClaveReutilizada(Unprocessable):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different request"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used for a different registration.")


class UsuarioNoEncontrado(NotFound):
    slug, title = "user-not-found", "User not found"

    def __init__(self, usuario_id: str) -> None:
        # The id is echoed only when it looks like one of ours: never reflect arbitrary input.
        super().__init__("No user with this id.", **({"usuario_id": usuario_id} if es_id(usuario_id) else {}))


class RegistroNoCompletado(Unavailable):
    slug, title = "registration-not-completed", "Registration not completed"

    def __init__(self) -> None:
        super().__init__("The user could not be stored; nothing was kept. Try again.")


class ClavesNoDisponibles(Unavailable):
    slug, title = "keys-unavailable", "User keys unavailable"

    def __init__(self) -> None:
        super().__init__("The user's data key cannot be reached right now. Try again.")


class CuentaNoDisponible(Unavailable):
    slug, title = "account-unavailable", "Account unavailable"

    def __init__(self) -> None:
        super().__init__("The user's account (its roles) cannot be reached right now. Try again.")


# --- rules -------------------------------------------------------------------------------------
def nuevo_id() -> str:
    return str(uuid.uuid4())


def es_id(texto: str) -> bool:
    """User ids are canonical UUID strings; anything else cannot name a user (answered as 404)."""
    try:
        return str(uuid.UUID(texto)) == texto
    except ValueError:
        return False


def _limpiar(texto: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", texto)).strip()


def _error_de_nombre(valor: str) -> str | None:
    if not valor:
        return "must not be empty"
    if len(valor) > NOMBRE_MAX:
        return f"must be at most {NOMBRE_MAX} characters"
    if any(unicodedata.category(ch).startswith("C") for ch in valor):
        return "must not contain control characters"
    if not any(ch.isalpha() for ch in valor):
        return "must contain at least one letter"
    return None


def _email(valor: str) -> tuple[str, str | None]:
    if len(valor) > EMAIL_MAX:
        return valor, f"must be at most {EMAIL_MAX} characters"
    try:
        return validate_email(valor, check_deliverability=False).normalized, None
    except EmailNotValidError:
        return valor, "is not a valid email address"


def validar(cmd: RegistrarUsuario) -> RegistrarUsuario:
    """The command in canonical form, or DatosInvalidos listing every field that breaks a rule."""
    nombre, apellido = _limpiar(cmd.nombre), _limpiar(cmd.apellido)
    email, email_error = _email(cmd.email.strip())
    nro = documentos.canonical(cmd.nro_documento)
    nro_error = (
        f"must be at most {DOCUMENTO_MAX} characters"
        if len(nro) > DOCUMENTO_MAX
        else documentos.problem_with(cmd.tipo_documento, nro)
    )
    problems = {
        "nro_documento": nro_error and f"{nro_error} for tipo_documento {cmd.tipo_documento.value}",
        "nombre": _error_de_nombre(nombre),
        "apellido": _error_de_nombre(apellido),
        "email": email_error,
    }
    errors = [{"field": f, "message": m, "code": f"invalid_{f}"} for f, m in problems.items() if m]
    errors += [
        {"field": "password", "message": p.message, "code": p.code}
        for p in contrasenas.problemas(cmd.password, email, nombre, apellido)
    ]
    if errors:
        raise DatosInvalidos(errors)
    return replace(cmd, nro_documento=nro, nombre=nombre, apellido=apellido, email=email)


def clave_documento(tipo: TipoDocumento, nro: str) -> str:
    """What identifies a document for uniqueness: the type and the canonical number."""
    return f"{tipo.value}:{documentos.canonical(nro)}"
