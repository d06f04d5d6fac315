"""`falconet stream`: a video file the test makes, a live MJPEG camera on loopback, a remote server.

Everything is real: OpenCV decodes and writes the videos, onnxruntime runs the exported model,
the "camera" is an HTTP server streaming JPEG frames the way IP cameras do, and the remote
prediction server is a real HTTP server answering like the prediction container.
"""
from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import COLOURS, REPO, copy_package
from falconet.cli import app

cv2 = pytest.importorskip("cv2", reason="falconet stream needs the stream extra (opencv-python-headless)")

runner = CliRunner()
SEGMENTS = ("red", "blue", "green")
PER_SEGMENT = 8
FPS = 12
SIZE = (96, 80)  # the size the fixture's photos were drawn at


def _colour_frame(rng: np.random.Generator, tag: str) -> np.ndarray:
    """A BGR frame dominated by the tag's colour, like the fixture's training photos."""
    rgb = np.clip(np.array(COLOURS[tag])[None, None] + rng.normal(0, 30, (SIZE[1], SIZE[0], 3)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


@pytest.fixture(scope="module")
def onnx_package(multiclass_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from falconet.exporter.registry import export

    package = copy_package(multiclass_package, tmp_path_factory.mktemp("stream-pkg"))
    export(package, ["onnx"])
    return package


@pytest.fixture(scope="module")
def colour_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames: 8 red, 8 blue, 8 green, at 12 fps."""
    path = tmp_path_factory.mktemp("video") / "colours.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    rng = np.random.default_rng(0)
    for tag in SEGMENTS:
        for _ in range(PER_SEGMENT):
            writer.write(_colour_frame(rng, tag))
    writer.release()
    return path


def _decoded_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ------------------------------------------------------------------ video files

def test_file_every_frame_json_lines_and_annotated_video(onnx_package: Path, colour_video: Path, tmp_path: Path) -> None:
    import falconet

    out = tmp_path / "annotated.mp4"
    result = runner.invoke(app, ["stream", str(onnx_package), "--source", str(colour_video), "--jsonl", "-",
                                 "--out", str(out), "--threshold", "0"])
    assert result.exit_code == 0, result.output
    rows = _lines(result.stdout)
    assert [r["frame"] for r in rows] == list(range(24))
    assert [r["position_s"] for r in rows] == pytest.approx([i / FPS for i in range(24)], abs=1e-3)
    assert all(r["width"] == SIZE[0] and r["height"] == SIZE[1] and r["timestamp"].endswith("Z") for r in rows)

    # The JSON is exactly what the Predictor says on the same decoded frames (BGR -> RGB handled).
    source_frames = _decoded_frames(colour_video)
    predictor = falconet.load(onnx_package)
    for row, frame in zip(rows, source_frames):
        expected = predictor.predict(frame[:, :, ::-1], threshold=0.0)
        assert [p["tagName"] for p in row["predictions"]] == [p.tag_name for p in expected]
        assert [p["probability"] for p in row["predictions"]] == pytest.approx([p.probability for p in expected], abs=1e-6)
    tops = [r["predictions"][0]["tagName"] for r in rows]
    assert tops == [tag for tag in SEGMENTS for _ in range(PER_SEGMENT)]

    # The annotated video plays: same frame count and size, and the labels were drawn on it.
    written = _decoded_frames(out)
    assert len(written) == 24
    assert written[0].shape == source_frames[0].shape
    diff = [np.abs(a.astype(int) - b.astype(int)).mean(axis=2) for a, b in zip(written, source_frames)]
    assert all((d > 60).mean() > 0.03 for d in diff), "no label drawn"
    assert "24 frames processed of 24 read" in result.stderr and "stopped by end" in result.stderr


def test_every_nth_frame_and_threshold(onnx_package: Path, colour_video: Path, tmp_path: Path) -> None:
    out, lines = tmp_path / "every3.avi", tmp_path / "frames.jsonl"
    result = runner.invoke(app, ["stream", str(onnx_package), "-s", str(colour_video), "--every", "3",
                                 "--jsonl", str(lines), "--out", str(out), "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    rows = _lines(lines.read_text())
    assert [r["frame"] for r in rows] == list(range(0, 24, 3))
    # Above 0.5 a multiclass model leaves at most one tag, the segment's colour here.
    assert all(len(r["predictions"]) <= 1 for r in rows)
    assert [r["predictions"][0]["tagName"] for r in rows if r["predictions"]] == [SEGMENTS[i // PER_SEGMENT] for i in range(0, 24, 3) if rows[i // 3]["predictions"]]
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 3, abs=0.01)
    assert len(_decoded_frames(out)) == 8


def test_max_frames_stops_early(onnx_package: Path, colour_video: Path) -> None:
    result = runner.invoke(app, ["stream", str(onnx_package), "-s", str(colour_video), "--jsonl", "-", "--max-frames", "5"])
    assert result.exit_code == 0, result.output
    assert [r["frame"] for r in _lines(result.stdout)] == [0, 1, 2, 3, 4]
    assert "stopped by max-frames" in result.stderr


def test_detection_boxes_in_json_and_on_frames(detection_package: Path, tmp_path: Path) -> None:
    """Detection frames: every JSON prediction has the Predictor's boundingBox, and boxes are drawn."""
    import falconet
    from PIL import Image

    from falconet.exporter.registry import export

    package = copy_package(detection_package, tmp_path)
    export(package, ["onnx"])
    scenes = sorted((detection_package.parent / "data" / "square").glob("*.jpg"))[:6]
    video = tmp_path / "squares.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (192, 192))
    for scene in scenes:
        rgb = np.asarray(Image.open(scene).convert("RGB").resize((192, 192)))
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    out = tmp_path / "boxes.avi"
    # The session fixture's detector is trained for seconds: its scores are low, so a low threshold.
    result = runner.invoke(app, ["stream", str(package), "-s", str(video), "--jsonl", "-", "--out", str(out), "--threshold", "0.05"])
    assert result.exit_code == 0, result.output
    rows = _lines(result.stdout)
    assert len(rows) == len(scenes)
    predictor = falconet.load(package)
    source, written = _decoded_frames(video), _decoded_frames(out)
    assert len(written) == len(scenes)
    drawn = 0
    for row, frame, annotated in zip(rows, source, written):
        expected = predictor.predict(frame[:, :, ::-1], threshold=0.05)
        assert [p["boundingBox"] for p in row["predictions"]] == [p.bounding_box.to_dict() for p in expected]
        for p in row["predictions"]:
            b = p["boundingBox"]
            # The box's left edge, below its label, is painted over.
            x = int(round(b["left"] * 191))
            y1, y2 = int(round(b["top"] * 191)) + 20, int(round((b["top"] + b["height"]) * 191))
            if y2 - y1 >= 8:
                changed = np.abs(annotated[y1:y2, x].astype(int) - frame[y1:y2, x].astype(int)).max(axis=1)
                drawn += int((changed > 50).mean() > 0.5)
    assert any(row["predictions"] for row in rows), "the detector found nothing above 0.05"
    assert drawn > 0


# ------------------------------------------------------------------ live sources

class MjpegCamera:
    """An IP camera on loopback: multipart/x-mixed-replace JPEG frames at ``fps``.

    ``first_connection_frames`` ends the first connection after that many frames (a network
    drop); later connections stream until ``stop()``.
    """

    def __init__(self, fps: float = 40.0, first_connection_frames: Optional[int] = None) -> None:
        self.fps = fps
        self.first_connection_frames = first_connection_frames
        self.connections = 0
        self.sent = 0
        self.stopped = threading.Event()
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                camera.connections += 1
                limit = camera.first_connection_frames if camera.connections == 1 else None
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                rng = np.random.default_rng(camera.connections)
                sent_here = 0
                while not camera.stopped.is_set() and (limit is None or sent_here < limit):
                    ok, jpeg = cv2.imencode(".jpg", _colour_frame(rng, "red"))
                    data = jpeg.tobytes()
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    sent_here += 1
                    camera.sent += 1
                    time.sleep(1.0 / camera.fps)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def __enter__(self) -> "MjpegCamera":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


def test_live_stream_keeps_only_the_newest_frame_and_reconnects() -> None:
    """A consumer slower than the camera gets fresh frames (stale ones dropped and counted), and a
    dropped connection is reopened without the consumer noticing more than a pause."""
    from falconet.runtime.sources import open_source

    with MjpegCamera(fps=40, first_connection_frames=30) as camera:
        source = open_source(camera.url)
        assert source.live
        taken = []
        for frame in source.frames():
            age = time.time() - frame.captured
            taken.append((frame.index, age))
            time.sleep(0.1)  # inference at 10 fps against a 40 fps camera
            if len(taken) == 15:
                break
    indices = [i for i, _ in taken]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert indices[-1] > 30, "the stream did not continue after the first connection ended"
    assert source.reconnects == 1 and camera.connections == 2
    # Every frame up to the last one taken was either processed or dropped; none waits in a queue.
    assert indices[-1] + 1 - len(taken) <= source.dropped <= source.frames_read - len(taken)
    assert source.dropped > 10
    # A queue would make frames older and older (1 s and more by the end); the newest frame is young.
    assert max(age for _, age in taken[2:]) < 0.5, taken


def test_live_every_nth_and_retries_give_up(tmp_path: Path) -> None:
    """--every on a live source takes at most one frame in N; --retries bounds reconnection."""
    from falconet.runtime.sources import open_source

    with MjpegCamera(fps=50, first_connection_frames=25) as camera:
        source = open_source(camera.url, every=4, retries=0)
        indices = [frame.index for frame in source.frames()]
    assert indices and all(b - a >= 4 for a, b in zip(indices, indices[1:]))
    assert source.reconnects == 0 and source.error and "reconnection" in source.error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_stops_cleanly_and_finalises_outputs(onnx_package: Path, tmp_path: Path, stop_signal: int) -> None:
    """Ctrl-C (and docker stop's SIGTERM) ends a live run with exit 0, every JSON line whole and
    the .mp4 finalised (an unfinished .mp4 has no index and does not open)."""
    lines, out = tmp_path / "live.jsonl", tmp_path / "live.mp4"
    with MjpegCamera(fps=25) as camera:
        process = subprocess.Popen(
            [sys.executable, "-m", "falconet.cli", "stream", str(onnx_package), "--source", camera.url,
             "--jsonl", str(lines), "--out", str(out)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            if lines.exists() and len(lines.read_text().splitlines()) >= 5:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopped by interrupt" in stderr
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(rows) >= 5 and all(r["predictions"][0]["tagName"] == "red" for r in rows)
    written = _decoded_frames(out)
    assert len(written) >= len(rows)  # live gaps are filled so the video keeps real time


# ------------------------------------------------------------------ errors

def test_show_without_a_display_fails_clearly(onnx_package: Path, colour_video: Path) -> None:
    result = runner.invoke(app, ["stream", str(onnx_package), "-s", str(colour_video), "--show"],
                           env={"DISPLAY": None, "WAYLAND_DISPLAY": None})
    assert result.exit_code == 2
    assert "NoDisplay" in result.output and "DISPLAY" in result.output


@pytest.mark.skipif("GUI:                           NONE" not in cv2.getBuildInformation(), reason="this OpenCV has window support")
def test_show_with_headless_opencv_says_which_package(onnx_package: Path, colour_video: Path) -> None:
    result = runner.invoke(app, ["stream", str(onnx_package), "-s", str(colour_video), "--show"], env={"DISPLAY": ":0"})
    assert result.exit_code == 2
    assert "NoDisplay" in result.output and "opencv-python" in result.output


def test_bad_sources_and_outputs(onnx_package: Path, colour_video: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["stream", str(onnx_package), "-s", str(tmp_path / "nope.mp4")])
    assert missing.exit_code == 2 and "StreamSourceNotFound" in missing.output
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    broken = runner.invoke(app, ["stream", str(onnx_package), "-s", str(not_video)])
    assert broken.exit_code == 2 and "StreamOpenFailed" in broken.output
    unreachable = runner.invoke(app, ["stream", str(onnx_package), "-s", f"http://127.0.0.1:{_free_port()}/cam.mjpg"])
    assert unreachable.exit_code == 2 and "StreamOpenFailed" in unreachable.output
    gif = runner.invoke(app, ["stream", str(onnx_package), "-s", str(colour_video), "--out", str(tmp_path / "a.gif")])
    assert gif.exit_code == 2 and "BadRequestVideoFormat" in gif.output
    nothing = runner.invoke(app, ["stream", "-s", str(colour_video)])
    assert nothing.exit_code != 0 and "--remote" in nothing.output


# ------------------------------------------------------------------ --remote

class PredictionContainer:
    """A tiny prediction server answering POST /image like the exported containers: the body is
    the image, the answer is the ImagePrediction JSON, errors are {code, message}. Every fifth
    request is refused with 400 when ``refuse_every_fifth`` (to see errors recorded per frame)."""

    def __init__(self, package: Path, key: str, refuse_every_fifth: bool = False) -> None:
        import falconet
        from falconet.core.errors import FalconetError
        from falconet.core.prediction import to_custom_vision_json

        predictor = falconet.load(package)
        container = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the stream client expects

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                container.requests += 1
                if self.path != "/image":
                    return self._answer(404, {"code": "NotFound", "message": self.path})
                if self.headers.get("Prediction-Key") != key:
                    return self._answer(401, {"code": "Unauthorized", "message": "wrong Prediction-Key"})
                if refuse_every_fifth and container.requests % 5 == 0:
                    return self._answer(400, {"code": "BadRequestImageFormat", "message": "refused for the test"})
                try:
                    predictions = predictor.predict(body)
                except FalconetError as exc:
                    return self._answer(exc.status, exc.to_dict())
                self._answer(200, to_custom_vision_json(predictions))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_remote_sends_frames_to_a_prediction_server(onnx_package: Path, colour_video: Path) -> None:
    container = PredictionContainer(onnx_package, key="s3cret")
    try:
        result = runner.invoke(app, ["stream", "-s", str(colour_video), "--remote", container.url,
                                     "--prediction-key", "s3cret", "--jsonl", "-", "--threshold", "0"])
    finally:
        container.close()
    assert result.exit_code == 0, result.output
    rows = _lines(result.stdout)
    assert container.requests == 24 and len(rows) == 24
    assert [r["predictions"][0]["tagName"] for r in rows] == [tag for tag in SEGMENTS for _ in range(PER_SEGMENT)]
    assert all(len(r["predictions"]) == 3 and "error" not in r for r in rows)


def test_remote_errors_are_recorded_and_a_dead_server_stops_the_loop(onnx_package: Path, colour_video: Path) -> None:
    container = PredictionContainer(onnx_package, key="k", refuse_every_fifth=True)
    try:
        refused = runner.invoke(app, ["stream", "-s", str(colour_video), "--remote", f"{container.url}/image",
                                      "--prediction-key", "k", "--jsonl", "-"])
        wrong_key = runner.invoke(app, ["stream", "-s", str(colour_video), "--remote", container.url, "--jsonl", "-",
                                        "--prediction-key", "nope"])
    finally:
        container.close()
    assert refused.exit_code == 0, refused.output
    rows = _lines(refused.stdout)
    errors = [r for r in rows if "error" in r]
    assert len(rows) == 24 and len(errors) == 4
    assert all(r["error"]["code"] == "BadRequestImageFormat" and r["predictions"] == [] for r in errors)
    assert "4 errors" in refused.stderr
    # Every frame refused: the loop stops after 10 in a row instead of running through the file.
    assert wrong_key.exit_code == 2 and "StreamInferenceFailed" in wrong_key.output
    assert [r["error"]["code"] for r in _lines(wrong_key.stdout)] == ["Unauthorized"] * 10
    dead = runner.invoke(app, ["stream", "-s", str(colour_video), "--remote", f"http://127.0.0.1:{_free_port()}", "--jsonl", "-"])
    assert dead.exit_code == 2 and "StreamInferenceFailed" in dead.output
    assert {r["error"]["code"] for r in _lines(dead.stdout)} == {"RemotePredictionFailed"}


def test_remote_against_the_real_falconet_serve(onnx_package: Path, colour_video: Path) -> None:
    """The same loop against `falconet serve` itself, where that command exists."""
    try:
        import falconet.server.commands  # noqa: F401
    except ImportError:
        pytest.skip("falconet serve (falconet/server) is not in this tree yet; the tiny container above stands in")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "falconet.cli", "serve", str(onnx_package), "--host", "127.0.0.1",
                               "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import urllib.request

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                time.sleep(0.3)
        result = runner.invoke(app, ["stream", "-s", str(colour_video), "--remote", f"http://127.0.0.1:{port}",
                                     "--jsonl", "-", "--threshold", "0"])
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert result.exit_code == 0, result.output
    rows = _lines(result.stdout)
    assert [r["predictions"][0]["tagName"] for r in rows] == [tag for tag in SEGMENTS for _ in range(PER_SEGMENT)]
