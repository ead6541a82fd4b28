"""``GET /v2/openapi.json``: the OpenAPI document of the API, served without a Client-ID,
naming every route and method the router serves (the live check of what each answers is
``tests/fuzz/test_openapi_live.py``)."""

from __future__ import annotations

import pytest_twisted

from qgate.protocols.context import ProtocolContext
from qgate.protocols.http.openapi import document
from qgate.protocols.http.resource import ApiResource
from tests.support.http import Api


@pytest_twisted.ensureDeferred
async def test_the_document_is_served_without_client_id_or_project(api: Api) -> None:
    reply = await api.get("/v2/openapi.json", client=None, project=None)
    assert reply.status == 200
    assert reply.header("content-type") == "application/json; charset=UTF-8"
    assert reply.json == document()
    assert reply.json["openapi"].startswith("3.")


def test_the_document_names_every_route_and_method_the_api_serves(ctx: ProtocolContext) -> None:
    served = {
        ("/" + "/".join(route.template), method.lower())
        for route in ApiResource(ctx).router.routes
        for method in route.handlers
    }
    paths = document()["paths"]
    described = {(path, method) for path, item in paths.items() for method in item}
    # HEAD of ping is GET's answer without its body (the router's fallback), documented.
    assert described - served == {("/v2/ping", "head")}
    assert served == described - {("/v2/ping", "head")}
