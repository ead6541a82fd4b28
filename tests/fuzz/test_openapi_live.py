"""The OpenAPI document at ``/v2/openapi.json`` is what a live qgate answers: schemathesis
generates requests for every operation it describes and sends them to ``qgate serve`` (a
real socket, SQLite in a temporary directory); every answer must conform to the document,
and none may be a 500."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from qgate.protocols.http.openapi import document
from tests.support.fuzzing import FUZZ_TIMEOUT, SCALE
from tests.support.serve import Server

pytestmark = [pytest.mark.integration, FUZZ_TIMEOUT]

#: Examples per operation (32 operations, fitting the document or not): about 10 s.
EXAMPLES = 6 * SCALE
# Zaqar's JSON Patch media type is JSON (RFC 6902 documents).
schemathesis.serializer.alias("application/openstack-messaging-v2.0-json-patch", "application/json")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One qgate for the module (a start costs seconds)."""
    tmp_path = tmp_path_factory.mktemp("openapi")
    (tmp_path / "data").mkdir()
    # Long polls of at most half a second keep the run short; a key so shares are signed.
    extra = '[http]\nmax_wait = 0.5\nsigned_url_secret_key = "fuzz"\n'
    running = Server(tmp_path, tenant="p1", extra=extra)
    running.start()
    yield running
    running.stop()


def test_the_served_document_is_the_module_s_and_needs_no_client_id(server: Server) -> None:
    url = f"http://127.0.0.1:{server.http}/v2/openapi.json"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == document()


def test_every_answer_of_a_live_qgate_conforms_to_the_openapi_document(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server.http}/v2/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 32
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=SCALE == 1,  # the same requests every CI run (tests/support/fuzzing)
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        # Requests that fit the document, and requests that break it (refused with a 4xx).
        @given(case=operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE))
        def exercise(case: Any) -> None:
            case.call_and_validate(checks=CHECKS, timeout=10)

        try:
            exercise()
        except Exception as e:  # noqa: BLE001 - gathered, so one run shows every operation's
            failures.append(f"{operation.label}: {e}")
    assert not failures, "\n\n".join(failures)
