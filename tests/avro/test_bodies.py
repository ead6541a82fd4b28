"""core.avro_bodies: the content-type convention of Avro bodies."""

from __future__ import annotations

import pytest

from qgate.core.avro_bodies import (
    avro_content_type,
    avro_writer,
    format_fingerprint,
    is_json_type,
    parse_fingerprint,
)
from qgate.core.schemas import parse_schema, to_single_object

FINGERPRINT = parse_schema('"string"').fingerprint


def test_the_content_type_names_the_fingerprint_as_single_object_bytes_in_hex() -> None:
    shown = format_fingerprint(FINGERPRINT)
    assert len(shown) == 16
    assert bytes.fromhex(shown) == to_single_object(FINGERPRINT, b"")[2:]
    assert avro_content_type(FINGERPRINT) == f"avro/binary; fingerprint={shown}"
    assert parse_fingerprint(shown) == FINGERPRINT
    assert avro_writer(avro_content_type(FINGERPRINT), b"datum") == (FINGERPRINT, b"datum")


@pytest.mark.parametrize(
    "content_type",
    [
        "Avro/Binary;Fingerprint={fp}",
        'avro/binary; charset=x; fingerprint="{fp}"',
        "avro/binary ;fingerprint={FP}",
    ],
)
def test_other_spellings_of_the_parameter_are_understood(content_type: str) -> None:
    shown = format_fingerprint(FINGERPRINT)
    text = content_type.format(fp=shown, FP=shown.upper())
    assert avro_writer(text, b"x") == (FINGERPRINT, b"x")


def test_single_object_bodies_are_avro_unless_the_type_says_json() -> None:
    body = to_single_object(FINGERPRINT, b"\x02a")
    assert avro_writer("application/octet-stream", body) == (FINGERPRINT, b"\x02a")
    assert avro_writer("avro/binary", body) == (FINGERPRINT, b"\x02a")
    assert avro_writer("application/json", body) is None
    assert avro_writer("text/plain", b"plain") is None
    assert avro_writer("avro/binary; fingerprint=nothex!!nothex!!", b"x") is None
    assert avro_writer("avro/binary; fingerprint=00", b"x") is None


def test_json_types() -> None:
    assert is_json_type("application/json; charset=utf-8")
    assert is_json_type("application/vnd.api+json")
    assert not is_json_type("avro/binary")
