"""Training's large tensors come from the heap while it runs, and glibc's defaults come back after.

Checked with glibc's own accounting (mallinfo2: bytes in memory maps against bytes in the heap)
on a real 64 MiB allocation, inside and outside, and from within a real (tiny) detector training.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import numpy as np
import pytest

from falconet.training.heap import heap_allocation, on_heap

BLOCK = 64 * 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc


LIBC = _libc()
pytestmark = pytest.mark.skipif(LIBC is None, reason="needs glibc 2.33 or later (mallinfo2) on Linux")


def _mapped_by_a_large_block() -> int:
    """Bytes the memory maps grew by while a fresh array is alive: 64 MiB more than the heap's
    free bytes, so no free chunk left there by earlier tests can serve it (never touched)."""
    info = LIBC.mallinfo2()
    before = info.hblkhd
    block = np.empty(info.fordblks + BLOCK, dtype=np.uint8)
    grew = LIBC.mallinfo2().hblkhd - before
    del block
    return grew


def test_large_blocks_come_from_the_heap_inside_and_from_memory_maps_outside():
    assert _mapped_by_a_large_block() >= BLOCK  # glibc's default
    with heap_allocation() as applied:
        assert applied
        assert _mapped_by_a_large_block() == 0
    assert _mapped_by_a_large_block() >= BLOCK  # defaults restored


def test_nested_uses_restore_the_defaults_only_at_the_outermost_exit():
    with heap_allocation():
        with heap_allocation() as applied:
            assert applied
        assert _mapped_by_a_large_block() == 0
    assert _mapped_by_a_large_block() >= BLOCK


def test_on_heap_runs_the_function_inside_and_the_trainers_use_it():
    from falconet.training import classification_trainer, detection_trainer

    assert on_heap(_mapped_by_a_large_block)() == 0
    assert _mapped_by_a_large_block() >= BLOCK
    for entry in (classification_trainer.train_classifier, classification_trainer.build_bank,
                  detection_trainer.train_detector):
        assert entry.__code__ is on_heap(len).__code__, entry.__name__  # the wrapper's code runs first


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_freed_heap_goes_back_to_the_system_afterwards():
    # Measured as resident memory, not as the heap's free bytes: when a live chunk sits above the
    # freed one (left by earlier tests in the suite), malloc_trim hands the pages back with
    # madvise while glibc still counts them as free heap (CI failed that way once).
    with heap_allocation():
        block = np.ones(4 * BLOCK, dtype=np.uint8)
        del block
        assert LIBC.mallinfo2().fordblks >= 4 * BLOCK  # freed, but kept in the heap while inside
        kept = _resident_bytes()
    assert _resident_bytes() < kept - 3 * BLOCK


def test_detector_training_runs_with_heap_allocation_and_restores_the_defaults(tmp_path):
    from PIL import Image

    from falconet.data.types import Box, Sample
    from falconet.training.detection_trainer import train_detector

    samples = []
    for i in range(4):
        pixels = np.full((64, 64, 3), 40 * i, dtype=np.uint8)
        pixels[8:40, 8:40] = (230, 30, 30)
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        samples.append(Sample(path, boxes=[Box("red", 0.125, 0.125, 0.625, 0.625)], width=64, height=64))
    mapped_during: list[int] = []

    def progress(event: dict) -> None:
        if event["phase"] == "train":
            mapped_during.append(_mapped_by_a_large_block())

    train_detector(samples, ["red"], input_size=64, budget_s=60.0, mode="quick", pretrained=False,
                   progress=progress, overrides={"batch_size": 2, "steps": 2, "threads": 1})
    assert mapped_during and set(mapped_during) == {0}
    assert _mapped_by_a_large_block() >= BLOCK
