"""``cosfs-server``: the local COS-compatible server (tests, demo, offline work)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .auth import Credentials
from .faults import Fault
from .server import CosHTTPServer, ServerConfig

EPILOG = """\
credentials:
  The key pair defaults to the environment variables COS_SECRET_ID and COS_SECRET_KEY;
  prefer them to --secret-key, which other users of the machine can read in the
  process list. Requests signed with COS (q-sign-algorithm=sha1) or AWS SigV4 are
  checked against it; unsigned requests need --anonymous.

routing:
  A request names its bucket by Host (<bucket>.cos.<region>.myqcloud.com, or
  <bucket>.<SUFFIX> with --host-suffix) or by path (/<bucket>/<key>).

admin endpoint (JSON, unsigned, on the bare host):
  GET  /_admin/stats           request counters per operation
  POST /_admin/stats/reset     zero the counters
  GET  /_admin/faults          the faults in force
  POST /_admin/faults          {"op": "GetObject" or "*", "error_rate": 0.2,
                               "error_status": 503, "drop_rate": 0.1, "latency_ms": 200}
  DELETE /_admin/faults        clear every fault
  GET  /_admin/buckets         bucket names
  POST /_admin/buckets         {"name": "x-1250000000"} creates a bucket

Once it accepts connections the server prints "listening on http://HOST:PORT".
"""


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosfs-server", description="A local server speaking the Tencent Cloud COS "
        "XML API, storing objects as files under --root.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, type=Path,
                        help="directory holding buckets, objects and metadata; created if "
                        "missing; one server per directory")
    parser.add_argument("--port", type=_non_negative, default=0,
                        help="TCP port to listen on; 0 (default) picks a free one")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1)")
    parser.add_argument("--bucket", action="append", default=[], metavar="NAME-APPID",
                        help="create this bucket if missing (repeatable); buckets persist "
                        "under --root")
    parser.add_argument("--secret-id", default=os.environ.get("COS_SECRET_ID"),
                        help="SecretId requests must be signed with (default: "
                        "$COS_SECRET_ID)")
    parser.add_argument("--secret-key", default=os.environ.get("COS_SECRET_KEY"),
                        help="SecretKey requests must be signed with (default: "
                        "$COS_SECRET_KEY)")
    parser.add_argument("--anonymous", action="store_true",
                        help="also accept unsigned requests")
    parser.add_argument("--min-part-size", type=_non_negative, default=1 << 20,
                        metavar="BYTES", help="smallest size of a multipart part other than "
                        "the last (default 1048576); tests use small parts")
    parser.add_argument("--host-suffix", metavar="SUFFIX",
                        help="also route Host <bucket>.SUFFIX to <bucket>")
    parser.add_argument("--error-rate", type=_rate, default=0.0, metavar="R",
                        help="fraction of requests answered 500 InternalError or 503 "
                        "SlowDown (alternately)")
    parser.add_argument("--drop-rate", type=_rate, default=0.0, metavar="R",
                        help="fraction of requests whose connection is closed mid-body "
                        "(uploads after reading part of the body, other requests after "
                        "sending part of the answer)")
    parser.add_argument("--latency-ms", type=_non_negative, default=0, metavar="N",
                        help="delay every request by N milliseconds")
    parser.add_argument("--verbose", action="store_true",
                        help="log every request (method, path, status) to stderr")
    return parser


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ServerConfig:
    if bool(args.secret_id) != bool(args.secret_key):
        parser.error("give both a SecretId and a SecretKey, or neither")
    if not args.secret_id and not args.anonymous:
        parser.error("no key pair: set COS_SECRET_ID and COS_SECRET_KEY (or --secret-id and "
                     "--secret-key), or accept unsigned requests with --anonymous")
    credentials = Credentials(args.secret_id, args.secret_key) if args.secret_id else None
    fault = Fault(error_rate=args.error_rate or None, drop_rate=args.drop_rate or None,
                  latency_ms=float(args.latency_ms) or None)
    return ServerConfig(root=args.root, host=args.host, port=args.port,
                        buckets=tuple(args.bucket), credentials=credentials,
                        anonymous=args.anonymous, min_part_size=args.min_part_size,
                        host_suffix=args.host_suffix, startup_fault=fault,
                        verbose=args.verbose)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = _config(parser, args)
    try:
        server = CosHTTPServer(config)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"cosfs-server: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0
