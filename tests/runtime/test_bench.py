"""`falconet bench`: real runs of the exported model in fresh processes; the JSON, the table and
the device rows that devices/README.md documents."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO, copy_package
from falconet.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def onnx_package(multiclass_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from falconet.exporter.registry import export

    package = copy_package(multiclass_package, tmp_path_factory.mktemp("bench-pkg"))
    export(package, ["onnx"])
    return package


@pytest.fixture(scope="module")
def bench_result(onnx_package: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = runner.invoke(app, ["bench", str(onnx_package), "--backend", "all", "--threads", "1,2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_every_export_and_thread_count_is_measured(bench_result: tuple[dict, str]) -> None:
    import onnxruntime

    data, output = bench_result
    rows = data["results"]
    assert [(r["backend"], r["threads"]) for r in rows] == [("onnx", 1), ("onnx", 2)]
    for r in rows:
        assert r["runs"] >= 50 and r["warmup"] >= 1 and r["batch"] == 1
        for key in ("latency_ms", "end_to_end_ms"):
            s = r[key]
            assert 0 < s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], s
        # Throughput is timed over the same loop: never above 1000 / mean latency, not far below it.
        assert 0.5 * 1000 / r["latency_ms"]["mean"] <= r["throughput_ips"] <= 1000 / r["latency_ms"]["mean"] * 1.001
        # The whole predict call includes the network.
        assert r["end_to_end_ms"]["p50"] >= r["latency_ms"]["min"]
        assert r["runtime"].startswith(f"onnxruntime {onnxruntime.__version__}")
        assert r["file"] == "model.onnx" and r["file_mb"] > 1
        # Loading the model costs memory beyond the bare interpreter.
        assert r["peak_rss_mb"] > r["baseline_rss_mb"] + 10
    machine = data["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["os"] and machine["python"]
    assert machine["packages"]["onnxruntime"] == onnxruntime.__version__ and "numpy" in machine["packages"]
    assert data["package"]["task"] == "classification-multiclass" and data["package"]["input"] == "224x224"
    table = [line.split() for line in output.splitlines() if line.split()[:1] == ["onnx"]]
    assert [row[:2] for row in table] == [["onnx", "1"], ["onnx", "2"]]
    assert float(table[0][2]) == pytest.approx(rows[0]["latency_ms"]["p50"], abs=0.01)


def test_device_rows_match_the_documented_format(bench_result: tuple[dict, str]) -> None:
    """devices/README.md lists the fields of a row; the bench writes exactly those."""
    data, _ = bench_result
    readme = (REPO / "devices" / "README.md").read_text()
    section = readme.split("## Row format", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M)
    assert documented, "devices/README.md has no row-format table"
    assert len(data["device_rows"]) == 2
    for row in data["device_rows"]:
        assert list(row) == documented
        assert row["backend"] == "onnx" and row["p50_ms"] > 0 and row["runs"] >= 50


def test_peak_memory_is_the_case_process_own(onnx_package: Path) -> None:
    """getrusage's ru_maxrss survives exec on Linux: a child of a big parent would report the
    parent's peak. Each case must report its own."""
    from falconet.runtime.bench import run_bench

    ballast = np.ones(600 * 1024 * 1024 // 8)  # 600 MB touched in this (the parent) process
    data = run_bench(onnx_package, "onnx", "1")
    assert ballast.sum() > 0
    assert data["results"][0]["peak_rss_mb"] < 500


def test_user_errors_are_clear(onnx_package: Path, tmp_path: Path) -> None:
    not_exported = runner.invoke(app, ["bench", str(onnx_package), "--backend", "tflite"])
    assert not_exported.exit_code == 2 and "ExportNotFound" in not_exported.output and "falconet export" in not_exported.output
    unknown = runner.invoke(app, ["bench", str(onnx_package), "--backend", "tensorflow"])
    assert unknown.exit_code == 2 and "unknown backend" in unknown.output
    few_runs = runner.invoke(app, ["bench", str(onnx_package), "--runs", "10"])
    assert few_runs.exit_code == 2 and "BadRequestRuns" in few_runs.output
    zero = runner.invoke(app, ["bench", str(onnx_package), "--threads", "0"])
    assert zero.exit_code == 2 and "BadRequestThreads" in zero.output
    # A package whose model file went missing has nothing to bench.
    broken = copy_package(onnx_package, tmp_path)
    (broken / "model.onnx").unlink()
    empty = runner.invoke(app, ["bench", str(broken), "--backend", "all"])
    assert empty.exit_code == 2 and "ExportNotFound" in empty.output


def test_cpu_features_are_read_from_x86_flags_and_arm_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """What decides int8 speed is recorded (cpuinfo lines as a Cortex-A76 and an AVX2-only EPYC print them)."""
    from falconet.runtime import bench

    a76 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n"
    epyc = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 f16c\n"
    for text, expected in ((a76, ["asimd", "asimddp", "asimdhp"]), (epyc, ["avx2", "fma"])):
        monkeypatch.setattr(bench, "_read", lambda path, text=text: text if path == "/proc/cpuinfo" else None)
        assert bench.cpu_features() == expected
        assert any(f in bench.INT8_DOT_PRODUCT for f in expected) == (text is a76)
