"""Avro benchmark: container-file posts vs JSON batches, and Avro RPC publish calls.

    python -m bench.avro [--seconds 5] [--clients 4]

Runs ``qgate serve`` (SQLite, one process) and drives it over HTTP from client threads in
this process, all in the same run and against durable (SQLite) queues:

(a) messages/s posting the same 100 records as a JSON batch (the most the HTTP API takes
    in one post: the core's ``max_batch``, 100; Zaqar's own limit would be 20) and as a
    100-record Avro object container file (codec ``null`` and ``deflate``), to one queue
    with a schema; JSON to a queue without a schema as the baseline of the checks' cost;
(b) Avro RPC ``publish`` calls/s through apache avro's Requestor + HTTPTransceiver, one
    message per call, to the queue with a schema.

Both the client and the server are Python on the same machine: compare rows, not absolute
numbers across machines.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from bench.http import Qgate, run_clients

HEADERS = {"Client-ID": "3381af92-2b9e-11e3-b191-71861300734c", "X-Project-Id": "bench"}
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Reading",
    "namespace": "bench",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "at", "type": "long"},
        {"name": "value", "type": "double"},
        {"name": "unit", "type": {"type": "enum", "name": "Unit", "symbols": ["C", "F", "K"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
BATCH = 100


def records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "sensor": f"sensor-{rng.randrange(1000):04d}",
            "at": 1_700_000_000_000 + i,
            "value": round(rng.uniform(-20, 40), 3),
            "unit": "C",
            "tags": ["roof", "north"],
            "note": None if i % 3 else "checked",
        }
        for i in range(n)
    ]


def container(rows: list[dict[str, Any]], codec: str) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(SCHEMA), rows, codec=codec)
    return out.getvalue()


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes, content_type: str
) -> tuple[int, bytes]:
    conn.request(method, path, body, {**HEADERS, "Content-Type": content_type})
    response = conn.getresponse()
    return response.status, response.read()


def poster(port: int, path: str, body: bytes, content_type: str) -> Callable[[], Callable[[], int]]:
    def make() -> Callable[[], int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def step() -> int:
            status, raw = request(conn, "POST", path, body, content_type)
            if status != 201:
                raise RuntimeError(f"POST {path}: {status} {raw[:200]!r}")
            return BATCH

        return step

    return make


def rpc_publisher(port: int, queue: str = "typed") -> Callable[[], Callable[[], int]]:
    import avro.ipc
    import avro.protocol

    from qgate.protocols.avro import qgate_protocol

    protocol = avro.protocol.parse(qgate_protocol().text)
    body = json.dumps(records(1)[0]).encode()

    class Transceiver(avro.ipc.HTTPTransceiver):  # type: ignore[misc]
        def write_framed_message(self, message: bytes) -> None:
            writer = avro.ipc.FramedWriter(io.BytesIO())
            writer.write_framed_message(message)
            headers = {"Content-Type": "avro/binary", "X-Project-Id": HEADERS["X-Project-Id"]}
            self.conn.request("POST", "/avro", writer.writer.getvalue(), headers)

    def make() -> Callable[[], int]:
        requestor = avro.ipc.Requestor(protocol, Transceiver("127.0.0.1", port, "/avro"))
        message = {
            "body": body,
            "contentType": "application/json",
            "headers": {},
            "ttl": 600.0,
            "delay": None,
            "priority": None,
        }

        def step() -> int:
            requestor.request("publish", {"queue": queue, "messages": [message]})
            return 1

        return step

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per scenario")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qgate-bench-avro-"))
    rows = records(BATCH)
    json_batch = json.dumps({"messages": [{"body": r, "ttl": 600} for r in rows]}).encode()
    files = {codec: container(rows, codec) for codec in ("null", "deflate")}
    json_type, avro_type = "application/json", "avro/binary"
    scenarios = [
        ("JSON batch of 100, queue with schema", "typed", json_batch, json_type),
        ("container file of 100 (null), queue with schema", "typed", files["null"], avro_type),
        (
            "container file of 100 (deflate), queue with schema",
            "typed",
            files["deflate"],
            avro_type,
        ),
        ("JSON batch of 100, queue without schema", "plain", json_batch, json_type),
    ]

    print(f"\n## Avro vs JSON over HTTP, SQLite, {args.clients} client threads\n")
    print(f"  {'scenario':<62} {'result':>14}  note", flush=True)

    def row(name: str, value: str, note: str = "") -> None:
        print(f"  {name:<62} {value:>14}  {note}", flush=True)

    server = Qgate(f"sqlite:///{work}/bench.db", work)
    try:
        setup = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for queue, metadata in (("typed", {"_schema": SCHEMA}), ("plain", {})):
            body = json.dumps(metadata).encode()
            status, raw = request(setup, "PUT", f"/v2/queues/{queue}", body, json_type)
            assert status in (201, 204), raw
        sizes = f"JSON {len(json_batch):,} B, null {len(files['null']):,} B, "
        sizes += f"deflate {len(files['deflate']):,} B per 100 records"
        row("body sizes", "", sizes)
        # Rounds interleave the scenarios, so the table's growth weighs on each alike.
        rates: dict[str, list[float]] = {label: [] for label, *_ in scenarios}
        rates["rpc"] = []
        slice_ = args.seconds / args.rounds
        for _ in range(args.rounds):
            for label, queue, body, ctype in scenarios:
                make = poster(server.port, f"/v2/queues/{queue}/messages?ttl=600", body, ctype)
                rates[label].append(run_clients(slice_, args.clients, make))
            rates["rpc"].append(run_clients(slice_, args.clients, rpc_publisher(server.port)))
        base = statistics.mean(rates[scenarios[0][0]])
        for label, *_ in scenarios:
            rate = statistics.mean(rates[label])
            note = f"{rate / base:.2f}x the JSON batch" if label != scenarios[0][0] else ""
            row(label, f"{rate:,.0f} msg/s", note)
        rate = statistics.mean(rates["rpc"])
        row("Avro RPC publish, 1 JSON message per call, queue with schema", f"{rate:,.0f} calls/s")
        status, raw = request(setup, "GET", "/v2/queues/typed/stats", b"", json_type)
        total = json.loads(raw)["messages"]["total"]
        row("messages in the queue with schema afterwards", f"{total:,}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
