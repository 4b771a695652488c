"""`cdz bench adapt`: does the agent learn a new user? (issue "The live agent learns its user")

For each FSDD speaker X in turn:

1. a run trained without X (`data.exclude_speakers`, reused when already there);
2. a show-and-tell session of K paired events: X's *training* recordings with
   MNIST training digits, at the teacher's pace. The brain learns them as the
   live agent does (growth off, nodes moving), and the experience buffer keeps
   the raw stimuli with their event times;
3. sleep (`agent.sleep`) on that experience;
4. audio->visual recall on X's held-out recordings (index 0-4) before and after,
   and the standard test sets (the other speakers' test words, the MNIST test
   set) before and after, for forgetting.

The handwriting case ("style") does the same for images: a run trained on MNIST
is taught MNIST training digits drawn thicker and slanted, and scored
visual->audio on the MNIST test digits drawn the same way.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent.autoencoder import Autoencoder, encode, load_autoencoder
from agent.brain import Brain
from agent.checkpoint import RunFolder
from agent.config import Config, SleepSettings
from agent.experience import Experience
from agent.sleep import sleep
from replay.datasets import FSDD_SPEAKERS, load_modality
from replay.teacher import make_stream
from tools.bench_robustness import _run
from tools.evaluate import cluster_names, name_of
from tools.sleep import sleep_augmenters
from agent.pipeline import load_brain

SESSION_SIZES = (100, 300, 1000)
STYLE = {"dilate": 1, "shear_deg": 20.0}  # the unseen hand: strokes one pixel thicker, slanted 20 degrees


def drawn_in_style(x: np.ndarray) -> np.ndarray:
    """MNIST digits (n, 28, 28) in [0, 1] drawn with thicker strokes and a slant (deterministic)."""
    import kornia

    t = torch.from_numpy(x.astype(np.float32)).unsqueeze(1)
    kernel = torch.ones(2 * STYLE["dilate"] + 1, 2 * STYLE["dilate"] + 1)
    out = []
    for i in range(0, len(t), 4096):
        part = kornia.morphology.dilation(t[i : i + 4096], kernel)
        n = len(part)
        m = kornia.geometry.transform.get_shear_matrix2d(
            torch.full((n, 2), 13.5), torch.full((n,), float(np.tan(np.radians(STYLE["shear_deg"])))), torch.zeros(n))
        out.append(kornia.geometry.transform.warp_affine(part, m[:, :2], (28, 28)))
    return torch.cat(out)[:, 0].clamp(0, 1).numpy()


@dataclasses.dataclass
class Agent:
    """A trained brain with its encoders, as the live agent holds them."""

    config: Config
    brain: Brain
    models: dict[str, Autoencoder]

    @classmethod
    def load(cls, run: RunFolder) -> "Agent":
        config, _, brain, _, _ = load_brain(run)
        return cls(config, brain, {m: load_autoencoder(run.encoder_path(m)) for m in config.modalities})

    def recall_names(self, modality: str, x: np.ndarray, names: dict[int, int]) -> np.ndarray:
        """The scoring name of what stimuli x of `modality` recall in the other sense."""
        other = next(m for m in self.config.modalities if m != modality)
        return name_of(self.brain.recall(modality, encode(self.models[modality], x))[1][other], names)

    def names(self, modality: str, x: np.ndarray, y: np.ndarray) -> dict[int, int]:
        """Scoring names of `modality`'s clusters from labelled stimuli (for scoring only)."""
        return cluster_names(self.brain.classify(modality, encode(self.models[modality], x)), y)


def live_session(agent: Agent, x: dict[str, np.ndarray], y: dict[str, np.ndarray], events: int, seed: int,
                 capacity: int) -> dict[str, Experience]:
    """Show and tell `events` pairs drawn from x/y; the brain learns them; returns the experience."""
    stream = make_stream(y, agent.config.teacher, events, seed)
    mods = stream.modalities
    codes = {m: encode(agent.models[m], x[m]) for m in mods}  # encoding never depends on learning
    buffers = {m: Experience(x[m].shape[1:], capacity) for m in mods}
    for t, k, i in zip(stream.t, stream.modality, stream.index):
        m = mods[k]
        if agent.brain.learn(m, codes[m][i], float(t)) is not None:
            buffers[m].add(x[m][i], int(round(t * 1e9)))
    return buffers


def adapt_once(run: RunFolder, new: dict[str, np.ndarray], new_y: dict[str, np.ndarray], probe: tuple[str, np.ndarray,
               np.ndarray], standard: dict[str, tuple[np.ndarray, np.ndarray]], train: dict[str, tuple[np.ndarray,
               np.ndarray]], events: int, seed: int, sleep_settings: SleepSettings) -> dict[str, Any]:
    """One session of `events` pairs and a sleep; recall on the probe and the standard sets before and after."""
    agent = Agent.load(run)
    agent.config = dataclasses.replace(agent.config, sleep=sleep_settings)
    mods = agent.config.modalities

    def scores() -> dict[str, float]:
        names = {m: agent.names(m, *train[m]) for m in mods}
        other = {m: next(o for o in mods if o != m) for m in mods}
        m, px, py = probe
        out = {"probe": float(np.mean(agent.recall_names(m, px, names[other[m]]) == py))}
        for s in mods:
            sx, sy = standard[s]
            out[f"{s}->{other[s]}"] = float(np.mean(agent.recall_names(s, sx, names[other[s]]) == sy))
        return out

    before = scores()
    buffers = live_session(agent, new, new_y, events, seed, agent.config.sleep.buffer)
    experience = {m: b.arrays() for m, b in buffers.items()}
    old = {m: train[m][0] for m in mods}
    t0 = time.perf_counter()
    report = sleep(agent.brain, agent.models, experience, agent.config.sleep, seed, old_stimuli=old,
                   augment=sleep_augmenters(mods))
    sleep_s = time.perf_counter() - t0
    after = scores()
    lost = sum(b.seen for b in buffers.values()) - 2 * events  # every shown stimulus must be learned and kept
    return {"before": before, "after": after, "sleep_s": sleep_s, "report": report.summary(), "lost": abs(lost)}


def bench_adapt(config: Config, out: Path, speakers: list[str] | None = None,
                sizes: tuple[int, ...] = SESSION_SIZES, style: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train what is needed under `out`, adapt to each speaker and the unseen hand; the issue's JSON."""
    speakers = list(FSDD_SPEAKERS) if speakers is None else speakers
    result: dict[str, Any] = {"speakers": {}, "mean_after": {}, "forgetting": {}, "sleep_s": None,
                              "lost_stimuli": 0, "style": None, "seed": config.seed,
                              "buffer": config.sleep.buffer, "sleep_full_buffer_s": None}
    mnist = load_modality("visual", "train")
    mnist_test = load_modality("visual", "test")
    drops: dict[str, list[float]] = {}
    sleeps: list[float] = []
    bar = tqdm(total=len(speakers) * len(sizes) + (len(sizes) > 0 and style), desc="adapt", disable=not progress)
    for spk in speakers:
        held = dataclasses.replace(config, data=dataclasses.replace(config.data, exclude_speakers=(spk,)))
        run = _run(held, out / f"without-{spk}", progress)
        own = load_modality("audio", "train", speakers=[spk])
        probe = load_modality("audio", "test", speakers=[spk])
        others = [s for s in FSDD_SPEAKERS if s != spk]
        words = load_modality("audio", "test", speakers=others)
        train = {m: (x, y) for m, (x, y) in _train_sets(held).items()}
        standard = {"visual": (mnist_test.x, mnist_test.y), "audio": (words.x, words.y)}
        entry: dict[str, Any] = {"after": {}}
        for k in sizes:
            r = adapt_once(run, {"visual": mnist.x, "audio": own.x}, {"visual": mnist.y, "audio": own.y},
                           ("audio", probe.x, probe.y), standard, train, k, seed=config.seed * 100 + k,
                           sleep_settings=config.sleep)
            entry["before"] = r["before"]["probe"]
            entry["after"][str(k)] = r["after"]["probe"]
            entry.setdefault("forgetting", {})[str(k)] = {}
            for pair in ("visual->audio", "audio->visual"):
                drops.setdefault(pair, []).append(r["before"][pair] - r["after"][pair])
                entry["forgetting"][str(k)][pair] = r["before"][pair] - r["after"][pair]
            sleeps.append(r["sleep_s"])
            result["lost_stimuli"] += r["lost"]
            bar.update()
            bar.set_postfix_str(f"{spk} K={k}: {r['before']['probe']:.3f}->{r['after']['probe']:.3f}")
        result["speakers"][spk] = entry
    if speakers:  # the sleep target is for a full buffer: one session that fills it
        spk = speakers[0]
        run = RunFolder(out / f"without-{spk}")
        own = load_modality("audio", "train", speakers=[spk])
        train = _train_sets(run.config())
        full = config.sleep.buffer // 2  # two stimuli per event
        r = adapt_once(run, {"visual": mnist.x, "audio": own.x}, {"visual": mnist.y, "audio": own.y},
                       ("audio", own.x[:1], own.y[:1]), {m: (x[:1], y[:1]) for m, (x, y) in train.items()}, train,
                       full, seed=config.seed, sleep_settings=config.sleep)
        result["sleep_full_buffer_s"] = r["sleep_s"]
        result["lost_stimuli"] += r["lost"]
    if style and sizes:
        k = 300 if 300 in sizes else sizes[0]
        run = _run(config, out / "standard", progress)
        words = load_modality("audio", "test")
        train = _train_sets(config)
        standard = {"visual": (mnist_test.x, mnist_test.y), "audio": (words.x, words.y)}
        fsdd = load_modality("audio", "train")
        r = adapt_once(run, {"visual": drawn_in_style(mnist.x), "audio": fsdd.x}, {"visual": mnist.y, "audio": fsdd.y},
                       ("visual", drawn_in_style(mnist_test.x), mnist_test.y), standard, train, k, seed=config.seed,
                       sleep_settings=config.sleep)
        result["style"] = {"before": r["before"]["probe"], "after": r["after"]["probe"], "events": k}
        sleeps.append(r["sleep_s"])
        bar.update()
    bar.close()
    for k in sizes:
        per = [e["after"][str(k)] for e in result["speakers"].values()]
        result["mean_after"][str(k)] = float(np.mean(per)) if per else None
    result["forgetting"] = {p: float(np.max(d)) for p, d in drops.items()}
    result["sleep_s"] = float(np.max(sleeps)) if sleeps else None
    return result


def _train_sets(config: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each modality's training stimuli and labels (labels name clusters for scoring only)."""
    from replay.splits import load_splits

    return {m: (s.x, s.y) for m, s in load_splits(config, "train").items()}




def live_adapt(config: Config, out: Path, speaker: str, events: int, sink: str, mic: str) -> dict[str, Any]:
    """The session once through the real live pipeline in real time (`tools.live_session`), then
    `cdz sleep`; audio->visual on the speaker's unheard words before, after the session, after sleep."""
    import shutil

    from tools.live_session import live_show_and_tell
    from tools.sleep import sleep_run

    held = dataclasses.replace(config, data=dataclasses.replace(config.data, exclude_speakers=(speaker,)))
    trained = _run(held, out / f"without-{speaker}", progress=False)
    work = out / f"live-{speaker}-{events}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(trained.path, work / "run")
    run = RunFolder(work / "run")
    probe = load_modality("audio", "test", speakers=[speaker])
    train = _train_sets(run.config())

    def score() -> float:
        agent = Agent.load(run)
        names = agent.names("visual", *train["visual"])
        return float(np.mean(agent.recall_names("audio", probe.x, names) == probe.y))

    rng = np.random.default_rng(config.seed)
    mnist = load_modality("visual", "train")
    from replay.datasets import list_fsdd_files

    files = list_fsdd_files("train", speakers=[speaker])
    digits = rng.integers(0, 10, events)
    cards = np.array([rng.choice(np.flatnonzero(mnist.y == d)) for d in digits])
    words = [rng.choice([f for f in files if f.name.startswith(f"{d}_")]) for d in digits]
    before = score()
    session = live_show_and_tell(run.path, mnist.x[cards], mnist.y[cards], words, sink, mic, work, seed=config.seed)
    after_session = score()
    _, state = run.load_checkpoint()
    lived = {m: int(len(state.get(f"experience.{m}.t_ns", []))) for m in config.modalities}
    report, info = sleep_run(run, [f"sleep.{f.name}={json.dumps(getattr(config.sleep, f.name))}"
                                   for f in dataclasses.fields(config.sleep)])
    stats = session["stats"]
    workers = [v for v in stats.values() if v.get("role") == "worker"]
    return {"speaker": speaker, "events": events, "before": before, "after_session": after_session,
            "latency_p99_ms": {k: v for k, v in stats.get("hub", {}).items() if k.startswith("latency_p99")},
            "dropped": sum(int(w.get("dropped_oldest", 0)) + int(w.get("lost", 0)) for w in workers),
            "after": score(), "cards": session["cards"], "words": session["words"], "lived": lived,
            "sleep_s": info["seconds"], "sleep": report.summary(), "returncode": session["returncode"]}


def format_adapt(r: dict[str, Any]) -> str:
    sizes = list(r["mean_after"])
    lines = [f"{'new speaker (audio->visual, unheard words)':44s} {'before':>7s} " + " ".join(f"{'K=' + k:>7s}" for k in sizes),
             "-" * (53 + 8 * len(sizes))]
    for spk, e in r["speakers"].items():
        lines.append(f"{spk:44s} {e['before']:7.3f} " + " ".join(f"{e['after'][k]:7.3f}" for k in sizes))
    if r["speakers"]:
        before = float(np.mean([e["before"] for e in r["speakers"].values()]))
        lines.append(f"{'mean':44s} {before:7.3f} " + " ".join(f"{r['mean_after'][k]:7.3f}" for k in sizes))
    for pair, drop in r["forgetting"].items():
        lines.append(f"forgetting {pair}: {100 * drop:+.1f} points (largest drop of the standard test recall)")
    if r["style"]:
        s = r["style"]
        lines.append(f"unseen hand (visual->audio, K={s['events']}): {s['before']:.3f} -> {s['after']:.3f}")
    if r["sleep_s"] is not None:
        lines.append(f"longest sleep of a session: {r['sleep_s']:.1f} s")
    if r.get("sleep_full_buffer_s") is not None:
        lines.append(f"sleep on a full buffer ({2 * (r['buffer'] // 2)} stimuli): {r['sleep_full_buffer_s']:.1f} s")
    lines.append(f"lost stimuli: {r['lost_stimuli']}")
    return "\n".join(lines)
