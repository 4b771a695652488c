"""`cdz bench live --run RUN`: how well the live senses feed a trained agent.

Two checks against the run's own test scores, on the same test items:

* camera: MNIST test digits printed on cards and filmed (light uneven background,
  rotation, blur, hand-held jitter: `tools.material.card_video`) go through the camera's
  pipeline (`sensors.camera.extract_stimuli`). Measured: the share of cards that
  became exactly one stimulus, and visual->audio recall of the card stimuli
  against recall of the clean MNIST images of the same cards.
* microphone: FSDD test utterances with pauses, noise and loudness jitter
  (`tools.material.utterance_audio`; loudness jitter, optionally noise) go through the microphone's segmenter
  and noise gate (`sensors.words.words_in`, offline: the live path through PortAudio
  is exercised by tests/test_microphone.py). Measured: the share of utterances
  that became exactly one stimulus, and audio->visual recall of those stimuli
  against recall of the clean recordings.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from agent.core.autoencoder import load_autoencoder
from agent.core.checkpoint import RunFolder
from replay.naming import scoring_names
from replay.pipeline import test_encodings
from tools.scoring.evaluate import name_of


class _Judge:
    """Recall accuracy of raw stimuli under a trained run (names from its training data)."""

    def __init__(self, run: RunFolder):
        from replay.pipeline import load_brain

        self.run = run
        self.loaded = load_brain(run)
        enc = self.loaded.enc
        self.names = scoring_names(self.loaded.config, enc, self.loaded.brain)
        self.models = {m: load_autoencoder(run.encoder_path(m)) for m in self.loaded.config.modalities}

    def recalled_names(self, modality: str, stimuli: np.ndarray) -> np.ndarray:
        """The digit each stimulus, the set heard as one session, recalls in the other modality (-1: nothing)."""
        if len(stimuli) == 0:
            return np.zeros(0, np.int64)
        config = self.loaded.config
        other = next(m for m in config.modalities if m != modality)
        z = test_encodings(config, modality, self.models[modality], np.asarray(stimuli, np.float32))
        _, recalled = self.loaded.brain.recall(modality, z)
        return name_of(recalled[other], self.names[other])


def camera_check(judge: _Judge, n_cards: int, folder: Path, seed: int = 0) -> dict:
    from replay.data.datasets import load_mnist
    from sensors.camera import extract_stimuli
    from tools.material.card_video import make_card_video

    test = load_mnist("test")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(test.y), size=n_cards, replace=False)
    video = folder / "cards.avi"
    truth = make_card_video(video, test.x[idx], test.y[idx], seed)
    found = extract_stimuli(str(video), max_rate=0.0)  # new cards only: `cdz camera` repeats them at <= 2/s
    per_card: list[list[np.ndarray]] = [[] for _ in truth]
    stray = 0
    for _, frame, stim in found:
        hit = [k for k, c in enumerate(truth) if c["first"] <= frame <= c["last"] + 2]
        if hit:
            per_card[hit[0]].append(stim)
        else:
            stray += 1
    one = [k for k, s in enumerate(per_card) if len(s) == 1]
    seen = [k for k, s in enumerate(per_card) if s]
    labels = test.y[idx]
    card_rec = judge.recalled_names("visual", np.stack([per_card[k][0] for k in seen])) if seen else np.zeros(0)
    clean_rec = judge.recalled_names("visual", test.x[idx])
    return {"cards": n_cards, "one_stimulus_share": len(one) / n_cards, "cards_missed": n_cards - len(seen),
            "cards_with_several": sum(len(s) > 1 for s in per_card), "stray_stimuli": stray,
            "recall_cards": float(np.mean(card_rec == labels[seen])) if seen else 0.0,
            "recall_clean": float(np.mean(clean_rec == labels))}


def microphone_check(judge: _Judge, n_utterances: int, seed: int = 0, noise_db: float | None = None,
                     speaker: str | None = None) -> dict:
    """`noise_db`: white noise of that level (dBFS) over the whole recording; None: a clean room.
    `speaker`: only that FSDD voice, any of its recordings (for a run trained without it)."""
    from replay.data.datasets import list_fsdd_files
    from sensors.file_reading import read_audio_file
    from sensors.sound_features import SAMPLE_RATE, audio_to_stimulus
    from sensors.words import words_in
    from tools.material.utterance_audio import build_recording, pick_utterances, score_segments

    folder = Path(list_fsdd_files("test")[0]).parent
    paths = (pick_utterances(folder, n_utterances, "test", seed) if speaker is None
             else pick_utterances(folder, n_utterances, "all", seed, speakers=[speaker]))
    wave, truth = build_recording(paths, rate=SAMPLE_RATE, noise_db=noise_db, jitter_db=6.0, seed=seed)
    words = words_in(wave, SAMPLE_RATE)  # cut and noise-gated as the microphone does it
    score = score_segments([(w.start_s, w.end_s) for w in words], truth)
    first: dict[int, np.ndarray] = {}
    for w in words:
        overlaps = [min(w.end_s, u.end_s) - max(w.start_s, u.start_s) for u in truth]
        k = int(np.argmax(overlaps))
        if overlaps[k] > 0 and k not in first:
            first[k] = audio_to_stimulus(w.audio, SAMPLE_RATE)
    labels = np.array([u.digit for u in truth])
    seen = sorted(first)
    heard = judge.recalled_names("audio", np.stack([first[k] for k in seen])) if seen else np.zeros(0)
    clean = judge.recalled_names("audio", np.stack([read_audio_file(p) for p in paths]))
    return {"utterances": n_utterances, "one_stimulus_share": score.share, "spurious_segments": score.spurious,
            "recall_heard": float(np.mean(heard == labels[seen])) if seen else 0.0,
            "recall_clean": float(np.mean(clean == labels))}


def session_check(run: RunFolder, speaker: str, words: int, sink: str, mic: str, sleep_every_min: float,
                  folder: Path, seed: int = 0) -> dict:
    """A show-and-tell session in `speaker`'s voice through `cdz live` in real time, on a copy of
    the run that learns and sleeps as the live agent does: does it hear the new voice better in
    the second half of the session than in the first?"""
    import shutil

    from replay.data.datasets import FSDD_INDICES, list_fsdd_files, load_mnist
    from tools.bench.live_session import live_show_and_tell, recall_in_halves

    shutil.copytree(run.path, folder / "run")  # the user's run is not changed
    rng = np.random.default_rng(seed)
    mnist = load_mnist("test")
    fsdd = Path(list_fsdd_files("test")[0]).parent
    digits = rng.integers(0, 10, words)
    cards = np.array([rng.choice(np.flatnonzero(mnist.y == d)) for d in digits])
    indices = sorted(i for r in FSDD_INDICES.values() for i in r)  # all of them: the voice is new to the run
    order = {d: rng.permutation(indices) for d in range(10)}
    said = [fsdd / f"{d}_{speaker}_{order[d][np.sum(digits[:k] == d) % len(indices)]}.wav"
            for k, d in enumerate(digits)]  # a recording is said again only after all 50 of its digit
    live_args = ("--no-viewer", "--sleep-every", f"{sleep_every_min:g}")
    session = live_show_and_tell(folder / "run", mnist.x[cards], mnist.y[cards], said, sink, mic, folder / "session",
                                 seed=seed, live_args=live_args)
    err = (folder / "session" / "live.err").read_text(errors="replace")
    slept = re.search(r"sleeps (\d+)", err)
    return {"speaker": speaker, "sleep_every_min": sleep_every_min, "sleeps": int(slept[1]) if slept else None,
            "returncode": session["returncode"],
            "words": recall_in_halves(session["events"], session["said"], "audio", "visual"),
            "cards": recall_in_halves(session["events"], session["shown"], "visual", "audio")}


def bench_live(run: RunFolder, cards: int = 200, utterances: int = 200, seed: int = 0,
               speaker: str | None = None, session: dict | None = None) -> dict:
    """`speaker`: hear only that FSDD voice (a run trained without it: `cdz bench robustness`'s folds).
    `session`: also a real-time session in that voice (`session_check`'s words, sink, mic, sleep_every_min)."""
    if session is not None and speaker is None:  # before minutes of filming and hearing, not after
        raise ValueError("a live session needs a speaker: the new voice it hears")
    judge = _Judge(run)
    with tempfile.TemporaryDirectory(prefix="cdz-live-") as tmp:
        cam = camera_check(judge, cards, Path(tmp), seed)
    mic = microphone_check(judge, utterances, seed, speaker=speaker)
    noisy = microphone_check(judge, utterances, seed, noise_db=-55.0, speaker=speaker)
    result = {"camera": cam, "microphone": mic, "microphone_noisy": noisy, "speaker": speaker, "run": str(run.path)}
    if session is not None:
        with tempfile.TemporaryDirectory(prefix="cdz-session-") as tmp:
            result["session"] = session_check(run, speaker, folder=Path(tmp), seed=seed, **session)
    return result


def format_live(r: dict) -> str:
    c, m = r["camera"], r["microphone"]
    return "\n".join([
        f"camera      {c['one_stimulus_share']:6.1%} of {c['cards']} cards gave exactly one stimulus "
        f"(missed {c['cards_missed']}, several {c['cards_with_several']}, stray {c['stray_stimuli']}); "
        f"recall visual->audio {c['recall_cards']:.3f} on the cards vs {c['recall_clean']:.3f} on the clean digits",
        f"microphone  {m['one_stimulus_share']:6.1%} of {m['utterances']} utterances"
        f"{' of ' + r['speaker'] if r.get('speaker') else ''} gave exactly one stimulus "
        f"(spurious {m['spurious_segments']}); recall audio->visual {m['recall_heard']:.3f} heard vs "
        f"{m['recall_clean']:.3f} on the clean recordings",
        f"  with -55 dBFS white noise: {r['microphone_noisy']['one_stimulus_share']:.1%} one stimulus each; "
        f"recall {r['microphone_noisy']['recall_heard']:.3f} after the noise gate vs {r['microphone_noisy']['recall_clean']:.3f} clean",
        *([] if "session" not in r else [_format_session(r["session"])]),
    ])


def _format_session(s: dict) -> str:
    w, c = s["words"], s["cards"]

    def half(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return (f"session     {w['items']} words of {s['speaker']} through `cdz live` (sleep every {s['sleep_every_min']:g} min, "
            f"{s['sleeps']} sleeps): recall audio->visual {half(w['first_half'])} first half -> "
            f"{half(w['second_half'])} second half ({w['heard']} heard); cards visual->audio "
            f"{half(c['first_half'])} -> {half(c['second_half'])}")
