"""The contracts between the layers, as zope.interface interfaces.

``IQueueService`` is what every protocol calls; ``IQueueStorage`` is what every storage
backend implements. Both return Deferreds. Storage methods take ``now`` from the service's
injected clock, so expiry, delays and leases are exact under ``task.Clock`` in tests.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

# Methods below are documented in the style of zope.interface: no ``self``; every method
# returns a Deferred firing with the value named after "->".


class ISubscriptionStore(Interface):
    """The push subscriptions of a store's queues (``core.model.Subscription``): what the
    Zaqar subscriptions API keeps, and what a push dispatcher delivers from, each
    subscription from its own position.

    A subscription lives in its queue's store and goes with the queue (``delete_queue``).
    Once expired (``expires_at <= now``) it is gone for every call: never listed, found,
    changed or advanced, and it no longer holds its subscriber. Every call on a queue that
    does not exist fails with QueueNotFound."""

    def create_subscription(tenant, name, new, now):
        """-> (Subscription, created: bool). When a live subscription of the queue has
        ``new.subscriber`` already, that one, unchanged, and False; else ``new`` (a
        ``NewSubscription``) placed at ``now`` (``NewSubscription.placed``: unconfirmed,
        expiring at ``now + ttl``, at the queue's last marker), and True."""

    def get_subscription(tenant, name, subscription_id, now):
        """-> Subscription or None (unknown or expired)."""

    def list_subscriptions(tenant, name, marker, limit, now):
        """-> list[Subscription]: up to ``limit`` live subscriptions of the queue by id,
        those after the id ``marker`` (None: from the first)."""

    def update_subscription(tenant, name, subscription_id, changes, now):
        """-> Subscription with the fields of ``changes`` (a ``SubscriptionUpdate``, checked
        by the core) changed (None: left as it is); a new ``ttl`` expires it at
        ``now + ttl``. Fails with SubscriptionNotFound, or with
        SubscriptionExists (changing nothing) when another live subscription of the queue
        has ``subscriber``."""

    def advance_subscription(tenant, name, subscription_id, marker, now):
        """-> int or None: the subscription's position, moved up to ``marker`` when that
        is further (it never goes back); None when it is unknown or expired."""

    def delete_subscription(tenant, name, subscription_id):
        """-> bool, whether it was there (expired and not yet reaped counts)."""

    def purge_subscriptions(tenant, name):
        """-> int: deletes every subscription of the queue, how many (expired ones not
        yet reaped included)."""


class IPushStore(Interface):
    """Push delivery state of a store's subscriptions (``core._push``,
    ``protocols/push``): a lease per subscription, so one dispatcher at a time pushes it,
    and the deliveries it took from the subscription's position and has not settled, so
    nothing taken is lost when a dispatcher dies (its successor finds them after the
    lease). Calls on an unknown or expired subscription change nothing."""

    def lease_push(owner, lease, limit, now):
        """-> list[PushLease]: up to ``limit`` live subscriptions of the store now held by
        ``owner`` until ``now + lease``: those it held already (renewed) and those whose
        lease is free or over. Two owners never hold one subscription at once."""

    def release_push(owner, subscription_ids):
        """-> int: the leases of ``owner`` on those subscriptions given up (a clean stop)."""

    def take_deliveries(tenant, name, subscription_id, owner, limit, now):
        """-> list[Delivery]: while ``owner`` holds the lease, up to ``limit`` live
        messages after the subscription's position (claimed and delayed ones included,
        due at their ``available_at``) recorded as deliveries, and the position moved past
        them, in one transaction; [] without the lease."""

    def pending_deliveries(tenant, name, subscription_id, now):
        """-> list[Delivery] taken and not settled, by marker."""

    def settle_delivery(tenant, name, subscription_id, marker, settlement, next_at, error, now):
        """-> bool (whether the delivery was pending): records an attempt's end (a
        ``Settlement``): delivered or given up removes the delivery; retry counts the
        attempt and makes it due at ``next_at``. Failures keep ``error`` as the last. A
        delivery whose subscription is gone is not pending (its rows went with it)."""

    def push_stats(tenant, name, subscription_id, now):
        """-> PushStats or None (unknown or expired subscription)."""


class IQueueStorage(ISubscriptionStore, IPushStore):
    """A backend that stores queues and their messages (memory or SQL), and the queues'
    subscriptions (``ISubscriptionStore``).

    Methods fail with the typed errors of ``core.errors``. Domain checks (queue exists,
    bounds) happen before anything is written, so a failed call changes nothing.
    """

    def create_queue(tenant, name, options, metadata, now):
        """-> Queue; fails with QueueExists."""

    def get_queue(tenant, name):
        """-> Queue or None."""

    def update_queue(tenant, name, options, metadata):
        """-> Queue; replaces options and metadata, except the queue's schema (``schema``
        and ``schema_text`` of the options), which only ``set_queue_schema`` changes;
        fails with QueueNotFound."""

    def set_queue_schema(tenant, name, fingerprint, text, writers, now):
        """-> Queue whose schema is now ``fingerprint``/``text`` (both None: no schema).

        With a schema, in the same transaction: every writer fingerprint that the queue's
        messages live at ``now`` name (see ``schema_writers``) must be ``fingerprint`` or one of
        ``writers`` (those the caller checked the schema against); else the call fails
        with UncheckedWriters naming the others and changes nothing. Fails with
        QueueNotFound."""

    def schema_writers(tenant, name, now):
        """-> list[int]: the distinct writer fingerprints that the content types of the
        queue's live messages name (``avro/binary; fingerprint=...``, core.avro_bodies)."""

    def put_schema(fingerprint, text):
        """-> None; registers a writer schema's JSON text under its fingerprint. The
        registry is content-addressed: an entry that exists is kept as it is."""

    def get_schema(fingerprint):
        """-> str or None: the schema text registered under ``fingerprint``."""

    def own_schema(tenant, fingerprint):
        """-> None; records that ``tenant`` registered the writer schema ``fingerprint``
        (the registry is shared; what a tenant may name is its own). ``tenant`` "" means
        every tenant."""

    def owns_schema(tenant, fingerprint):
        """-> bool: whether ``tenant`` (or "", every tenant) registered the writer schema
        ``fingerprint``."""

    def delete_queue(tenant, name):
        """-> bool (whether it existed); deletes its messages, claims, cursors and
        subscriptions. The queue is gone for every reader when this fires; a store may
        delete its messages afterwards (SQL: in bounded slices), but a queue made again
        under the name never sees them."""

    def list_queues(tenant, marker, limit):
        """-> list[Queue] whose names sort after ``marker`` (or from the start), by name."""

    def queue_stats(tenant, name, now):
        """-> QueueStats; fails with QueueNotFound."""

    def queue_depths(now, limit):  # type: ignore[no-untyped-def]
        """-> DepthReport (``core.admin``): the deepest ``limit`` queues of every tenant
        by live messages (available, claimed, delayed), the rest summed (one bounded read
        for metrics and the console)."""

    def purge_queue(tenant, name):
        """-> int, the number of messages deleted (expired ones not yet reaped included);
        claims go too. Cursors and subscriptions stay: markers never go back, so their
        positions keep their meaning. A purge deletes the messages the queue holds when
        it starts, and fires once they are all gone; messages published meanwhile stay
        (SQL deletes in bounded slices, and other writes commit between them)."""

    def publish(tenant, name, messages, now, schema, handoff=None):
        """-> list[int], the markers of the new messages, in order; all or nothing.

        ``ttl``/``delay`` of ``None`` take the queue's defaults. ``schema`` is the
        fingerprint of the queue schema the service checked the messages against (None:
        no schema); when the queue's schema is another one by the time the messages would
        be stored, the call fails with SchemaChanged (in the same transaction that stores,
        so the check is exact across processes). Fails with QueueNotFound or QueueFull
        (overflow policy ``reject``); ``drop_oldest`` deletes the oldest messages to make
        room.

        ``handoff`` (a ``core.handoff.Handoff``, a parked claim or pop): when the queue
        holds no claimable message, and ``handoff.take()`` agrees, the first
        ``handoff.limit`` messages of this publish that are claimable at once (claim
        order) are stored leased to ``handoff.claim_id`` for ``ttl`` (kept alive ``ttl +
        grace``), with the claim recorded, or for a pop not stored at all; in the same
        transaction. The store reports on the offer with ``handoff.handed(messages,
        drained, wake_at)`` whether or not it handed anything; the markers returned include
        the handed messages. Bounds count every message of the publish.
        """

    def get_messages(tenant, name, markers, now):
        """-> list[Message] for the markers that exist and have not expired."""

    def delete_messages(tenant, name, markers, claim_id, now):
        """-> list[int] deleted. With a claim id, only messages held by that claim go;
        without one, a message held by a live claim fails the call with MessageClaimed."""

    def pop_messages(tenant, name, limit, now, handoff=None, prompt=False):
        """-> list[Message] claimed and deleted in one step, in claim order.

        ``handoff``: the waiting pop's own offer (see ``claim``). ``prompt``: answer once
        the messages are taken, before that is durable (SQL: before the COMMIT, so the
        caller does not wait for an fsync). Nobody else can take them meanwhile; a pop
        that then does not commit (a crash, a failed COMMIT) leaves them stored, to be
        delivered again, and a reader may still see them until the commit. For a caller
        that only delivers what it pops (a STOMP ``ack:auto`` subscription)."""

    def observe(tenant, name, query, now):
        """-> list[Message] that the core.model.ObserveQuery ``query`` asks for (markers
        above ``query.after``, in marker order), unchanged."""

    def claim(tenant, name, claim_id, limit, ttl, grace, now, handoff=None):
        """-> list[Message] leased to ``claim_id`` until ``now + ttl``.

        Highest priority first, FIFO within a priority. A message that has already been
        claimed ``max_claim_count`` times moves to the dead-letter queue instead. Messages
        live at least ``ttl + grace`` from now.

        ``handoff``: the waiting claim's offer (``core.handoff``), open while this attempt
        is on its way. Taken already by a publish the store did before: claims nothing.
        Otherwise a claim that finds messages ``spend``s it, in the same order as
        publishes ``take`` it.
        """

    def on_dead_letter(callback):
        """-> None; from now on ``callback(tenant, name, count)`` is called on the reactor
        thread once a claim that moved ``count`` dead messages into the queue ``name`` is
        committed: a publish the service did not make, whose waiters it must wake (and
        that operators count). One callback; a later call replaces it."""

    def get_claim(tenant, name, claim_id, now):
        """-> Claim (with its live messages) or None when unknown or expired."""

    def renew_claim(tenant, name, claim_id, ttl, grace, now):
        """-> bool; extends the lease of a live claim to ``now + ttl``."""

    def release(tenant, name, claim_id, markers, delay, now, undelivered=False):
        """-> int released; makes messages of the claim (all, or ``markers``) available
        again at ``now + delay``. With ``undelivered`` (no consumer ever received them)
        this claim does not count: each message's ``claim_count`` goes back to what it was
        before the claim, so it is neither redelivered nor dead-lettered because of it."""

    def ack(tenant, name, claim_id, markers, now):
        """-> list[int] deleted, of ``markers`` still held by ``claim_id``."""

    def next_wake(tenant, name, now, after=None):
        """-> float or None: the earliest future time a delayed or leased message (with a
        marker above ``after``, when given) becomes available, for waiters that found
        nothing."""

    def reap(now, limit):
        """-> int: deletes up to ``limit`` expired messages (and expired claims and
        subscriptions, not counted)."""

    def get_cursor(tenant, name, subscription):
        """-> int or None: the stored marker of a durable subscription."""

    def set_cursor(tenant, name, subscription, marker):
        """-> None; stores (or with ``marker`` None, forgets) a subscription's marker."""

    def tenant_usage(tenant, now):
        """-> core.usage.TenantUsage: the queues, stored messages and bytes (expired,
        unreaped ones included) and live push subscriptions the tenant has in this store,
        counted exactly (an aggregate query: for quotas now and then, never per publish)."""

    def ping():
        """-> bool: whether the backend answers (a cheap round trip)."""

    def close():
        """-> None once pending writes are committed and resources released."""


class ITransientStorage(IQueueStorage):
    """A storage that lives in this process and can answer membership synchronously."""

    def has_queue(tenant, name):
        """bool, synchronously: whether this storage holds the queue."""


class ISynchronousStorage(Interface):
    """A store that can also answer the hot calls synchronously (memory): the service
    then wraps one fired Deferred instead of chaining on the store's. Same arguments and
    meaning as the IQueueStorage methods; results come back plain, errors are raised."""

    def publish_now(tenant, name, messages, now, schema, handoff=None):
        """-> list[int]."""

    def claim_now(tenant, name, claim_id, limit, ttl, grace, now):
        """-> list[Message]."""

    def ack_now(tenant, name, claim_id, markers, now):
        """-> list[int]."""


class IHandoffStorage(Interface):
    """A store that takes the ``handoff`` keyword of ``publish``, ``claim`` and
    ``pop_messages`` (``core.handoff``). The service offers waiters to publishes only on
    stores that provide this; on others claims and pops wait as before."""


class IWakeupSource(Interface):
    """Something that learns of publishes made elsewhere (other processes)."""

    def start_wakeups(callback):
        """Call ``callback(tenant, name)`` whenever a queue may have new messages."""


class IQueueService(Interface):
    """The one internal queue-service API. Every call is scoped to a tenant and returns a
    Deferred; errors are the typed ``core.errors``. ``wait`` (seconds) makes claim and
    observe wait for a publish or release when nothing is there; cancelling the Deferred
    gives up the wait at once."""

    clock = Attribute("The IReactorTime the service takes its time from.")
    limits = Attribute("The core.limits.Limits the service enforces.")
    default_options = Attribute("The QueueOptions a queue created on first use gets.")

    def create_queue(tenant, name, options=None, metadata=None):
        """-> (Queue, created: bool); an existing queue is returned unchanged."""

    def get_queue(tenant, name):
        """-> Queue; fails with QueueNotFound."""

    def update_queue(tenant, name, options=None, metadata=None):
        """-> Queue with new options and/or metadata (durability cannot change)."""

    def delete_queue(tenant, name):
        """-> bool; deleting a missing queue is not an error."""

    def list_queues(tenant, marker=None, limit=10):
        """-> list[Queue], by name, after ``marker``."""

    def queue_stats(tenant, name):
        """-> QueueStats."""

    def purge_queue(tenant, name):
        """-> int deleted."""

    def publish(tenant, name, messages, create=True):
        """-> list[str] message ids; a batch is stored whole or not at all. With ``create``
        a missing queue is created with the service's default options. On a queue with a
        schema every body is checked and stored as Avro written by the queue's schema
        (core.avro_bodies); a body that does not fit fails the batch with InvalidArgument
        naming ``messages[i]`` and the field."""

    def get_messages(tenant, name, ids):
        """-> list[Message]."""

    def get_message(tenant, name, message_id):
        """-> Message; fails with MessageNotFound."""

    def delete_messages(tenant, name, ids, claim_id=None):
        """-> list[str] deleted ids."""

    def pop_messages(tenant, name, limit, wait=0, prompt=False):
        """-> list[Message] removed from the queue (claimed and deleted in one step),
        waiting up to ``wait`` seconds for some as ``claim`` does; [] when none came. A
        caller that cancels a waiting pop makes it take nothing more, but what a storage
        call already in flight takes is gone (no claim to give back). ``prompt``: answered
        before the removal is durable (``IQueueStorage.pop_messages``)."""

    def observe(
        tenant,
        name,
        after=None,
        limit=10,
        include_claimed=False,
        include_delayed=False,
        exclude_producer=None,
        wait=0,
    ):
        """-> list[Message] after the marker ``after`` (a message id), unchanged."""

    def claim(tenant, name, limit=10, ttl=60, grace=0, wait=0):
        """-> Claim, or None when nothing was available within ``wait``."""

    def get_claim(tenant, name, claim_id):
        """-> Claim; fails with ClaimNotFound."""

    def renew_claim(tenant, name, claim_id, ttl, grace=0):
        """-> None; fails with ClaimNotFound."""

    def release(tenant, name, claim_id, ids=None, delay=0, undelivered=False):
        """-> int; returns claimed messages to the queue (NACK), counted for dead-lettering;
        with ``undelivered`` (claimed, but never written to any consumer) not counted."""

    def ack(tenant, name, claim_id, ids):
        """-> list[str] ids acknowledged (deleted)."""

    def get_cursor(tenant, name, subscription):
        """-> str or None: the marker a durable subscription has acknowledged up to."""

    def create_subscription(tenant, name, subscriber, ttl=None, options=None, create=True):
        """-> (Subscription, created: bool): a push subscription of the queue for
        ``subscriber`` (an http:// or https:// URL) living ``ttl`` whole seconds (default
        3600), with ``options`` (a JSON object). When a live subscription of the queue has
        that subscriber, it is returned unchanged and ``created`` is False. With
        ``create`` a missing queue is created with the service's default options (after
        every argument is checked: a refused call changes nothing)."""

    def get_subscription(tenant, name, subscription_id):
        """-> Subscription; fails with SubscriptionNotFound (also once it expired)."""

    def list_subscriptions(tenant, name, marker=None, limit=10):
        """-> list[Subscription] of the queue's live subscriptions by id, after the id
        ``marker``."""

    def update_subscription(
        tenant, name, subscription_id, subscriber=None, ttl=None, options=None, confirmed=None
    ):
        """-> Subscription with the fields given changed (a new ``ttl`` counts from now).
        Fails with SubscriptionNotFound, or SubscriptionExists when another live
        subscription of the queue has ``subscriber``."""

    def delete_subscription(tenant, name, subscription_id):
        """-> bool, whether it was there."""

    def purge_subscriptions(tenant, name):
        """-> int: every subscription of the queue deleted, how many."""

    def lease_push(owner, lease, limit=1000):
        """-> list[PushLease]: push subscriptions of every tenant held by ``owner`` (a
        dispatcher's id) until ``lease`` seconds from now (``IPushStore.lease_push``)."""

    def release_push(owner, subscription_ids):
        """-> int: leases of ``owner`` given back."""

    def take_deliveries(tenant, name, subscription_id, owner, limit):
        """-> list[Delivery] taken after the subscription's position (holder only)."""

    def pending_deliveries(tenant, name, subscription_id):
        """-> list[Delivery] taken and not settled."""

    def settle_delivery(tenant, name, subscription_id, marker, settlement, next_at=0.0, error=None):
        """-> bool: an attempt's end recorded (``Settlement``)."""

    def push_stats(tenant, name, subscription_id):
        """-> PushStats; SubscriptionNotFound when unknown or expired."""

    def dead_letter_push(tenant, name, message):
        """-> str or None: the dead-letter queue a given-up ``message`` was copied to."""

    def set_schema(tenant, name, schema):
        """-> int, the fingerprint of ``schema`` (JSON text, or a JSON value), now the
        queue's schema. Refused with IncompatibleSchema (naming the field) unless it can
        read the queue's current schema and every writer schema of its live messages;
        InvalidSchema when it is not a schema qgate accepts."""

    def clear_schema(tenant, name):
        """-> None; the queue takes any body again (its Avro messages stay Avro)."""

    def get_schema(tenant, name):
        """-> (fingerprint, JSON text) of the queue's schema, or None."""

    def parse_schema(schema):
        """-> AvroSchema: ``schema`` (JSON text, or a JSON value) parsed and checked, from
        the service's one cache of parsed schemas (InvalidSchema when qgate does not accept
        it). For protocols that convert Avro bodies themselves (STOMP subscriptions)."""

    def register_schema(schema, tenant=None):
        """-> int: registers a writer schema (JSON text or value) by its fingerprint, so
        bodies naming it can be checked and read; with ``tenant``, for that tenant (a
        publish to a queue with a schema may name only writer schemas its tenant
        registered, or the queue's own)."""

    def decode_bodies(tenant, name, messages):
        """-> dict[int, JSON value] by marker, for the Avro messages of ``messages`` that
        can be decoded: resolved into the queue's current schema when it can read them,
        else as their writer schema wrote them."""

    def resolve_bodies(tenant, name, messages):
        """-> list[Message]: ``messages`` with Avro bodies rewritten into the queue's
        current schema when it can read them (content type naming the schema they are
        in); other messages unchanged."""

    def set_cursor(tenant, name, subscription, marker):
        """-> None."""

    def ping():
        """-> bool: whether the durable storage answers (fails after a short timeout)."""


class ITenantStore(Interface):
    """Tenants and their API keys (only hashes of the secrets are stored)."""

    def create_tenant(name, now):
        """-> (Tenant, created: bool)."""

    def get_tenant(name):
        """-> Tenant or None."""

    def list_tenants():
        """-> list[Tenant] by name."""

    def add_key(tenant, key_id, secret_hash, now, queues=None, ops=None):
        """-> None, and bumps ``tenant_version``. ``queues`` and ``ops``: the key's scope
        as comma-separated text (``core.principal.Scope.to_text``), None for unlimited."""

    def find_key_scope(key_id):
        """-> (queues, ops) text of a key that is not revoked, or None."""

    def set_quota(tenant, quota, value):
        """-> None; overrides the default of one quota for ``tenant`` (``value`` None: back
        to the default), and bumps ``tenant_version``."""

    def quota_overrides():
        """-> dict[tenant, dict[quota, float]]: every stored override."""

    def tenant_version():
        """-> int: a counter that every new key, revocation and quota change bumps (cheap
        to read; processes poll it to see changes at once)."""

    def key_ids():
        """-> list[str]: the ids of every key that is not revoked (processes keep them in
        memory, so an unknown id is refused without a read: ``core._key_lookups``)."""

    def find_key(key_id):
        """-> (tenant, secret_hash) of a key that is not revoked, or None."""

    def revoke_key(key_id, now):
        """-> bool, whether a live key was revoked (then ``tenant_version`` is bumped)."""
