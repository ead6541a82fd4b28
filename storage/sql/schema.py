"""The SQL schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create it."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # The last marker handed out. Publishes bump it in their transaction, so on PostgreSQL
    # the row lock orders concurrent publishers and markers are assigned in commit order:
    # an observer reading "after marker M" never misses a message committed later below M.
    sa.Column("last_marker", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("tenant", "name", name="uq_queues_tenant_name"),
    # Ids are never reused (0006; PostgreSQL's sequence never reuses one either): messages
    # of a deleted queue are swept after its row is gone (``deleted_queues``), and a queue
    # made meanwhile must not take the old id and find them.
    sqlite_autoincrement=True,
)

# Queues deleted whose messages are still being swept, a bounded slice per transaction
# (``queues.sweep_slice``); the row goes once the last slice is deleted. Read at start-up
# and by the reaper, so a sweep cut short by a crash finishes later.
deleted_queues = sa.Table(
    "deleted_queues",
    metadata,
    sa.Column("queue_id", sa.Integer, primary_key=True, autoincrement=False),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("queue_id", sa.Integer, nullable=False),
    sa.Column("marker", sa.BigInteger, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("headers", sa.Text, nullable=True),
    sa.Column("producer", sa.String(255), nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("available_at", sa.Double, nullable=False),
    # When the message can next be claimed: available_at at first, the lease's end while
    # claimed, now + delay after a release. "Claimable" is one indexed comparison.
    sa.Column("visible_at", sa.Double, nullable=False),
    sa.Column("claim_id", sa.String(32), nullable=True),
    sa.Column("claim_expires", sa.Double, nullable=True),
    sa.Column("claim_count", sa.Integer, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("queue_id", "marker", name="pk_messages"),
)

# Claim order: highest priority first, FIFO within a priority.
sa.Index("ix_messages_claim", messages.c.queue_id, messages.c.priority.desc(), messages.c.marker)
# No index on visible_at: it changes on every claim, and an index on it both costs every
# claim an index write and lures planners away from the claim-order index above (SQLite
# then sorts the whole backlog). Waiters' next-wake query scans only in-flight rows.
# The expiry reaper.
sa.Index("ix_messages_expires", messages.c.expires_at)

claims = sa.Table(
    "claims",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("queue_id", sa.Integer, nullable=False),
    sa.Column("ttl", sa.Double, nullable=False),
    sa.Column("grace", sa.Double, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    # The claimed markers, as JSON: get, renew and release find them by primary key.
    sa.Column("markers", sa.Text, nullable=False),
)
sa.Index("ix_claims_expires", claims.c.expires_at)

# The durable cursors of named subscriptions (STOMP); push subscriptions are below.
subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("queue_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("marker", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("queue_id", "name", name="pk_subscriptions"),
)

# Push subscriptions (Zaqar's subscriptions API): a subscriber URL for a queue's messages
# until expires_at, and the subscription's own position (``marker``, the last message
# handed over) for a dispatcher to deliver from. Ids are time-ordered, so listing by id
# lists by age. Subscribers are unique per queue among live ones: create and update lock
# the queue row and check (expired rows may still hold a subscriber until reaped).
push_subscriptions = sa.Table(
    "push_subscriptions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("queue_id", sa.Integer, nullable=False),
    sa.Column("subscriber", sa.Text, nullable=False),
    sa.Column("ttl", sa.BigInteger, nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("confirmed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("marker", sa.BigInteger, nullable=False, server_default="0"),
    # Push delivery (0004): the dispatcher holding the subscription until lease_expires
    # (only it pushes the subscription), and the subscription's delivery counters.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires", sa.Double, nullable=False, server_default="0"),
    sa.Column("delivered", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("given_up", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
)
sa.Index("ix_push_subscriptions_queue", push_subscriptions.c.queue_id, push_subscriptions.c.id)
sa.Index("ix_push_subscriptions_expires", push_subscriptions.c.expires_at)

# Deliveries a dispatcher took from a push subscription's position and has not settled
# (0004): the message, the attempts made, when the next one is due. A 2xx or giving up
# deletes the row; a dispatcher that dies leaves it for the next holder of the lease.
push_deliveries = sa.Table(
    "push_deliveries",
    metadata,
    sa.Column("subscription_id", sa.String(32), nullable=False),
    sa.Column("marker", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", sa.Double, nullable=False),
    sa.Column("taken_at", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("subscription_id", "marker", name="pk_push_deliveries"),
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    # The key's scope (core.principal.Scope), comma-separated; NULL: unlimited.
    sa.Column("queues", sa.Text, nullable=True),
    sa.Column("ops", sa.Text, nullable=True),
)
sa.Index("ix_api_keys_tenant", api_keys.c.tenant)

# Per-tenant overrides of the [quotas] defaults (core.quotas), one row per quota set.
tenant_quotas = sa.Table(
    "tenant_quotas",
    metadata,
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("quota", sa.String(32), nullable=False),
    sa.Column("value", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "quota", name="pk_tenant_quotas"),
)

# One row (id 1): a counter bumped by every change of quotas or keys that running
# processes must see at once (a revoked key, a new quota). Each process reads it about
# twice a second and reloads only when it has moved.
tenant_changes = sa.Table(
    "tenant_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# Writer schemas of Avro bodies by CRC-64-AVRO fingerprint (signed, as Java's long), as JSON
# text. Content-addressed: a row is written once and never changed.
schemas = sa.Table(
    "schemas",
    metadata,
    sa.Column("fingerprint", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text, nullable=False),
)

# Which tenant registered which writer schema: the registry above is shared and
# content-addressed, but a tenant may only name (publish bodies written by) the writer
# schemas it registered itself, so it cannot learn what other tenants registered.
tenant_schemas = sa.Table(
    "tenant_schemas",
    metadata,
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("fingerprint", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("tenant", "fingerprint", name="pk_tenant_schemas"),
)
