"""``twist qgate [--config FILE]``: qgate as a Twisted application plugin."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [["config", "c", None, "qgate TOML configuration file"]]


@implementer(IServiceMaker, IPlugin)
class QGateServiceMaker:
    tapname = "qgate"
    description = "qgate message-queue gateway (Zaqar HTTP, STOMP, WebSocket, Avro)"
    options = Options

    def makeService(self, options: Options) -> Any:
        from twisted.internet import reactor

        from qgate.gateway.app import Gateway, upgrade_now_blocking
        from qgate.gateway.config import load

        config = load(options["config"])
        if config.storage.auto_upgrade:
            upgrade_now_blocking(config)  # before the reactor runs: nothing to block yet
        return Gateway(reactor, config)


service_maker = QGateServiceMaker()
