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

import logging
from typing import Any

from agent.core.messages import Excitation, Message, Reconstruction
from agent.runtime.bus import BusClient
from agent.runtime.service import Service
from sensors.lsl import STREAM_KINDS, ClockBridge, load_pylsl, sample_of, stream_info

log = logging.getLogger(__name__)



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
