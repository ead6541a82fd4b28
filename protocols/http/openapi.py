"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /v2/openapi.json``.

Built here rather than written as a file so its pieces (the error document, the message
document, the headers every call sends) are written once. It describes what qgate answers,
not Zaqar's reference: where they differ, ``docs/zaqar-compat.md`` says how and why. A
schemathesis run against a live server (``tests/fuzz/test_openapi_live.py``) checks that
every answer conforms to it.
"""

from __future__ import annotations

from typing import Any

from qgate.core import jsonsafe

__all__ = ["OPENAPI_PATH", "document", "document_bytes"]

OPENAPI_PATH = ("v2", "openapi.json")
JSON = "application/json"
_NAME = "^[a-zA-Z0-9_.-]{1,64}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Any) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


def _ok(status: str, description: str, schema: Any | None = None, **more: Any) -> dict:
    answer: dict[str, Any] = {"description": description, **more}
    if schema is not None:
        answer.update(_json(schema))
    return {status: answer}


#: Every refusal: 4xx in Zaqar's error shape (a 406 to a client that takes no JSON, and
#: a HEAD answer, come without a body), 503 while storage is away.
_ERRORS: dict[str, Any] = {
    "4XX": {"$ref": "#/components/responses/Error"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["title", "description"],
        "properties": {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "link": {"type": "object"},
        },
    },
    "Link": {
        "type": "object",
        "required": ["rel", "href"],
        "properties": {"rel": {"type": "string"}, "href": {"type": "string"}},
    },
    "Links": {"type": "array", "items": _ref("Link")},
    "QueueMetadata": {
        "type": "object",
        "description": "The queue's metadata: the client's keys and the reserved `_` keys.",
        "required": ["_max_messages_post_size", "_default_message_ttl", "_flavor"],
        "properties": {
            "_max_messages_post_size": {"type": "integer"},
            "_default_message_ttl": {"type": "number"},
            "_default_message_delay": {"type": "number"},
            "_flavor": {"enum": ["durable", "transient"]},
            "_max_claim_count": {"type": ["integer", "null"]},
            "_dead_letter_queue": {"type": ["string", "null"]},
            "_dead_letter_queue_messages_ttl": {"type": ["number", "null"]},
            "_enable_encrypt_messages": {"type": "boolean"},
        },
    },
    "Queue": {
        "type": "object",
        "required": ["name", "href"],
        "properties": {
            "name": {"type": "string"},
            "href": {"type": "string"},
            "metadata": _ref("QueueMetadata"),
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "href", "ttl", "age", "body"],
        "properties": {
            "id": {"type": "string"},
            "href": {"type": "string"},
            "ttl": {"type": "number"},
            "age": {"type": "number"},
            "body": {"description": "Any JSON value (other bodies: see docs/zaqar-compat.md)"},
            "checksum": {"type": "string"},
            "claim_count": {"type": "integer"},
            "claim_id": {"type": ["string", "null"]},
        },
    },
    "Messages": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {"type": "array", "items": _ref("Message")},
            "links": _ref("Links"),
        },
    },
    "NewMessages": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["body"],
                    "properties": {
                        "body": {},
                        "ttl": {"type": "integer"},
                        "delay": {"type": "integer"},
                    },
                },
            }
        },
    },
    "Claim": {
        "type": "object",
        "required": ["age", "ttl", "href", "messages"],
        "properties": {
            "age": {"type": "number"},
            "ttl": {"type": "number"},
            "grace": {"type": "number"},
            "href": {"type": "string"},
            "messages": {"type": "array", "items": _ref("Message")},
        },
    },
    "ClaimRequest": {
        "type": "object",
        "properties": {
            "ttl": {"type": "integer"},
            "grace": {"type": "integer"},
            "limit": {"type": "integer"},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "object",
                "required": ["claimed", "free", "total"],
                "properties": {
                    "claimed": {"type": "integer"},
                    "free": {"type": "integer"},
                    "delayed": {"type": "integer"},
                    "total": {"type": "integer"},
                    "oldest": _ref("MessageStat"),
                    "newest": _ref("MessageStat"),
                },
            }
        },
    },
    "MessageStat": {
        "type": "object",
        "required": ["age", "created", "href"],
        "properties": {
            "age": {"type": "number"},
            "created": {"type": "string"},
            "href": {"type": "string"},
        },
    },
    "Subscription": {
        "type": "object",
        "required": ["id", "source", "subscriber", "ttl", "age", "options"],
        "properties": {
            "id": {"type": "string"},
            "source": {"type": "string"},
            "subscriber": {"type": "string"},
            "ttl": {"type": "number"},
            "age": {"type": "number"},
            "options": {"type": "object"},
            "confirmed": {"type": "boolean"},
        },
    },
    "NewSubscription": {
        "type": "object",
        "required": ["subscriber"],
        "properties": {
            "subscriber": {"type": "string"},
            "ttl": {"type": "integer"},
            "options": {"type": "object"},
        },
    },
    "Share": {
        "type": "object",
        "required": ["paths", "methods", "project", "expires", "signature"],
        "properties": {
            "paths": {"type": "array", "items": {"type": "string"}},
            "methods": {"type": "array", "items": {"type": "string"}},
            "project": {"type": "string"},
            "expires": {"type": "string"},
            "signature": {"type": "string"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["catalog_reachable", "storage"],
        "properties": {
            "catalog_reachable": {"type": "boolean"},
            "storage": {
                "type": "object",
                "required": ["storage_reachable", "operation_status"],
                "properties": {
                    "storage_reachable": {"type": "boolean"},
                    "operation_status": {"type": "object"},
                },
            },
        },
    },
}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False, doc: str = ""):
    p: dict[str, Any] = {"name": name, "in": where, "schema": schema, "required": required}
    if doc:
        p["description"] = doc
    return p


_PARAMETERS: dict[str, Any] = {
    "ClientID": _param(
        "Client-ID", "header", {"type": "string", "format": "uuid"}, True, "Any UUID form."
    ),
    "ProjectID": _param(
        "X-Project-Id",
        "header",
        {"type": "string", "pattern": _NAME},
        True,
        'The tenant (with `[auth] mode = "keys"`, X-Auth-Token names it instead).',
    ),
    "Queue": _param("queue", "path", {"type": "string", "pattern": _NAME}, True),
    "Limit": _param("limit", "query", {"type": "integer", "minimum": 1}),
    "Marker": _param("marker", "query", {"type": "string"}),
    "Wait": _param(
        "wait",
        "query",
        {"type": "number", "minimum": 0},
        doc="Long poll (a qgate extension): wait up to this many seconds (`[http] max_wait`).",
    ),
}


def _p(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


_CALL = [_p("ClientID"), _p("ProjectID")]
_QUEUE = [*_CALL, _p("Queue")]


def _bool(name: str) -> dict[str, Any]:
    return _param(name, "query", {"type": "boolean"})


def _id(name: str) -> dict[str, Any]:
    return _param(name, "path", {"type": "string"}, True)


def _body(schema: Any, required: bool = True) -> dict[str, Any]:
    return {"required": required, **_json(schema)}


def _op(op_id: str, summary: str, responses: dict, parameters: list | None = None, **more):
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "responses": {**responses, **_ERRORS, **more.pop("responses_503", {})},
    }
    if parameters:
        operation["parameters"] = parameters
    operation.update(more)
    return operation


def _paths() -> dict[str, Any]:
    queue_path = "/v2/queues/{queue}"
    messages = f"{queue_path}/messages"
    claims = f"{queue_path}/claims"
    subscriptions = f"{queue_path}/subscriptions"
    message_id = [*_QUEUE, _id("message_id")]
    claim_id = [*_QUEUE, _id("claim_id")]
    subscription_id = [*_QUEUE, _id("subscription_id")]
    return {
        "/": {
            "get": _op(
                "getVersions", "The API versions", _ok("300", "The versions", {"type": "object"})
            )
        },
        "/v2": {
            "get": _op(
                "getHome",
                "The JSON Home document of the API",
                {
                    "200": {
                        "description": "The home document",
                        "content": {
                            "application/json-home": {"schema": {"type": "object"}},
                            JSON: {"schema": {"type": "object"}},
                        },
                    }
                },
                [_p("ClientID")],
            )
        },
        "/v2/openapi.json": {
            "get": _op(
                "getOpenAPI",
                "This document",
                _ok("200", "The OpenAPI document", {"type": "object"}),
            )
        },
        "/v2/ping": {
            "get": _op("ping", "Whether storage answers", _ok("204", "Storage answers")),
            "head": _op("pingHead", "Whether storage answers", _ok("204", "Storage answers")),
        },
        "/v2/health": {
            "get": _op(
                "health",
                "Storage health",
                _ok("200", "Storage answers", _ref("Health")),
                # Set after the errors: a 503 here is the health document, not an error.
                responses_503=_ok("503", "Storage does not answer", _ref("Health")),
            )
        },
        "/v2/queues": {
            "get": _op(
                "listQueues",
                "The tenant's queues by name",
                _ok(
                    "200",
                    "A page of queues",
                    {
                        "type": "object",
                        "required": ["queues", "links"],
                        "properties": {
                            "queues": {"type": "array", "items": _ref("Queue")},
                            "links": _ref("Links"),
                            "count": {"type": "integer"},
                        },
                    },
                ),
                [*_CALL, _p("Limit"), _p("Marker"), _bool("detailed"), _bool("with_count")],
            )
        },
        queue_path: {
            "put": _op(
                "createQueue",
                "Create a queue (its metadata optional)",
                {**_ok("201", "Created"), **_ok("204", "It existed")},
                _QUEUE,
                requestBody=_body({"type": "object"}, required=False),
            ),
            "get": _op(
                "getQueue",
                "The queue's metadata (defaults for a queue never created)",
                _ok("200", "Its metadata", _ref("QueueMetadata")),
                _QUEUE,
            ),
            "head": _op("queueExists", "Whether the queue exists", _ok("204", "It exists"), _QUEUE),
            "patch": _op(
                "updateQueue",
                "Change the queue's metadata (JSON Patch)",
                _ok("200", "The new metadata", _ref("QueueMetadata")),
                _QUEUE,
                requestBody={
                    "required": True,
                    "content": {
                        "application/openstack-messaging-v2.0-json-patch": {
                            "schema": {"type": "array", "items": {"type": "object"}}
                        }
                    },
                },
            ),
            "delete": _op("deleteQueue", "Delete the queue", _ok("204", "Deleted"), _QUEUE),
        },
        f"{queue_path}/stats": {
            "get": _op("queueStats", "Message counts", _ok("200", "Counts", _ref("Stats")), _QUEUE)
        },
        f"{queue_path}/schema": {
            "get": _op(
                "getSchema", "The queue's Avro schema", _ok("200", "The schema", {}), _QUEUE
            ),
            "put": _op(
                "putSchema",
                "Set the queue's Avro schema",
                _ok(
                    "200",
                    "Set",
                    {
                        "type": "object",
                        "required": ["fingerprint"],
                        "properties": {"fingerprint": {"type": "string"}},
                    },
                ),
                _QUEUE,
                requestBody=_body({}),
            ),
            "delete": _op("deleteSchema", "Remove the schema", _ok("204", "Removed"), _QUEUE),
        },
        f"{queue_path}/purge": {
            "post": _op(
                "purgeQueue",
                "Delete the queue's messages",
                _ok("204", "Purged"),
                _QUEUE,
                requestBody=_body(
                    {
                        "type": "object",
                        "properties": {
                            "resource_types": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    required=False,
                ),
            )
        },
        f"{queue_path}/share": {
            "post": _op(
                "shareQueue",
                "A pre-signed URL for paths of the queue",
                _ok("200", "Signed", _ref("Share")),
                _QUEUE,
                requestBody=_body(
                    {
                        "type": "object",
                        "properties": {
                            "paths": {"type": "array", "items": {"type": "string"}},
                            "methods": {"type": "array", "items": {"type": "string"}},
                            "expires": {"type": "string"},
                        },
                    }
                ),
            )
        },
        messages: {
            "post": _op(
                "postMessages",
                "Post a batch of messages (stored whole or not at all)",
                _ok(
                    "201",
                    "Stored",
                    {
                        "type": "object",
                        "required": ["resources"],
                        "properties": {"resources": {"type": "array", "items": {"type": "string"}}},
                    },
                ),
                _QUEUE,
                requestBody={
                    "required": True,
                    "content": {
                        JSON: {"schema": _ref("NewMessages")},
                        "avro/binary": {
                            "schema": {"type": "string", "format": "binary"},
                            "description": "An Avro object container file (docs/avro.md)",
                        },
                    },
                },
            ),
            "get": _op(
                "listMessages",
                "Messages after the marker (or those named by ids)",
                {
                    "200": {
                        "description": "A page of messages",
                        "content": {
                            JSON: {"schema": _ref("Messages")},
                            "avro/binary": {"schema": {"type": "string", "format": "binary"}},
                        },
                    }
                },
                [
                    *_QUEUE,
                    _p("Limit"),
                    _p("Marker"),
                    _bool("echo"),
                    _bool("include_claimed"),
                    _bool("include_delayed"),
                    _param("ids", "query", {"type": "string"}, doc="Comma-separated ids"),
                    _p("Wait"),
                ],
            ),
            "delete": _op(
                "deleteMessages",
                "Delete messages by ids, or pop up to `pop` of them",
                {**_ok("200", "The popped messages", _ref("Messages")), **_ok("204", "Deleted")},
                [
                    *_QUEUE,
                    _param("ids", "query", {"type": "string"}),
                    _param("claim_ids", "query", {"type": "string"}),
                    _param("pop", "query", {"type": "integer", "minimum": 1}),
                ],
            ),
        },
        f"{messages}/{{message_id}}": {
            "get": _op(
                "getMessage", "One message", _ok("200", "The message", _ref("Message")), message_id
            ),
            "delete": _op(
                "deleteMessage",
                "Delete one message (with the claim that holds it)",
                _ok("204", "Deleted"),
                [*message_id, _param("claim_id", "query", {"type": "string"})],
            ),
        },
        claims: {
            "post": _op(
                "createClaim",
                "Claim available messages",
                {
                    "201": {
                        "description": "Claimed",
                        "content": {
                            JSON: {"schema": _ref("Messages")},
                            "avro/binary": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **_ok("204", "Nothing to claim"),
                },
                [*_QUEUE, _p("Limit"), _p("Wait")],
                requestBody=_body(_ref("ClaimRequest"), required=False),
            )
        },
        f"{claims}/{{claim_id}}": {
            "get": _op("getClaim", "One claim", _ok("200", "The claim", _ref("Claim")), claim_id),
            "patch": _op(
                "renewClaim",
                "Renew the claim's lease",
                _ok("204", "Renewed"),
                claim_id,
                requestBody=_body(_ref("ClaimRequest")),
            ),
            "delete": _op("releaseClaim", "Release the claim", _ok("204", "Released"), claim_id),
        },
        subscriptions: {
            "post": _op(
                "createSubscription",
                "Subscribe a webhook to the queue",
                _ok(
                    "201",
                    "Subscribed",
                    {
                        "type": "object",
                        "required": ["subscription_id"],
                        "properties": {"subscription_id": {"type": "string"}},
                    },
                ),
                _QUEUE,
                requestBody=_body(_ref("NewSubscription")),
            ),
            "get": _op(
                "listSubscriptions",
                "The queue's subscriptions",
                _ok(
                    "200",
                    "A page of subscriptions",
                    {
                        "type": "object",
                        "required": ["subscriptions", "links"],
                        "properties": {
                            "subscriptions": {"type": "array", "items": _ref("Subscription")},
                            "links": _ref("Links"),
                        },
                    },
                ),
                [*_QUEUE, _p("Limit"), _p("Marker")],
            ),
        },
        f"{subscriptions}/{{subscription_id}}": {
            "get": _op(
                "getSubscription",
                "One subscription",
                _ok("200", "The subscription", _ref("Subscription")),
                subscription_id,
            ),
            "patch": _op(
                "updateSubscription",
                "Change a subscription",
                _ok("204", "Changed"),
                subscription_id,
                requestBody=_body({"type": "object"}),
            ),
            "delete": _op(
                "deleteSubscription",
                "Delete a subscription",
                _ok("204", "Deleted"),
                subscription_id,
            ),
        },
        f"{subscriptions}/{{subscription_id}}/confirm": {
            "put": _op(
                "confirmSubscription",
                "Confirm (or unconfirm) a subscription",
                _ok("204", "Confirmed"),
                subscription_id,
                requestBody=_body(
                    {"type": "object", "properties": {"confirmed": {"type": "boolean"}}}
                ),
            )
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document of the API qgate serves."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qgate: the Zaqar v2 HTTP API",
            "version": "2.0",
            "description": "OpenStack Zaqar v2 as qgate serves it, with long polling "
            "(`wait`), Avro bodies and bounded queues; the differences from Zaqar are in "
            "docs/zaqar-compat.md.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "parameters": _PARAMETERS,
            "responses": {
                "Error": {
                    "description": "A refusal, in Zaqar's shape (no body on a HEAD, nor on a "
                    "406 to a client that takes no JSON)",
                    **_json(_ref("Error")),
                },
                "Unavailable": {
                    "description": "Storage is away; retry after Retry-After seconds (an "
                    "error document, none on ping)",
                    **_json(_ref("Error")),
                },
            },
        },
    }


_DOCUMENT = jsonsafe.dumps(document())


def document_bytes() -> bytes:
    """The document as served (built once)."""
    return bytes(_DOCUMENT)
