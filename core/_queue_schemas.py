"""``QueueSchemas``: what the queue service knows about schemas, and its schema operations.

The service remembers, per queue, the schema it last saw (queues without one have no
entry) and checks publishes against it. Storage re-checks the fingerprint in the
transaction that stores (``SchemaChanged``), so a stale memory costs a retry, never a wrong
message, and a queue without a schema costs no storage read. A schema seen is trusted for
``SCHEMA_TTL`` seconds, for reading and for picking up a change of defaults made elsewhere;
fingerprint changes need no waiting (storage checks). The schema registry (writer
schemas by fingerprint) lives in the durable store: schemas are content-addressed, so
every queue shares one. Conversions of bodies are ``core.avro_bodies``'s.

This is the one cache of parsed schemas: by text (a queue's schema, for its readers and
publishers), by fingerprint (writer schemas) and by queue (the schema last seen).
Protocols that convert bodies themselves get parsed schemas from it through
``IQueueService.parse_schema`` instead of parsing or caching their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorTime

from qgate.core.avro_bodies import SCHEMA_TTL, QueueBodies, avro_writer, format_fingerprint
from qgate.core.errors import Conflict, InvalidArgument, QueueNotFound, UncheckedWriters
from qgate.core.interfaces import IQueueStorage
from qgate.core.model import Message, NewMessage, Queue, QueueOptions
from qgate.core.schemas import AvroSchema, UnknownSchema, parse_schema

T = TypeVar("T")

#: Times a publish or a schema change is retried when the schema changes under it.
SCHEMA_RETRIES = 4
#: Queues whose schema is remembered before the memory starts over.
MAX_REMEMBERED = 100_000
#: Schema texts kept parsed (least recently used first out; parsing takes ~0.5 ms).
MAX_PARSED = 512
#: (tenant, writer schema) pairs remembered as allowed before the memory is cleared.
MAX_OWNED = 100_000
#: The owner of a writer schema registered for every tenant (not a valid tenant name).
EVERY_TENANT = ""

_Entry = tuple[AvroSchema, float]


class QueueSchemas:
    """Each queue's schema as last seen, the writer schemas of the registry, and what the
    service's schema calls do with them. ``store_for`` picks a queue's store."""

    def __init__(
        self,
        clock: IReactorTime,
        registry: IQueueStorage,
        store_for: Callable[[str, str], IQueueStorage],
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._store_for = store_for
        self._bodies = QueueBodies()
        #: Schema texts, parsed: a queue's schema is its text, not its fingerprint.
        self._parsed = functools.lru_cache(maxsize=MAX_PARSED)(parse_schema)
        #: (tenant, queue) -> (its schema, when seen), for queues that have one.
        self._schemas: dict[tuple[str, str], _Entry] = {}
        #: (tenant, queue) -> when it was seen without a schema (for readers only).
        self._schemaless: dict[tuple[str, str], float] = {}
        #: (tenant, fingerprint) of writer schemas known to be that tenant's to name.
        self._owned: set[tuple[str, int]] = set()

    # -- memory ----------------------------------------------------------------------------

    def has_schema(self, tenant: str, name: str) -> bool:
        """Whether the queue is known to have a schema (its publishes are checked)."""
        return (tenant, name) in self._schemas

    def seen(self, queue: Queue) -> Queue:
        """Remember the schema of a queue just read from storage; returns the queue."""
        key = (queue.tenant, queue.name)
        text = queue.options.schema_text
        if text is None:
            self._schemas.pop(key, None)
            self._remember(self._schemaless, key, self._clock.seconds())
        else:
            self._schemaless.pop(key, None)
            self._remember(self._schemas, key, (self._parsed(text), self._clock.seconds()))
        return queue

    @staticmethod
    def _remember(memory: dict[tuple[str, str], T], key: tuple[str, str], value: T) -> None:
        if len(memory) >= MAX_REMEMBERED and key not in memory:
            memory.clear()
        memory[key] = value

    def forget(self, tenant: str, name: str) -> None:
        """Forget what was seen of the queue (it was deleted, or is read again)."""
        self._schemas.pop((tenant, name), None)
        self._schemaless.pop((tenant, name), None)

    async def _refresh(self, tenant: str, name: str, store: IQueueStorage) -> _Entry | None:
        """Read the queue's schema from storage again; None when it has none (or the queue
        is gone: the publish that follows will say so)."""
        self.forget(tenant, name)
        queue = await store.get_queue(tenant, name)
        if queue is not None:
            self.seen(queue)
        return self._schemas.get((tenant, name))

    async def _reader_schema(self, tenant: str, name: str) -> AvroSchema | None:
        """The queue's schema for readers: remembered for ``SCHEMA_TTL`` seconds."""
        key = (tenant, name)
        now = self._clock.seconds()
        entry = self._schemas.get(key)
        if entry is not None and now - entry[1] < SCHEMA_TTL:
            return entry[0]
        seen = self._schemaless.get(key)
        if entry is None and seen is not None and now - seen < SCHEMA_TTL:
            return None
        entry = await self._refresh(tenant, name, self._store_for(tenant, name))
        return None if entry is None else entry[0]

    # -- the registry ----------------------------------------------------------------------

    def parse(self, schema: object) -> AvroSchema:
        """A schema given as JSON text (str or bytes) or as a JSON value, parsed once per
        text (a JSON value by its compact text)."""
        if isinstance(schema, bytes):
            schema = schema.decode("utf-8", "replace")
        if isinstance(schema, str):
            return self._parsed(schema)
        if isinstance(schema, dict | list):
            return self._parsed(parse_schema(schema).text)
        raise InvalidArgument("a schema is JSON text or a JSON value", field="schema")

    async def register(self, schema: AvroSchema, tenant: str | None = None) -> None:
        """Put a writer schema into the registry (once per process and fingerprint), and
        record that ``tenant`` registered it (once per process; None: registered for every
        tenant, as an operator would, and as schemas registered before tenants had their
        own were)."""
        if schema.fingerprint not in self._bodies:
            await self._registry.put_schema(schema.fingerprint, schema.text)
            self._bodies.add(schema)
        owner = EVERY_TENANT if tenant is None else str(tenant)
        if (owner, schema.fingerprint) not in self._owned:
            await self._registry.own_schema(owner, schema.fingerprint)
            self._own(owner, schema.fingerprint)

    def _own(self, tenant: str, fingerprint: int) -> None:
        if len(self._owned) >= MAX_OWNED:
            self._owned.clear()
        self._owned.add((tenant, fingerprint))

    async def _check_owned(
        self, tenant: str, fingerprints: set[int], messages: Sequence[NewMessage]
    ) -> None:
        """Writer schemas a publish names must be ones its tenant registered: the
        registry is shared, and a tenant must not learn what other tenants registered.
        One not registered by the tenant is refused as if nobody had registered it."""
        for fingerprint in sorted(fingerprints):
            key = (str(tenant), fingerprint)
            if key in self._owned or (EVERY_TENANT, fingerprint) in self._owned:
                continue
            if await self._registry.owns_schema(key[0], fingerprint):
                self._own(*key)
                continue
            i = next(
                i
                for i, m in enumerate(messages)
                if (avro_writer(m.content_type, m.body) or (None,))[0] == fingerprint
            )
            raise InvalidArgument(
                f"messages[{i}]: writer schema {format_fingerprint(fingerprint)} is not "
                "registered (register it, or post a container file that carries it)",
                field=f"messages[{i}].content_type",
            )

    async def _load_writers(self, fingerprints: set[int]) -> None:
        """Fetch the writer schemas named by ``fingerprints`` that are not here yet;
        unknown ones are left out (whoever needs them names them in the error)."""
        for fingerprint in sorted(self._bodies.missing(fingerprints)):
            text = await self._registry.get_schema(fingerprint)
            if text is None:
                continue
            schema = self.parse(text)
            if schema.fingerprint == fingerprint:
                self._bodies.add(schema)

    async def register_schema(self, schema: object, tenant: str | None = None) -> int:
        parsed = self.parse(schema)
        await self.register(parsed, tenant)
        return parsed.fingerprint

    # -- queue schemas ---------------------------------------------------------------------

    def parse_options(self, options: QueueOptions) -> tuple[QueueOptions, AvroSchema | None]:
        """New queue options with their ``schema_text`` parsed and the fingerprint set, and
        the schema to ``register`` before the queue is created (None without one)."""
        if options.schema_text is None:
            return options, None
        schema = self.parse(options.schema_text)
        if options.schema not in (None, schema.fingerprint):
            raise InvalidArgument("schema is not the fingerprint of schema_text", field="schema")
        return replace(options, schema=schema.fingerprint, schema_text=schema.text), schema

    async def set_schema(
        self, tenant: str, name: str, schema: str | bytes | Mapping[str, Any] | list[Any]
    ) -> int:
        """The new schema is checked against the writer schemas of the queue's messages,
        read first; storage then sets it only if no other writer has appeared meanwhile
        (UncheckedWriters: check those too, and try again). Publishes checked against the
        old schema that have not landed yet will fail storage's check and be checked
        again, so every Avro message in the queue can always be read by its schema."""
        store = self._store_for(tenant, name)
        new = self.parse(schema)
        await self.register(new, tenant)
        checked: set[int] = set()
        pending = set(await store.schema_writers(tenant, name, self._clock.seconds()))
        for _ in range(SCHEMA_RETRIES):
            await self._check_writers(new, pending - checked - {new.fingerprint})
            checked |= pending
            try:
                updated = await store.set_queue_schema(
                    tenant, name, new.fingerprint, new.text, sorted(checked), self._clock.seconds()
                )
            except UncheckedWriters as e:
                pending = set(e.fingerprints)
                continue
            self.seen(updated)
            return new.fingerprint
        raise Conflict(f"Queue {name!r} kept changing; try again", field="schema")

    async def _check_writers(self, new: AvroSchema, fingerprints: set[int]) -> None:
        await self._load_writers(fingerprints)
        for fingerprint in sorted(fingerprints):
            try:
                writer = self._bodies.writer(fingerprint)
            except UnknownSchema:
                raise InvalidArgument(
                    f"the queue holds messages of schema {format_fingerprint(fingerprint)}, "
                    "which is not registered, so a new schema cannot be checked against them",
                    field="schema",
                ) from None
            self._bodies.check_reads(new, writer)

    async def clear_schema(self, tenant: str, name: str) -> None:
        store = self._store_for(tenant, name)
        self.seen(await store.set_queue_schema(tenant, name, None, None, (), self._clock.seconds()))

    # -- publishing ------------------------------------------------------------------------

    async def prepare(
        self, check: PublishCheck, store: IQueueStorage
    ) -> tuple[Sequence[NewMessage], int | None] | None:
        """One attempt of a publish that takes the careful way: (the messages as storage
        should store them, the fingerprint it must find: None for a queue without a schema),
        or None to try again (the schema remembered refused the batch, and the queue's
        schema has changed since)."""
        tenant, name, messages = check.tenant, check.name, check.messages
        entry = self._schemas.get((tenant, name))
        if check.refresh or (
            entry is not None and not check.fresh and self._clock.seconds() - entry[1] >= SCHEMA_TTL
        ):
            entry = await self._refresh(tenant, name, store)
            check.fresh, check.refresh = True, False
        if entry is None:
            return messages, None
        schema, _ = entry
        writers = self._bodies.writers_of(messages, schema)
        if writers:
            await self._check_owned(tenant, writers, messages)
        await self._load_writers(writers)
        try:
            return self._bodies.to_queue_schema(schema, messages), schema.fingerprint
        except InvalidArgument:
            if check.fresh:
                raise
            # Refused by the schema remembered: refuse only if it still holds
            # (it may have been cleared or replaced elsewhere).
            again = await self._refresh(tenant, name, store)
            check.fresh = True
            if again is not None and again[0].text == schema.text:
                raise
            return None

    # -- reading ---------------------------------------------------------------------------

    async def _readable(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> AvroSchema | None:
        """Get what reading the Avro ``messages`` needs: the queue's schema (returned) and
        their writer schemas."""
        try:
            schema = await self._reader_schema(tenant, name)
        except QueueNotFound:
            schema = None
        writers = set()
        for m in messages:
            avro = avro_writer(m.content_type, m.body)
            if avro is not None and (schema is None or avro[0] != schema.fingerprint):
                writers.add(avro[0])
        await self._load_writers(writers)
        return schema

    async def decode_bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> dict[int, Any]:
        avro = [m for m in messages if avro_writer(m.content_type, m.body) is not None]
        if not avro:
            return {}
        schema = await self._readable(tenant, name, avro)
        out: dict[int, Any] = {}
        for m in avro:
            try:
                out[m.marker] = self._bodies.decode_json(schema, m)
            except InvalidArgument:
                continue  # not decodable: the protocol shows it as stored
        return out

    async def resolve_bodies(
        self, tenant: str, name: str, messages: Sequence[Message]
    ) -> list[Message]:
        if not any(avro_writer(m.content_type, m.body) is not None for m in messages):
            return list(messages)
        schema = await self._readable(tenant, name, messages)
        return [self._bodies.rewrite(schema, m) for m in messages]


@dataclass
class PublishCheck:
    """The schema part of one publish, across the attempts of the service's retry loop
    (``QueueSchemas.prepare``). ``refresh``: read the queue's schema again first (storage
    said it changed); ``fresh``: the schema remembered was read during this publish."""

    tenant: str
    name: str
    messages: Sequence[NewMessage]
    refresh: bool = False
    fresh: bool = False
