"""`cdz recall`: show the agent an image or let it hear a wav; it recalls the other modality.

The file goes through the same feature code as training (`sensors.features`), the
modality's encoder, the nearest node and its cluster; the CDZ recalls a cluster in
every other modality, whose mode node is decoded into a picture (or spectrogram).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.autoencoder import decode, encode, load_autoencoder
from agent.checkpoint import RunFolder
from sensors.features import read_audio_file, read_image_file, write_png
from tools.evaluate import cluster_names

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav"}


def modality_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "visual"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    raise ValueError(f"{path}: unknown file type {suffix!r}; give an image ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                     "or a .wav")


def read_stimulus(path: Path) -> tuple[str, np.ndarray]:
    modality = modality_of(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return modality, (read_image_file(path) if modality == "visual" else read_audio_file(path))


def recall_files(run: RunFolder, files: list[Path], out_dir: Path) -> list[dict[str, Any]]:
    """Recall for each file; writes `<stem>.<modality>.png` reconstructions into out_dir."""
    from tools.train import load_brain  # heavy imports only when used

    config, enc, brain, _, _ = load_brain(run)
    coders = {m: load_autoencoder(run.encoder_path(m)) for m in config.modalities}
    names = {m: cluster_names(brain.classify(m, enc.train[m]), enc.train_y[m]) for m in config.modalities}
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in files:
        modality, x = read_stimulus(Path(path))
        if modality not in coders:
            raise ValueError(f"{path}: this run has no {modality} modality ({config.modalities})")
        z = encode(coders[modality], x[None])
        cluster = int(brain.classify(modality, z)[0])
        entry: dict[str, Any] = {"file": str(path), "modality": modality, "cluster": cluster,
                                 "cluster_name": names[modality].get(cluster), "recalled": {}}
        for target, cid in brain.cdz.recall(modality, cluster).items():
            item: dict[str, Any] = {"cluster": cid, "cluster_name": None, "png": None}
            pos = brain.cortices[target].mode_position(cid) if cid is not None else None
            if pos is not None:
                recon = decode(coders[target], pos[None])[0]
                png = out_dir / f"{Path(path).stem}.{target}.png"
                write_png(png, recon[::-1] if target == "audio" else recon, scale=4)  # low mels at the bottom
                item.update(cluster_name=names[target].get(cid), png=str(png))
            entry["recalled"][target] = item
        results.append(entry)
    return results


def format_recall(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        head = f"{r['file']} ({r['modality']}): cluster {r['cluster']} '{r['cluster_name']}'"
        lines.append(head)
        for target, item in r["recalled"].items():
            if item["cluster"] is None:
                lines.append(f"  recalls nothing in {target}")
            else:
                lines.append(f"  recalls {target} cluster {item['cluster']} '{item['cluster_name']}' -> {item['png']}")
    return "\n".join(lines)
