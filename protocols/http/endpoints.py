"""The Zaqar v2 endpoints: each handler checks its input like Zaqar, calls the core's
``IQueueService`` and nothing else, and answers with Zaqar's status codes and documents.

``ZaqarAPI.install`` is every route in one place; the handlers live by resource:
``home`` (versions, JSON Home, ping, health), ``queues`` (and their schemas), ``messages``,
``claims``, ``share`` (pre-signed URLs), ``subscriptions`` (push subscriptions), on the
shared ``handlers.Handlers``.

Long polling (a qgate extension): ``wait=SECONDS`` on ``GET .../messages`` and
``POST .../claims`` is passed to the service, which parks the call until a publish or
release wakes the queue or the wait runs out; the answer is then the usual one (an empty
page, a 204). A queue that does not exist yet is waited for as well.

Avro (a qgate extension, ``docs/avro.md``): ``GET/PUT/DELETE /v2/queues/{q}/schema`` and the
``_schema`` metadata key manage a queue's schema; ``POST .../messages`` takes Avro container
files; ``GET .../messages`` and ``POST .../claims`` answer ``Accept: avro/binary`` with
container files of envelopes (``protocols.http.avro``).
"""

from __future__ import annotations

from qgate.core.avro_bodies import AVRO_BINARY
from qgate.protocols.context import ProtocolContext
from qgate.protocols.http.call import Call
from qgate.protocols.http.claims import ClaimEndpoints
from qgate.protocols.http.errors import BodyTooLarge, HTTPError
from qgate.protocols.http.home import HOME_TYPE, HomeEndpoints
from qgate.protocols.http.messages import MessageEndpoints
from qgate.protocols.http.queues import QueueEndpoints
from qgate.protocols.http.router import Router
from qgate.protocols.http.settings import HTTPSettings
from qgate.protocols.http.share import ShareEndpoints
from qgate.protocols.http.subscriptions import SubscriptionEndpoints

__all__ = ["ZaqarAPI"]


class ZaqarAPI:
    """The handlers of the API, bound to one gateway context, by resource."""

    def __init__(self, ctx: ProtocolContext[HTTPSettings]) -> None:
        self.home = HomeEndpoints(ctx)
        self.queues = QueueEndpoints(ctx)
        self.messages = MessageEndpoints(ctx)
        self.claims = ClaimEndpoints(ctx)
        self.share = ShareEndpoints(ctx)
        self.subscriptions = SubscriptionEndpoints(ctx)

    def too_large(self, method: str, template: tuple[str, ...], limit: int) -> HTTPError:
        """The answer to a body over ``http.max_request_body`` (``limit``) sent with
        ``method`` to the route ``template``: the 400 of Zaqar's size check there (a
        message post, queue metadata), else a 400 naming the limit. Never a 413:
        python-zaqarclient takes a 413 for a success."""
        if template == ("v2", "queues", "{queue}", "messages") and method == "POST":
            return self.messages.collection_too_large()
        if template == ("v2", "queues", "{queue}") and method in ("PUT", "PATCH"):
            return self.queues.metadata_too_large(patch=method == "PATCH")
        return BodyTooLarge(limit)

    def install(self, router: Router[Call]) -> None:
        """Every route of the API, to its handler."""
        home, queues, messages, claims = self.home, self.queues, self.messages, self.claims
        router.add("/", GET=home.get_versions)
        router.add("/v2", GET=home.get_home, media={"GET": [HOME_TYPE]})
        router.add("/v2/ping", GET=home.ping)
        router.add("/v2/health", GET=home.health)
        router.add("/v2/openapi.json", GET=home.openapi)
        router.add("/v2/queues", GET=queues.list_queues)
        router.add(
            "/v2/queues/{queue}",
            PUT=queues.create_queue,
            GET=queues.get_queue,
            HEAD=queues.queue_exists,
            PATCH=queues.update_queue,
            DELETE=queues.delete_queue,
        )
        router.add("/v2/queues/{queue}/stats", GET=queues.queue_stats)
        router.add(
            "/v2/queues/{queue}/schema",
            GET=queues.get_schema,
            PUT=queues.put_schema,
            DELETE=queues.delete_schema,
        )
        router.add("/v2/queues/{queue}/purge", POST=queues.purge_queue)
        router.add("/v2/queues/{queue}/share", POST=self.share.share_queue)
        router.add(
            "/v2/queues/{queue}/messages",
            media={"GET": [AVRO_BINARY]},
            POST=messages.post_messages,
            GET=messages.get_messages,
            DELETE=messages.delete_messages,
        )
        router.add(
            "/v2/queues/{queue}/messages/{message_id}",
            GET=messages.get_message,
            DELETE=messages.delete_message,
        )
        subscriptions = self.subscriptions
        router.add(
            "/v2/queues/{queue}/subscriptions",
            POST=subscriptions.create_subscription,
            GET=subscriptions.list_subscriptions,
        )
        router.add(
            "/v2/queues/{queue}/subscriptions/{subscription_id}",
            GET=subscriptions.get_subscription,
            PATCH=subscriptions.update_subscription,
            DELETE=subscriptions.delete_subscription,
        )
        # Zaqar's code serves PUT (its api-ref says POST; python-zaqarclient sends none).
        router.add(
            "/v2/queues/{queue}/subscriptions/{subscription_id}/confirm",
            PUT=subscriptions.confirm_subscription,
        )
        router.add(
            "/v2/queues/{queue}/claims", POST=claims.create_claim, media={"POST": [AVRO_BINARY]}
        )
        router.add(
            "/v2/queues/{queue}/claims/{claim_id}",
            GET=claims.get_claim,
            PATCH=claims.update_claim,
            DELETE=claims.delete_claim,
        )
