"""Where pushes may go: link-local always refused, loopback and private ranges unless
allowed, checked on the resolved address of every connection."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted

from qgate.protocols.push.client import HTTPPusher, PushRequest
from qgate.protocols.push.safety import refusal
from tests.push.receivers import listen
from tests.push.test_receivers import SETTINGS


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "169.254.0.1", "fe80::1", "::ffff:169.254.169.254", "224.0.0.1"],
)
def test_link_local_and_multicast_are_always_refused(address):
    assert refusal(address, allow_private=True) is not None
    assert refusal(address, allow_private=False) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "100.64.0.1",
        "::1",
        "fc00::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback_and_private_ranges_are_refused_unless_allowed(address):
    assert "allow_private_targets" in (refusal(address, allow_private=False) or "")
    assert refusal(address, allow_private=True) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "93.184.216.34"])
def test_public_addresses_are_allowed(address):
    assert refusal(address, allow_private=False) is None


async def push_to(reactor: Any, url: str, allow: bool) -> Any:
    pusher = HTTPPusher(reactor, replace(SETTINGS, allow_private_targets=allow))
    try:
        return await pusher.push(PushRequest(url, {}, b"{}"))
    finally:
        await pusher.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_loopback_receiver_is_refused_by_default_and_reached_when_allowed(reactor):
    hook = await listen(reactor)
    try:
        for url in (hook.url, f"http://localhost:{hook.number}/hook"):  # literal, and by name
            refused = await push_to(reactor, url, allow=False)
            assert refused.refused and "allow_private_targets" in refused.error
        assert hook.receiver.got == []
        allowed = await push_to(reactor, hook.url, allow=True)
        assert allowed.delivered and len(hook.receiver.got) == 1
    finally:
        await hook.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_the_metadata_address_is_refused_even_when_private_targets_are_allowed(reactor):
    outcome = await push_to(reactor, "http://169.254.169.254/latest/meta-data/", allow=True)
    assert outcome.refused and "link-local" in outcome.error


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_https_subscribers_are_verified_against_the_configured_ca_bundle(reactor, tmp_path):
    from twisted.internet import endpoints
    from twisted.web import server

    from tests.push.receivers import Receiver
    from tests.support.certs import make_certs

    certs = make_certs(tmp_path)
    receiver = Receiver()
    description = (
        f"ssl:0:interface=127.0.0.1:privateKey={certs.server_key}:certKey={certs.server_cert}"
    )
    port = await endpoints.serverFromString(reactor, description).listen(server.Site(receiver))
    url = f"https://localhost:{port.getHost().port}/hook"
    try:
        for bundle, delivered in ((certs.ca, True), (certs.other_ca, False)):
            settings = replace(SETTINGS, allow_private_targets=True, ca_bundle=str(bundle))
            pusher = HTTPPusher(reactor, settings)
            try:
                outcome = await pusher.push(PushRequest(url, {}, b"{}"))
            finally:
                await pusher.close()
            assert outcome.delivered is delivered, outcome
        assert len(receiver.got) == 1  # the unverified server never saw a request
    finally:
        await port.stopListening()
