"""``qgate queues|status|reload``: the admin operations against a running qgate, through
its admin listener's JSON API (``protocols/admin/api.py``).

    qgate queues list [--limit N]            deepest queues of every tenant
    qgate queues stats TENANT QUEUE
    qgate queues peek TENANT QUEUE [--limit N]
    qgate queues purge TENANT QUEUE
    qgate queues move TENANT DLQ [--to QUEUE] [--limit N]
    qgate status                             version, listeners, storage, workers
    qgate reload                             reload TLS certificates (as SIGHUP)

``--url`` names the admin listener (default: the first ``admin`` listener of the
configuration); ``--key`` or ``QGATE_ADMIN_KEY`` the admin key (auth mode ``keys``).
``--json`` prints the API's document as it came, for scripts; ``--db`` runs the same API
in this process on the configured storage instead (no running qgate needed). Blocking
``urllib``: this is a command-line client, there is no reactor to block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from qgate.gateway.config import Config


class AdminError(Exception):
    """The admin listener refused or could not be reached; the message says why."""


def default_url(config: Config) -> str:
    """``http(s)://host:port`` of the first admin listener of ``config``."""
    for listener in config.listeners:
        if listener.protocol != "admin":
            continue
        fields = listener.endpoint.split(":")
        port = next((f for f in fields[1:] if f.isdigit()), "8899")
        host = "127.0.0.1"
        for f in fields[1:]:
            if f.startswith("interface="):
                host = f.split("=", 1)[1] or host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        scheme = "https" if listener.tls is not None or fields[0] == "ssl" else "http"
        return f"{scheme}://{host}:{port}"
    return "http://127.0.0.1:8899"


def call(url: str, key: str | None, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            problem = json.loads(e.read())
            text = problem.get("description") or problem.get("title")
        except ValueError:
            text = e.reason
        raise AdminError(f"{e.code}: {text}") from None
    except urllib.error.URLError as e:
        raise AdminError(f"cannot reach the admin listener at {url}: {e.reason}") from None


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Add ``queues``, ``status`` and ``reload`` to ``qgate``'s sub-commands; the parsers
    that take ``-c``."""

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", help="admin listener (default: from the configuration)")
        p.add_argument("--key", help="admin key (default: $QGATE_ADMIN_KEY)")
        p.add_argument("--json", action="store_true", help="print JSON, for scripts")
        p.add_argument("--db", action="store_true", help="work on the configured database directly")
        return p

    queues = commands.add_parser("queues", help="queues of a running qgate").add_subparsers(
        dest="queues", required=True
    )
    client(queues.add_parser("list", help="deepest queues")).add_argument(
        "--limit", type=int, default=50
    )
    for name in ("stats", "purge"):
        p = client(queues.add_parser(name, help=f"{name} one queue"))
        p.add_argument("tenant")
        p.add_argument("queue")
    peek = client(queues.add_parser("peek", help="look at messages without taking them"))
    peek.add_argument("tenant")
    peek.add_argument("queue")
    peek.add_argument("--limit", type=int, default=10)
    move = client(queues.add_parser("move", help="move messages (a DLQ back to its source)"))
    move.add_argument("tenant")
    move.add_argument("queue", help="the queue to take messages from (a dead-letter queue)")
    move.add_argument("--to", help="target queue (default: the one queue dead-lettering here)")
    move.add_argument("--limit", type=int, default=1000)
    status = client(commands.add_parser("status", help="workers, listeners, storage, version"))
    reload = client(commands.add_parser("reload", help="reload TLS certificates (as SIGHUP)"))
    return [*queues.choices.values(), status, reload]


def _q(tenant: str, queue: str) -> str:
    return f"/api/queues/{quote(tenant, safe='')}/{quote(queue, safe='')}"


#: ``(method, path, body) -> document``: one admin API call, over HTTP or in-process.
Ask = Callable[..., Any]


def run(args: argparse.Namespace, config: Config) -> int:
    """Run one client command; 0 on success, 1 with the reason on stderr."""
    if args.db:
        return _on_database(args, config)
    url = args.url or default_url(config)
    key = args.key or os.environ.get("QGATE_ADMIN_KEY")
    return _show(args, lambda m, p, b=None: call(url, key, m, p, b))


def _show(args: argparse.Namespace, ask: Ask) -> int:
    try:
        document, text = _run(args, ask)
    except AdminError as e:
        print(f"qgate: {e}", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2) if args.json else text)
    return 0


def _on_database(args: argparse.Namespace, config: Config) -> int:
    """``--db``: the same API in this process, on the configured storage (no running
    qgate needed; its transient queues are not there to see)."""
    from twisted.internet import task, threads
    from twisted.internet.defer import Deferred, ensureDeferred

    from qgate.core.service import QueueService
    from qgate.gateway.app import make_storage, upgrade_schema
    from qgate.gateway.metrics import PrometheusMetrics
    from qgate.gateway.status import GatewayStatus
    from qgate.protocols.admin.api import AdminAPI, Call
    from qgate.protocols.context import ProtocolContext
    from qgate.storage.memory import MemoryStorage

    out = {"code": 0}

    async def main(reactor: Any) -> None:
        await upgrade_schema(config)
        store = make_storage(reactor, config)
        service = QueueService(reactor, store, MemoryStorage(), limits=config.limits)
        status = GatewayStatus(reactor, service, store, PrometheusMetrics())
        api = AdminAPI(
            ProtocolContext(reactor, service, None, config.settings("admin"), status=status)  # type: ignore[arg-type]
        )

        async def one(method: str, path: str, body: Any) -> Any:
            target, _, query = path.partition("?")
            segments = [s for s in target.split("/") if s][1:]  # without "api"
            args_ = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            raw = b"" if body is None else json.dumps(body).encode()
            answer = await api.answer(Call(method, [unquote(s) for s in segments], args_, raw))
            document = json.loads(answer.body or b"null")
            if answer.status >= 400:
                raise AdminError(f"{answer.status}: {document.get('description')}")
            return document

        def ask(method: str, path: str, body: Any = None) -> Any:
            return threads.blockingCallFromThread(
                reactor, lambda: Deferred.fromCoroutine(one(method, path, body))
            )

        try:
            out["code"] = await threads.deferToThread(_show, args, ask)
        finally:
            await service.stop()

    try:
        task.react(lambda reactor: ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code:
            return int(e.code)
    return out["code"]


def _run(args: argparse.Namespace, ask: Ask) -> tuple[Any, str]:
    if args.command == "status":
        doc = ask("GET", "/api/status")
        lines = [f"qgate {doc['version']} pid {doc['pid']} workers {doc['workers']}"]
        storage = doc["storage"]
        lines.append(f"storage {storage['kind']}: {'ok' if storage['answers'] else 'DOWN'}")
        for item in doc["listeners"]:
            state = "up" if item["up"] else "DOWN"
            tls = " tls" if item["tls"] else ""
            lines.append(f"  {item['protocol']:6} {item['endpoint']} {state}{tls}")
            for cert in item["certificates"]:
                lines.append(f"         {cert['subject']}: {cert['days_left']} days left")
        return doc, "\n".join(lines)
    if args.command == "reload":
        doc = ask("POST", "/api/reload")
        lines = [
            f"{item['listener']}: {'reloaded' if item['reloaded'] else item.get('error')}"
            for item in doc["listeners"]
        ]
        return doc, "\n".join(lines) or "no TLS listener"
    action = args.queues
    if action == "list":
        doc = ask("GET", f"/api/queues?limit={args.limit}")
        lines = [f"{'tenant':20} {'queue':30} {'avail':>7} {'claimed':>7} {'delayed':>7}"]
        for q in doc["queues"]:
            lines.append(
                f"{q['tenant']:20} {q['name']:30} {q['available']:>7} {q['claimed']:>7} "
                f"{q['delayed']:>7}"
            )
        rest = doc["others"]
        if rest["queues"]:
            lines.append(f"... {rest['queues']} more queues, {rest['total']} messages")
        return doc, "\n".join(lines)
    path = _q(args.tenant, args.queue)
    if action == "stats":
        doc = ask("GET", path)
        keys = ("total", "available", "claimed", "delayed", "dead_letter_queue")
        return doc, "\n".join(f"{k}: {doc[k]}" for k in keys)
    if action == "peek":
        doc = ask("GET", f"{path}/messages?limit={args.limit}")
        lines = []
        for m in doc["messages"]:
            shown = m["body"].get("text", m["body"].get("hex", ""))
            lines.append(f"{m['id']:>8} {m['state']:9} claims={m['claim_count']} {shown[:60]!r}")
        return doc, "\n".join(lines) or "(no messages)"
    if action == "purge":
        doc = ask("POST", f"{path}/purge")
        return doc, f"purged {doc['purged']} messages"
    body: dict[str, Any] = {"limit": args.limit}
    if args.to:
        body["to"] = args.to
    doc = ask("POST", f"{path}/move", body)
    return doc, f"moved {doc['moved']} messages to {doc['to']}"
