"""The quick-mode head: how its L2 strength and temperature are chosen (synthetic features, no images)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from falconet.training.classification_trainer import L2_GRID, choose_l2, fit_head, fit_temperature


def _sampled(n: int, classes: int, dims: int, signal: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with a weak class signal in a few of many noisy dimensions, and one-hot targets."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(0, 1, (classes, dims)) * (np.arange(dims) < 8)
    features = rng.normal(0, 1, (n, dims)) + signal * centres[labels]
    return torch.tensor(features, dtype=torch.float32), F.one_hot(torch.from_numpy(labels), classes).float()


def test_fit_temperature_recovers_the_factor_that_calibrates_the_logits() -> None:
    rng = np.random.default_rng(0)
    true_logits = torch.tensor(rng.normal(0, 2, (4000, 3)), dtype=torch.float32)
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=torch.Generator().manual_seed(0))[:, 0]
    targets = F.one_hot(labels, 3).float()
    assert 3.5 <= fit_temperature(true_logits / 5, targets) <= 7.0  # five times too flat -> about 5
    assert 0.7 <= fit_temperature(true_logits, targets) <= 1.4  # already calibrated -> about 1


def test_multiclass_head_is_chosen_by_held_out_accuracy_then_calibrated() -> None:
    features, targets = _sampled(150, 3, 200, 0.8, seed=1)
    image_of_view = np.arange(150)
    canonical = np.ones(150, dtype=bool)
    choice = choose_l2(features, targets, image_of_view, canonical, multilabel=False)
    assert choice.l2 in L2_GRID and choice.criterion.startswith("top-1 accuracy")
    assert 0.25 <= choice.temperature <= 50.0
    # the temperature only rescales the logits: every image keeps its top tag
    w, b = fit_head(features, targets, False, choice.l2)
    raw, calibrated = features @ w.T + b, features @ (w * choice.temperature).T + b * choice.temperature
    assert torch.equal(raw.argmax(1), calibrated.argmax(1))


def test_multilabel_head_is_chosen_by_log_loss_and_left_uncalibrated() -> None:
    features, targets = _sampled(120, 3, 50, 1.5, seed=2)
    targets[::4, 0] = 1.0  # a second tag on some images
    choice = choose_l2(features, targets, np.arange(120), np.ones(120, dtype=bool), multilabel=True)
    assert choice.l2 in L2_GRID and choice.criterion == "log-loss" and choice.temperature == 1.0


def test_too_few_images_to_cross_validate_fall_back_to_a_default() -> None:
    features, targets = _sampled(5, 2, 10, 1.0, seed=3)
    choice = choose_l2(features, targets, np.arange(5), np.ones(5, dtype=bool), multilabel=False)
    assert choice.l2 == 1e-2 and choice.temperature == 1.0 and "too few" in choice.criterion
