"""A live view in Foxglove: the viewer serves every message's views over Foxglove's WebSocket protocol.

`cdz viewer --foxglove [PORT]` (and `cdz live --foxglove [PORT]`, through its viewer
process) starts the Foxglove SDK's WebSocket server and logs the views of each bus
message (`replay.foxglove_views`, the same topics and schemas as a recording) on
it. Foxglove connects with "Open connection" -> `ws://127.0.0.1:8765`.

The server runs in the viewer process, off the path from a stimulus to its
recall: hub and workers never wait on it. Each client gets a queue of
`BACKLOG` messages in the SDK; a client that stalls loses the oldest ones, never
slows the viewer. The server has no authentication: it binds to loopback unless
`--foxglove-host` names another address, and beyond one machine it belongs
behind an SSH tunnel, like a bus without CurveZMQ keys.
"""

from __future__ import annotations

import logging

import foxglove

from agent.core.messages import Message
from replay.foxglove_views import views

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
BACKLOG = 1024  # messages queued per client before the oldest are dropped
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class FoxgloveLive:
    """A Foxglove WebSocket server with one channel per view topic, opened on first use."""

    def __init__(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                 names: dict[str, dict[int, int]] | None = None):
        if host not in LOOPBACK:
            log.warning("the Foxglove server on %s:%d has no authentication: anyone who reaches that address sees "
                        "what the agent sees and hears (tunnel it over SSH instead)", host, port)
        self.names = names or {}
        self.context = foxglove.Context()
        self.server = foxglove.start_server(name="cdz-agent", host=host, port=port, context=self.context,
                                            message_backlog_size=BACKLOG)
        self.channels: dict[str, foxglove.Channel] = {}
        self.published = 0

    @property
    def port(self) -> int:
        return self.server.port

    def publish(self, msg: Message) -> None:
        for view in views(msg, self.names):
            channel = self.channels.get(view.topic)
            if channel is None:
                channel = self.channels[view.topic] = foxglove.Channel(
                    view.topic, schema=view.schema, message_encoding=view.encoding, context=self.context)
            channel.log(view.data, log_time=view.t_ns)
            self.published += 1

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.server.stop()
