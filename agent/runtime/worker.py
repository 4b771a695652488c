"""The encoder worker of one modality: autoencoder plus that modality's cortex.

It turns stimuli into encodings (in batches: encoding never depends on learning),
learns them with the very `Cortex` the one-process brain uses, publishes the
excited cluster (and any cluster births and deaths just before it), applies the
hub's feedback, and decodes recalled clusters into reconstructions.

How stimuli come in and what it learned goes out is its flow (`agent.runtime.flows`):

* lossless (training replays): the run is bit-identical to the one-process
  brain. `agent.runtime.sequencer.LosslessSequencer` says which stimulus to learn
  next and when one may be learned before the hub's feedback on earlier ones.
  Checkpoints are consistent cuts: every process saves "after stimulus S-1".
* live (sensors): stimuli are learned as they come; a bounded queue drops the
  oldest under overload and counts the drops; feedback applies on arrival.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from agent.core.autoencoder import Autoencoder, as_input, encode
from agent.runtime.bus import BusClient
from agent.runtime.flows import LiveWorker, LosslessWorker
from agent.core.checkpoint import (REFINEMENTS, RunFolder, as_part, cortex_part, experience_part, part, rejected_key,
                                   worker_part)
from agent.core.cortex import Cortex
from agent.core.experience import DEFAULT_CAPACITY, Experience
from agent.core.recollection import Imagination
from agent.core.session_mean import SessionMean, session_for
from agent.runtime.service import Latency, PartOwner, Rate
from agent.core.state_check import check_arrays
from agent.runtime.sequencer import LosslessSequencer
from agent.core.units import CortexUnit
from agent.core.messages import Control, Credit, Excitation, Feedback, Message, Recall, Reconstruction, Stimulus

log = logging.getLogger(__name__)

MAX_GAP = 10_000  # a gap in one sender's numbering above this is a fresh start, not loss (5 min of a 30 fps camera)
MAX_SENDERS = 64  # senders whose numbering is followed at once


def own_keys(modality: str) -> tuple[str, ...]:
    """The checkpoint arrays a worker reads (prefixes): its sense's, not the others' experience."""
    return (f"{cortex_part(modality)}.", f"{worker_part(modality)}.", f"{experience_part(modality)}.",
            rejected_key(modality), REFINEMENTS)


class EncoderWorker(PartOwner):
    """Hosts one modality: encode, learn, publish excitations, apply feedback, reconstruct."""

    def __init__(self, bus: BusClient, modality: str, model: Autoencoder, cortex: Cortex, *, lossless: bool,
                 run: RunFolder | None = None, start: int = 0, total: int = 0, checkpoint_every: int = 0,
                 gen: int = 0, recon_hz: float = 60.0, queue_max: int = 64, experience: int = DEFAULT_CAPACITY,
                 session: SessionMean | None = None):
        super().__init__(bus, cortex_part(modality), lossless=lossless, run=run, total=total,
                         checkpoint_every=checkpoint_every, gen=gen)
        self.modality = modality
        self.model = model
        self.cortex = cortex
        self.unit = CortexUnit(cortex)
        self.recon_interval = 0.0 if recon_hz <= 0 else 1.0 / recon_hz
        self.experience = Experience(model.input_shape, experience)  # live: what it learned, for sleep
        self.session = session  # live: what it hears has this session's mean and spread traded for the training ones
        self.stage = 0  # the encoder stage (refinements and sleeps so far) the model belongs to
        self.holds = (start, 0)  # (checkpoint step, stage) of the brain it holds; set by from_run and reloads
        self.reloads = 0
        self.relived = 0  # stimuli learned again after swaps
        self.sequencer = LosslessSequencer(cortex, start=start, total=total, checkpoint_every=checkpoint_every)
        self.rejected = 0
        self.learned = 0
        self.duplicates = 0
        self.lost = 0  # gaps in each sender's stimulus numbering
        self.feedback_gaps = 0
        self.recons = 0
        self.recons_skipped = 0
        self.imagine = Imagination()  # decoded modes, kept while their node stays put
        self._next_mseq: dict[str, int] = {}  # per sender: the next stimulus number expected, newest last
        self.sequence_jumps = 0  # senders that started numbering afresh
        self._last_recon = 0.0
        self.latency = Latency()  # stimulus event time -> excitation published (live clocks only)
        self._rate = Rate()
        self.flow = LosslessWorker(self) if lossless else LiveWorker(self, queue_max)

    @classmethod
    def from_run(cls, bus: BusClient, run: RunFolder, modality: str, **kw) -> "EncoderWorker":
        """The worker of `modality` for a run folder, resumed from its newest checkpoint."""
        from agent.core.autoencoder import load_autoencoder

        config = run.config()
        if modality not in config.modalities:
            raise ValueError(f"this run has modalities {config.modalities}, not {modality!r}")
        with run.restoring(only=own_keys(modality)) as (step, state):
            stage = int(state.get(REFINEMENTS, 0))  # the encoder its nodes belong to (a sleep may be writing the next)
            model = load_autoencoder(run.fitting_encoder_path(modality, stage))
            cortex = cortex_from_state(modality, config, state)
            worker = cls(bus, modality, model, cortex, run=run, start=step, experience=config.sleep.buffer,
                         session=session_for(model, config.sense(modality)), **kw)
            worker._check_own(state)
            worker._load_own(state)
            worker.stage, worker.holds = stage, (step, stage)
        worker.sequencer.window_ns = int(round(config.cdz.window_s * 1e9)) + 1_000_000  # B plus 1 ms of margin
        return worker

    # ------------------------------------------------------------------ messages
    def handle(self, msg: Message) -> None:
        if msg.modality != self.modality and not isinstance(msg, Credit):
            return
        if isinstance(msg, Stimulus):
            self._count_gap(msg.source, msg.mseq)
            self.flow.take(msg)
        elif isinstance(msg, Feedback):
            self.flow.feedback(msg)
        elif isinstance(msg, Recall):
            self._on_recall(msg)
        elif isinstance(msg, Credit):
            self.flow.credit(msg)

    def _count_gap(self, source: str, mseq: int) -> None:
        """Count the stimuli a sender numbered but that never came, per sender. A gap above
        MAX_GAP is a sender that started counting afresh (or a bogus number), counted as a
        jump: one message cannot claim millions lost."""
        expected = self._next_mseq.pop(source, None)
        if expected is not None and mseq > expected:
            if mseq - expected > MAX_GAP:
                self.sequence_jumps += 1
            else:
                self.lost += mseq - expected
        self._next_mseq[source] = mseq + 1 if expected is None or mseq >= expected else expected
        while len(self._next_mseq) > MAX_SENDERS:  # the longest-silent sender is forgotten
            del self._next_mseq[next(iter(self._next_mseq))]

    def _on_recall(self, msg: Recall) -> None:
        now = time.monotonic()
        if self.recon_interval and now - self._last_recon < self.recon_interval:
            self.recons_skipped += 1
            return
        image = self.imagine(self.cortex, self.model, msg.cluster_id)
        if image is None:
            self.recons_skipped += 1
            return
        self._last_recon = now
        self.bus.send(Reconstruction(modality=self.modality, t_ns=msg.t_ns, seq=msg.seq, cluster_id=msg.cluster_id,
                                     cue_modality=msg.cue_modality, data=image,
                                     source=self.name, gen=self.gen, internal=msg.internal, depth=msg.depth))
        self.recons += 1

    def rewind(self, gen: int) -> None:
        """Go back to the newest complete checkpoint (another process died) and say ready."""
        if self.run_folder is None:
            return super().rewind(gen)
        self.finish_writing()
        with self.run_folder.restoring(only=own_keys(self.modality)) as (step, state):  # checked before any is loaded
            own = part(state, cortex_part(self.modality))
            self.cortex.check_state(own)
            self._check_own(state)
            self.cortex.load_state_dict(own)
            self._load_own(state)
        self.gen = gen
        self.sequencer.reset(step)
        self.flow.reset()
        self._next_mseq.clear()
        log.info("%s: rewound to checkpoint %d (generation %d)", self.name, step, gen)
        self.ready(step=step)

    # ------------------------------------------------------------------ learning
    def tick(self) -> None:
        self.flow.learn()

    def dispatch_waiting(self) -> None:
        """Handle what already waits on the bus (the hub's answers), between two stimuli."""
        while self.running and self.bus.waiting:  # one cheap poll when nothing waits
            msg = self.bus.recv_ready()
            if msg is not None:
                self._dispatch(msg)

    def encode_batch(self, stimuli: list[Stimulus]) -> list[np.ndarray | None]:
        """Encodings of a batch of stimuli (encoding never depends on learning); None for a wrong shape."""
        shape = self.model.input_shape
        good = [k for k, stim in enumerate(stimuli) if stim.data.shape == shape]
        out: list[np.ndarray | None] = [None] * len(stimuli)
        if good:
            for k, z in zip(good, encode(self.model, np.stack([as_input(stimuli[k].data) for k in good]))):
                out[k] = z
        return out

    def encode_heard(self, stim: Stimulus) -> np.ndarray | None:
        """The encoding of one stimulus as this session hears it (a thought is not heard); None for a wrong shape."""
        if stim.data.shape != self.model.input_shape:
            return None
        heard = as_input(stim.data)[None]
        if self.session is not None and not stim.internal:
            heard = self.session(heard)
        return encode(self.model, heard)[0]

    def heard_again(self, x: np.ndarray) -> np.ndarray:
        """What was heard already, through the session as it is now (counting nothing)."""
        return x if self.session is None else self.session.rescale(x)

    def on_control(self, msg: Control) -> None:
        if msg.command == "reload" and self.run_folder is not None and self.flow.swaps:
            self.reload(int(msg.args.get("id", 0)))
        elif msg.command == "ready" and msg.source == "hub":
            self.flow.hub_ready(msg.args.get("reload"))
        else:
            super().on_control(msg)

    def reload(self, reload_id: int) -> None:
        """Live: take up the slept brain and encoder (the newest checkpoint) without a restart.

        What this worker learned after that checkpoint's cut was learned by the old brain;
        it is learned again, in order, by the new one (once the hub has the new CDZ), and
        only then new input, so no stimulus is lost to the swap."""
        from agent.core.autoencoder import load_autoencoder

        t0 = time.perf_counter()
        self.finish_writing()
        with self.run_folder.restoring(only=own_keys(self.modality)) as (step, state):
            m = self.modality
            stage = int(state.get(REFINEMENTS, 0))
            if (step, stage) == self.holds:  # a repeated reload, or a worker started after the sleep
                self.ready(reload=reload_id)
                return
            own = part(state, cortex_part(m))
            self.cortex.check_state(own)
            self._check_own(state)
            model = self.model if stage == self.stage else load_autoencoder(self.run_folder.stage_encoder_path(m, stage))
            x, t = self.experience.newest(self.experience.seen - self.experience.seen_in(state, experience_part(m)))
            self.cortex.load_state_dict(own)
            self._load_own(state)
        self.model, self.stage, self.holds = model, stage, (step, stage)
        self.flow.swapped(x, t, reload_id)  # learned after the cut, by the old brain: learned again first
        self.reloads += 1
        log.info("%s: reloaded checkpoint %d (stage %d) in %.0f ms; %d stimuli to live again", self.name, step, stage,
                 1000 * (time.perf_counter() - t0), len(x))
        self.ready(reload=reload_id)

    def learn(self, stim: Stimulus, z: np.ndarray | None, relived: bool = False) -> Excitation:
        """The cortex unit learns the stimulus; its cluster changes, then its excitation, go to the hub."""
        out = self.unit.stimulus(stim, z, relived=relived)
        exc = out[-1]
        if exc.cluster_id < 0:
            self.rejected += 1
            if self.rejected == 1:
                log.warning("%s: rejected a stimulus (%s); further ones are only counted", self.name,
                            self.unit.last_error)
        for msg in out:  # cluster changes first: the CDZ applies them before the excitation
            self.flow.emit(msg)
        self.flow.learned(stim, exc, relived)
        if relived:
            self.relived += 1
            return exc
        self.learned += 1
        self._rate.add()
        return exc

    # ------------------------------------------------------------------ checkpoints
    def _check_own(self, state: dict[str, np.ndarray]) -> None:
        """Raise `StateError` unless the worker's own arrays of a checkpoint fit together."""
        m = self.modality
        check_arrays(state, {rejected_key(m): ("i", ())}, worker_part(m), optional=frozenset({rejected_key(m)}))
        self.sequencer.check_state(state, worker_part(m))
        self.experience.check_state(state, experience_part(m))

    def _load_own(self, state: dict[str, np.ndarray]) -> None:
        """The worker's own part of a checkpoint: refusals and recent excitations (for running ahead).
        The caller has checked it with `_check_own`, before it changed anything."""
        m = self.modality
        self.rejected = int(state.get(rejected_key(m), 0))
        self.sequencer.load_state_dict(state, worker_part(m))
        self.experience.load_state_dict(state, experience_part(m))

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """This worker's part of a checkpoint, copied: learning may go on while it is written."""
        m = self.modality
        state = {k: np.array(v) for k, v in as_part(cortex_part(m), self.cortex.state_dict()).items()}
        state[rejected_key(m)] = np.array(self.rejected, np.int64)
        state.update(self.sequencer.state_dict(worker_part(m)))
        if len(self.experience):
            state.update(self.experience.state_dict(experience_part(m)))  # copies already
        return state

    def stats(self) -> dict:
        return {"role": "worker", "modality": self.modality, "learned": self.learned,
                "rate_per_s": self._rate.per_second(), "queue": self.flow.queued(),
                "dropped_oldest": self.flow.dropped_oldest, "lost": self.lost, "sequence_jumps": self.sequence_jumps,
                "duplicates": self.duplicates,
                "feedback_gaps": self.feedback_gaps, "ran_ahead": self.sequencer.ran_ahead,
                "waited": self.sequencer.waited, "rejected": self.rejected, "recons": self.recons,
                "recons_skipped": self.recons_skipped, "recons_cached": self.imagine.hits, "nodes": self.cortex.n_nodes,
                "experience": len(self.experience), "session_heard": 0 if self.session is None else self.session.heard,
                "reloads": self.reloads, "relived": self.relived,
                "stage": self.stage,
                "clusters": self.cortex.n_clusters, "next_seq": self.sequencer.done,
                "latency_p50_ms": self.latency.percentile(50), "latency_p99_ms": self.latency.percentile(99)}


def cortex_from_state(modality: str, config, state: dict[str, np.ndarray]) -> Cortex:
    """A cortex rebuilt from the `cortex.<modality>.*` arrays of a brain checkpoint."""
    own = part(state, cortex_part(modality))
    if not own:
        raise ValueError(f"the checkpoint holds no cortex for {modality!r}")
    cortex = Cortex(modality, int(own["pos"].shape[1]), config.cortex, epoch=int(own.get("epoch", 1)),
                    kernels=config.runtime.kernels)
    cortex.load_state_dict(own)
    cortex.kernels.ready()  # compiled now, not on the first stimulus
    return cortex
