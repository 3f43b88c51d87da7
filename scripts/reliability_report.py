"""Run the reliability tests and turn the figures they record into the tables of
docs/RELIABILITY.md.

The tests (tests/test_model.py, test_faults.py, test_bad_input.py,
test_security.py) assert their figures and, when COSFS_REPORT_DIR is set,
append them as JSON lines there; this script sets it, runs pytest, and renders
what the run recorded. Nothing in the tables is typed by hand.

    scripts/reliability-report              the default (fast) tests
    scripts/reliability-report --all        also the slow ones (long faults, big model run)
    scripts/reliability-report --write-doc  also replace the figures in docs/RELIABILITY.md
    scripts/reliability-report --from DIR   render figures recorded earlier in DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
TESTS = ["tests/test_model.py", "tests/test_faults.py", "tests/test_bad_input.py",
         "tests/test_security.py"]


def load(directory: Path, section: str) -> list[dict]:
    path = directory / f"{section}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# What differs from run to run (temporary directories, ports, generated bucket
# names) would make the tables churn and name this machine's paths: neutralise it.
_VOLATILE = [(re.compile(r"/tmp(?:/[^\s/'\"]+)*/([^\s/'\"]+)"), r"DIR/\1"),
             (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
             (re.compile(r"\bt\d+-\d+-(\d+)\b"), r"BUCKET-\1")]


def clean(cell: object) -> str:
    text = str(cell)
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def errors_cell(row: dict) -> str:
    other = row.get("other_errors") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "-"


def faults_table(rows: list[dict]) -> str:
    body = [[r["fault"], r.get("tried", 0), r.get("succeeded", 0), r.get("eio", 0),
             errors_cell(r), r.get("slowest_s", "-"), r.get("bytes_lost", 0),
             r.get("half_written", 0)] for r in rows]
    return table(["fault", "operations tried", "succeeded", "EIO", "other errors",
                  "slowest op (s)", "bytes lost", "half-written objects"], body)


def model_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        if r.get("test") == "stateful":
            body.append(["stateful model (Hypothesis)",
                         f"{r['examples']} sequences, {r['steps']} operations "
                         f"(budget {r['max_examples']} x {r['step_count']})",
                         r.get("failures", 0), _mode(r)])
        else:
            body.append([f"{r['workers']} concurrent workers, {r['seconds']} s",
                         f"{r['operations']} operations, {r['shared_writes']} whole-file "
                         "writes to shared files", r.get("failures", 0), _mode(r)])
    return table(["run", "what ran", "failures", "mount"], body)


def _mode(row: dict) -> str:
    return "-o writeback" if row.get("writeback") else "default"


def simple_table(rows: list[dict], key: str, header: str) -> str:
    return table([header, "result"], [[r[key], r["result"]] for r in rows])


def render(directory: Path, outcome: str) -> str:
    parts = [f"Recorded by `scripts/reliability-report` on "
             f"{time.strftime('%Y-%m-%d')}; pytest: {outcome}.", ""]
    sections = [("Faults", "faults", faults_table), ("Model-based tests", "model", model_table),
                ("Bad input", "bad_input",
                 lambda rows: simple_table(rows, "input", "input")),
                ("Security", "security",
                 lambda rows: simple_table(rows, "check", "check"))]
    for title, name, fn in sections:
        rows = load(directory, name)
        parts += [f"### {title}", "", fn(rows) if rows else "(not run)", ""]
    return "\n".join(parts)


def run_tests(directory: Path, run_all: bool, extra: list[str]) -> tuple[int, str]:
    env = dict(os.environ, COSFS_REPORT_DIR=str(directory))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, *extra]
    if not run_all:
        args[4:4] = ["-m", "not slow"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stdout[-4000:])
    summary = next((ln.strip("= ") for ln in reversed(proc.stdout.splitlines())
                    if " passed" in ln or " failed" in ln), "no summary")
    # Model runs that failed report how many failures they found.
    return proc.returncode, summary


def write_doc(rendered: str) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + rendered + "\n" + text[end:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="also run the slow tests")
    ap.add_argument("--write-doc", action="store_true",
                    help="replace the figures section of docs/RELIABILITY.md")
    ap.add_argument("--from", dest="source", type=Path,
                    help="render figures recorded earlier (no test run)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    rc = 0
    if args.source:
        directory, outcome = args.source, "recorded earlier"
    else:
        directory = Path(tempfile.mkdtemp(prefix="cosfs-reliability-"))
        rc, outcome = run_tests(directory, args.all, args.pytest_args)
        print(f"figures recorded in {directory}", file=sys.stderr)
    rendered = render(directory, outcome)
    print(rendered)
    if args.write_doc:
        write_doc(rendered)
    return rc


if __name__ == "__main__":
    sys.exit(main())
