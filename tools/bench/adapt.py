"""`cdz bench adapt`: does the agent learn a new user? (issue "The live agent learns its user")

For each FSDD speaker X in turn:

1. a run trained without X (`data.exclude_speakers`, reused when already there);
2. a show-and-tell session of K paired events: X's *training* recordings with
   MNIST training digits, at the teacher's pace, recorded as MCAP and played
   with `cdz play --follow` into the live runtime (hub and workers in live mode,
   `tools.bench.played_session`) as fast as it learns. The workers learn online and
   buffer the raw stimuli with their event times, as with real sensors;
3. `cdz sleep` on that experience;
4. audio->visual recall on X's held-out recordings (index 0-4) before and after,
   and the standard test sets (the other speakers' test words, the MNIST test
   set) before and after, for forgetting.

One more session fills the buffer (`sleep.buffer` stimuli) and sleeps while the
agent stays awake under a live feed, as `cdz live --sleep-every` does: the sleep's
length, capture-to-recall latency during it and the swap, and stimuli lost.

The handwriting case ("style") does the same for images: a run trained on MNIST
is taught MNIST training digits drawn thicker and slanted, and scored
visual->audio on the MNIST test digits drawn the same way.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent.core.autoencoder import Autoencoder, encode, load_autoencoder
from agent.core.brain import Brain
from agent.core.checkpoint import RunFolder, experience_part
from agent.core.config import Config, SleepSettings
from replay.pipeline import load_brain, test_encodings
from replay.data.datasets import FSDD_SPEAKERS, load_fsdd, load_mnist
from replay.player import Playlist
from replay.data.teacher import make_stream
from tools.bench.robustness import _run
from replay.naming import cluster_names
from tools.scoring.evaluate import name_of
from tools.live import LiveAgent
from tools.bench.played_session import SessionTally, play_session, sleep_awake
from tools.sleep import sleep_run

SESSION_SIZES = (30, 100, 300)  # a new voice should be learned from a few words
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

    def recall_names(self, modality: str, x: np.ndarray, names: dict[int, int],
                     before: np.ndarray | None = None) -> np.ndarray:
        """The scoring name of what stimuli x of `modality`, heard as one session (after `before`, if
        the session heard that first), recall in the other sense."""
        other = next(m for m in self.config.modalities if m != modality)
        z = test_encodings(self.config, modality, self.models[modality], x, before)
        return name_of(self.brain.recall(modality, z)[1][other], names)

    def names(self, modality: str, x: np.ndarray, y: np.ndarray) -> dict[int, int]:
        """Scoring names of `modality`'s clusters from labelled stimuli (for scoring only)."""
        return cluster_names(self.brain.classify(modality, encode(self.models[modality], x)), y)


def session_playlist(config: Config, x: dict[str, np.ndarray], y: dict[str, np.ndarray], events: int,
                     seed: int) -> Playlist:
    """`events` show-and-tell events over x/y at the teacher's pace, as the live sensors send them
    (labels only choose which stimuli are shown together, as a parent would)."""
    stream = make_stream(y, config.teacher, events, seed)
    return Playlist(stream.modalities, np.round(stream.t * 1e9).astype(np.int64), stream.modality, stream.index,
                    x, grow_until=len(stream))


def copy_run(trained: RunFolder, to: Path) -> RunFolder:
    """A working copy of a trained run: its config, encoders, encodings and newest checkpoint."""
    step, _ = trained.load_checkpoint()
    shutil.rmtree(to, ignore_errors=True)
    newest = f"{step:012d}"
    shutil.copytree(trained.path, to, ignore=lambda d, names: [
        n for n in names if (Path(d) == trained.path and n in ("stream.npz", "logs"))
        or (Path(d).name == "checkpoints" and n not in (newest, "LATEST"))])
    return RunFolder(to)


def adapt_once(trained: RunFolder, work: Path, new: dict[str, np.ndarray], new_y: dict[str, np.ndarray],
               probe: tuple[str, np.ndarray, np.ndarray] | None, standard: dict[str, tuple[np.ndarray, np.ndarray]],
               events: int, seed: int, sleep_settings: SleepSettings,
               awake_feed: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One session of `events` pairs played through the live runtime, then a sleep; recall on the
    probe and the standard sets before and after (no scoring without a probe).

    Without `awake_feed` the agent stops and `cdz sleep` runs on its checkpoint; with one, it
    sleeps while awake (as `cdz live --sleep-every`) under that live feed, which times the swap."""
    run = copy_run(trained, work / "run")
    settings = [f"sleep.{f.name}={json.dumps(getattr(sleep_settings, f.name))}"
                for f in dataclasses.fields(sleep_settings)]
    config = run.config()
    train = _train_sets(config)
    before = _scores(run, probe, standard, train) if probe is not None else {}
    playlist = session_playlist(config, new, new_y, events, seed)
    agent = LiveAgent(run, camera=None, use_mic=False, viewer=False, checkpoint_every_s=1e9, sleep_settings=settings)
    tally = SessionTally()
    awake = None
    agent.start()
    try:
        played = play_session(agent, playlist, work / "session.mcap", tally)
        if awake_feed is not None:
            first = {m: int((playlist.modality == k).sum()) for k, m in enumerate(playlist.modalities)}
            awake = sleep_awake(agent, tally, awake_feed, first)
    finally:
        agent.stop()
    _, state = run.load_checkpoint()
    buffered = {m: int(len(state.get(f"{experience_part(m)}.t_ns", []))) for m in config.modalities}
    learned = played["learned"] + (awake["feed_learned"] if awake else 0)
    unbuffered = learned - sum(buffered.values())  # learned, so it must be in the experience (no wrap here)
    lost = played["played"] - played["learned"] + (awake["lost"] if awake else 0) + max(unbuffered, 0)
    if awake is None:
        report, info = sleep_run(run, settings)
        sleep_s, summary = info["seconds"], report.summary()
    else:
        sleep_s, summary = awake["sleep_s"], awake["sleeps"]
    after = after_new_session = {}
    if probe is not None:  # the live worker's session goes on through the sleep: it heard the voice's session words
        after = _scores(run, probe, standard, train, heard_before=heard_in(playlist, probe[0]))
        after_new_session = _scores(run, probe, {}, train)
    for part in run.path.iterdir():  # the copy's weight goes; its logs stay for a look afterwards
        if part.name not in ("logs", "config.toml", "log.txt"):
            shutil.rmtree(part) if part.is_dir() else part.unlink()
    return {"before": before, "after": after, "after_new_session": after_new_session, "sleep_s": sleep_s,
            "sleep": summary, "lost": lost,
            "session": played, "buffered": buffered, "awake": awake}


def heard_in(playlist: Playlist, modality: str) -> np.ndarray:
    """The stimuli of `modality` a session played, in their order."""
    k = playlist.modalities.index(modality)
    return playlist.data[modality][playlist.index[playlist.modality == k]]


def _scores(run: RunFolder, probe: tuple[str, np.ndarray, np.ndarray], standard: dict[str, tuple[np.ndarray, np.ndarray]],
            train: dict[str, tuple[np.ndarray, np.ndarray]], heard_before: np.ndarray | None = None) -> dict[str, float]:
    """Recall on the probe (heard after `heard_before` in one session) and on each sense's standard
    test set (each a session of its own: other voices), named by the training stimuli."""
    agent = Agent.load(run)
    mods = agent.config.modalities
    names = {m: agent.names(m, *train[m]) for m in mods}
    other = {m: next(o for o in mods if o != m) for m in mods}
    m, px, py = probe
    out = {"probe": float(np.mean(agent.recall_names(m, px, names[other[m]], heard_before) == py))}
    for s, (sx, sy) in standard.items():
        out[f"{s}->{other[s]}"] = float(np.mean(agent.recall_names(s, sx, names[other[s]]) == sy))
    return out


def bench_adapt(config: Config, out: Path, speakers: list[str] | None = None,
                sizes: tuple[int, ...] = SESSION_SIZES, style: bool = True, progress: bool = True,
                draws: int = 1) -> dict[str, Any]:
    """Train what is needed under `out`, adapt to each speaker and the unseen hand; the issue's JSON.

    Each speaker's recall after K events is the mean over `draws` sessions, each drawing its K
    events afresh from the voice's training words (which words a few-shot session happens to
    hear moves single voices by several words)."""
    speakers = list(FSDD_SPEAKERS) if speakers is None else speakers
    result: dict[str, Any] = {"speakers": {}, "mean_after": {}, "forgetting": {}, "sleep_s": None,
                              "lost_stimuli": 0, "style": None, "seed": config.seed,
                              "buffer": config.sleep.buffer, "sleep_full_buffer_s": None, "swap": None,
                              "played_stimuli_per_s": None, "draws": draws}
    mnist = load_mnist("train")
    mnist_test = load_mnist("test")
    drops: dict[str, list[float]] = {}
    sleeps: list[float] = []
    rates: list[float] = []
    bar = tqdm(total=len(speakers) * len(sizes) * draws + (len(sizes) > 0 and style), desc="adapt",
               disable=not progress)
    for spk in speakers:
        held = dataclasses.replace(config, data=dataclasses.replace(config.data, exclude_speakers=(spk,)))
        run = _run(held, out / f"without-{spk}", progress)
        own = load_fsdd("train", speakers=[spk])
        probe = load_fsdd("test", speakers=[spk])
        others = [s for s in FSDD_SPEAKERS if s != spk]
        words = load_fsdd("test", speakers=others)
        standard = {"visual": (mnist_test.x, mnist_test.y), "audio": (words.x, words.y)}
        entry: dict[str, Any] = {"after": {}}
        for k in sizes:
            after, cold = [], []
            for d in range(draws):  # `draws` sessions of K events each, drawn afresh from the voice's words
                r = adapt_once(run, out / f"session-{spk}-{k}", {"visual": mnist.x, "audio": own.x},
                               {"visual": mnist.y, "audio": own.y}, ("audio", probe.x, probe.y), standard, k,
                               seed=config.seed * 100 + k + 1000 * d, sleep_settings=config.sleep)
                rates.append(r["session"]["played"] / r["session"]["seconds"])
                entry["before"] = r["before"]["probe"]
                after.append(r["after"]["probe"])
                cold.append(r["after_new_session"]["probe"])
                forgot = entry.setdefault("forgetting", {}).setdefault(str(k), {})
                for pair in ("visual->audio", "audio->visual"):
                    drops.setdefault(pair, []).append(r["before"][pair] - r["after"][pair])
                    forgot[pair] = max(forgot.get(pair, -1.0), r["before"][pair] - r["after"][pair])
                sleeps.append(r["sleep_s"])
                result["lost_stimuli"] += r["lost"]
                bar.update()
                bar.set_postfix_str(f"{spk} K={k}: {r['before']['probe']:.3f}->{r['after']['probe']:.3f}")
            entry["after"][str(k)] = float(np.mean(after))
            entry.setdefault("after_new_session", {})[str(k)] = float(np.mean(cold))
            if draws > 1:
                entry.setdefault("after_draws", {})[str(k)] = after
        result["speakers"][spk] = entry
    if speakers:  # the sleep targets are for a full buffer, slept while awake under a live feed
        spk = speakers[0]
        run = RunFolder(out / f"without-{spk}")
        own = load_fsdd("train", speakers=[spk])
        words = load_fsdd("test", speakers=[s for s in FSDD_SPEAKERS if s != spk])
        full = config.sleep.buffer // 2  # two stimuli per event
        r = adapt_once(run, out / f"session-{spk}-full", {"visual": mnist.x, "audio": own.x},
                       {"visual": mnist.y, "audio": own.y}, None, {}, full, seed=config.seed,
                       sleep_settings=config.sleep, awake_feed={"visual": mnist_test.x, "audio": words.x})
        rates.append(r["session"]["played"] / r["session"]["seconds"])
        result["sleep_full_buffer_s"] = r["sleep_s"]
        result["lost_stimuli"] += r["lost"]
        result["swap"] = {k: r["awake"][k] for k in ("latency_ms", "feed_sent", "lost", "sleeps")}
        result["swap"]["buffered"] = r["buffered"]
    if style and sizes:
        k = 300 if 300 in sizes else sizes[0]
        run = _run(config, out / "standard", progress)
        words = load_fsdd("test")
        standard = {"visual": (mnist_test.x, mnist_test.y), "audio": (words.x, words.y)}
        fsdd = load_fsdd("train")
        r = adapt_once(run, out / "session-style", {"visual": drawn_in_style(mnist.x), "audio": fsdd.x},
                       {"visual": mnist.y, "audio": fsdd.y}, ("visual", drawn_in_style(mnist_test.x), mnist_test.y),
                       standard, k, seed=config.seed, sleep_settings=config.sleep)
        rates.append(r["session"]["played"] / r["session"]["seconds"])
        result["lost_stimuli"] += r["lost"]
        result["style"] = {"before": r["before"]["probe"], "after": r["after"]["probe"], "events": k}
        sleeps.append(r["sleep_s"])
        bar.update()
    bar.close()
    for k in sizes:
        per = [e["after"][str(k)] for e in result["speakers"].values()]
        result["mean_after"][str(k)] = float(np.mean(per)) if per else None
        cold = [e["after_new_session"][str(k)] for e in result["speakers"].values()]
        result.setdefault("mean_after_new_session", {})[str(k)] = float(np.mean(cold)) if cold else None
    result["forgetting"] = {p: float(np.max(d)) for p, d in drops.items()}
    result["sleep_s"] = float(np.max(sleeps)) if sleeps else None
    result["played_stimuli_per_s"] = float(np.min(rates)) if rates else None
    return result


def _train_sets(config: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each modality's training stimuli and labels (labels name clusters for scoring only)."""
    from replay.data.splits import load_splits

    return {m: (s.x, s.y) for m, s in load_splits(config, "train").items()}




def live_adapt(config: Config, out: Path, speaker: str, events: int, sink: str, mic: str) -> dict[str, Any]:
    """The session once through the real live pipeline in real time (`tools.bench.live_session`), then
    `cdz sleep`; audio->visual on the speaker's unheard words before, after the session, after sleep."""
    from tools.bench.live_session import live_show_and_tell
    from tools.sleep import sleep_run

    held = dataclasses.replace(config, data=dataclasses.replace(config.data, exclude_speakers=(speaker,)))
    trained = _run(held, out / f"without-{speaker}", progress=False)
    work = out / f"live-{speaker}-{events}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(trained.path, work / "run")
    run = RunFolder(work / "run")
    probe = load_fsdd("test", speakers=[speaker])
    train = _train_sets(run.config())

    def score() -> float:
        agent = Agent.load(run)
        names = agent.names("visual", *train["visual"])
        return float(np.mean(agent.recall_names("audio", probe.x, names) == probe.y))

    rng = np.random.default_rng(config.seed)
    mnist = load_mnist("train")
    from replay.data.datasets import list_fsdd_files

    files = list_fsdd_files("train", speakers=[speaker])
    digits = rng.integers(0, 10, events)
    cards = np.array([rng.choice(np.flatnonzero(mnist.y == d)) for d in digits])
    words = [rng.choice([f for f in files if f.name.startswith(f"{d}_")]) for d in digits]
    before = score()
    session = live_show_and_tell(run.path, mnist.x[cards], mnist.y[cards], words, sink, mic, work, seed=config.seed)
    after_session = score()
    _, state = run.load_checkpoint()
    lived = {m: int(len(state.get(f"{experience_part(m)}.t_ns", []))) for m in config.modalities}
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
        lines.append(f"sleep on a full buffer ({2 * (r['buffer'] // 2)} stimuli), awake: {r['sleep_full_buffer_s']:.1f} s")
    if r.get("swap"):
        w = r["swap"]
        lines.append(f"during that sleep and swap: capture->recall p99 {w['latency_ms']['p99']:.1f} ms "
                     f"(max {w['latency_ms']['max']:.1f}, {w['latency_ms']['samples']} recalls), "
                     f"{w['lost']} of {w['feed_sent']} live stimuli lost")
    if r.get("played_stimuli_per_s"):
        lines.append(f"sessions played through the runtime at >= {r['played_stimuli_per_s']:.0f} stimuli/s")
    lines.append(f"lost stimuli: {r['lost_stimuli']}")
    return "\n".join(lines)
