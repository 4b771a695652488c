"""A fake touch sensor: what it takes to add a process to the agent (tests/test_topology.py).

Four pressures, several times a second, published as `touch` stimuli. This one file
and one `Role` in a graph are all a new process needs: the supervisor starts it with
`python -m tools.host tests.fake_touch`, and `graph` reads what it says from `PROCESS`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agent.core.messages import Stimulus
from agent.runtime import flags
from agent.runtime.bus import BusClient
from agent.runtime.service import Service
from agent.runtime.topology import Process
from tools.command_line import bus_arguments, connect, log_to_stderr

PROCESS = Process("touch", ("touch",), "four pressures, several times a second, as touch stimuli",
                  says=("stimulus.touch",))


class Touch(Service):
    """Sends a stimulus of four numbers in [0, 1) every `1 / rate_hz` seconds, stamped on the hub's clock."""

    stamps_events = True

    def __init__(self, bus: BusClient, rate_hz: float):
        super().__init__(bus)
        self.every_s = 1.0 / rate_hz
        self.due = time.monotonic()
        self.sent = 0
        self.rng = np.random.default_rng(0)

    def tick(self) -> None:
        if time.monotonic() < self.due:
            return
        self.due += self.every_s
        self.bus.send(self.stamp(Stimulus(modality="touch", t_ns=self.bus_ns(), seq=self.sent, mseq=self.sent,
                                          data=self.rng.random(4, dtype=np.float32))))
        self.sent += 1

    def stats(self) -> dict:
        return {"sent": self.sent}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bus_arguments(parser)
    parser.add_argument("--rate", type=flags.POSITIVE, default=20.0, help="stimuli per second")


def run(args: argparse.Namespace) -> int:
    log_to_stderr(args.quiet)
    client = connect(args, PROCESS.kind, PROCESS.topics())
    try:
        touch = Touch(client, args.rate)
        touch.ready()
        touch.run()
    finally:
        client.close()
    return 0
