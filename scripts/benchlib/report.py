"""Medians, cosfs/peer ratios, the targets (PASS/MISS), and the table, JSON and chart."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .runner import RunResult
from .workloads import Metric, Workload

PEERS = ("s3fs", "rclone")
RSS_LIMIT_MB = 300.0
RSS_WORKLOADS = ("seq_read", "seq_write")
Medians = dict[str, dict[str, float]]  # metric -> mount -> median


def medians(results: list[RunResult]) -> Medians:
    samples: dict[str, dict[str, list[float]]] = {}
    for r in results:
        if r.error:
            continue
        for key, value in r.values.items():
            samples.setdefault(key, {}).setdefault(r.mount, []).append(value)
    out = {k: {m: statistics.median(v) for m, v in by.items()} for k, by in samples.items()}
    out.update(_peak_rss(results))
    return out


def _peak_rss(results: list[RunResult]) -> Medians:
    """Peaks, not medians: the limit holds in every run or not at all."""
    during: dict[str, float] = {}
    anywhere: dict[str, float] = {}
    for r in results:
        if r.peak_rss_mb is None:
            continue
        anywhere[r.mount] = max(anywhere.get(r.mount, 0.0), r.peak_rss_mb)
        if r.workload in RSS_WORKLOADS:
            during[r.mount] = max(during.get(r.mount, 0.0), r.peak_rss_mb)
    out: Medians = {}
    if during:
        out["rss_rw"] = during
    if anywhere:
        out["rss_all"] = anywhere
    return out


RSS_METRICS = (Metric("rss_rw", "peak RSS during seq read/write", "MB", False),
               Metric("rss_all", "peak RSS in any workload", "MB", False))


@dataclass(frozen=True)
class Target:
    metric: str
    text: str
    check: Callable[[Medians], tuple[float | None, bool | None, str]]


def _vs_peer(metric: str, peer: str, factor: float, higher: bool) -> Callable:
    """cosfs / ``peer`` (or the best peer) against ``factor``."""
    def check(m: Medians) -> tuple[float | None, bool | None, str]:
        row = m.get(metric, {})
        if peer == "best":
            peers = {p: row[p] for p in PEERS if p in row}
            if not peers:
                return None, None, "no peer measured"
            name = (max if higher else min)(peers, key=peers.__getitem__)
        else:
            name = peer
        if "cosfs" not in row or name not in row or not row[name]:
            return None, None, "not measured"
        ratio = row["cosfs"] / row[name]
        ok = ratio >= factor if higher else ratio <= factor
        return ratio, ok, f"vs {name}"
    return check


def _vs_raw(factor: float) -> Callable:
    def check(m: Medians) -> tuple[float | None, bool | None, str]:
        cos, raw = m.get("seq_read", {}).get("cosfs"), m.get("raw_n", {}).get("server")
        if cos is None or not raw:
            return None, None, "not measured"
        return cos / raw, cos / raw >= factor, "vs raw N-stream GET"
    return check


def _absolute(metric: str, limit: float) -> Callable:
    def check(m: Medians) -> tuple[float | None, bool | None, str]:
        value = m.get(metric, {}).get("cosfs")
        if value is None:
            return None, None, "not measured"
        return value, value <= limit, "absolute"
    return check


TARGETS = (
    Target("seq_read", ">= 2x the faster peer", _vs_peer("seq_read", "best", 2.0, True)),
    Target("seq_read", ">= 60% of raw N-stream", _vs_raw(0.6)),
    Target("ttfb", "<= the faster peer", _vs_peer("ttfb", "best", 1.0, False)),
    Target("seq_write", ">= 1.5x the faster peer", _vs_peer("seq_write", "best", 1.5, True)),
    Target("create", ">= 3x s3fs", _vs_peer("create", "s3fs", 3.0, True)),
    Target("create", ">= rclone", _vs_peer("create", "rclone", 1.0, True)),
    Target("ls", "<= 1/3 of s3fs", _vs_peer("ls", "s3fs", 1 / 3, False)),
    Target("find", "<= 1/3 of s3fs", _vs_peer("find", "s3fs", 1 / 3, False)),
    Target("rsync1", "<= 1/4 of s3fs", _vs_peer("rsync1", "s3fs", 0.25, False)),
    Target("rsync2_files", "second run sends nothing", _absolute("rsync2_files", 0)),
    Target("rss_all", f"<= {RSS_LIMIT_MB:.0f} MB in every workload",
           _absolute("rss_all", RSS_LIMIT_MB)),
)


def evaluate(m: Medians) -> list[dict]:
    out = []
    for t in TARGETS:
        value, ok, basis = t.check(m)
        status = "n/a" if ok is None else ("PASS" if ok else "MISS")
        out.append({"metric": t.metric, "target": t.text, "value": value, "basis": basis,
                    "status": status})
    return out


def all_metrics(workloads: list[Workload]) -> list[Metric]:
    metrics = [m for wl in workloads for m in wl.metrics]
    return metrics + list(RSS_METRICS)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def _ratio(row: dict[str, float], peer: str) -> str:
    if "cosfs" not in row or not row.get(peer):
        return "-"
    ratio = row["cosfs"] / row[peer]
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def table(m: Medians, metrics: list[Metric], kinds: list[str],
          targets: list[dict]) -> str:
    """The text table: one row per metric, medians per mount, cosfs/peer ratios
    (value over value, so < 1 is better for times), then the targets."""
    peers = [p for p in PEERS if p in kinds] if "cosfs" in kinds else []
    head = ["metric", "unit", *kinds, *[f"cosfs/{p}" for p in peers], "target"]
    by_metric: dict[str, list[str]] = {}
    for t in targets:
        by_metric.setdefault(t["metric"], []).append(f"{t['target']}: {t['status']}")
    rows = []
    for metric in metrics:
        row = m.get(metric.key, {})
        if not row:
            continue
        if "server" in row:  # the raw ceiling has no mount
            cells = [_fmt(row["server"])] + [""] * (len(kinds) - 1)
        else:
            cells = [_fmt(row.get(k)) for k in kinds]
        ratios = [_ratio(row, p) if "server" not in row else "" for p in peers]
        rows.append([metric.label, metric.unit, *cells, *ratios,
                     "; ".join(by_metric.get(metric.key, []))])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 or i == len(head) - 1 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(m: Medians, metrics: list[Metric], kinds: list[str], targets: list[dict],
             machine: dict, heading: str) -> str:
    """The table and the targets as Markdown, for docs/TUNING.md."""
    peers = [p for p in PEERS if p in kinds] if "cosfs" in kinds else []
    out = [heading, "", f"Machine: {machine['cpu_model']}, {machine['cores']} cores, "
           f"{machine['memory_gib']} GiB memory, Linux {machine['kernel']}; "
           f"{machine['s3fs']}; {machine['rclone']}.", "",
           _md_row(["metric", "unit", *kinds, *[f"cosfs/{p}" for p in peers]]),
           "|---|---|" + "---:|" * (len(kinds) + len(peers))]
    for metric in metrics:
        row = m.get(metric.key, {})
        if not row:
            continue
        if "server" in row:
            cells = [_fmt(row["server"]) + " (no mount)"] + [""] * (len(kinds) - 1)
            ratios = [""] * len(peers)
        else:
            cells = [_fmt(row.get(k)) for k in kinds]
            ratios = [_ratio(row, p) for p in peers]
        out.append(_md_row([metric.label.strip(), metric.unit, *cells, *ratios]))
    out += ["", "| target (cosfs) | value | basis | result |", "|---|---:|---|---|"]
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        out.append(f"| {t['metric']} {t['target']} | {value} | {t['basis']} | "
                   f"**{t['status']}** |")
    return "\n".join(out) + "\n"


def targets_text(targets: list[dict]) -> str:
    lines = []
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"  {t['status']:<5} {t['metric']:<13} {t['target']:<30} "
                     f"{value:>8}  ({t['basis']})")
    return "\n".join(lines)


def requests_text(results: list[RunResult], kinds: list[str]) -> str:
    """Requests per workload and mount, from each one's last successful run."""
    last: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        if r.requests is not None and not r.error:
            last[(r.workload, r.mount)] = r.requests
    lines = []
    for wl in dict.fromkeys(w for w, _ in last):
        for kind in kinds:
            reqs = last.get((wl, kind))
            if reqs is not None:
                total = sum(reqs.values())
                ops = ", ".join(f"{op} {n}" for op, n in reqs.items())
                lines.append(f"  {wl:<12} {kind:<7} {total:>6}  {ops}")
    return "\n".join(lines)


def cpu_medians(results: list[RunResult]) -> dict[str, dict[str, list[float | None]]]:
    """workload -> mount -> [median CPU s of the mount, median CPU s of the server]."""
    samples: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        if r.cpu_s is not None and not r.error:
            samples.setdefault((r.workload, r.mount), []).append(r)
    out: dict[str, dict[str, list[float | None]]] = {}
    for (wl, kind), runs in samples.items():
        server = [r.server_cpu_s for r in runs if r.server_cpu_s is not None]
        out.setdefault(wl, {})[kind] = [
            round(statistics.median(r.cpu_s for r in runs if r.cpu_s is not None), 2),
            round(statistics.median(server), 2) if server else None]
    return out


def cpu_text(cpu: dict[str, dict[str, list[float | None]]], kinds: list[str]) -> str:
    lines = [f"  {'workload':<12} " + "  ".join(f"{k:>15}" for k in kinds)]
    for wl, by in cpu.items():
        cells = []
        for k in kinds:
            mount, server = by.get(k, [None, None])
            cells.append("-" if mount is None else
                         f"{mount:.1f} / {'-' if server is None else f'{server:.1f}'}")
        lines.append(f"  {wl:<12} " + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def errors_text(results: list[RunResult]) -> str:
    return "\n".join(f"  [{r.workload} r{r.rep + 1} {r.mount}] {r.error}"
                     for r in results if r.error)


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


# A dashed line on a mount metric's chart: the same transfer with no mount in between.
CEILINGS = {"seq_read": ("raw_n", "raw N-stream GET"),
            "seq_write": ("raw_put", "raw N-stream PUT")}
COLORS = {"cosfs": "#2b7bba", "s3fs": "#e08a2c", "rclone": "#59a14f", "server": "#888888"}


def chart(path: Path, m: Medians, metrics: list[Metric], kinds: list[str],
          title: str) -> bool:
    """One small bar chart per metric (each has its own unit); False without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [x for x in metrics if m.get(x.key) and "server" not in m[x.key]]
    if not shown:  # only the ceilings were measured: nothing to compare
        return True
    cols = 4
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, shown, strict=False):
        row = m[metric.key]
        names = [k for k in kinds if k in row]
        values = [row[k] for k in names]
        bars = ax.bar(names, values, color=[COLORS.get(k, "#777") for k in names])
        ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=8)
        better = "higher" if metric.higher_is_better else "lower"
        ax.set_title(f"{metric.label.strip()}\n({metric.unit}, {better} is better)",
                     fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
        ceiling = CEILINGS.get(metric.key)
        if ceiling and m.get(ceiling[0], {}).get("server"):
            level = m[ceiling[0]]["server"]
            ax.axhline(level, color="#888", linestyle="--", linewidth=1)
            ax.text(-0.4, level, f" {ceiling[1]} {_fmt(level)}", fontsize=7, va="bottom",
                    color="#555")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
