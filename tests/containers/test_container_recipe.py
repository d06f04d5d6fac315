"""The containers, checked without a Docker engine (none runs on the build machines).

What an image would run is run here instead: the Dockerfile's own pip install line in a fresh
virtualenv (from this checkout, with the Dockerfile's extras), then the entrypoint's command line
against an exported package, its health check, and a prediction over HTTP. The recipes themselves
are checked for what a build would trip on (files COPY names, extras, ARGs the compose file sets),
and the container's runtime set is resolved to aarch64 wheels, so an arm64 build needs no compiler.

The install test and the wheel check reach PyPI and take about a minute on 2 cores; set
FALCONET_SKIP_CONTAINER_INSTALL=1 to skip them (offline machines).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from conftest import COLOURS, REPO, copy_package, draw

CONTAINERS = REPO / "containers"
ENTRYPOINT = CONTAINERS / "entrypoint.sh"
SKIP_ENV = "FALCONET_SKIP_CONTAINER_INSTALL"
slow = pytest.mark.skipif(os.environ.get(SKIP_ENV) == "1",
                          reason=f"{SKIP_ENV}=1: the fresh-virtualenv install and the aarch64 wheel check reach PyPI (about a minute)")
#: What only training and export need; a runtime image must not carry any of it.
TRAINING_ONLY = {"torch", "onnx", "onnxscript", "litert-torch", "ai-edge-quantizer", "coremltools", "nncf", "matplotlib"}


# ------------------------------------------------------------------ reading the recipes

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current:
                word, _, rest = current.partition(" ")
                joined.append((word.upper(), rest.strip()))
            current = ""
    return joined


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value
        elif word == "ARG":
            defaults.setdefault(rest, "")
    return defaults


def install_command(path: Path) -> str:
    """The RUN line under the ``# falconet-install`` marker."""
    lines = path.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if line.startswith("# falconet-install"))
    text = ""
    for line in lines[marker + 1:]:
        text += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            break
    assert text.startswith("RUN ")
    return text[4:].strip()


def extras_closure(extras: str) -> set[str]:
    """Requirement names an install with these extras pulls from pyproject.toml (direct ones)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    names: set[str] = set()
    pending = [e.strip() for e in extras.split(",") if e.strip()]
    requirements = list(project["dependencies"])
    while pending:
        extra = pending.pop()
        assert extra in optional, f"extra {extra!r} is not in pyproject.toml"
        for requirement in optional[extra]:
            inner = re.fullmatch(r"falconet\[(.+)\]", requirement)
            if inner:
                pending.extend(inner.group(1).split(","))
            else:
                requirements.append(requirement)
    for requirement in requirements:
        names.add(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower())
    return names


def requirement_lines(extras: str, python_version: str | None = None) -> list[str]:
    """The requirements of ``extras``; with ``python_version``, those whose markers hold there
    (pip download --python-version picks wheels for that Python but judges markers by this one)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras.split(","):
        lines += [r for r in project["optional-dependencies"][extra.strip()] if not r.startswith("falconet[")]
    if python_version is None:
        return lines
    chosen = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python_version,
                                                                      "python_full_version": python_version + ".0"}):
            requirement.marker = None
            chosen.append(str(requirement))
    return chosen


# ------------------------------------------------------------------ the recipes

@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.jetson"])
def test_dockerfile_builds_from_what_it_names(dockerfile: str) -> None:
    path = CONTAINERS / dockerfile
    steps = instructions(path)
    words = [w for w, _ in steps]
    defaults = arg_defaults(path)
    # Every COPY from the build context names something that exists (a missing one fails the build).
    for word, rest in steps:
        if word == "COPY" and "--from=" not in rest:
            sources = [s for s in shlex.split(rest) if not s.startswith("--")][:-1]
            for source in sources:
                source = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], source)
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source} is not in the repository"
    # Non-root, a health check through the entrypoint, port 8080, the shared entrypoint.
    users = [rest for w, rest in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(w == "HEALTHCHECK" and '"falconet-entrypoint", "healthcheck"' in rest for w, rest in steps)
    assert ("EXPOSE", "8080") in steps and any(w == "ENV" and "FALCONET_PORT=8080" in rest for w, rest in steps)
    assert ("ENTRYPOINT", '["falconet-entrypoint"]') in steps and words[-1] == "CMD"
    assert any(w == "COPY" and "containers/entrypoint.sh /usr/local/bin/falconet-entrypoint" in rest for w, rest in steps)
    # Only the runtime: the extras it installs pull nothing of training or export.
    extras = defaults["EXTRAS"]
    assert not extras_closure(extras) & TRAINING_ONLY, extras_closure(extras) & TRAINING_ONLY
    assert install_command(path).startswith('/opt/falconet/bin/pip install --no-cache-dir -c /src/constraints.txt "/src[${EXTRAS}]"')


def test_cpu_image_is_multi_arch_slim_python() -> None:
    defaults = arg_defaults(CONTAINERS / "Dockerfile")
    # The official python images are published for linux/amd64 and linux/arm64/v8 (Raspberry Pi OS 64-bit).
    assert re.fullmatch(r"python:3\.1[0-9]-slim(-bookworm)?", defaults["PYTHON_IMAGE"])
    assert defaults["MODEL"] == "containers/README.md"


def test_jetson_image_swaps_in_the_gpu_onnxruntime() -> None:
    path = CONTAINERS / "Dockerfile.jetson"
    defaults = arg_defaults(path)
    assert defaults["L4T_IMAGE"].startswith("nvcr.io/nvidia/l4t-jetpack:r36")
    line = install_command(path)
    uninstall, install = line.index("pip uninstall -y onnxruntime"), line.index("onnxruntime-gpu")
    assert uninstall < install, "onnxruntime-gpu must go in after the CPU build is removed (same Python package)"
    assert '--index-url "${ORT_GPU_INDEX}"' in line and "pip check" in line
    assert any(w == "ENV" and "FALCONET_BACKEND=onnx-gpu" in rest for w, rest in instructions(path))


def _compose_defaults(text: str) -> str:
    """``${VAR:-default}`` -> default, as compose reads it with VAR unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def test_compose_file_matches_the_dockerfiles() -> None:
    import typer.main

    yaml = pytest.importorskip("yaml", reason="PyYAML reads compose.yaml (it comes with the train extra's dependencies)")
    from falconet.cli import app

    compose = yaml.safe_load((CONTAINERS / "compose.yaml").read_text())
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, service in compose["services"].items():
        build = service["build"]
        context = (CONTAINERS / build["context"]).resolve()
        assert context == REPO, name
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), name
        declared = arg_defaults(dockerfile)
        for arg, value in build.get("args", {}).items():
            assert arg in declared, f"{name}: build arg {arg} is not declared in {dockerfile.name}"
            if arg == "EXTRAS":
                assert not extras_closure(value) & TRAINING_ONLY
        for volume in service.get("volumes", []):
            assert _compose_defaults(volume).split(":")[1] == "/model", volume
        for port in service.get("ports", []):
            assert port.split(":")[1] == "8080", port
        if "command" in service:
            # The command parses as the real CLI would parse it (an unknown option fails here).
            argv = [_compose_defaults(a) for a in service["command"]]
            assert argv[0] == "falconet"
            commands[argv[1]].make_context(argv[1], argv[2:])
    assert compose["services"]["falconet-jetson"]["runtime"] == "nvidia"


def test_entrypoint_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    env = {**os.environ, "FALCONET_MODEL": str(tmp_path / "empty")}
    done = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 64
    assert "no model package" in done.stderr and "--build-arg MODEL=" in done.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    health = subprocess.run(["sh", str(ENTRYPOINT), "healthcheck"], env={**os.environ, "FALCONET_PORT": str(closed_port)},
                            capture_output=True, text=True, timeout=30)
    assert health.returncode == 1 and "not ready" in health.stderr


# ------------------------------------------------------------------ the real install, the real command

@pytest.fixture(scope="module")
def exported_package(multiclass_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from falconet.exporter.registry import export

    package = copy_package(multiclass_package, tmp_path_factory.mktemp("container-model"))
    export(package, ["onnx"])
    return package


def _stage_build_context(target: Path) -> Path:
    """What the Dockerfile's COPY lines put in /src, and nothing else."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "falconet", target / "falconet", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _wait_healthy(env: dict[str, str], server: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if subprocess.run(["sh", str(ENTRYPOINT), "healthcheck"], env=env, capture_output=True, timeout=30).returncode == 0:
            return
        if server.poll() is not None:
            pytest.fail(f"the server exited: {server.communicate()[0]}")
        time.sleep(0.5)
    pytest.fail("the server never became ready")


@slow
def test_fresh_virtualenv_installs_and_runs_the_container_command(exported_package: Path, tmp_path: Path) -> None:
    """The Dockerfile's pip line in an empty virtualenv, then its entrypoint serving the package."""
    import falconet

    dockerfile = CONTAINERS / "Dockerfile"
    extras = arg_defaults(dockerfile)["EXTRAS"]
    src = _stage_build_context(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    argv = shlex.split(install_command(dockerfile).replace("${EXTRAS}", extras))
    argv = [str(venv / "bin" / "pip") if a == "/opt/falconet/bin/pip" else a.replace("/src", str(src), 1) if a.startswith("/src") else a
            for a in argv]
    started = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    install_s = time.time() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    python = str(venv / "bin" / "python")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    # The runtime image is torch-free; the model runs anyway.
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0

    photo = draw(tmp_path / "red.jpg", COLOURS["red"], seed=1234, size=(96, 80))
    expected = [p.to_dict() for p in falconet.load(exported_package).predict(photo)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The container's environment, on loopback instead of 0.0.0.0 (this is a shared machine).
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "FALCONET_MODEL": str(exported_package),
           "FALCONET_PORT": str(port), "FALCONET_HOST": "127.0.0.1", "PYTHONPATH": ""}
    env.pop("VIRTUAL_ENV", None)
    if not (src / "falconet" / "server" / "commands.py").is_file():
        # Without `falconet serve` in the tree, run what the image can run: a prediction.
        done = subprocess.run(["sh", str(ENTRYPOINT), "falconet", "predict", str(exported_package), str(photo), "--json"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout.splitlines()[-1])["predictions"]
    else:
        server = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_healthy(env, server)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/image", data=photo.read_bytes(),
                                             headers={"Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(request, timeout=30) as response:
                got = json.loads(response.read())["predictions"]
        finally:
            server.send_signal(signal.SIGTERM)  # what `docker stop` sends
            server.communicate(timeout=30)
        assert server.returncode in (0, -signal.SIGTERM)
    assert [p["tagName"] for p in got] == [p["tagName"] for p in expected]
    assert [p["probability"] for p in got] == pytest.approx([p["probability"] for p in expected], abs=1e-5)
    print(f"fresh virtualenv install: {install_s:.0f} s")


@slow
@pytest.mark.parametrize("python_version", ["3.11", "3.10"], ids=["py311-pi", "py310-jetson"])
def test_runtime_set_has_aarch64_wheels(python_version: str, tmp_path: Path) -> None:
    """An arm64 image (Raspberry Pi OS, Jetson) installs from wheels only: nothing compiles there.
    Covers the extras the Dockerfile and the compose file install (serve, stream)."""
    constraints = REPO / "constraints.txt"
    extras = ",".join(sorted({arg_defaults(CONTAINERS / "Dockerfile")["EXTRAS"], "stream"}))
    tag = python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(tmp_path),
               "--python-version", python_version, "--implementation", "cp", "--abi", f"cp{tag}",
               *[a for p in ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
                 for a in ("--platform", p)],
               "-c", str(constraints), *requirement_lines(extras, python_version)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = [p.name for p in tmp_path.glob("*.whl")]
    for name in ("onnxruntime", "numpy", "pillow", "opencv_python_headless"):
        assert any(w.startswith(name + "-") and ("aarch64" in w or "none-any" in w) for w in wheels), (name, wheels)
