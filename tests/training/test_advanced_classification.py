"""Advanced classification: how the fine-tuned epochs and the fitted head are compared, and which
images the shipped model was trained on (tiny generated photos, an untrained backbone)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from falconet.data.types import Sample
from falconet.training.classification_trainer import _score, candidate_losses, clearly_better, train_classifier
from falconet.training.domains import get_domain


def test_candidates_are_scored_on_the_probabilities_they_would_ship() -> None:
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 3, 60))
    targets = F.one_hot(labels, 3).float()
    logits = torch.tensor(rng.normal(0, 1, (60, 3)), dtype=torch.float32) + 4 * targets
    losses = candidate_losses(logits, targets, False)
    assert losses.shape == (60,) and float(losses.mean()) == pytest.approx(_score(logits, targets, False))
    # no temperature is fitted for the comparison: a flatter copy of the same ranking scores worse
    assert float(candidate_losses(logits / 3, targets, False).mean()) > float(losses.mean()) + 0.05


def test_multilabel_candidates_are_compared_by_plain_log_loss() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits = torch.tensor([[2.0, -1.0], [-1.0, 2.0], [1.0, 1.5]])
    assert float(candidate_losses(logits, targets, True).mean()) == pytest.approx(_score(logits, targets, True))


def test_a_replacement_must_win_by_more_than_the_noise() -> None:
    rng = np.random.default_rng(1)
    head = torch.tensor(rng.uniform(0.0, 0.6, 40))
    # lower on average, but one image's swing explains it: not a clear win
    assert not clearly_better(head - 0.01 + torch.tensor(rng.normal(0, 0.3, 40)), head)
    # lower on nearly every image: a clear win
    assert clearly_better(head - 0.05 + torch.tensor(rng.normal(0, 0.01, 40)), head)
    assert not clearly_better(head, head)  # a tie keeps the head
    assert not clearly_better(head[:1] - 1, head[:1])  # one image proves nothing


def _photos(root: Path, per_tag: int = 8) -> tuple[list[Sample], list[str]]:
    rng = np.random.default_rng(5)
    samples = []
    for tag, colour in (("red", (210, 40, 40)), ("blue", (40, 60, 210))):
        for i in range(per_tag):
            array = np.clip(rng.normal(colour, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
            path = root / f"{tag}_{i}.png"
            Image.fromarray(array).save(path)
            samples.append(Sample(path, labels=[tag]))
    return samples, ["blue", "red"]


def test_without_time_to_fine_tune_the_head_is_fitted_on_every_training_image(tmp_path: Path) -> None:
    samples, labels = _photos(tmp_path)
    result = train_classifier(samples, labels, "classification-multiclass", get_domain("general-compact-mobilenet", "classification"),
                              mode="advanced", budget_s=0.0, pretrained=False)
    history = result.history
    assert history["fine_tune"]["epochs"] == 0 and history["fine_tune"]["chosen_epoch"] == 0  # the budget is a limit
    # the inner split chose nothing, so it holds nothing back: the head saw all 16 photos
    assert history["inner_split"]["train"] < len(samples)
    assert history["head"]["images"] == len(samples) and "every training image" in history["final"]


def test_the_fitted_head_is_replaced_only_by_a_clear_win(tmp_path: Path) -> None:
    samples, labels = _photos(tmp_path)
    result = train_classifier(samples, labels, "classification-multiclass", get_domain("general-compact-mobilenet", "classification"),
                              mode="advanced", budget_s=12.0, pretrained=False)
    tuned, history = result.history["fine_tune"], result.history
    log = tuned["epochs_log"]
    assert tuned["epochs"] >= 1 and len(log) == tuned["epochs"] + 1
    winners = [e for e in log if e["clear_win"]]
    expected = min(winners, key=lambda e: e["val_loss"])["epoch"] if winners else 0
    assert tuned["chosen_epoch"] == expected
    # a fine-tuned epoch was trained on the inner training split; the fitted head, when kept, on all
    assert history["head"]["images"] == (len(samples) if expected == 0 else history["inner_split"]["train"])
    assert ("every training image" in history["final"]) == (expected == 0)
