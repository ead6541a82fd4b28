"""Fuzzing the Zaqar HTTP API in memory (StubTreq over a memory-only service): any request,
however malformed its path, query, headers or body, is answered without a 500; a refusal
is a JSON ``{"title", "description"}`` document and changes nothing stored."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import example, given
from hypothesis import strategies as st

from qgate.core import jsonsafe
from qgate.core.model import NewMessage
from qgate.core.service import QueueService
from qgate.protocols.http import build_resource, wire
from qgate.protocols.http.errors import HTTPError
from tests.support.core import make_clock, memory_service
from tests.support.deferreds import fired
from tests.support.fuzzing import FUZZ_TIMEOUT, damaged_files, fuzz
from tests.support.http import CLIENT, Api, Reply, make_ctx

pytestmark = FUZZ_TIMEOUT

TENANT = "p1"

# -- what requests are made of ---------------------------------------------------------------

_names = st.sampled_from(["q1", "q2", "fresh", "a" * 64, "a" * 65, "bad name", "%00", "..", ""])
_ids = st.sampled_from(
    ["1", "0", "-1", "999", "1" * 30, "abc", "%ff", "", "%C2%B2", "%D9%A1"]
) | st.text(max_size=6)
_templates = st.sampled_from(
    ["/", "/v2", "/v2/ping", "/v2/health", "/v2/queues", "/v2/queues/{q}", "/v2/queues/{q}/stats",
     "/v2/queues/{q}/schema", "/v2/queues/{q}/purge", "/v2/queues/{q}/share",
     "/v2/queues/{q}/messages", "/v2/queues/{q}/messages/{id}", "/v2/queues/{q}/claims",
     "/v2/queues/{q}/claims/{id}", "/v2/queues/{q}/subscriptions",
     "/v2/queues/{q}/subscriptions/{id}", "/v2/queues/{q}/subscriptions/{id}/confirm",
     "/v2/nothing", "/v3"]
)  # fmt: skip
_paths = st.builds(
    lambda t, q, i: t.replace("{q}", quote(q, safe="%")).replace("{id}", quote(i, safe="%")),
    _templates,
    _names,
    _ids,
)
_PARAMS = [
    "limit", "marker", "detailed", "echo", "include_claimed", "include_delayed", "ids", "pop",
    "claim_id", "claim_ids", "ttl", "grace", "wait", "delay", "with_count", "name",
]  # fmt: skip
_param_values = st.sampled_from(
    ["", "0", "1", "5", "-1", "1.5", "true", "false", "True", "yes", "1e309", "nan", "inf",
     "1" * 4400, "9" * 20, "1,2", ",", "abc", "\u00e9", "\u00b2", "\u0661", "%ff", "60",
     "43200", "1209601"]
) | st.text(max_size=6)  # fmt: skip
# At most 3 parameters: a request line over Twisted's 16 kB line limit never reaches qgate.
_queries = st.lists(st.tuples(st.sampled_from(_PARAMS), _param_values), max_size=3).map(
    lambda items: "?" + urlencode(items) if items else ""
)
_header_values: dict[str, Any] = {
    "Accept": st.sampled_from(
        [
            "application/json",
            "*/*",
            "text/html",
            "avro/binary",
            "application/json;q=0",
            "avro/binary;q=abc",
            ";",
            "a/b, */*;q=0.5",
            "application/json-home",
            "*",
            "",
        ]
    ),
    "Content-Type": st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "avro/binary",
            "application/openstack-messaging-v2.0-json-patch",
            "application/vnd.x+json",
            ";",
            "",
        ]
    ),
    "Client-ID": st.sampled_from([CLIENT, "not-a-uuid", "", "3381af922b9e11e3b19171861300734c"]),
    "X-Project-ID": st.sampled_from([TENANT, "", "other", "x" * 300, "bad tenant"]),
    "Content-Length": st.sampled_from(["0", "-1", "abc"]),
}
_headers = st.fixed_dictionaries(
    {}, optional={name: values for name, values in _header_values.items()}
)

#: JSON values of every kind, deep enough to reach the checks of nested documents.
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = ["messages", "body", "ttl", "delay", "ttl", "grace", "limit", "subscriber", "options",
         "op", "path", "value", "_max_messages_post_size", "_default_message_ttl",
         "_default_message_delay", "_dead_letter_queue", "_max_claim_count", "_flavor",
         "methods", "paths", "expires", "resources", "metadata"]  # fmt: skip
_zaqarish = st.recursive(
    _json,
    lambda inner: (
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)
        | st.lists(st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3), max_size=3)
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    st.none(),
    _zaqarish.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [b"", b"{", b"[]", b"null", b'{"messages": []}', b'"\\ud800"', b"NaN", b"[1e400]",
         b"\xff\xfe", b'{"a": 1, "a": 2}', b"[" * 2000, b"1" * 5000, b'{"messages": [{"body": 1}]}']
    ),
    st.binary(max_size=40),
)  # fmt: skip
_methods = st.sampled_from(["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"])


# -- the world each example starts from ------------------------------------------------------


def seeded() -> tuple[QueueService, Api]:
    """A service with queue q1 (three messages, one of them claimed) and an empty q2."""
    service = memory_service(make_clock())
    fired(service.create_queue(TENANT, "q2"))
    fired(service.publish(TENANT, "q1", [NewMessage(b'{"n": %d}' % i) for i in range(3)]))
    fired(service.claim(TENANT, "q1", limit=1, ttl=60))
    return service, Api(build_resource(make_ctx(service)), project=TENANT)


def snapshot(service: QueueService) -> Any:
    """Everything a request could change: queues, their settings, messages and claims,
    and their subscriptions (only whole-value reprs, so any change shows)."""
    state = []
    for queue in fired(service.list_queues(TENANT, limit=100)):
        messages = fired(
            service.observe(
                TENANT, queue.name, limit=100, include_claimed=True, include_delayed=True
            )
        )
        subscriptions = fired(service.list_subscriptions(TENANT, queue.name, limit=100))
        state.append((repr(queue), [repr(m) for m in messages], [repr(s) for s in subscriptions]))
    return state


def answer(api: Api, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
    sent: dict[str, str | None] = {"Client-ID": None, "X-Project-ID": None, **headers}
    reply: Reply = fired(
        api.start(method, path, data=body, headers=sent, project=None, client=None)
    )
    return reply


def check_reply(reply: Reply, method: str) -> None:
    """No 500, and every error with a body is a Zaqar error document."""
    assert reply.status < 500, (reply.status, reply.body)
    if reply.status >= 400 and reply.body and method != "HEAD":
        assert (reply.header("content-type") or "").startswith("application/json"), reply
        document = reply.json
        assert isinstance(document, dict), document
        assert isinstance(document["title"], str) and isinstance(document["description"], str)


@fuzz(400)
@given(method=_methods, path=_paths, query=_queries, headers=_headers, body=_bodies)
@example(method="GET", path="/v2/queues/q1/messages", query="?limit=" + "1" * 4400,
         headers={"Client-ID": CLIENT, "X-Project-ID": TENANT}, body=None)  # fmt: skip
def test_any_request_is_answered_without_a_500_and_a_refusal_changes_nothing(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes | None
) -> None:
    service, api = seeded()
    before = snapshot(service)
    reply = answer(api, method, path + query, headers, body)
    check_reply(reply, method)
    if reply.status >= 400:
        assert snapshot(service) == before, (reply.status, reply.body)


_entries = st.one_of(
    st.fixed_dictionaries({"body": _json}, optional={"ttl": _json, "delay": _json}),
    st.fixed_dictionaries({"body": _json, "ttl": st.integers(60, 600)}),
    _zaqarish,
)


@fuzz(200)
@given(entries=st.lists(_entries, min_size=1, max_size=6), queue=st.sampled_from(["q1", "q2"]))
@example(entries=[{"body": 1}, {"body": 2, "ttl": 59}], queue="q1")
@example(entries=[{"body": 1}, {"body": "\ud800"}], queue="q2")
def test_a_refused_batch_stores_none_of_its_messages(entries: list[Any], queue: str) -> None:
    service, api = seeded()
    before = snapshot(service)
    try:
        data = jsonsafe.dumps({"messages": entries})
    except jsonsafe.JSONValueError:
        data = json.dumps({"messages": entries}).encode()  # lone surrogates, escaped
    headers = {"Client-ID": CLIENT, "X-Project-ID": TENANT, "Content-Type": "application/json"}
    reply = answer(api, "POST", f"/v2/queues/{queue}/messages", headers, data)
    check_reply(reply, "POST")
    if reply.status == 201:
        assert len(reply.json["resources"]) == len(entries)
    else:
        assert reply.status == 400, reply.body
        assert snapshot(service) == before


@fuzz(300)
@given(data=st.binary(max_size=60) | _bodies.filter(lambda b: b is not None))
def test_json_bodies_parse_or_are_a_400(data: bytes) -> None:
    try:
        wire.parse_json(data)
    except HTTPError as e:
        assert e.status == 400
        assert e.document() is not None


@fuzz(300)
@given(text=st.text(max_size=40) | st.binary(max_size=40))
@example(text="[" * 100_000)
@example(text=b'"\xed\xa0\x80"')
def test_strict_json_loads_values_dumps_accepts_or_raises_json_value_error(
    text: str | bytes,
) -> None:
    try:
        value = jsonsafe.loads(text)
    except jsonsafe.JSONValueError:
        return
    assert jsonsafe.loads(jsonsafe.dumps(value)) == value


@fuzz(100)
@given(data=damaged_files(), queue=st.sampled_from(["q1", "q2", "fresh"]))
def test_an_avro_container_post_is_stored_whole_or_refused_with_nothing_stored(
    data: bytes, queue: str
) -> None:
    service, api = seeded()
    before = snapshot(service)
    headers = {"Client-ID": CLIENT, "X-Project-ID": TENANT, "Content-Type": "avro/binary"}
    reply = answer(api, "POST", f"/v2/queues/{queue}/messages?ttl=300", headers, data)
    check_reply(reply, "POST")
    if reply.status != 201:
        assert 400 <= reply.status < 500, reply.body
        assert snapshot(service) == before
