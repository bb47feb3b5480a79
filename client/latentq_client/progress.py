"""Progress of a job while it is waited for, and a one-line progress bar for terminals."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class ProgressUpdate:
    """What is known of a job at one moment of `wait()`."""

    job_id: str
    status: str
    step: int
    total_steps: int
    fraction: float
    eta_s: float | None
    queue_position: int | None


ProgressCallback = Callable[[ProgressUpdate], None]


class ProgressBar:
    """Draws updates on one line of `stream` with carriage returns; `close()` ends the line."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval = interval
        self._last_draw = 0.0
        self._last_len = 0
        self._last_text = ""

    def __call__(self, update: ProgressUpdate) -> None:
        text = self.render(update)
        now = time.monotonic()
        final = update.status in ("succeeded", "failed", "canceled")
        if text == self._last_text or (not final and now - self._last_draw < self.interval):
            return
        self._last_draw, self._last_text = now, text
        pad = " " * max(0, self._last_len - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._last_len = len(text)

    def render(self, update: ProgressUpdate) -> str:
        if update.status == "queued":
            where = f" (position {update.queue_position})" if update.queue_position else ""
            return f"{update.job_id} queued{where}"
        fraction = min(1.0, max(0.0, update.fraction))
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        text = f"{update.job_id} {update.status:<9} [{bar}] "
        if update.total_steps:
            text += f"{update.step}/{update.total_steps} "
        text += f"{fraction * 100:3.0f}%"
        if update.status == "running" and update.eta_s is not None:
            text += f" ETA {format_seconds(update.eta_s)}"
        return text

    def close(self) -> None:
        if self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0


def format_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Reporter:
    """Turns the `progress` argument of `wait()` into calls, and estimates the ETA."""

    def __init__(self, progress: bool | ProgressCallback | None) -> None:
        self._bar: ProgressBar | None = None
        self._callback: ProgressCallback | None = None
        if progress is None:
            progress = _is_tty(sys.stderr)
        if progress is True:
            self._bar = ProgressBar()
            self._callback = self._bar
        elif callable(progress):
            self._callback = progress
        self._first: tuple[float, int] | None = None

    def report(self, job: dict[str, Any]) -> None:
        if self._callback is None:
            return
        progress = job.get("progress") or {}
        step = _int(progress.get("step"))
        total = _int(progress.get("total_steps"))
        fraction = progress.get("fraction")
        if not isinstance(fraction, int | float):
            fraction = step / total if total else 0.0
        eta = progress.get("eta_s")
        if not isinstance(eta, int | float):
            eta = self._estimate(step, total)
        position = job.get("queue_position")
        self._callback(
            ProgressUpdate(
                job_id=str(job.get("id", "")),
                status=str(job.get("status", "")),
                step=step,
                total_steps=total,
                fraction=float(fraction),
                eta_s=float(eta) if eta is not None else None,
                queue_position=position if isinstance(position, int) else None,
            )
        )

    def _estimate(self, step: int, total: int) -> float | None:
        # The server may not give eta_s: extrapolate from the steps seen during this wait.
        now = time.monotonic()
        if self._first is None or step < self._first[1]:
            self._first = (now, step)
            return None
        started, first_step = self._first
        done = step - first_step
        if done <= 0 or not total:
            return None
        return (now - started) / done * max(0, total - step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
