"""Held-out splits and k-fold, seeded and stratified, so metrics are reproducible and honest.

The metrics a user sees are computed on images the reported model did not train on. With enough
images per tag that is a held-out split; with very few, a single split would measure on one or two
images per tag, so k-fold cross-validation is used instead (as the hosted service does).
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

from falconet.data.types import Sample

#: Below this many images in the smallest tag, a held-out split measures too little: use k-fold.
KFOLD_BELOW = 12


def _stratum(sample: Sample) -> str:
    # Detection and multilabel samples are grouped by their rarest-looking key: the sorted tag set.
    tags = sorted(set(sample.labels) | {b.label for b in sample.boxes})
    return "|".join(tags)


def _groups(samples: Sequence[Sample], seed: int) -> list[list[int]]:
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_key[_stratum(sample)].append(index)
    rng = random.Random(seed)
    groups = []
    for key in sorted(by_key):
        members = by_key[key]
        rng.shuffle(members)
        groups.append(members)
    return groups


def stratified_split(samples: Sequence[Sample], fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, held_out): each tag combination contributes ``fraction`` of its images."""
    train: list[int] = []
    held: list[int] = []
    carry = 0.0
    for members in _groups(samples, seed):
        exact = len(members) * fraction + carry
        n_held = int(round(exact))
        if len(members) >= 2:
            n_held = max(1, min(len(members) - 1, n_held))
        else:
            n_held = min(n_held, len(members))
        carry = exact - n_held
        held.extend(members[:n_held])
        train.extend(members[n_held:])
    return sorted(train), sorted(held)


def kfold(samples: Sequence[Sample], k: int = 5, seed: int = 0) -> list[list[int]]:
    """k folds of indices, each tag combination dealt round-robin so every fold is stratified."""
    folds: list[list[int]] = [[] for _ in range(k)]
    position = 0
    for members in _groups(samples, seed):
        for index in members:
            folds[position % k].append(index)
            position += 1
    return [sorted(f) for f in folds]


def choose_evaluation(counts: dict[str, int]) -> str:
    """'holdout' or 'kfold' from the smallest tag's image count."""
    return "kfold" if min(counts.values()) < KFOLD_BELOW else "holdout"
