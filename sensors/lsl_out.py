"""`cdz lsl out`: what the agent perceives and recalls, as Lab Streaming Layer streams.

It hears the workers' excitations, the hub's recalls and the workers' reconstructions
on the bus, and pushes each as one sample of the stream of its kind and sense
(`cdz-excitation-audio`, `cdz-recall-visual`, `cdz-reconstruction-visual`; channels and
`desc` in `sensors.lsl`), so LabRecorder records them beside EEG, eye tracking or
anything else on the lab network, on one time line. Each sample is stamped with the
message's event time (the stimulus's capture time on the hub's clock), mapped onto this
machine's LSL clock at the moment it is pushed (`sensors.lsl.ClockBridge`): LabRecorder
sees when the agent saw or heard a thing, not when the answer went out.

Excitation and recall streams of the senses named by `--senses` open at start; a
reconstruction stream opens with its first reconstruction, whose shape it declares.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

from agent.core.messages import Excitation, Message, Reconstruction
from agent.runtime.bus import BusClient
from agent.runtime.service import Service, terminate_cleanly
from agent.runtime.topology import hears
from sensors.lsl import STREAM_KINDS, ClockBridge, load_pylsl, sample_of, stream_info

log = logging.getLogger(__name__)

NAME = "lsl_out"


class LslOut(Service):
    """One LSL outlet per (kind, sense); every excitation, recall and reconstruction one sample of it."""

    def __init__(self, bus: BusClient, senses: tuple[str, ...], source_prefix: str, pylsl: Any = None, gen: int = 0):
        super().__init__(bus, gen)
        from agent import __version__

        self.pylsl = pylsl or load_pylsl()
        self.senses = senses
        self.source_prefix = source_prefix
        self.version = __version__
        self.clock = ClockBridge(self.bus_ns, self.pylsl.local_clock)
        self.outlets: dict[tuple[str, str], Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # each reconstruction stream's shape, fixed by its first one
        self.pushed: dict[str, int] = dict.fromkeys(STREAM_KINDS.values(), 0)
        self.skipped = 0  # relived excitations (old event times, after a sleep), reconstructions of a new shape
        for sense in senses:
            for kind in ("excitation", "recall"):
                self._outlet(kind, sense)

    def _outlet(self, kind: str, sense: str, shape: tuple[int, ...] = ()) -> Any:
        key = (kind, sense)
        if key not in self.outlets:
            info = stream_info(self.pylsl, kind, sense, source_id=f"{self.source_prefix}/{kind}/{sense}",
                               version=self.version, senses=self.senses, shape=shape)
            self.outlets[key] = self.pylsl.StreamOutlet(info)
            log.info("%s: LSL stream %s open", self.name, info.name())
        return self.outlets[key]

    def handle(self, msg: Message) -> None:
        kind = STREAM_KINDS.get(type(msg))
        if kind is None:
            return
        if isinstance(msg, Excitation) and msg.relived:
            self.skipped += 1
            return
        shape: tuple[int, ...] = ()
        if isinstance(msg, Reconstruction):
            shape = self.shapes.setdefault(msg.modality, tuple(msg.data.shape))
            if shape != tuple(msg.data.shape):  # a stream's channel count is fixed: one of another shape cannot join
                self.skipped += 1
                return
        outlet = self._outlet(kind, msg.modality, shape)
        outlet.push_sample(sample_of(msg, self.senses), self.clock.to_lsl(msg.t_ns))
        self.pushed[kind] += 1

    def stats(self) -> dict:
        return {"role": "lsl", "direction": "out", "streams": len(self.outlets), "skipped": self.skipped,
                **{f"{kind}s": n for kind, n in self.pushed.items()}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`cdz lsl out`'s own options (the CLI adds --bus, --keys and --quiet)."""
    parser.add_argument("--senses", default="visual,audio",
                        help="senses whose excitation and recall streams open at start (others open with their "
                             "first message); a recall's cue_sense channel indexes this list")
    parser.add_argument("--source-id", metavar="PREFIX",
                        help="prefix of each stream's LSL source_id, which LabRecorder uses to pick a stream up "
                             "again after a restart (default: cdz@HOST:BUS)")


def run(args: argparse.Namespace) -> int:
    """Publish the bus's excitations, recalls and reconstructions as LSL streams until stopped."""
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    terminate_cleanly()
    senses = tuple(s.strip() for s in args.senses.split(",") if s.strip())
    prefix = args.source_id or f"cdz@{socket.gethostname()}:{args.bus}"
    pylsl = load_pylsl()
    client = BusClient(args.bus, NAME, hears(NAME), keys=args.keys)
    try:
        client.handshake(timeout_s=args.connect_timeout)
        bridge = LslOut(client, senses, prefix, pylsl=pylsl)
        bridge.ready()
        bridge.run(timeout_ms=5)
    finally:
        client.close()
    return 0

