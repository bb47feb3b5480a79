"""The arithmetic of the bench, with no I/O: percentiles, the figures of one configuration,
the summary, and the check that a returned image is the floor's image for the same seed.

Definitions (bench/README.md explains them at more length):

- the *floor* of W processes is the pipeline called directly, one image after another, in W
  processes at once (torch threads = cores / W each); its throughput is `floor_ips(W)`.
- the *ideal latency* of a configuration with W workers and c clients (closed loop: each
  client sends its next request when the last one is answered) is what a zero-cost FIFO queue
  in front of the floor would give: every request waits for max(c, W) images of work shared
  by W processes, `max(c, W) / floor_ips(W)`. At c=1, W=1 it is the floor's per-image time.
- the *overhead* at a percentile is that percentile of the measured latency minus the ideal
  latency: the milliseconds a job spends in HTTP, Redis, the queue, storage and encoding
  beyond the pipeline's own time and the unavoidable wait behind the other clients' work.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

SUMMARY_KEYS = (
    "overhead_p50_ms",
    "overhead_p99_ms",
    "throughput_ratio_vs_floor",
    "batching_gain",
    "vs_naive_throughput_ratio",
)
"""The keys of the results file's `summary`, and only these."""

SUMMARY_CONCURRENCY = 8
"""Overheads and the comparison with the naive server are summarised at this concurrency."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), interpolated linearly between the closest ranks (numpy's
    default method). Raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Sample:
    """One request of a load run, as the client saw it."""

    start: float
    """Monotonic seconds when the request was sent."""
    end: float
    """Monotonic seconds when the finished job (or the answer) was in hand."""
    ok: bool
    """The request ended with an image: a succeeded job, or a 200 with an image."""
    seed: int = 0
    error: str | None = None
    """Why it did not end with an image (an HTTP status, an exception, a job's error code)."""
    correct: bool | None = None
    """The image is the floor's image for the same seed (None: not checked)."""
    polls: int = 0
    """GET requests made after the submit to learn that the job ended."""
    phases: dict[str, float] = field(default_factory=dict)
    """Where the time went, from the job's own timestamps (ms): `submit` (send → record
    created), `queue` (created → started), `run` (started → finished), `notify` (finished →
    the client has the finished job)."""
    image: bytes | None = None
    """The image, or where to fetch it (a URL as bytes), kept until it is checked."""

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000


def ideal_latency_ms(concurrency: int, processes: int, floor_ips: float) -> float:
    """A zero-cost queue in front of `processes` floor processes, under `concurrency`
    closed-loop clients: each request waits for max(c, W) images shared by W processes."""
    return max(concurrency, processes) / floor_ips * 1000


@dataclass
class Figures:
    """What one configuration measured."""

    system: str
    """`floor`, `latentq`, `naive`, `batching` or `api`."""
    shape: str
    """`WxH/steps`."""
    mode: str
    """How the client learns the end: `wait` (Prefer: wait=60), `poll`, or `-`."""
    workers: int
    """Worker (or floor) processes; 1 for the naive server."""
    concurrency: int
    jobs: int
    ok: int
    failed: int
    wrong: int
    """Answers with an image that is not the floor's image for the same seed."""
    wall_s: float
    images_per_s: float
    """Answers with an image (right or wrong) per second of the run."""
    good_per_s: float
    """Answers with the right image per second: the throughput the summary compares."""
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ideal_ms: float | None = None
    overhead_p50_ms: float | None = None
    overhead_p99_ms: float | None = None
    ratio_vs_floor: float | None = None
    """good_per_s over the floor's throughput with as many processes as this has workers."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.system == "floor":
            return f"floor ×{self.workers}"
        if self.system == "naive":
            return f"naive c{self.concurrency}"
        if self.system == "batching":
            return f"batch max {self.extra.get('batch_max')} c{self.concurrency}"
        return f"latentq w{self.workers} {self.mode} c{self.concurrency}"


def figures(
    samples: Sequence[Sample],
    *,
    system: str,
    shape: str,
    mode: str,
    workers: int,
    concurrency: int,
    floor_ips: float | None,
    extra: dict[str, Any] | None = None,
) -> Figures:
    """Throughput over the whole run (first send to last answer) and latency percentiles of
    the requests that ended with an image; overheads against the floor when it is known."""
    if not samples:
        raise ValueError("no samples")
    wall = max(s.end for s in samples) - min(s.start for s in samples)
    done = [s for s in samples if s.ok]
    wrong = sum(1 for s in done if s.correct is False)
    good = len(done) - wrong
    result = Figures(
        system=system,
        shape=shape,
        mode=mode,
        workers=workers,
        concurrency=concurrency,
        jobs=len(samples),
        ok=len(done),
        failed=len(samples) - len(done),
        wrong=wrong,
        wall_s=round(wall, 4),
        images_per_s=len(done) / wall if wall > 0 else 0.0,
        good_per_s=good / wall if wall > 0 else 0.0,
        extra=dict(extra or {}),
    )
    if done:
        latencies = [s.latency_ms for s in done]
        result.p50_ms = percentile(latencies, 50)
        result.p95_ms = percentile(latencies, 95)
        result.p99_ms = percentile(latencies, 99)
    if floor_ips:
        result.ratio_vs_floor = result.good_per_s / floor_ips
        result.ideal_ms = ideal_latency_ms(concurrency, workers, floor_ips)
        if result.p50_ms is not None and result.p99_ms is not None:
            result.overhead_p50_ms = result.p50_ms - result.ideal_ms
            result.overhead_p99_ms = result.p99_ms - result.ideal_ms
    phases = _phase_medians(done)
    if phases:
        result.extra["phases_p50_ms"] = phases
    polls = [s.polls for s in samples]
    if any(polls):
        result.extra["polls_per_job"] = sum(polls) / len(polls)
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            key = s.error or "unknown"
            errors[key] = errors.get(key, 0) + 1
    if errors:
        result.extra["errors"] = errors
    return result


def _phase_medians(samples: Iterable[Sample]) -> dict[str, float]:
    by_phase: dict[str, list[float]] = {}
    for s in samples:
        for name, value in s.phases.items():
            by_phase.setdefault(name, []).append(value)
    return {name: round(percentile(values, 50), 2) for name, values in by_phase.items()}


# -- is it the right image? ---------------------------------------------------------------


def decode_rgb(data: bytes) -> np.ndarray | None:
    """The pixels of an encoded image as an RGB array, or None when the bytes are not one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception:
        return None


def same_image(data: bytes, reference: np.ndarray, tolerance: int) -> bool:
    """True when `data` decodes to an image of the reference's size whose every channel is
    within `tolerance` levels (of 255) of it.

    Thread counts and batch sizes change float rounding (a level or two); a wrong image (a
    shared pipeline's state mixed between requests) is off by tens of levels on average.
    """
    pixels = decode_rgb(data)
    if pixels is None or pixels.shape != reference.shape:
        return False
    diff = np.abs(pixels.astype(np.int16) - reference.astype(np.int16))
    return int(diff.max()) <= tolerance


# -- the summary ---------------------------------------------------------------------------


def _best(rows: Iterable[Figures]) -> Figures | None:
    return max(rows, key=lambda r: r.good_per_s, default=None)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def compare(
    rows: Sequence[Figures],
    floor_ips: dict[int, float],
    *,
    shape: str,
    naive_levels: Sequence[int] = (SUMMARY_CONCURRENCY, 32),
) -> dict[str, Any]:
    """The comparisons behind the summary, naming the configurations they picked.

    - overhead: latentq, 1 worker, `Prefer: wait`, c=8 on `shape`;
    - throughput vs floor: the latentq configuration with the most right images per second
      on `shape`, over the floor with as many processes as it has workers;
    - vs naive (per concurrency): the best latentq configuration at that concurrency over the
      naive server at the same concurrency, right images per second (`raw` counts wrong
      images too);
    - batching: right images per second with LATENTQ_BATCH_MAX=8 over =1.
    """
    latentq = [r for r in rows if r.system == "latentq" and r.shape == shape]
    out: dict[str, Any] = {}

    target = next(
        (
            r
            for r in latentq
            if r.workers == 1 and r.mode == "wait" and r.concurrency == SUMMARY_CONCURRENCY
        ),
        None,
    )
    out["overhead"] = (
        None
        if target is None
        else {
            "config": target.label,
            "p50_ms": target.p50_ms,
            "p99_ms": target.p99_ms,
            "ideal_ms": target.ideal_ms,
            "overhead_p50_ms": target.overhead_p50_ms,
            "overhead_p99_ms": target.overhead_p99_ms,
        }
    )

    best = _best(latentq)
    floor = floor_ips.get(best.workers) if best is not None else None
    out["throughput_vs_floor"] = (
        None
        if best is None or not floor
        else {
            "config": best.label,
            "images_per_s": best.good_per_s,
            "floor_processes": best.workers,
            "floor_images_per_s": floor,
            "ratio": best.good_per_s / floor,
        }
    )

    vs_naive: dict[str, Any] = {}
    for level in naive_levels:
        ours = _best(r for r in latentq if r.concurrency == level)
        naive = next(
            (
                r
                for r in rows
                if r.system == "naive" and r.shape == shape and r.concurrency == level
            ),
            None,
        )
        if ours is None or naive is None:
            continue
        vs_naive[f"c{level}"] = {
            "config": ours.label,
            "latentq_images_per_s": ours.good_per_s,
            "naive_images_per_s": naive.good_per_s,
            "naive_wrong": naive.wrong,
            "naive_failed": naive.failed,
            "ratio": _ratio(ours.good_per_s, naive.good_per_s),
            "raw_ratio": _ratio(ours.images_per_s, naive.images_per_s),
        }
    out["vs_naive"] = vs_naive

    batching = {r.extra.get("batch_max"): r for r in rows if r.system == "batching"}
    one, eight = batching.get(1), batching.get(8)
    out["batching"] = (
        None
        if one is None or eight is None
        else {
            "batch_max_1_images_per_s": one.good_per_s,
            "batch_max_8_images_per_s": eight.good_per_s,
            "gain": _ratio(eight.good_per_s, one.good_per_s),
        }
    )
    return out


def summarize(comparisons: dict[str, Any]) -> dict[str, float | None]:
    """The five headline numbers (`SUMMARY_KEYS`) from `compare`'s result; None where the
    run did not measure what a number needs."""

    def pick(section: str, key: str) -> float | None:
        value = comparisons.get(section)
        return None if value is None else value.get(key)

    naive = comparisons.get("vs_naive", {}).get(f"c{SUMMARY_CONCURRENCY}")
    summary: dict[str, float | None] = {
        "overhead_p50_ms": pick("overhead", "overhead_p50_ms"),
        "overhead_p99_ms": pick("overhead", "overhead_p99_ms"),
        "throughput_ratio_vs_floor": pick("throughput_vs_floor", "ratio"),
        "batching_gain": pick("batching", "gain"),
        "vs_naive_throughput_ratio": None if naive is None else naive["ratio"],
    }
    assert tuple(summary) == SUMMARY_KEYS
    return {k: None if v is None else round(v, 3) for k, v in summary.items()}
