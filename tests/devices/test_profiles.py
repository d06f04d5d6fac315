"""The device profiles say what was verified and how, and point at evidence that exists.

A profile that claims more than was run is the failure these tests guard against: every check
names its evidence, the evidence is in the repository, and an emulated claim has a passing log.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from falconet.runtime.backends import REGISTRY
from falconet.runtime.devices import list_devices, load_device

REPO = Path(__file__).resolve().parents[2]
CHECK_FIELDS = ("date", "what", "how", "result", "evidence")


@pytest.mark.parametrize("name", list_devices())
def test_verified_block_is_complete(name: str) -> None:
    profile = load_device(name)
    verified = profile["verified"]
    assert verified["how"] in ("measured", "emulated", "not verified")
    assert verified["details"].strip()
    assert profile["backend"] in REGISTRY, f"{name}: backend {profile['backend']} is not a registered backend"
    for check in verified.get("checks", []):
        assert tuple(check) == CHECK_FIELDS, f"{name}: a check has fields {tuple(check)}"
        for path in check["evidence"].replace(",", " ").split():
            if path.startswith(("devices/", "tests/")):
                assert (REPO / path).exists(), f"{name}: evidence {path} is missing"


@pytest.mark.parametrize("name", ["rpi4", "rpi5"])
def test_emulated_pi_profiles_rest_on_a_passing_log(name: str) -> None:
    profile = load_device(name)
    if profile["verified"]["how"] != "emulated":
        pytest.skip(f"{name} is not marked emulated")
    log = (REPO / "devices" / "verification" / "arm64-log.md").read_text()
    assert "**Result: PASS.**" in log
    assert f"QEMU_CPU={profile['cpu']}" in log


def test_gpu_evidence_names_the_provider_used() -> None:
    record = json.loads((REPO / "devices" / "verification" / "onnx-gpu-h200.json").read_text())
    for package in ("classifier", "detector"):
        assert record[package]["provider"] in record["available"]
        assert record[package]["top1_same"]
