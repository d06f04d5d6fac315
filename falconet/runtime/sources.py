"""Frame sources for ``falconet stream``: video files, webcams and network streams, through OpenCV.

A file has no clock to fall behind, so its frames are read in order (every Nth with ``every``).
A camera or a network stream keeps running while the model thinks, so a reader thread holds only
the newest frame: when inference is slower than the camera, stale frames are dropped (and counted)
instead of queueing up and making the output lag further and further behind. A network stream
that drops is reopened with a growing pause between attempts.

OpenCV is an optional extra (``falconet[stream]``) and is imported only here.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from falconet.core.errors import BackendUnavailableError, FalconetError

#: URL schemes OpenCV's FFmpeg backend opens as a live network stream.
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class StreamError(FalconetError):
    """A source that cannot be opened or read, or an output that cannot be written."""

    code = "StreamFailed"
    status = 400


@dataclass
class Frame:
    """One decoded frame: ``image`` is OpenCV's BGR uint8 array."""

    index: int  # position in the source (files) or count since the camera opened (live)
    image: np.ndarray
    captured: float  # time.time() when it was read
    position_s: Optional[float] = None  # where in a video file it sits; None for live sources


def import_cv2() -> Any:
    """OpenCV, or an error that says which extra to install."""
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError(
            "falconet stream reads video through OpenCV: pip install 'falconet[stream]' "
            f"(opencv-python-headless) ({exc}).", code="StreamDependencyMissing") from exc
    return cv2


def is_network(source: str) -> bool:
    return source.lower().startswith(NETWORK_SCHEMES)


class VideoFileSource:
    """Every frame of a file, in order; ``every=N`` processes frames 0, N, 2N, ... (the rest are
    grabbed without being decoded into arrays, which is cheaper)."""

    live = False

    def __init__(self, path: str | Path, every: int = 1) -> None:
        cv2 = import_cv2()
        self.path = Path(path)
        if not self.path.is_file():
            raise StreamError(f"No such video file: {self.path}", code="StreamSourceNotFound")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise StreamError(f"OpenCV cannot open {self.path} as a video.", code="StreamOpenFailed")
        self.every = max(1, int(every))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frames_read = 0
        self.dropped = 0
        self.reconnects = 0
        self._stop = threading.Event()

    @property
    def description(self) -> str:
        return f"video file {self.path}"

    def frames(self) -> Iterator[Frame]:
        try:
            index = 0
            while not self._stop.is_set():
                if index % self.every:
                    if not self.capture.grab():
                        return
                    self.frames_read += 1
                else:
                    ok, image = self.capture.read()
                    if not ok:
                        return
                    self.frames_read += 1
                    position = index / self.fps if self.fps > 0 else None
                    yield Frame(index, image, time.time(), position)
                index += 1
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.capture.release()


class LiveSource:
    """A webcam index or a network URL, read on its own thread that keeps only the newest frame.

    ``every=N`` processes at most one frame in N. A network stream that ends or fails is reopened
    after 0.5 s, 1 s, 2 s, ... (at most ``max_backoff_s``); ``retries`` bounds the consecutive
    failed attempts (None: keep trying, which is what an unattended camera loop wants).
    """

    live = True

    def __init__(self, source: int | str, *, every: int = 1, reconnect: Optional[bool] = None,
                 retries: Optional[int] = None, open_timeout_s: float = 10.0, max_backoff_s: float = 10.0,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.cv2 = import_cv2()
        self.log = log
        self.source = source
        self.every = max(1, int(every))
        self.reconnect = is_network(str(source)) if reconnect is None else reconnect
        self.retries = retries
        self.open_timeout_s = open_timeout_s
        self.max_backoff_s = max_backoff_s
        self.fps = 0.0
        self.frames_read = 0
        self.dropped = 0  # read but never processed: a newer frame replaced them, or --every skipped them
        self.reconnects = 0
        self.error: Optional[str] = None
        self._latest: Optional[Frame] = None
        self._next_wanted = 0
        self._ended = False
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    @property
    def description(self) -> str:
        return f"camera {self.source}" if isinstance(self.source, int) else f"stream {self.source}"

    def _open(self) -> Any:
        cv2 = self.cv2
        if isinstance(self.source, int):
            capture = cv2.VideoCapture(self.source)
        else:
            # Without timeouts a dead RTSP camera blocks a read for FFmpeg's default (30 s or forever).
            ms = int(self.open_timeout_s * 1000)
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not capture.isOpened():
            capture.release()
            return None
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) or self.fps
        return capture

    def start(self) -> None:
        """Open the source now, so a wrong address fails at once with a clear error."""
        capture = self._open()
        if capture is None:
            hint = "" if isinstance(self.source, int) else " (check the address, the credentials and that the camera is up)"
            raise StreamError(f"Cannot open {self.description}{hint}.", code="StreamOpenFailed")
        self._thread = threading.Thread(target=self._read_loop, args=(capture,), name="falconet-frames", daemon=True)
        self._thread.start()

    def _read_loop(self, capture: Any) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                if capture is not None:
                    if self._pump(capture):
                        failures = 0
                    capture.release()
                    capture = None
                if self._stop.is_set() or not self.reconnect:
                    break
                if self.retries is not None and failures >= self.retries:
                    self.error = f"{self.description} dropped and {failures} reconnection attempt(s) failed"
                    break
                # 0.5 s, 1 s, 2 s, ... so a camera that reboots is not hammered.
                delay = min(self.max_backoff_s, 0.5 * 2 ** failures)
                self._say(f"{self.description} dropped; reconnecting in {delay:g} s (attempt {failures + 1})")
                if self._stop.wait(delay):
                    break
                failures += 1
                capture = self._open()
                if capture is not None:
                    self.reconnects += 1
                    self._say(f"{self.description} reconnected")
        finally:
            if capture is not None:
                capture.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _pump(self, capture: Any) -> bool:
        """Read until the capture fails; True when at least one frame came."""
        got_any = False
        while not self._stop.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                return got_any
            got_any = True
            with self._cond:
                frame = Frame(self.frames_read, image, time.time())
                self.frames_read += 1
                if frame.index < self._next_wanted:
                    self.dropped += 1  # --every skips it
                    continue
                if self._latest is not None:
                    self.dropped += 1  # never processed: this newer frame replaces it
                self._latest = frame
                self._cond.notify_all()
        return got_any

    def frames(self) -> Iterator[Frame]:
        if self._thread is None:
            self.start()
        try:
            while True:
                with self._cond:
                    while self._latest is None and not self._ended:
                        self._cond.wait(0.2)
                    frame, self._latest = self._latest, None
                    if frame is not None:
                        self._next_wanted = frame.index + self.every
                if frame is None:
                    return
                yield frame
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            # A read blocked on a silent network stream returns within its read timeout.
            self._thread.join(timeout=self.open_timeout_s + 1)


def open_source(source: str, every: int = 1, retries: Optional[int] = None,
                log: Optional[Callable[[str], None]] = None) -> VideoFileSource | LiveSource:
    """``0`` (a webcam index), ``rtsp://...`` / ``http://...`` (a network stream) or a video file path."""
    if source.strip().isdigit():
        return LiveSource(int(source), every=every, retries=retries, log=log)
    if is_network(source):
        return LiveSource(source, every=every, retries=retries, log=log)
    return VideoFileSource(source, every=every)
