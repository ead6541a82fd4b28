"""What a push sends: Zaqar's notification (the message as JSON with ``body``, ``ttl``,
``queue_name`` and ``Message_Type: "Notification"``, or ``options.post_data`` with
``"$zaqar_message$"`` replaced by it), ``options.post_headers``, and headers naming the
queue, the message, the subscription and the attempt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qgate.core import jsonsafe
from qgate.core.model import Message
from qgate.core.push_policy import PushOptions
from qgate.protocols.push.client import PushRequest

TEMPLATE = '"$zaqar_message$"'


def body_value(message: Message, decoded: Mapping[int, Any]) -> Any:
    """The message body as the Zaqar API shows it: JSON bodies as their document, Avro
    bodies decoded (``decoded``), other UTF-8 as a string, other bytes as base64."""
    if message.marker in decoded:
        return decoded[message.marker]
    return jsonsafe.body_document(message.body, message.content_type)


def build_request(
    url: str,
    queue: str,
    subscription_id: str,
    message: Message,
    attempt: int,
    options: PushOptions,
    decoded: Mapping[int, Any],
) -> PushRequest:
    notification = {
        "body": body_value(message, decoded),
        "ttl": int(round(message.ttl)),
        "queue_name": queue,
        "Message_Type": "Notification",
    }
    body = bytes(jsonsafe.dumps_lenient(notification))
    if options.post_data is not None:
        body = options.post_data.replace(TEMPLATE, body.decode("utf-8")).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    headers.update(options.post_headers)
    headers.update(
        {
            "X-Qgate-Queue": queue,
            "X-Qgate-Message-Id": message.id,
            "X-Qgate-Subscription-Id": subscription_id,
            "X-Qgate-Attempt": str(attempt),
        }
    )
    return PushRequest(url, headers, body)
