"""The bench's outputs: the printed table, the JSON results file and the plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.stats import Figures


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = (
    ("configuration", 26),
    ("jobs", 5),
    ("img/s", 7),
    ("×floor", 6),
    ("p50 ms", 8),
    ("p95 ms", 8),
    ("p99 ms", 8),
    ("ideal", 7),
    ("ovh p50", 8),
    ("ovh p99", 8),
    ("fail", 4),
    ("wrong", 5),
    ("polls", 5),
    ("api cpu", 7),
)


def _row(cells: Sequence[str]) -> str:
    first, *rest = cells
    widths = [w for _, w in COLUMNS]
    return f"{first:<{widths[0]}}" + "".join(
        f" {cell:>{w}}" for cell, w in zip(rest, widths[1:], strict=True)
    )


def table(rows: Sequence[Figures]) -> str:
    """One block per shape: every configuration with its throughput, latency percentiles,
    overhead over the ideal latency, failures, wrong images and API CPU per job."""
    lines: list[str] = []
    for shape in dict.fromkeys(r.shape for r in rows):
        lines.append("")
        lines.append(f"== {shape}")
        lines.append(_row([name for name, _ in COLUMNS]))
        for r in (r for r in rows if r.shape == shape):
            cpu = r.extra.get("cpu_ms_per_job", {}).get("api")
            lines.append(
                _row(
                    [
                        r.label,
                        str(r.jobs),
                        _num(r.good_per_s),
                        _num(r.ratio_vs_floor, 2),
                        _num(r.p50_ms),
                        _num(r.p95_ms),
                        _num(r.p99_ms),
                        _num(r.ideal_ms),
                        _num(r.overhead_p50_ms),
                        _num(r.overhead_p99_ms),
                        str(r.failed),
                        str(r.wrong),
                        _num(r.extra.get("polls_per_job")),
                        _num(cpu, 2),
                    ]
                )
            )
    return "\n".join(lines)


def summary_text(
    summary: dict[str, Any], comparisons: dict[str, Any], api_alone: dict[str, Any] | None
) -> str:
    notes = {
        "overhead_p50_ms": (comparisons.get("overhead") or {}).get("config"),
        "overhead_p99_ms": (comparisons.get("overhead") or {}).get("config"),
        "throughput_ratio_vs_floor": _vs_floor(comparisons.get("throughput_vs_floor")),
        "vs_naive_throughput_ratio": _vs_naive(comparisons.get("vs_naive", {})),
    }
    lines = ["", "summary:"]
    for key, value in summary.items():
        note = notes.get(key)
        lines.append(f"  {key:<27} {value!s:>9}" + (f"   ({note})" if note else ""))
    if api_alone:
        lines.append(
            f"  api alone: submit→202 p50 {_num(api_alone.get('p50_ms'))} ms, "
            f"p99 {_num(api_alone.get('p99_ms'))} ms at c={api_alone.get('concurrency')}, "
            f"{_num(api_alone.get('submits_per_s'))} submits/s, "
            f"RSS {api_alone.get('rss_mb')} MiB"
        )
    return "\n".join(lines)


def _vs_floor(found: dict[str, Any] | None) -> str | None:
    if not found:
        return None
    return f"{found['config']} vs floor ×{found['floor_processes']}"


def _vs_naive(found: dict[str, Any]) -> str | None:
    parts = []
    for level, value in found.items():
        ratio = value["ratio"]
        naive = (
            f"naive {value['naive_failed']} failed, {value['naive_wrong']} wrong"
            if value["naive_failed"] or value["naive_wrong"]
            else "naive all right"
        )
        shown = "no right image from naive" if ratio is None else f"{ratio:.2f}"
        parts.append(f"{level}: {shown}, {naive}")
    return "; ".join(parts) or None


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_default) + "\n")


def _default(value: object) -> Any:
    if isinstance(value, Figures):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def plot(
    path: Path,
    rows: Sequence[Figures],
    latencies: dict[str, list[float]],
    floor_ips: dict[str, dict[int, float]],
) -> None:
    """Per shape: latency distribution per configuration (box plot, log scale) and right
    images per second by configuration, with the floor's throughput as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in rows))
    if not shapes:
        return
    fig, axes = plt.subplots(
        len(shapes), 2, figsize=(18, 5.5 * len(shapes)), squeeze=False, layout="constrained"
    )
    for (box_ax, bar_ax), shape in zip(axes, shapes, strict=True):
        measured = [r for r in rows if r.shape == shape]
        with_latency = [r for r in measured if latencies.get(_key(r))]
        if with_latency:
            box_ax.boxplot(
                [latencies[_key(r)] for r in with_latency],
                whis=(1, 99),
                showfliers=False,
            )
            box_ax.set_xticks(range(1, len(with_latency) + 1))
            box_ax.set_xticklabels(
                [r.label for r in with_latency], rotation=60, ha="right", fontsize=8
            )
            box_ax.set_yscale("log")
        box_ax.set_ylabel("latency, ms (box: p25–p75, whiskers: p1–p99)")
        box_ax.set_title(f"{shape}: latency per configuration")
        box_ax.grid(axis="y", alpha=0.3)

        colours = {
            "floor": "tab:gray",
            "latentq": "tab:blue",
            "naive": "tab:red",
            "batching": "tab:green",
        }
        bar_ax.bar(
            range(len(measured)),
            [r.good_per_s for r in measured],
            color=[colours.get(r.system, "tab:gray") for r in measured],
        )
        bar_ax.bar(
            range(len(measured)),
            [r.images_per_s - r.good_per_s for r in measured],
            bottom=[r.good_per_s for r in measured],
            color="black",
            alpha=0.35,
            label="wrong images",
        )
        for index, r in enumerate(measured):
            if r.failed or r.wrong:
                bar_ax.annotate(
                    f"{r.failed} failed\n{r.wrong} wrong\nof {r.jobs}",
                    (index, r.images_per_s),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="tab:red",
                )
        for processes, ips in sorted(floor_ips.get(shape, {}).items()):
            bar_ax.axhline(ips, linestyle="--", color="gray")
            bar_ax.annotate(
                f"floor ×{processes}: {ips:.1f}",
                (len(measured) - 0.5, ips),
                ha="right",
                va="bottom",
                fontsize=8,
            )
        bar_ax.set_xticks(range(len(measured)))
        bar_ax.set_xticklabels([r.label for r in measured], rotation=60, ha="right", fontsize=8)
        bar_ax.set_ylabel("right images / s")
        bar_ax.set_title(f"{shape}: throughput per configuration")
        bar_ax.grid(axis="y", alpha=0.3)
        bar_ax.legend(loc="upper left", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _key(row: Figures) -> str:
    return f"{row.shape} {row.label}"


def latency_key(row: Figures) -> str:
    """The key `plot` looks latencies up by."""
    return _key(row)
