"""Compare each emulated arm64 run with the x86 reference and write the markdown log.

The rule (issue 7): fp32 (ONNX) outputs equal x86's within 1e-5; int8 (TFLite) gives identical
top-1 and boxes (tags identical; boxes within INT8_BOX_TOLERANCE, see there why not bit-equal). It is checked on three things per case: the raw network outputs, the
``falconet predict --json`` output, and the ``falconet serve`` answer to ``POST /image``.

    python report.py WORK_DIR LOG_FILE CPU [CPU ...]
reads WORK_DIR/out/x86, WORK_DIR/out/CPU (probe.json, raw.npz, install.json) and WORK_DIR/run.json;
exits 1 when any check fails (the log says which).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

FP32_TOLERANCE = 1e-5
#: ARM "CPU part" ids (the guest's /proc/cpuinfo under qemu 10) of the cores emulated here.
CPU_PARTS = {"0xd08": "Cortex-A72", "0xd0b": "Cortex-A76"}


def _top1(result: dict[str, Any]) -> dict[str, Any] | None:
    predictions = result.get("predictions", [])
    return max(predictions, key=lambda p: p["probability"]) if predictions else None


def _box(p: dict[str, Any]) -> tuple[float, ...] | None:
    b = p.get("boundingBox")
    return None if b is None else tuple(b[k] for k in ("left", "top", "width", "height"))


#: int8 detections compared one by one: all but the noise floor (the test detector is weakly trained).
KEPT_THRESHOLD = 0.05
#: int8 boxes are compared within this, not bit for bit: box voting places each kept box at a
#: score-weighted mean of candidate boxes, and the scores come out of the graph's float tail
#: (sigmoid and square root after the last dequantisation), whose last bits differ between CPUs
#: (raw differences ~6e-8). A millionth of the image is far below a pixel of any photo.
INT8_BOX_TOLERANCE = 1e-6


def _kept(result: dict[str, Any], threshold: float = KEPT_THRESHOLD) -> list[tuple[str, tuple[float, ...] | None]]:
    """The detections above the noise floor, in order."""
    return [(p["tagName"], _box(p)) for p in result.get("predictions", []) if p["probability"] >= threshold]


def _kept_differ(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """int8: the same tags in the same order, and every box within INT8_BOX_TOLERANCE."""
    ka, kb = _kept(a), _kept(b)
    if [tag for tag, _ in ka] != [tag for tag, _ in kb]:
        return True
    for (_, box_a), (_, box_b) in zip(ka, kb):
        if (box_a is None) != (box_b is None):
            return True
        if box_a is not None and max(abs(x - y) for x, y in zip(box_a, box_b)) > INT8_BOX_TOLERANCE:
            return True
    return False


def _prob_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    pa = {(p["tagName"], _box(p)): p["probability"] for p in a.get("predictions", [])}
    pb = {(p["tagName"], _box(p)): p["probability"] for p in b.get("predictions", [])}
    common = set(pa) & set(pb)
    return max((abs(pa[k] - pb[k]) for k in common), default=0.0)


def _box_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    ta, tb = _top1(a), _top1(b)
    if not ta or not tb or _box(ta) is None:
        return 0.0
    return float(np.max(np.abs(np.array(_box(ta)) - np.array(_box(tb)))))


def compare_case(key: str, x86: dict[str, Any], arm: dict[str, Any], x86_raw: Any, arm_raw: Any) -> dict[str, Any]:
    package, fmt = key.split("/")
    int8 = fmt.endswith("int8")
    prefix = f"{package}__{fmt}__"
    names = sorted(n for n in x86_raw.files if n.startswith(prefix))
    raw_diff = max(float(np.max(np.abs(x86_raw[n].astype(np.float64) - arm_raw[n].astype(np.float64)))) for n in names)

    problems: list[str] = []
    predict_top1_same = True
    predict_prob_diff = box_diff = 0.0
    for rx, ra in zip(x86["predict"]["results"], arm["predict"]["results"], strict=True):
        tx, ta = _top1(rx), _top1(ra)
        same_tag = (tx or {}).get("tagName") == (ta or {}).get("tagName")
        predict_top1_same &= same_tag
        predict_prob_diff = max(predict_prob_diff, _prob_diff(rx, ra))
        box_diff = max(box_diff, _box_diff(rx, ra))
        if int8 and _kept_differ(rx, ra):
            problems.append(f"{Path(rx['image']).name}: detections >= {KEPT_THRESHOLD} differ")
    if not predict_top1_same:
        problems.append("predict top-1 differs")

    sx, sa = x86["serve"]["response"], arm["serve"]["response"]
    serve_same = (_top1(sx) or {}).get("tagName") == (_top1(sa) or {}).get("tagName")
    serve_prob_diff = _prob_diff(sx, sa)
    if not serve_same:
        problems.append("serve top-1 differs")
    if int8:
        if _kept_differ(sx, sa):
            problems.append(f"serve detections >= {KEPT_THRESHOLD} differ")
        if box_diff > INT8_BOX_TOLERANCE:
            problems.append(f"int8 top-1 box differs by {box_diff:.3g}")
    else:
        for what, value in (("raw outputs", raw_diff), ("predict probabilities", predict_prob_diff),
                            ("predict top-1 box", box_diff), ("serve probabilities", serve_prob_diff)):
            if value > FP32_TOLERANCE:
                problems.append(f"{what} differ by {value:.3g} > {FP32_TOLERANCE:g}")
    return {"raw_diff": raw_diff, "predict_prob_diff": predict_prob_diff, "box_diff": box_diff,
            "serve_prob_diff": serve_prob_diff, "problems": problems}


def _describe(result: dict[str, Any]) -> str:
    top = _top1(result)
    if top is None:
        return "(nothing)"
    text = f"{top['tagName']} {top['probability']:.6f}"
    if _box(top) is not None:
        text += " box [" + ", ".join(f"{v:.4f}" for v in _box(top)) + "]"
    return text


def cpu_section(cpu: str, out: Path, x86: dict[str, Any], x86_raw: Any) -> tuple[list[str], bool]:
    arm = json.loads((out / "probe.json").read_text())
    arm_raw = np.load(out / "raw.npz")
    install = json.loads((out / "install.json").read_text())
    m = arm["machine"]
    parts = ", ".join(f"{p} ({CPU_PARTS.get(p, '?')})" for p in m.get("cpuinfo_cpu_part", []))
    versions = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    lines = [f"## QEMU_CPU={cpu}", "",
             f"- guest: {m['machine']}, Python {m['python']}; /proc/cpuinfo CPU part {parts or 'n/a'}",
             f"- guest CPU features: {m.get('cpuinfo_features')}",
             f"- install (`{install['line']}`): {install['summary']}",
             f"- installed: {versions}",
             f"- ran: `{arm['console_script']['command']}` as its own process ({arm['console_script']['seconds']} s), then"
             f" `falconet predict` and `falconet serve` through the CLI's entry object in one emulated process"
             f" ({arm['seconds']} s in all; see scripts/arm64/probe.py for why)", "",
             "| case | backend (as it describes itself) | max abs diff of raw outputs vs x86 | predict: max prob diff | top-1 box diff | serve: top-1 same, prob diff, ready after | verdict |",
             "|---|---|---|---|---|---|---|"]
    ok = True
    details: list[str] = []
    for key, case in arm["cases"].items():
        c = compare_case(key, x86["cases"][key], case, x86_raw, arm_raw)
        ok &= not c["problems"]
        serve = case["serve"]
        lines.append(f"| {key} | {case['backend']} | {c['raw_diff']:.3g} | {c['predict_prob_diff']:.3g} | "
                     f"{c['box_diff']:.3g} | {'yes' if 'serve top-1 differs' not in c['problems'] else 'NO'}, "
                     f"{c['serve_prob_diff']:.3g}, {serve['ready_seconds']} s | "
                     f"{'pass' if not c['problems'] else 'FAIL: ' + '; '.join(c['problems'])} |")
        details.append(f"- {key}: `falconet predict` ({case['predict']['seconds']} s):")
        for rx, ra in zip(x86["cases"][key]["predict"]["results"], case["predict"]["results"]):
            details.append(f"  - {Path(ra['image']).name}: arm64 {_describe(ra)} | x86 {_describe(rx)}")
        details.append(f"  - `falconet serve`, `POST {serve.get('route', '/image')}` {serve['image']} -> arm64 {_describe(serve['response'])} | "
                       f"x86 {_describe(x86['cases'][key]['serve']['response'])}")
    return lines + ["", "Outputs (top prediction per image, arm64 | x86):", "", *details, ""], ok


def main(work: Path, log_file: Path, cpus: list[str]) -> int:
    run = json.loads((work / "run.json").read_text())
    x86 = json.loads((work / "out" / "x86" / "probe.json").read_text())
    x86_raw = np.load(work / "out" / "x86" / "raw.npz")
    sections, ok = [], True
    for cpu in cpus:
        lines, passed = cpu_section(cpu, work / "out" / cpu, x86, x86_raw)
        sections += lines
        ok &= passed
    xm = x86["machine"]
    head = ["# arm64 (Debian bookworm, Raspberry Pi OS 64-bit's base) under qemu user-mode emulation", "",
            f"Written by `{run['command']}` on {run['date']} (git {run['git']}). **Result: {'PASS' if ok else 'FAIL'}.**", "",
            f"- host: {run['host']}; {run['qemu']}",
            f"- arm64 root: {run['root']}",
            f"- models: {run['models']}",
            f"- x86 reference: Python {xm['python']}, " + ", ".join(f"{k} {v}" for k, v in xm["packages"].items() if v),
            "- rule: ONNX fp32 within 1e-5 of x86 (raw outputs, `falconet predict` probabilities and boxes, the"
            " `falconet serve` answer); TFLite int8 identical top-1 tag and identical detections (the tags of"
            f" every detection >= {KEPT_THRESHOLD}, in order, and their boxes within {INT8_BOX_TOLERANCE:g}: box voting"
            " averages boxes weighted by float scores whose last bits differ between CPUs).",
            "- what this proves: the container's install line resolves and installs PyPI's aarch64 wheels with"
            " the arm64 pip, and the runtime gives x86's answers on the instruction sets of these cores. What it"
            " does not: speed (emulated timings below say nothing about a Pi), a Pi's kernel, memory or"
            " thermal behaviour.", "",
            f"Total wall time of the run: {run['seconds']} s; the host's load average (1/5/15 min) at the end:"
            f" {run.get('load', 'not recorded')} on {run['host'].rsplit(', ', 1)[-1]} (emulated steps slow down"
            " in proportion when the machine is shared).", ""]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("\n".join(head + sections))
    print(f"log: {log_file} ({'PASS' if ok else 'FAIL'})")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
