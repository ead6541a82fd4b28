"""``[log]``: one JSON object per line, levels per subsystem, no secrets in a line."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogPublisher

from qgate.gateway.config import ConfigError, parse
from qgate.gateway.logs import observer


def logged(
    format: str, level: str = "info", levels: dict | None = None
) -> tuple[io.StringIO, LogPublisher]:
    out = io.StringIO()
    publisher = LogPublisher(observer(out, format, level, levels))
    return out, publisher


def test_json_logs_are_one_object_per_line_with_the_events_fields():
    out, publisher = logged("json")
    log = Logger(namespace="qgate.gateway.app", observer=publisher)
    log.info("{protocol} listening on {port}", protocol="http", port=8888)
    log.warn("second")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == "http listening on 8888"
    assert first["level"] == "info" and first["namespace"] == "qgate.gateway.app"
    assert first["protocol"] == "http" and first["port"] == 8888
    assert first["time"].endswith("+00:00")
    assert json.loads(lines[1])["level"] == "warn"


def test_a_logged_failure_carries_its_traceback():
    out, publisher = logged("json")
    log = Logger(namespace="qgate.x", observer=publisher)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.failure("it failed")
    record = json.loads(out.getvalue())
    assert record["level"] == "critical" and "RuntimeError: boom" in record["failure"]


def test_levels_per_subsystem_quiet_or_open_one_namespace():
    out, publisher = logged("json", "info", {"qgate.access": "warn", "qgate.storage": "debug"})
    Logger(namespace="qgate.access.http", observer=publisher).info("GET /")
    Logger(namespace="qgate.storage.sql", observer=publisher).debug("detail")
    Logger(namespace="qgate.core", observer=publisher).debug("hidden")
    messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
    assert messages == ["detail"]


def test_fields_named_like_secrets_never_reach_a_json_line():
    out, publisher = logged("json")
    Logger(namespace="qgate.x", observer=publisher).info(
        "request", token="qg_abc_secret", body=b"payload", authorization="Bearer x", path="/v2"
    )
    record = json.loads(out.getvalue())
    assert "token" not in record and "body" not in record and "authorization" not in record
    assert "qg_abc_secret" not in out.getvalue() and record["path"] == "/v2"


def test_text_logs_stay_twisteds_lines():
    out, publisher = logged("text")
    Logger(namespace="qgate.x", observer=publisher).info("hello {who}", who="ops")
    assert out.getvalue().rstrip().endswith("hello ops")


def test_the_log_table_is_checked():
    assert (
        parse({"log": {"format": "json", "levels": {"qgate.access": "warn"}}}).log.format == "json"
    )
    for bad in ({"format": "xml"}, {"level": "loud"}, {"levels": {"qgate": "loud"}}, {"colour": 1}):
        try:
            parse({"log": bad})
        except ConfigError as e:
            assert str(e).startswith("log.")
        else:
            raise AssertionError(f"{bad} was accepted")


class _Request:
    """What the access logger reads of a twisted.web request."""

    method = b"GET"
    path = b"/v2/queues/q/messages"
    uri = b"/v2/queues/q/messages?claim_id=abc&signature=s3cr3t"
    code = 200
    sentLength = 12

    def getClientAddress(self):  # noqa: N802 - twisted.web's name
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 5000)


def test_access_lines_show_the_path_without_its_query_and_can_be_switched_off():
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from qgate.gateway.access import configure

    events: list[dict] = []
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(events.append)
    try:
        on, off = Site(Resource()), Site(Resource())
        configure(on, "http", True)
        configure(off, "stomp", False)
        on.log(_Request())
        off.log(_Request())
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if str(e.get("log_namespace", "")).startswith("qgate.access")]
    assert [e["log_namespace"] for e in lines] == ["qgate.access.http"]
    [line] = lines
    assert line["path"] == "/v2/queues/q/messages" and line["status"] == 200
    assert "s3cr3t" not in repr(line)


def test_the_cli_finds_the_admin_listener_in_the_configuration():
    from qgate.gateway.admin_cli import default_url

    config = parse({"listeners": [{"protocol": "admin", "endpoint": "tcp:9100:interface=0.0.0.0"}]})
    assert default_url(config) == "http://127.0.0.1:9100"
    config = parse({"listeners": [{"protocol": "http", "endpoint": "tcp:1"}]})
    assert default_url(config) == "http://127.0.0.1:8899"
