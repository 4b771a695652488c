"""`cdz bench robustness`: how the agent does on what it never met (docs/EVALUATION.md, "Harder cases").

It trains several runs, so it is a benchmark, not part of `make demo`:

* speaker held out: one run per FSDD speaker trained on the other five, scored
  audio->visual on all 500 of that speaker's recordings;
* noise: the FSDD test set under white and babble noise at 20, 10 and 5 dB SNR,
  audio->visual, on the standard run;
* distortion: the MNIST test set under random affine and elastic distortion,
  visual->audio, on the standard run;
* teacher mistakes: whole runs with `teacher.p_mismatch` 0.1 and 0.2.

Every score is a strict recall accuracy. Beside each, under "judge", is what the
supervised judge (a classifier of raw data, for scoring only) makes of the same
perturbed stimuli: the ceiling.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.core.autoencoder import load_autoencoder
from agent.core.checkpoint import RunFolder
from agent.core.config import Config, override
from replay.data.datasets import FSDD_SPEAKERS, list_fsdd_files
from sensors.file_reading import read_wav_file
from sensors.sound_features import audio_to_stimulus
from replay.naming import cluster_names
from tools.scoring.evaluate import _judge_for, evaluate, name_of
from tools.scoring.judge import predict
from replay.pipeline import load_brain, test_encodings
from replay.data.splits import load_splits
from replay.driver import train

SNRS_DB = (20, 10, 5)
DISTORTION = {"degrees": 20.0, "scale": (0.8, 1.2), "shear_rad": 0.3}


def _run(config: Config, out: Path, progress: bool) -> RunFolder:
    """A trained run in `out` (reused when it is already complete there)."""
    run = RunFolder(out)  # sleep settings do not change training: a run that differs only there is reused
    if (run.config_path.exists() and run.metrics().get("train")
            and dataclasses.replace(run.config(), sleep=config.sleep) == config):
        return run
    return train(config, out, progress=progress, overwrite=True)


def _recall(run: RunFolder, modality: str, x: np.ndarray, y: np.ndarray) -> float:
    """Strict recall accuracy of raw stimuli x of `modality` towards the other sense."""
    config, enc, brain, _, _ = load_brain(run)
    other = next(m for m in config.modalities if m != modality)
    names = cluster_names(brain.classify(other, enc.train[other]), enc.train_y[other])
    z = test_encodings(config, modality, load_autoencoder(run.encoder_path(modality)), x)
    recalled = brain.recall(modality, z)[1][other]
    return float(np.mean(name_of(recalled, names) == y))


def _judge(run: RunFolder, modality: str, x: np.ndarray, y: np.ndarray) -> float:
    config = run.config()
    k = config.modalities.index(modality)
    judge = _judge_for(run, modality, load_splits(config, "train")[modality], seed=config.seed * 1000 + 500 + k,
                       progress=False)
    return float(np.mean(predict(judge, x) == y))


def noisy_test_sounds(config: Config, kind: str, snr_db: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The audio test set with white or babble noise (three training clips of other speakers' words) at `snr_db`."""
    d = config.data
    test = list_fsdd_files("test", digits=list(d.digits), per_class=d.test_per_class,
                           speakers=list(d.speakers) or None)
    babble = list_fsdd_files("train", digits=list(d.digits)) if kind == "babble" else []
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for f in test:
        wave, rate = read_wav_file(f)
        wave = wave.astype(np.float64)
        if kind == "white":
            noise = rng.standard_normal(len(wave))
        else:
            noise = np.zeros(len(wave))
            for pick in rng.choice(len(babble), 3, replace=False):
                other, _ = read_wav_file(babble[int(pick)])
                n = min(len(other), len(wave))
                noise[:n] += other[:n]
        p_sig, p_noise = np.mean(wave**2), np.mean(noise**2)
        if p_noise > 0:
            wave = wave + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
        xs.append(audio_to_stimulus(wave.astype(np.float32), rate))
        ys.append(int(f.name.split("_")[0]))
    return np.stack(xs), np.array(ys, np.int64)


def distorted_test_images(config: Config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The visual test set under random affine (+-20 deg, scale 0.8-1.2, shear +-0.3) and elastic distortion."""
    import kornia.augmentation as K

    test = load_splits(config, "test")["visual"]
    shear = float(np.degrees(DISTORTION["shear_rad"]))
    warp = torch.nn.Sequential(
        K.RandomAffine(degrees=DISTORTION["degrees"], scale=DISTORTION["scale"], shear=shear, p=1.0),
        K.RandomElasticTransform(kernel_size=(15, 15), sigma=(4.0, 4.0), alpha=(1.0, 1.0), p=1.0),
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        x = torch.cat([warp(torch.from_numpy(test.x[i : i + 4096]).unsqueeze(1))
                       for i in range(0, len(test.x), 4096)])[:, 0].clamp(0, 1).numpy()
    return x, test.y


CASES = ("speakers", "noise", "distortion", "mistakes")


def bench_robustness(config: Config, out: Path, speakers: list[str] | None = None,
                     mismatch: tuple[float, ...] = (0.1, 0.2), progress: bool = True,
                     cases: tuple[str, ...] = CASES) -> dict[str, Any]:
    """Train what is needed under `out` and measure the harder `cases` (all by default); the JSON of the README."""
    speakers = list(FSDD_SPEAKERS) if speakers is None else speakers
    speakers = speakers if "speakers" in cases else []
    mismatch = mismatch if "mistakes" in cases else ()
    result: dict[str, Any] = {"speaker_held_out": {"per_speaker": {}}, "noise": {}, "distortion": {},
                              "teacher_noise": {}, "judge": {"speaker_held_out": {"per_speaker": {}}, "noise": {},
                                                             "distortion": {}, "teacher_noise": {}},
                              "seed": config.seed}
    judge = result["judge"]
    standard = _run(config, out / "standard", progress) if {"noise", "distortion"} & set(cases) else None
    for kind in ("white", "babble") if "noise" in cases else ():
        result["noise"][kind], judge["noise"][kind] = {}, {}
        for snr in SNRS_DB:
            x, y = noisy_test_sounds(config, kind, snr, seed=config.seed * 100 + snr)
            result["noise"][kind][str(snr)] = _recall(standard, "audio", x, y)
            judge["noise"][kind][str(snr)] = _judge(standard, "audio", x, y)
    if "distortion" in cases:
        x, y = distorted_test_images(config, seed=config.seed)
        result["distortion"]["visual->audio"] = _recall(standard, "visual", x, y)
        judge["distortion"]["visual->audio"] = _judge(standard, "visual", x, y)
    for spk in speakers:
        held = dataclasses.replace(config, data=dataclasses.replace(config.data, exclude_speakers=(spk,)))
        scores = evaluate(_run(held, out / f"without-{spk}", progress), progress=False, baselines=False)
        result["speaker_held_out"]["per_speaker"][spk] = scores["recall_accuracy"]["audio->visual"]
        judge["speaker_held_out"]["per_speaker"][spk] = scores["judge_accuracy"]["audio"]
    for part in (result, judge):
        per = part["speaker_held_out"]["per_speaker"]
        part["speaker_held_out"]["mean"] = float(np.mean(list(per.values()))) if per else None
    for p in mismatch:
        noisy = override(config, [f"teacher.p_mismatch={p}"])
        scores = evaluate(_run(noisy, out / f"mismatch-{p}", progress), progress=False, baselines=False)
        result["teacher_noise"][str(p)] = {**{k: v for k, v in scores["recall_accuracy"].items()},
                                           "classes": [scores["classes_discovered"][m] for m in config.modalities]}
        judge["teacher_noise"][str(p)] = dict(scores["judge_accuracy"])
    return result


def format_robustness(r: dict[str, Any]) -> str:
    j = r["judge"]
    lines = [f"{'case':44s} {'agent':>7s} {'judge':>7s}", "-" * 60]
    for spk, v in r["speaker_held_out"]["per_speaker"].items():
        lines.append(f"{'speaker held out: ' + spk + ' (audio->visual)':44s} {v:7.3f} "
                     f"{j['speaker_held_out']['per_speaker'][spk]:7.3f}")
    if r["speaker_held_out"]["mean"] is not None:
        lines.append(f"{'speaker held out: mean':44s} {r['speaker_held_out']['mean']:7.3f} "
                     f"{j['speaker_held_out']['mean']:7.3f}")
    for kind, per in r["noise"].items():
        for snr, v in per.items():
            lines.append(f"{f'{kind} noise {snr} dB SNR (audio->visual)':44s} {v:7.3f} {j['noise'][kind][snr]:7.3f}")
    for pair, v in r["distortion"].items():
        lines.append(f"{f'distorted MNIST ({pair})':44s} {v:7.3f} {j['distortion'][pair]:7.3f}")
    for p, s in r["teacher_noise"].items():
        pairs = [k for k in s if k != "classes"]
        lines.append(f"{f'p_mismatch {p}: ' + ', '.join(pairs):44s} "
                     + " ".join(f"{s[k]:7.3f}" for k in pairs) + f"  classes {s['classes']}")
    return "\n".join(lines)
