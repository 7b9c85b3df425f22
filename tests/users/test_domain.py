"""Registration rules and document formats, without any server."""

from __future__ import annotations

import pytest

from services.users import contrasenas, documentos
from services.users.documentos import TipoDocumento
from services.users.domain import DatosInvalidos, RegistrarUsuario, clave_documento, es_id, validar


def cmd(**overrides: str) -> RegistrarUsuario:
    values = {
        "tipo_documento": TipoDocumento.DNI,
        "nro_documento": "12.345.678",
        "nombre": "  María   José ",
        "apellido": "Pérez",
        "email": "Maria.Perez@Example.COM",
        "password": "una frase de paso bastante larga",
    }
    values.update(overrides)
    return RegistrarUsuario(**values)  # type: ignore[arg-type]


def fields_in_error(command: RegistrarUsuario) -> set[str]:
    with pytest.raises(DatosInvalidos) as caught:
        validar(command)
    return {e["field"] for e in caught.value.extra["errors"]}


@pytest.mark.parametrize(
    ("tipo", "numero", "canonical"),
    [
        (TipoDocumento.DNI, "12.345.678", "12345678"),
        (TipoDocumento.DNI, "1234567", "1234567"),
        (TipoDocumento.CEDULA, "1.234.567-2", "12345672"),
        (TipoDocumento.CEDULA, "123456-1", "1234561"),
        (TipoDocumento.CUIT, "20-12345678-6", "20123456786"),
        (TipoDocumento.NIF, "12345678z", "12345678Z"),
        (TipoDocumento.NIE, "X-1234567-L", "X1234567L"),
        (TipoDocumento.PASAPORTE, "aab 123456", "AAB123456"),
    ],
)
def test_valid_documents_are_accepted_in_canonical_form(tipo, numero, canonical):
    assert documentos.canonical(numero) == canonical
    assert documentos.problem_with(tipo, canonical) is None


@pytest.mark.parametrize(
    ("tipo", "numero"),
    [
        (TipoDocumento.DNI, "123456"),  # too short
        (TipoDocumento.DNI, "123456789"),  # too long
        (TipoDocumento.DNI, "1234567A"),
        (TipoDocumento.CEDULA, "12345673"),  # wrong check digit
        (TipoDocumento.CEDULA, "12345"),
        (TipoDocumento.CUIT, "20123456787"),  # wrong check digit
        (TipoDocumento.CUIT, "99123456786"),  # unknown prefix
        (TipoDocumento.NIF, "12345678A"),  # wrong letter
        (TipoDocumento.NIF, "1234567Z"),
        (TipoDocumento.NIE, "X1234567A"),  # wrong letter
        (TipoDocumento.NIE, "A1234567L"),
        (TipoDocumento.PASAPORTE, "AB12"),
        (TipoDocumento.PASAPORTE, "ABCDE12345"),
        (TipoDocumento.PASAPORTE, "AB12-34Ñ"),
    ],
)
def test_malformed_documents_are_refused(tipo, numero):
    assert documentos.problem_with(tipo, documentos.canonical(numero)) is not None


def test_check_digit_algorithms_match_known_documents():
    assert documentos.cedula_check_digit("1234567") == 2
    assert documentos.cuit_check_digit("2012345678") == 6
    assert documentos.nif_letter(12345678) == "Z"


def test_validar_canonicalizes_names_email_and_document():
    valid = validar(cmd())
    assert valid.nombre == "María José"
    assert valid.nro_documento == "12345678"
    assert valid.email == "Maria.Perez@example.com"  # the domain is case-insensitive, the local part kept


def test_validar_reports_every_broken_field_at_once():
    broken = cmd(nro_documento="12", nombre="", apellido="1234", email="not-an-email")
    assert fields_in_error(broken) == {"nro_documento", "nombre", "apellido", "email"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nombre", "x" * 101),
        ("nombre", "Ana\x00"),
        ("apellido", "   "),
        ("email", "a@b"),
        ("email", f"{'a' * 250}@example.com"),
        ("email", "two@@example.com"),
        ("nro_documento", "1" * 30),
    ],
)
def test_each_rule_is_enforced(field: str, value: str) -> None:
    assert fields_in_error(cmd(**{field: value})) == {field}


def test_the_error_names_the_document_type_but_never_echoes_the_value():
    with pytest.raises(DatosInvalidos) as caught:
        validar(cmd(tipo_documento=TipoDocumento.NIF, nro_documento="99999999A"))
    (error,) = caught.value.extra["errors"]
    assert "NIF" in error["message"]
    assert "99999999" not in error["message"]


def test_document_identity_ignores_separators():
    assert clave_documento(TipoDocumento.CEDULA, "1.234.567-2") == clave_documento(TipoDocumento.CEDULA, "12345672")
    assert clave_documento(TipoDocumento.DNI, "12345678") != clave_documento(TipoDocumento.PASAPORTE, "12345678")


def test_only_canonical_uuids_are_user_ids():
    assert es_id("3f2b8a9e-0c1d-4e5f-8a7b-6c5d4e3f2a1b")
    assert not es_id("3F2B8A9E-0C1D-4E5F-8A7B-6C5D4E3F2A1B")
    assert not es_id("nope")
    assert not es_id("../../etc")


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("corta", "password_too_short"),
        ("x" * (contrasenas.MAX_LENGTH + 1), "password_too_long"),
        ("contraseña", "password_too_common"),  # on the list, whatever the case
        ("QWERTYUIOP", "password_too_common"),
        ("aaaaaaaaaaaa", "password_too_common"),  # one repeated character
        ("abcdefghijk", "password_too_common"),  # a run
        ("9876543210", "password_too_common"),
        ("soy maría y nada más", "password_personal"),
        ("clave de perez para siempre", "password_personal"),
        ("Mi casa en example sin duda", "password_personal"),  # a word of the email
    ],
)
def test_the_password_policy_names_the_rule_broken(password: str, code: str) -> None:
    with pytest.raises(DatosInvalidos) as caught:
        validar(cmd(password=password))
    errors = caught.value.extra["errors"]
    assert code in {e["code"] for e in errors if e["field"] == "password"}
    assert all(password not in e["message"] for e in errors)


def test_a_password_may_hold_short_words_of_the_name_and_is_never_in_the_command_repr() -> None:
    assert contrasenas.problemas("ana y la luz del sol", "ana@ejemplo.com", "Ana", "Sol") == []
    assert "bastante larga" not in repr(validar(cmd()))
