#!/bin/sh
# Enable RabbitMQ's STOMP plugin on 127.0.0.1:61623 for bench.stomp; idempotent, no restart.
#
# 61623, never STOMP's 61613: that is qgate's own port. The plugin listens on 61613 (all
# interfaces) the moment it is enabled unless its listener is configured first, so this
# sets the listener in the running node (rabbitmqctl eval) BEFORE enabling the plugin, and
# writes the same setting to rabbitmq.conf for the next boot. Run as root (or the
# rabbitmq user) on the machine where RabbitMQ runs on 5672 with guest/guest.
set -eu

PORT="${QGATE_BENCH_RABBIT_STOMP_PORT:-61623}"
CONF="${RABBITMQ_CONFIG_FILE:-/etc/rabbitmq/rabbitmq.conf}"
LINE="stomp.listeners.tcp.1 = 127.0.0.1:${PORT}"

listening() {
    # Is anything accepting STOMP connections on 127.0.0.1:$1?
    python3 - "$1" <<'EOF'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
EOF
}

# 1. The next boot: the listener in rabbitmq.conf (replacing any other tcp.1 listener).
if ! grep -qxF "$LINE" "$CONF" 2>/dev/null; then
    if [ -f "$CONF" ]; then
        sed -i '/^stomp\.listeners\.tcp\.1[[:space:]]*=/d' "$CONF"
    fi
    echo "$LINE" >>"$CONF"
    echo "rabbitmq-stomp: wrote '$LINE' to $CONF"
fi

# 2. The running node.
if listening "$PORT"; then
    echo "rabbitmq-stomp: RabbitMQ STOMP already answers on 127.0.0.1:$PORT"
    exit 0
fi
rabbitmqctl -q status >/dev/null || {
    echo "rabbitmq-stomp: RabbitMQ is not running (start it: rabbitmq-server -detached)" >&2
    exit 1
}
if rabbitmq-plugins -q list -e rabbitmq_stomp | grep -q rabbitmq_stomp; then
    # Enabled with another listener (61613?): stop it before reconfiguring.
    rabbitmq-plugins -q disable rabbitmq_stomp >/dev/null
fi
# Load the application first: set_env on an unloaded one is overwritten by its .app defaults
# (61613 on every interface) when it loads.
rabbitmqctl -q eval "application:load(rabbitmq_stomp), \
    application:set_env(rabbitmq_stomp, tcp_listeners, [{\"127.0.0.1\", ${PORT}}])." >/dev/null
rabbitmq-plugins -q enable rabbitmq_stomp >/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
    if listening "$PORT"; then
        echo "rabbitmq-stomp: RabbitMQ STOMP answers on 127.0.0.1:$PORT"
        exit 0
    fi
    sleep 1
done
echo "rabbitmq-stomp: the plugin is enabled but nothing answers on 127.0.0.1:$PORT" >&2
exit 1
