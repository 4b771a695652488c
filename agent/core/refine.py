"""One refinement phase between stream segments: undo merges, teach the encoders, follow.

Order matters. Merges are undone first (`agent.core.merges`), so that the encoders are
then taught towards the right classes and not towards a shared cluster of two
digits. Each encoder is then taught by the other sense (`agent.core.teaching`): all
targets are read from the brain as it stands, the senses are taught at the same time,
then the nodes follow their stimuli into the new encoding space, and the stream goes on.
Everything here reads only stimuli, event times and the brain; never a label.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from agent.core.autoencoder import Autoencoder, encode
from agent.core.brain import Brain
from agent.core.config import RefineSettings
from agent.core.merges import MergeSettings, Split, split_merges
from agent.core.pairs import cooccurring
from agent.core.teaching import Augment, follow_nodes, partner_targets, teach_at_once, teach_encoder
from agent.core.stream import Stream


@dataclass
class RefineReport:
    splits: list[Split] = field(default_factory=list)
    taught: dict[str, dict] = field(default_factory=dict)  # modality -> teach_encoder info

    def summary(self) -> str:
        parts = [f"{len(self.splits)} cluster splits"]
        parts += [f"{m} taught {info['steps']} steps, loss {info['losses'][0]:.4f}->{info['losses'][-1]:.4f}"
                  for m, info in self.taught.items()]
        return "; ".join(parts)


def refine(brain: Brain, models: dict[str, Autoencoder], x_train: dict[str, np.ndarray],
           codes: dict[str, np.ndarray], stream: Stream, upto: int, settings: RefineSettings, seed: int,
           augmenters: dict[str, Augment | None] | None = None) -> tuple[dict[str, np.ndarray], RefineReport]:
    """Refine brain and encoders in place after the first `upto` stimuli of the stream.

    Returns the new training encodings per modality and what was done. Modalities
    whose encoder is None or "identity" are not taught.
    """
    report = RefineReport()
    mods = brain.modalities
    window = brain.config.cdz.window_s
    pairs = {(a, b): cooccurring(stream, a, b, window, 0, upto) for i, a in enumerate(mods) for b in mods[i + 1 :]}
    if settings.merge_conductance > 0:
        merge = MergeSettings(conductance=settings.merge_conductance, min_side=settings.merge_min_side)
        for (a, b), (rows_a, rows_b) in pairs.items():
            made = split_merges(brain, codes, a, b, rows_a, rows_b, merge)
            report.splits += made
            recount_other_senses(brain, codes, pairs, made, (a, b))
    if settings.teach_weight <= 0:
        return codes, report
    # every sense's targets come from the brain as it stands, before any encoder moves
    jobs, before = {}, {}
    for k, m in enumerate(mods):
        model = models.get(m)
        if model is None or not model.learnable:
            continue
        rows, _, soft = partner_targets(brain, codes, pairs, m)
        if len(rows) == 0:
            continue
        before[m] = copy.deepcopy(model)
        jobs[m] = partial(teach_encoder, model, x_train[m], rows, soft, weight=settings.teach_weight,
                          epochs=settings.teach_epochs,
                          min_steps=round(settings.teach_min_steps * brain.config.sense(m).teach_steps_scale),
                          lr=settings.teach_lr, batch_size=model.settings.batch_size, seed=seed * 1000 + k,
                          augment=(augmenters or {}).get(m) if settings.augment else None,
                          sharpness=settings.teach_sharpness, agree=brain.config.sense(m).agree_weight)
    report.taught = teach_at_once(jobs)
    new_codes = dict(codes)
    for m, old_model in before.items():
        new_codes[m] = encode(models[m], x_train[m])
        follow_nodes(brain.cortices[m], codes[m], new_codes[m], old_model, models[m])
    return new_codes, report


def recount_other_senses(brain: Brain, codes: dict[str, np.ndarray], pairs: dict[tuple[str, str], tuple[np.ndarray,
                         np.ndarray]], splits: list[Split], pair: tuple[str, str]) -> None:
    """After the merge rule split clusters for one pair of senses, count the rows between the
    halves and every *other* sense again from their co-occurrences (three or more senses).

    The merge rule sets the rows of the pair that found the split. A third sense would
    otherwise keep pointing at the old cluster and feed the moved nodes back into it (a
    reward sense split by the images was joined again by the words), and the new half
    would recall nothing in it. With two senses there is no other sense: nothing changes.
    """
    for s in splits:
        m = s.modality
        for c in brain.modalities:
            if c in pair:
                continue
            rows_c, rows_m = pairs[(c, m)] if (c, m) in pairs else pairs[(m, c)][::-1]
            cl_c = brain.classify(c, codes[c])[rows_c]
            cl_m = brain.classify(m, codes[m])[rows_m]
            halves = np.isin(cl_m, [s.cluster, s.new_cluster])
            for cid in np.unique(cl_c[halves]):
                if cid < 0:
                    continue
                seen = cl_m[cl_c == cid]
                targets, counts = np.unique(seen[seen >= 0], return_counts=True)
                brain.cdz.set_row(c, int(cid), m, dict(zip(targets.tolist(), counts.astype(float).tolist())),
                                  max(brain.cdz.row_age(c, int(cid), m), 1))
            for half in (s.cluster, s.new_cluster):
                seen = cl_c[cl_m == half]
                targets, counts = np.unique(seen[seen >= 0], return_counts=True)
                if len(targets):
                    brain.cdz.set_row(m, int(half), c, dict(zip(targets.tolist(), counts.astype(float).tolist())),
                                      max(brain.cdz.row_age(m, int(s.cluster), c), 1))
