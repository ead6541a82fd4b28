"""qgate's configuration: a TOML file parsed once at start-up into frozen objects.

An unknown key or a bad value stops start-up with a ``ConfigError`` naming the key
(``listeners[1].tls.min_version: ...``). Relative paths are taken from the directory the
server runs in, like every other command-line tool.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from qgate.core.limits import Limits
from qgate.core.quotas import Quotas, check_quotas
from qgate.gateway.connections import ConnectionsConfig

T = TypeVar("T")

DEFAULT_STORAGE_URL = "sqlite:///var/qgate.db"
#: TLS 1.2 suites of a TLS listener by default: forward secret (ECDHE, DHE) and AEAD
#: (AES-GCM, ChaCha20-Poly1305) only. TLS 1.3 suites are all of that and not affected.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!PSK:!DSS"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True)
class StorageConfig:
    url: str = DEFAULT_STORAGE_URL
    #: SQLite ``PRAGMA synchronous``: FULL (default, every commit survives power loss) or NORMAL.
    synchronous: str = "FULL"
    #: Apply pending schema migrations at start-up (else run ``qgate db upgrade``).
    auto_upgrade: bool = True
    read_threads: int = 4
    #: SQLite: seconds a write waits for another process's lock before it fails with 503.
    busy_timeout: float = 5.0
    #: Messages a purge, or the sweep of a deleted queue, deletes per write transaction:
    #: other tenants' writes commit between the slices.
    bulk_slice: int = 1000
    #: Where transient queues live: only ``memory`` today.
    transient: str = "memory"


@dataclass(frozen=True)
class ServerConfig:
    #: Processes serving the listeners: ``"auto"`` (one per core) or a number. With more
    #: than one, a hub process owns storage and the core and the workers run protocols.
    workers: int | str = "auto"

    @property
    def worker_count(self) -> int:
        """``workers`` as a number (``"auto"``: the machine's cores)."""
        if self.workers == "auto":
            return os.cpu_count() or 1
        return int(self.workers)


def _workers(value: Any, name: str) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(f'{name}: "auto" or a whole number from 1 to 256 (got {value!r})')
    return value


@dataclass(frozen=True)
class AuthConfig:
    #: ``none``: trust X-Project-ID / the STOMP host; ``keys``: per-tenant API keys.
    mode: str = "none"
    #: Tenant for clients that name none (mode ``none`` only); empty means "required".
    default_tenant: str = ""
    #: Seconds a verified key is remembered. Every revocation makes every process forget
    #: them within a second (``core.tenant_watch``); this is the bound if that fails.
    cache_seconds: float = 30.0
    #: Failed authentications a client address may make at once, then per second;
    #: past them it is refused (HTTP 429) until one is repaid. 0 disables.
    failure_burst: float = 20.0
    failure_rate: float = 1.0


@dataclass(frozen=True)
class SNICertificate:
    """One more certificate of a TLS listener, served to clients asking (SNI) for one of
    the DNS names of its subjectAltName."""

    certificate: str
    key: str


@dataclass(frozen=True)
class TLSConfig:
    certificate: str
    key: str
    chain: str = ""
    client_ca: str = ""
    min_version: str = "TLSv1.2"
    #: OpenSSL cipher string of the TLS 1.2 suites offered.
    ciphers: str = DEFAULT_CIPHERS
    #: Seconds a connection may take to complete its TLS handshake before it is dropped.
    handshake_timeout: float = 10.0
    #: More certificates on this listener, chosen by SNI (``[[listeners.tls.sni]]``).
    sni: tuple[SNICertificate, ...] = ()


@dataclass(frozen=True)
class ListenerConfig:
    protocol: str
    endpoint: str
    tls: TLSConfig | None = None
    #: One log line per HTTP request (``gateway/access.py``); false: none.
    access_log: bool = True


@dataclass(frozen=True)
class QueueDefaults:
    default_ttl: float = 3600.0
    default_delay: float = 0.0
    durable: bool = True
    #: Bytes every transient (in-memory) queue together may hold: message bodies plus
    #: ``storage.memory.MESSAGE_OVERHEAD`` per message. A publish past it is refused as
    #: the queue being full, naming this key.
    transient_max_bytes: int = 1024 * 1024 * 1024
    #: A wait (long poll, Avro RPC claim) that finds nothing ends up to this fraction of
    #: its ``wait`` early, at random, so waits begun together do not all end together.
    wait_jitter: float = 0.2


@dataclass(frozen=True)
class LogConfig:
    #: ``text`` (Twisted's lines) or ``json`` (one JSON object per line).
    format: str = "text"
    #: The least level logged: debug, info, warn, error, critical.
    level: str = "info"
    #: Levels per subsystem (logger namespace prefix): ``{"qgate.access" = "warn"}`` turns
    #: the access logs off, ``{"qgate.storage" = "debug"}`` shows storage's debug lines.
    levels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


_LEVELS = ("debug", "info", "warn", "error", "critical")


def _log(value: Any, name: str) -> LogConfig:
    def levels(v: Any, n: str) -> Mapping[str, str]:
        if not isinstance(v, Mapping):
            raise ConfigError(f"{n}: expected a table of namespace = level")
        for key, level in v.items():
            _choice(_LEVELS)(level, f"{n}.{key}")
        return MappingProxyType(dict(v))

    return _build(
        LogConfig,
        value,
        name,
        format=_choice(("text", "json")),
        level=_choice(_LEVELS),
        levels=levels,
    )


@dataclass(frozen=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: Limits = field(default_factory=Limits)
    #: Every tenant's default quotas and rate limits (overridable per tenant).
    quotas: Quotas = field(default_factory=Quotas)
    queues: QueueDefaults = field(default_factory=QueueDefaults)
    log: LogConfig = field(default_factory=LogConfig)
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)
    listeners: tuple[ListenerConfig, ...] = (
        ListenerConfig("http", "tcp:8888:interface=127.0.0.1"),
        ListenerConfig("stomp", "tcp:61613:interface=127.0.0.1"),
        ListenerConfig("admin", "tcp:8899:interface=127.0.0.1"),
    )
    #: Each registered protocol's settings (``[http]``, ``[stomp]``, ...), by name: the
    #: classes are declared beside the protocols (``gateway/registry.py`` names them).
    protocols: Mapping[str, Any] = field(default_factory=lambda: _protocol_settings({}))

    def settings(self, protocol: str) -> Any:
        """The settings of one protocol (what its ``ProtocolContext`` carries)."""
        return self.protocols[protocol]


_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def _build(cls: type[T], data: Any, where: str, **overrides: Any) -> T:
    """``cls`` from a TOML table: unknown keys and wrong types are errors naming the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"{name}: unknown key (known: {', '.join(sorted(known))})")
        if key in overrides:
            values[key] = overrides[key](value, name)
            continue
        default = getattr(cls(), key) if _has_defaults(cls) else None
        values[key] = _coerce(value, default, known[key].type, name)
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _has_defaults(cls: type) -> bool:
    try:
        cls()
    except TypeError:
        return False
    return True


def _coerce(value: Any, default: Any, annotation: Any, name: str) -> Any:
    kind = str(annotation)
    if isinstance(default, bool) or kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float) or kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, int) or kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected a whole number, got {value!r}")
        return value
    if isinstance(default, tuple) or kind.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def _choice(allowed: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if value not in allowed:
            raise ConfigError(f"{name}: must be one of {', '.join(allowed)} (got {value!r})")
        return str(value)

    return check


def _sni(value: Any, name: str) -> tuple[SNICertificate, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{name}: expected an array of tables ([[listeners.tls.sni]])")
    out = []
    for i, item in enumerate(value):
        extra = _build(SNICertificate, item, f"{name}[{i}]")
        for key in ("certificate", "key"):
            path = getattr(extra, key)
            if not Path(path).is_file():
                raise ConfigError(f"{name}[{i}].{key}: no such file {path!r}")
        out.append(extra)
    return tuple(out)


def _tls(value: Any, name: str) -> TLSConfig:
    tls = _build(TLSConfig, value, name, min_version=_choice(_TLS_VERSIONS), sni=_sni)
    for key in ("certificate", "key", "chain", "client_ca"):
        path = getattr(tls, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}.{key}: no such file {path!r}")
    if not tls.handshake_timeout > 0:
        raise ConfigError(f"{name}.handshake_timeout: must be more than 0 seconds")
    from qgate.gateway.tls import acceptable_ciphers

    acceptable_ciphers(tls.ciphers, f"{name}.ciphers")
    return tls


def _protocol_settings(tables: Mapping[str, Any]) -> Mapping[str, Any]:
    """Every registered protocol's settings, from its table in ``tables`` or defaults."""
    from qgate.gateway.registry import PROTOCOLS, settings_class

    return MappingProxyType(
        {name: _build(settings_class(name), tables.get(name, {}), name) for name in PROTOCOLS}
    )


def _listeners(value: Any, name: str) -> tuple[ListenerConfig, ...]:
    from qgate.gateway.registry import listener_protocols

    if not isinstance(value, list):
        raise ConfigError(f"{name}: expected an array of tables ([[listeners]])")
    out = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        protocol = _choice(listener_protocols())
        listener = _build(ListenerConfig, item, where, protocol=protocol, tls=_tls)
        out.append(listener)
    return tuple(out)


def _storage(value: Any, name: str) -> StorageConfig:
    storage = _build(
        StorageConfig,
        value,
        name,
        synchronous=_choice(("FULL", "NORMAL")),
        transient=_choice(("memory",)),
    )
    scheme = storage.url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "memory"):
        raise ConfigError(
            f"{name}.url: use sqlite:///PATH, postgresql://USER@HOST/DB or memory:// "
            f"(got {storage.url!r})"
        )
    if storage.read_threads < 1:
        raise ConfigError(f"{name}.read_threads: must be at least 1")
    if storage.bulk_slice < 1:
        raise ConfigError(f"{name}.bulk_slice: must be at least 1")
    if not 0 < storage.busy_timeout <= 3600:
        raise ConfigError(f"{name}.busy_timeout: must be more than 0 and at most 3600 seconds")
    return storage


def _quotas(value: Any, name: str) -> Quotas:
    quotas = _build(Quotas, value, name)
    try:
        return check_quotas(quotas)
    except ValueError as e:
        raise ConfigError(f"{name}.{e}") from None


def _queues(value: Any, name: str) -> QueueDefaults:
    queues = _build(QueueDefaults, value, name)
    if queues.transient_max_bytes < 1:
        raise ConfigError(f"{name}.transient_max_bytes: must be at least 1")
    if not 0 <= queues.wait_jitter < 1:
        raise ConfigError(f"{name}.wait_jitter: must be from 0 up to (not including) 1")
    return queues


def _connections(value: Any, name: str) -> ConnectionsConfig:
    connections = _build(ConnectionsConfig, value, name)
    try:
        connections.check()
    except ValueError as e:
        raise ConfigError(f"{name}.{e}") from None
    return connections


def parse(data: Mapping[str, Any]) -> Config:
    from qgate.gateway.registry import PROTOCOLS

    if not isinstance(data, Mapping):
        raise ConfigError("config: expected a table")
    tables = {key: value for key, value in data.items() if key in PROTOCOLS}
    rest = {key: value for key, value in data.items() if key not in PROTOCOLS}
    known = sorted({f.name for f in fields(Config)} - {"protocols"} | set(PROTOCOLS))
    for key in rest:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(known)})")
    config = _build(
        Config,
        rest,
        "",
        storage=_storage,
        server=lambda v, n: _build(ServerConfig, v, n, workers=_workers),
        auth=lambda v, n: _build(AuthConfig, v, n, mode=_choice(("none", "keys"))),
        limits=lambda v, n: _build(Limits, v, n),
        quotas=_quotas,
        queues=_queues,
        log=_log,
        connections=_connections,
        listeners=_listeners,
    )
    if not config.listeners:
        raise ConfigError("listeners: at least one listener is needed")
    config = replace(config, protocols=_protocol_settings(tables))
    for name, settings in config.protocols.items():
        check = getattr(settings, "check", None)
        if check is not None:
            try:
                check(config.limits)
            except ValueError as e:
                raise ConfigError(f"{name}.{e}") from None
    if config.auth.mode == "keys" and config.storage.url.startswith("memory"):
        raise ConfigError("auth.mode: keys need a SQL storage.url to keep the keys in")
    return config


def load(path: str | Path | None) -> Config:
    """The configuration in ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(data)
