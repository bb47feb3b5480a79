"""The bench's pure parts: percentiles, per-configuration figures, the summary, and the check
that an answer holds the floor's image for its seed. (The bench itself runs with `make bench`.)"""

from __future__ import annotations

import numpy as np
import pytest

from bench.run import Shape, auto_jobs, check_images
from bench.stats import (
    SUMMARY_KEYS,
    Figures,
    Sample,
    compare,
    figures,
    ideal_latency_ms,
    percentile,
    same_image,
    summarize,
)
from tests.images import png


def reference(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# -- percentiles ---------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    values = [12.0, 3.0, 7.0, 25.0, 9.0, 1.0, 30.0]
    for q in (0, 1, 25, 50, 90, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_one_value_and_edges() -> None:
    assert percentile([4.0], 99) == 4.0
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# -- one configuration ---------------------------------------------------------------------


def samples(latencies_ms: list[float], *, start: float = 0.0) -> list[Sample]:
    """Back-to-back requests from one client, each taking the given time."""
    out = []
    t = start
    for latency in latencies_ms:
        out.append(Sample(start=t, end=t + latency / 1000, ok=True))
        t += latency / 1000
    return out


def test_ideal_latency_is_the_floor_time_at_c1_and_queueing_beyond() -> None:
    assert ideal_latency_ms(1, 1, 40.0) == pytest.approx(25.0)
    assert ideal_latency_ms(8, 1, 40.0) == pytest.approx(200.0)
    assert ideal_latency_ms(8, 2, 40.0) == pytest.approx(200.0)  # 8 images over 2 processes
    assert ideal_latency_ms(1, 2, 40.0) == pytest.approx(50.0)  # one process at half threads


def test_figures_throughput_latency_and_overhead() -> None:
    runs = samples([30.0] * 10)
    row = figures(
        runs,
        system="latentq",
        shape="64x64/4",
        mode="wait",
        workers=1,
        concurrency=1,
        floor_ips=40.0,
    )
    assert row.jobs == row.ok == 10
    assert row.failed == row.wrong == 0
    assert row.images_per_s == pytest.approx(10 / 0.3)
    assert row.p50_ms == pytest.approx(30.0)
    assert row.ideal_ms == pytest.approx(25.0)
    assert row.overhead_p50_ms == pytest.approx(5.0)
    assert row.overhead_p99_ms == pytest.approx(5.0)
    assert row.ratio_vs_floor == pytest.approx((10 / 0.3) / 40.0)
    assert row.label == "latentq w1 wait c1"


def test_figures_count_failures_and_wrong_images_apart() -> None:
    runs = samples([10.0] * 4)
    runs[0].ok, runs[0].error = False, "http 500"
    runs[1].correct = False
    runs[2].correct = True
    row = figures(
        runs, system="naive", shape="s", mode="-", workers=1, concurrency=8, floor_ips=None
    )
    assert (row.ok, row.failed, row.wrong) == (3, 1, 1)
    assert row.good_per_s == pytest.approx(2 / 0.04)
    assert row.images_per_s == pytest.approx(3 / 0.04)
    assert row.extra["errors"] == {"http 500": 1}
    assert row.overhead_p50_ms is None and row.ratio_vs_floor is None


def test_figures_with_nothing_answered() -> None:
    runs = samples([5.0, 5.0])
    for s in runs:
        s.ok, s.error = False, "ReadError"
    row = figures(
        runs, system="naive", shape="s", mode="-", workers=1, concurrency=8, floor_ips=10.0
    )
    assert row.p50_ms is None and row.overhead_p50_ms is None
    assert row.good_per_s == 0 and row.ratio_vs_floor == 0


# -- the summary ---------------------------------------------------------------------------


def row(system: str, workers: int, concurrency: int, good: float, **kw: object) -> Figures:
    fields: dict[str, object] = {
        "system": system,
        "shape": "64x64/4",
        "mode": "wait",
        "workers": workers,
        "concurrency": concurrency,
        "jobs": 100,
        "ok": 100,
        "failed": 0,
        "wrong": 0,
        "wall_s": 1.0,
        "images_per_s": good,
        "good_per_s": good,
        **kw,
    }
    return Figures(**fields)  # type: ignore[arg-type]


def fake_rows() -> list[Figures]:
    return [
        row("latentq", 1, 1, 30.0, p50_ms=33.0, p99_ms=40.0, overhead_p50_ms=8.0),
        row(
            "latentq",
            1,
            8,
            32.0,
            p50_ms=250.0,
            p99_ms=300.0,
            ideal_ms=205.0,
            overhead_p50_ms=45.0,
            overhead_p99_ms=95.0,
        ),
        row("latentq", 1, 8, 25.0, mode="poll", overhead_p50_ms=99.0),
        row("latentq", 2, 8, 37.0),
        row("latentq", 2, 32, 36.0),
        row("latentq", 2, 8, 1.0, shape="256x256/10"),
        row("naive", 1, 8, 4.0, images_per_s=7.0, wrong=10, failed=20),
        row("naive", 1, 32, 0.0, images_per_s=2.0, wrong=30, failed=70),
        row("batching", 1, 16, 30.0, extra={"batch_max": 1}),
        row("batching", 1, 16, 75.0, extra={"batch_max": 8}),
    ]


def test_summary_from_a_few_rows() -> None:
    comparisons = compare(fake_rows(), {1: 39.0, 2: 40.0}, shape="64x64/4")
    summary = summarize(comparisons)
    assert tuple(summary) == SUMMARY_KEYS
    # 1 worker, Prefer: wait, c=8 — not the polling row.
    assert summary["overhead_p50_ms"] == 45.0
    assert summary["overhead_p99_ms"] == 95.0
    # Best on the summary shape: 2 workers at c=8 (37/s), against the floor of 2 processes.
    assert summary["throughput_ratio_vs_floor"] == pytest.approx(37.0 / 40.0, abs=1e-3)
    assert comparisons["throughput_vs_floor"]["config"] == "latentq w2 wait c8"
    assert summary["batching_gain"] == 2.5
    # Right images per second at c=8: 37 against 4.
    assert summary["vs_naive_throughput_ratio"] == pytest.approx(37.0 / 4.0, abs=1e-3)
    assert comparisons["vs_naive"]["c8"]["raw_ratio"] == pytest.approx(37.0 / 7.0)
    # At c=32 the naive server made no right image: no ratio, but the counts are there.
    assert comparisons["vs_naive"]["c32"]["ratio"] is None
    assert comparisons["vs_naive"]["c32"]["naive_failed"] == 70


def test_summary_of_a_partial_run_has_every_key() -> None:
    only = [row("latentq", 1, 1, 30.0)]
    summary = summarize(compare(only, {1: 39.0}, shape="64x64/4"))
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["throughput_ratio_vs_floor"] == pytest.approx(30 / 39, abs=1e-3)
    assert summary["overhead_p50_ms"] is None
    assert summary["batching_gain"] is None
    assert summary["vs_naive_throughput_ratio"] is None


# -- the naive server's correctness check ------------------------------------------------


def test_same_image_accepts_the_floor_image_within_rounding() -> None:
    ref = reference(1)
    assert same_image(png(ref), ref, tolerance=2)
    nudged = np.clip(ref.astype(int) + 1, 0, 255)
    assert same_image(png(nudged), ref, tolerance=2)


def test_same_image_refuses_another_seed_a_size_or_not_an_image() -> None:
    ref = reference(1)
    assert not same_image(png(reference(2)), ref, tolerance=2)
    assert not same_image(png(reference(1, size=8)), ref, tolerance=2)
    assert not same_image(b"not an image", ref, tolerance=2)
    one_pixel_off = ref.copy()
    one_pixel_off[3, 4] = (ref[3, 4].astype(int) + 40) % 256
    assert not same_image(png(one_pixel_off), ref, tolerance=2)


def test_check_images_marks_each_answer_by_its_seed() -> None:
    refs = {7: reference(7), 8: reference(8)}
    answers = [
        Sample(0, 1, ok=True, seed=7, image=png(refs[7])),
        Sample(0, 1, ok=True, seed=8, image=png(refs[7])),  # another request's image
        Sample(0, 1, ok=True, seed=8, image=None),  # the URL could not be fetched
        Sample(0, 1, ok=False, seed=7, error="http 500"),
    ]
    check_images(answers, refs, tolerance=2)
    assert [a.correct for a in answers] == [True, False, None, None]
    assert answers[2].ok is False and answers[2].error == "image not fetchable"
    assert all(a.image is None for a in answers)


# -- options ---------------------------------------------------------------------------------


def test_shape_and_job_counts() -> None:
    assert Shape.parse("256x128:10") == Shape(256, 128, 10)
    assert Shape.parse("64:4").label == "64x64/4"
    assert auto_jobs(None, 4.0, 39.0, 1) == 156
    assert auto_jobs(None, 4.0, 3.0, 32) == 64  # at least two rounds of the clients
    assert auto_jobs(None, 4.0, 1.0, 1) == 16
    assert auto_jobs(24, 4.0, 39.0, 32) == 32  # a fixed count, never fewer than the clients
