"""scripts/bench: cosfs against s3fs-fuse and rclone mount on one local server."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import report
from .data import Pattern
from .mounts import MOUNT_KINDS, MountEnv, missing_tools
from .procs import machine_info
from .raw import Endpoint
from .runner import Runner, RunResult
from .servers import CosServer, MotoServer, Server
from .store import Store
from .workloads import WORKLOAD_NAMES, Ctx, Metric, Sizes, make_workloads

REPO = Path(__file__).resolve().parents[2]
BUCKET = "bench-1250000000"  # valid both as COS NAME-APPID and as an S3 bucket name
DEFAULTS = dict(size_mb=1024, small_files=1000, small_kb=4, ls_files=1000, tree_fanout=9,
                rsync_files=1000, streams=8, timeout=900.0, repeat=3)
QUICK = dict(size_mb=64, small_files=100, small_kb=4, ls_files=100, tree_fanout=4,
             rsync_files=300, streams=8, timeout=300.0, repeat=1)


def _csv(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__,
        epilog="Needs root (FUSE mounts, dropping the page cache). Results go to "
        "bench-results/ as JSON and PNG; the table goes to stdout, progress to stderr.")
    p.add_argument("--server", choices=("cosfs", "moto"), default="cosfs",
                   help="cosfs-server (default; cosfs signs COS) or moto_server (SigV4)")
    p.add_argument("--mounts", type=_csv(MOUNT_KINDS), default=list(MOUNT_KINDS),
                   help="which mounts (default cosfs,s3fs,rclone)")
    p.add_argument("--workloads", type=_csv(WORKLOAD_NAMES), default=list(WORKLOAD_NAMES),
                   help=f"which workloads (default all: {','.join(WORKLOAD_NAMES)})")
    p.add_argument("--quick", action="store_true",
                   help="small smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--repeat", type=int, help="runs per workload and mount; the median "
                   f"is reported (default {DEFAULTS['repeat']})")
    p.add_argument("--size-mb", type=int, help="large file size in MiB (default 1024)")
    p.add_argument("--small-files", type=int, help="files created by small_files (1000)")
    p.add_argument("--small-kb", type=int, help="size of each small file in KiB (4)")
    p.add_argument("--ls-files", type=int, help="objects in the ls folder (1000)")
    p.add_argument("--tree-fanout", type=int, help="fanout of the 3-level tree (9)")
    p.add_argument("--rsync-files", type=int, help="files in the rsync source (1000; "
                   "4000 takes s3fs-fuse minutes per run)")
    p.add_argument("--streams", type=int, help="parallel GETs of the raw ceiling (8)")
    p.add_argument("--timeout", type=float, help="seconds any one wait may take (900)")
    p.add_argument("--latency-ms", type=int, default=0, metavar="N",
                   help="cosfs-server answers every request N ms late, as a distant "
                   "endpoint would (default 0: a local server's round trip)")
    p.add_argument("--cosfs-opt", action="append", default=[], metavar="OPT",
                   help="extra -o option for cosfs (repeatable; recorded in the JSON)")
    p.add_argument("--s3fs-opt", action="append", default=[], metavar="OPT",
                   help="extra -o option for s3fs (repeatable)")
    p.add_argument("--rclone-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for rclone mount (repeatable)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run cosfs under py-spy (pip install py-spy; not a dependency) "
                   "and write collapsed stacks per run to DIR; timings and memory of "
                   "such a run are not comparable")
    p.add_argument("--out", type=Path, default=REPO / "bench-results",
                   help="directory for the JSON and PNG (default bench-results/)")
    p.add_argument("--chart", type=Path, help="also write the chart here")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="also write the table and targets as Markdown (for docs)")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: print, draw (and --markdown) a saved run")
    p.add_argument("--workdir", type=Path,
                   help="scratch directory (server data, mounts, caches; default a new "
                   "temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p


def resolve_sizes(args: argparse.Namespace) -> tuple[Sizes, int]:
    base = QUICK if args.quick else DEFAULTS
    value = {k: getattr(args, k) if getattr(args, k) is not None else base[k] for k in base}
    repeat = int(value.pop("repeat"))
    if repeat < 1 or value["size_mb"] < 1 or value["streams"] < 1:
        raise SystemExit("bench: --repeat, --size-mb and --streams must be >= 1")
    return Sizes(**value), repeat  # type: ignore[arg-type]


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        return render(args)
    sizes, repeat = resolve_sizes(args)
    missing = missing_tools(args.mounts)
    if missing:
        print(f"bench: not installed: {', '.join(missing)} (scripts/bench installs them)",
              file=sys.stderr)
        return 2
    can_drop = os.geteuid() == 0
    if not can_drop:
        print("bench: not root: the page cache cannot be dropped (reads may be warm)",
              file=sys.stderr)
    # SIGINT too: a shell starts background jobs with it ignored, and Python then
    # leaves it ignored; every one of these must unmount before we go.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cosfs-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, sizes, repeat, workdir, can_drop)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(args: argparse.Namespace, sizes: Sizes, repeat: int, workdir: Path,
           can_drop: bool) -> int:
    # A key pair of this run only: never anyone's real credentials, never in argv.
    key_id, secret = "AKIDbench" + secrets.token_hex(12), secrets.token_urlsafe(24)
    server = _start_server(args.server, workdir, key_id, secret, args.latency_ms)
    runner: Runner | None = None
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    interrupted = False
    try:
        store = Store(server.url, BUCKET, key_id, secret)
        server.create_bucket(store)
        endpoint = Endpoint(server.url, BUCKET, key_id, secret,
                            "cos" if server.native_cos else "s3")
        ctx = Ctx(store, endpoint, sizes, workdir, Pattern(seed=20240601))
        menv = MountEnv(server.url, BUCKET, key_id, secret, workdir,
                        cosfs_sigv4=not server.native_cos,
                        extra={"cosfs": args.cosfs_opt, "s3fs": args.s3fs_opt,
                               "rclone": args.rclone_arg},
                        profile_dir=args.profile)
        workloads = make_workloads(args.workloads, sizes)
        runner = Runner(ctx, server, menv, args.mounts, repeat, can_drop)
        try:
            runner.run_all(workloads)
        except KeyboardInterrupt:
            interrupted = True
            print("\nbench: interrupted; unmounting and writing what was measured",
                  file=sys.stderr)
    finally:
        if runner is not None:
            runner.stop_all()
        server.stop()
    if runner is None:
        return 1
    doc = _document(args, sizes, repeat, server, runner, workloads, started,
                    time.monotonic() - t0, interrupted, can_drop)
    _output(args, doc, runner.results, report.all_metrics(workloads))
    return 130 if interrupted else 0


def _start_server(kind: str, workdir: Path, key_id: str, secret: str,
                  latency_ms: int) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "COS_"))}
    env.update(COS_SECRET_ID=key_id, COS_SECRET_KEY=secret)
    log = workdir / f"server-{kind}.log"
    if latency_ms < 0:
        raise SystemExit("bench: --latency-ms must be >= 0")
    if kind == "moto":
        if latency_ms:
            raise SystemExit("bench: --latency-ms needs --server cosfs")
        return MotoServer.start(BUCKET, env, log)
    return CosServer.start(workdir / "server", BUCKET, env, log, latency_ms)


def _git_revision() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                       capture_output=True, text=True)
    return r.stdout.strip()


def _document(args: argparse.Namespace, sizes: Sizes, repeat: int, server: Server,
              runner: Runner, workloads: list, started: datetime.datetime,
              duration: float, interrupted: bool, can_drop: bool) -> dict:
    meds = report.medians(runner.results)
    return {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "interrupted": interrupted,
        "cosfs_revision": _git_revision(),
        "machine": machine_info(),
        "server": server.name,
        "latency_ms": args.latency_ms,
        "mounts": args.mounts,
        "workloads": [w.name for w in workloads],
        "repeat": repeat,
        "sizes": vars(sizes),
        "page_cache_dropped": can_drop,
        "profiled": args.profile is not None,
        "extra_options": {"cosfs": args.cosfs_opt, "s3fs": args.s3fs_opt,
                          "rclone": args.rclone_arg},
        "metrics": {m.key: {"label": m.label.strip(), "unit": m.unit,
                            "higher_is_better": m.higher_is_better}
                    for m in report.all_metrics(workloads)},
        "medians": meds,
        "targets": report.evaluate(meds),
        "cpu_s": report.cpu_medians(runner.results),
        "runs": [r.as_json() for r in runner.results],
    }


def _server_text(doc: dict) -> str:
    latency = doc.get("latency_ms") or 0
    return f"{doc['server']}-server" + (f" (+{latency:g} ms per request)" if latency else "")


def _output(args: argparse.Namespace, doc: dict, results: list[RunResult],
            metrics: list[Metric], write_json: bool = True) -> None:
    """Table to stdout; JSON, chart (and Markdown) next to it under --out."""
    kinds = doc["mounts"]
    meds, targets = doc["medians"], doc["targets"]
    stamp = doc["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    base = args.out / f"bench-{doc['server']}-{stamp}"
    if write_json:
        report.write_json(base.with_suffix(".json"), doc)
    if args.markdown:
        heading = (f"{_server_text(doc)}, {doc['sizes']['size_mb']} MiB file, median "
                   f"of {doc['repeat']} runs, {doc['started']}, cosfs {doc['cosfs_revision']}")
        args.markdown.write_text(report.markdown(meds, metrics, kinds, targets,
                                                 doc["machine"], heading))
    m = doc["machine"]
    title = (f"cosfs vs s3fs-fuse vs rclone mount on {_server_text(doc)}, "
             f"{doc['sizes']['size_mb']} MiB file, median of {doc['repeat']} "
             f"({m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
             f"Linux {m['kernel']})")
    charts = [base.with_suffix(".png")] + ([args.chart] if args.chart else [])
    drawn = all(report.chart(c, meds, metrics, kinds, title) for c in charts)
    print(f"\n{title}\n")
    print(report.table(meds, metrics, kinds, targets))
    print("\ntargets (cosfs):\n" + report.targets_text(targets))
    if doc.get("cpu_s"):
        print("\nCPU seconds during each run, mount / server (medians; the server's "
              "include the harness's polling):\n" + report.cpu_text(doc["cpu_s"], kinds))
    reqs = report.requests_text(results, kinds)
    if reqs:
        print("\nrequests seen by the server (last run of each; harness's own "
              "polling removed):\n" + reqs)
    errors = report.errors_text(results)
    if errors:
        print("\nfailed runs (not in the medians):\n" + errors)
    notes = [f"  [{r.workload} r{r.rep + 1} {r.mount}] {'; '.join(r.notes)}"
             for r in results if r.notes]
    if notes:
        print("\nnotes:\n" + "\n".join(notes))
    print(f"\nJSON: {base.with_suffix('.json')}")
    print("chart: " + (", ".join(map(str, charts)) if drawn else
                       "not drawn (matplotlib missing: scripts/bench installs it)"))


def render(args: argparse.Namespace) -> int:
    """Print and draw a saved run again (e.g. for the docs) without measuring."""
    doc = json.loads(args.render.read_text())
    metrics = [Metric(k, v["label"], v["unit"], v["higher_is_better"])
               for k, v in doc["metrics"].items()]
    results = [RunResult(**r) for r in doc["runs"]]
    _output(args, doc, results, metrics, write_json=False)
    return 0
