"""``qgate``: serve, migrate the schema, manage tenants and API keys.

    qgate serve [-c conf/qgate.toml] [--workers N]
    qgate db upgrade [-c FILE]
    qgate tenant create NAME | qgate tenant list
    qgate tenant set-quota TENANT QUOTA VALUE|default | qgate tenant quotas
    qgate key create TENANT [--queues 'jobs.*,logs'] [--ops publish,consume] | qgate key revoke KEY
    qgate admin-key create
    qgate queues list|stats|peek|purge|move ... | qgate status | qgate reload  (admin_cli)

This module is the entry point: the only place that imports the global reactor.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner

from qgate.core.admin import ADMIN_TENANT
from qgate.core.auth import TenantAdmin
from qgate.core.errors import QGateError
from qgate.core.quotas import QUOTA_KEYS
from qgate.gateway import admin_cli, logs
from qgate.gateway.app import Gateway, make_storage, upgrade_now_blocking, upgrade_schema
from qgate.gateway.config import Config, ConfigError, ServerConfig, load


def start_logging(config: Config, level: str | None) -> None:
    """``[log]`` (``--log-level`` overrides its least level), to stdout: the hub's and
    every worker's."""
    log = config.log
    observer = logs.observer(sys.stdout, log.format, level or log.level, log.levels)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def serve(config: Config, worker_args: Sequence[str] = ()) -> int:
    """Run the gateway until SIGTERM/SIGINT; then stop accepting, answer, commit, exit 0.

    With ``[server] workers`` above 1, this process is the hub of that many workers
    (``gateway/hub.py``), started with ``worker_args``; with 1, it serves by itself."""
    from twisted.internet import reactor

    count = config.server.worker_count

    outcome = {"code": 0}

    def start() -> None:
        d = upgrade_schema(config) if config.storage.auto_upgrade else defer.succeed(None)

        def go(_: Any) -> Any:
            gateway: Gateway
            if count > 1:
                from qgate.gateway.hub import Hub

                gateway = Hub(reactor, config, count, worker_args)
            else:
                gateway = Gateway(reactor, config)
            reactor.addSystemEventTrigger("before", "shutdown", gateway.stopService)
            # SIGHUP: load TLS certificates again (open connections keep theirs).
            hup = reactor.callFromThread  # type: ignore[attr-defined]
            signal.signal(signal.SIGHUP, lambda *_: hup(gateway.reload))
            return defer.Deferred.fromCoroutine(gateway.listen())

        def failed(failure: Any) -> None:
            outcome["code"] = 1
            print(f"qgate: cannot start: {failure.getErrorMessage()}", file=sys.stderr)
            reactor.stop()

        d.addCallback(go).addErrback(failed)

    reactor.callWhenRunning(start)
    # SIGTERM and SIGINT both stop the reactor cleanly (Twisted installs the handlers).
    reactor.run()  # type: ignore[attr-defined]
    if outcome["code"]:
        # A start that failed half-way (the storage's writer and read threads started,
        # the gateway around them not built) must still end the process, not leave it
        # waiting on those threads: nothing was accepted, so nothing is lost.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(outcome["code"])
    return outcome["code"]


def _admin(config: Config, action: Callable[[TenantAdmin], Coroutine[Any, Any, Any]]) -> int:
    """Run one admin action against the configured storage, then close it."""
    result = {"code": 0}

    async def main(reactor: Any) -> None:
        await upgrade_schema(config)
        store = make_storage(reactor, config)
        try:
            await action(TenantAdmin(store, reactor))  # type: ignore[arg-type]
        except QGateError as e:
            print(f"qgate: {e}", file=sys.stderr)
            result["code"] = 1
        finally:
            await store.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code:
            return int(e.code)
    return result["code"]


def _worker_count(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f'"auto" or a whole number from 1 to 256, not {text!r}')
    return count


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


async def _set_quota(admin: TenantAdmin, tenant: str, quota: str, text: str) -> None:
    value: float | None = None
    if text != "default":
        try:
            value = float(text)
        except ValueError:
            raise QGateError(f"{quota}: {text!r} is not a number (or 'default')") from None
    await admin.set_quota(tenant, quota, value)
    shown = "the default" if value is None else f"{value:g}"
    print(f"tenant {tenant}: {quota} is {shown}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qgate", description="qgate message-queue gateway")
    parser.add_argument(
        "-c", "--config", help="TOML configuration file (default: built-in embedded defaults)"
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warn", "error"],
        help="least level logged (default: [log] level)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway")
    serve_cmd.add_argument("-c", "--config", dest="config_sub", help=argparse.SUPPRESS)
    serve_cmd.add_argument(
        "--workers",
        type=_worker_count,
        help='processes serving the listeners (default: [server] workers, "auto": one a core)',
    )
    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="apply pending migrations")
    tenant = commands.add_parser("tenant", help="tenants").add_subparsers(
        dest="tenant", required=True
    )
    tenant.add_parser("create", help="create a tenant").add_argument("name")
    tenant.add_parser("list", help="list tenants")
    set_quota = tenant.add_parser(
        "set-quota", help="override one of a tenant's [quotas] (0: unlimited; default: unset)"
    )
    set_quota.add_argument("name")
    set_quota.add_argument("quota", choices=QUOTA_KEYS)
    set_quota.add_argument("value")
    tenant.add_parser("quotas", help="list the quotas set per tenant")
    key = commands.add_parser("key", help="API keys").add_subparsers(dest="key", required=True)
    key_create = key.add_parser("create", help="create an API key (printed once)")
    key_create.add_argument("tenant")
    key_create.add_argument(
        "--queues", default="", help="comma-separated queue-name globs the key may use"
    )
    key_create.add_argument(
        "--ops", default="", help="comma-separated operations: publish, consume, manage"
    )
    key.add_parser("revoke", help="revoke an API key (by token or key id)").add_argument("key")
    admin_key = commands.add_parser("admin-key", help="admin listener keys").add_subparsers(
        dest="admin_key", required=True
    )
    admin_key.add_parser("create", help="create an admin key (printed once)")
    clients = admin_cli.add_commands(commands)
    for sub in (db, tenant, key, admin_key):
        for choice in sub.choices.values():
            choice.add_argument("-c", "--config", dest="config_sub", help=argparse.SUPPRESS)
    for choice in clients:
        choice.add_argument("-c", "--config", dest="config_sub", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        config = load(getattr(args, "config_sub", None) or args.config)
    except ConfigError as e:
        print(f"qgate: configuration error: {e}", file=sys.stderr)
        return 2

    if args.command == "serve":
        if args.workers is not None:
            config = replace(config, server=ServerConfig(workers=args.workers))
        start_logging(config, args.log_level)
        worker_args = ["--log-level", args.log_level] if args.log_level else []
        path = getattr(args, "config_sub", None) or args.config
        if path:
            worker_args += ["-c", path]
        return serve(config, worker_args)
    if args.command in ("queues", "status", "reload"):
        return admin_cli.run(args, config)
    if args.command == "admin-key":

        async def make_admin_key(admin: TenantAdmin) -> None:
            await admin.create_tenant(ADMIN_TENANT)
            print(await admin.create_key(ADMIN_TENANT))

        return _admin(config, make_admin_key)
    if args.command == "db":
        try:
            upgrade_now_blocking(config)
        except Exception as e:  # noqa: BLE001 - report any database error and exit non-zero
            print(f"qgate: db upgrade failed: {e}", file=sys.stderr)
            return 1
        print("database schema is up to date")
        return 0
    if args.command == "tenant" and args.tenant == "create":

        async def create(admin: TenantAdmin) -> None:
            created = await admin.create_tenant(args.name)
            print(f"tenant {args.name} {'created' if created else 'already exists'}")

        return _admin(config, create)
    if args.command == "tenant" and args.tenant == "set-quota":
        return _admin(config, lambda admin: _set_quota(admin, args.name, args.quota, args.value))
    if args.command == "tenant" and args.tenant == "quotas":

        async def quotas(admin: TenantAdmin) -> None:
            for tenant, values in sorted((await admin.quotas()).items()):
                for quota, value in sorted(values.items()):
                    print(f"{tenant} {quota} {value:g}")

        return _admin(config, quotas)
    if args.command == "tenant":

        async def listing(admin: TenantAdmin) -> None:
            for t in await admin.list_tenants():
                print(t.name)

        return _admin(config, listing)
    if args.key == "create":

        async def make_key(admin: TenantAdmin) -> None:
            print(await admin.create_key(args.tenant, _csv(args.queues), _csv(args.ops)))

        return _admin(config, make_key)

    async def revoke(admin: TenantAdmin) -> None:
        if not await admin.revoke_key(args.key):
            raise QGateError("no such live key")
        print("key revoked")

    return _admin(config, revoke)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
