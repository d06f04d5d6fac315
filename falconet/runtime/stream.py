"""The camera loop: frames in, predictions out, as JSON lines, an annotated video and a window.

``run_stream`` ties a frame source (:mod:`falconet.runtime.sources`) to an inference function (a
local Predictor or a remote ``falconet serve``), and to whichever outputs were asked for. It stops
cleanly at the end of a file, on Ctrl-C (or SIGTERM, which the command turns into Ctrl-C), when the
window is closed or after ``max_frames``: the video file is finalised and every processed frame
has its JSON line, so a stopped run leaves nothing half-written.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import numpy as np

from falconet.core.errors import FalconetError
from falconet.core.prediction import Prediction
from falconet.runtime.drawing import annotate
from falconet.runtime.sources import LiveSource, StreamError, VideoFileSource, import_cv2

#: frame (BGR uint8) -> predictions
Infer = Callable[[np.ndarray], list[Prediction]]

#: Output containers and the codec OpenCV's bundled FFmpeg writes into them without extra libraries.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def local_infer(predictor: Any, threshold: float) -> Infer:
    """A Predictor on OpenCV frames (BGR -> RGB; the Predictor does the rest as everywhere else)."""
    return lambda image: predictor.predict(image[:, :, ::-1], threshold=threshold)


def remote_infer(remote: Any, threshold: float, jpeg_quality: int = 90) -> Infer:
    """Frames JPEG-encoded and posted to a remote prediction server."""
    cv2 = import_cv2()

    def infer(image: np.ndarray) -> list[Prediction]:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise StreamError("OpenCV could not JPEG-encode the frame.", code="StreamEncodeFailed")
        return remote.predict_jpeg(encoded.tobytes(), threshold)

    return infer


class AnnotatedVideo:
    """The annotated output video, opened at the first frame (its size is known only then)."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if self.codec is None:
            raise StreamError(f"--out {self.path}: use one of {', '.join(VIDEO_CODECS)}.", code="BadRequestVideoFormat")
        if not self.path.parent.is_dir():
            raise StreamError(f"--out {self.path}: the folder {self.path.parent} does not exist.", code="BadRequestVideoFormat")
        self.fps = fps if fps > 0 else 15.0
        self.size: Optional[tuple[int, int]] = None
        self.frames_written = 0
        self._writer: Any = None

    def write(self, image: np.ndarray, repeat: int = 1) -> None:
        cv2 = import_cv2()
        if self._writer is None:
            self.size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.codec), self.fps, self.size)
            if not self._writer.isOpened():
                raise StreamError(f"OpenCV cannot write {self.path} ({self.codec}).", code="VideoWriteFailed")
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)  # a reconnected camera may come back at another size
        for _ in range(repeat):
            self._writer.write(image)
            self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the index (moov atom): without it an .mp4 does not play
            self._writer = None


class Window:
    """``--show``: an OpenCV window. Fails at once, with the reason, where there is no screen."""

    def __init__(self, title: str = "falconet") -> None:
        self.cv2 = import_cv2()
        self.title = title
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise StreamError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set "
                              "(use --out annotated.mp4 or --jsonl - on a headless device).", code="NoDisplay")
        try:
            self.cv2.namedWindow(title, self.cv2.WINDOW_NORMAL)
        except self.cv2.error as exc:
            raise StreamError("--show needs OpenCV with window support; opencv-python-headless has none "
                              "(pip uninstall opencv-python-headless && pip install opencv-python), "
                              f"or use --out instead ({str(exc).strip().splitlines()[-1]}).", code="NoDisplay") from exc

    def show(self, image: np.ndarray) -> bool:
        """Shows the frame; False when the user pressed q / Esc or closed the window."""
        self.cv2.imshow(self.title, image)
        key = self.cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        return self.cv2.getWindowProperty(self.title, self.cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        self.cv2.destroyWindow(self.title)


@dataclass
class StreamSummary:
    source: str
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    errors: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    mean_inference_ms: float = 0.0
    stopped_by: str = "end"  # end | interrupt | max-frames | window
    video: Optional[str] = None
    video_frames: int = 0
    error: Optional[str] = None
    _inference_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_inference_ms")
        return data


class _Rate:
    """Frames per second, smoothed over the last dozen frames or so, for the on-screen counter."""

    def __init__(self) -> None:
        self.last: Optional[float] = None
        self.value: Optional[float] = None

    def tick(self) -> Optional[float]:
        now = time.perf_counter()
        if self.last is not None and now > self.last:
            instant = 1.0 / (now - self.last)
            self.value = instant if self.value is None else 0.9 * self.value + 0.1 * instant
        self.last = now
        return self.value


def _record(frame: Any, predictions: list[Prediction], ms: float, error: Optional[FalconetError]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "frame": frame.index,
        "timestamp": _dt.datetime.fromtimestamp(frame.captured, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "position_s": None if frame.position_s is None else round(frame.position_s, 4),
        "width": int(frame.image.shape[1]),
        "height": int(frame.image.shape[0]),
        "inference_ms": round(ms, 2),
        "predictions": [p.to_dict() for p in predictions],
    }
    if error is not None:
        record["error"] = error.to_dict()
    return record


def run_stream(source: VideoFileSource | LiveSource, infer: Infer, *, jsonl: Optional[TextIO] = None,
               video: Optional[AnnotatedVideo] = None, window: Optional[Window] = None,
               max_frames: Optional[int] = None, max_consecutive_errors: int = 10) -> StreamSummary:
    """Process frames until the source ends, Ctrl-C, the window closes or ``max_frames``.

    A frame whose inference fails (a remote server that refused it, say) gets a JSON line with the
    error and the loop goes on; ``max_consecutive_errors`` failures in a row stop it with a
    StreamError, so a dead server is not hammered forever.
    """
    summary = StreamSummary(source=source.description, video=str(video.path) if video else None)
    rate = _Rate()
    failures_in_row = 0
    last_index: Optional[int] = None
    started = time.perf_counter()
    frames = source.frames()
    try:
        for frame in frames:
            t0 = time.perf_counter()
            error: Optional[FalconetError] = None
            try:
                predictions = infer(frame.image)
                failures_in_row = 0
            except FalconetError as exc:
                predictions, error = [], exc
                summary.errors += 1
                failures_in_row += 1
            ms = (time.perf_counter() - t0) * 1000
            summary._inference_ms.append(ms)
            fps = rate.tick()
            if jsonl is not None:
                jsonl.write(json.dumps(_record(frame, predictions, ms, error)) + "\n")
                jsonl.flush()  # a reader at the other end of a pipe sees each frame as it happens
            summary.frames_processed += 1
            if video is not None or window is not None:
                image = annotate(frame.image, predictions, fps)
                if video is not None:
                    # A live source's skipped frames are filled with this one, so the video keeps real time.
                    gap = 1 if last_index is None or not source.live else frame.index - last_index
                    video.write(image, repeat=max(1, min(gap, int(video.fps * 2))))
                if window is not None and not window.show(image):
                    summary.stopped_by = "window"
                    break
            last_index = frame.index
            if failures_in_row >= max_consecutive_errors:
                raise StreamError(f"{failures_in_row} frames in a row failed; the last: {error}", code="StreamInferenceFailed")
            if max_frames is not None and summary.frames_processed >= max_frames:
                summary.stopped_by = "max-frames"
                break
    except KeyboardInterrupt:
        summary.stopped_by = "interrupt"
    finally:
        frames.close()
        source.close()
        if video is not None:
            video.close()
            summary.video_frames = video.frames_written
        if window is not None:
            window.close()
        summary.seconds = round(time.perf_counter() - started, 3)
        summary.frames_read = source.frames_read
        summary.frames_dropped = source.dropped
        summary.reconnects = source.reconnects
        summary.error = getattr(source, "error", None)
        if summary.frames_processed and summary.seconds > 0:
            summary.fps = round(summary.frames_processed / summary.seconds, 2)
            summary.mean_inference_ms = round(sum(summary._inference_ms) / len(summary._inference_ms), 2)
    return summary
