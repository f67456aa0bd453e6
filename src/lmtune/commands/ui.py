"""`lmtune ui [RUNS_DIR] [--host H] [--port P] [--token T] [--read-only] [--data-dir DIR]...
[--max-upload-mb N]`: a local web app over a directory of runs (lmtune/ui/)."""

from __future__ import annotations

import argparse
import os
import sys

# lmtune's own modules are imported inside run(): `lmtune --help` imports every command module.

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                        help="directory whose subdirectories are runs (each a `lmtune train` output.dir)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but loopback needs --token")
    parser.add_argument("--port", type=int, default=7860, help="TCP port, 1-65535")
    parser.add_argument("--token", default=None,
                        help="require this token on every request (or set $LMTUNE_UI_TOKEN); needed off loopback")
    parser.add_argument("--read-only", action="store_true",
                        help="never take uploads or start, stop or resume runs (/new's actions are off)")
    parser.add_argument("--data-dir", action="append", default=None, metavar="DIR",
                        help="a folder /new may read data files from (repeatable; default: the current "
                             "folder); RUNS_DIR/uploads always is one")
    parser.add_argument("--max-upload-mb", type=float, default=100, metavar="N",
                        help="largest data file /new takes as an upload, in MiB")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmtune.errors import UserError

    token = args.token or os.environ.get("LMTUNE_UI_TOKEN") or None
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: a TCP port is between 1 and 65535", ["e.g. --port 7860"])
    loopback = is_loopback(args.host)
    if not loopback and not token:
        raise UserError(f"--host {args.host}: the UI would be open to other machines without a token",
                        ["add --token SOMETHING-LONG (every request must then carry it)",
                         "or keep the default --host 127.0.0.1"])
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"RUNS_DIR {runs_dir}: no such directory",
                        ["give the directory holding your runs, e.g. `lmtune ui runs`"])
    if not args.max_upload_mb > 0:
        raise UserError(f"--max-upload-mb {args.max_upload_mb}: must be above 0", ["e.g. --max-upload-mb 100"])
    data_dirs = [Path(d) for d in (args.data_dir or ["."])]
    for d in data_dirs:
        if not d.is_dir():
            raise UserError(f"--data-dir {d}: no such directory", ["give a folder that holds your data files"])
    from lmtune.serve.server import bind, make_server
    from lmtune.ui.app import LOOPBACK_HOSTS, create_app

    from lmtune.ui.runs import summaries

    sock = bind(args.host, args.port)
    summaries(runs_dir)   # parse every run once now: the first page load then only checks for changes
    app = create_app(runs_dir.resolve(), token=token, allowed_hosts=LOOPBACK_HOSTS if loopback else ["*"],
                     read_only=args.read_only, data_dirs=data_dirs, max_upload=int(args.max_upload_mb * 2**20))
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):   # every interface: name the machine, not an address no one can open
        import socket

        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"lmtune ui: {runs_dir.resolve()} at {url}", file=sys.stderr)
    try:
        make_server(app, log_level="warning").run(sockets=[sock])
    finally:
        app.state.models.close()
        sock.close()
    return 0
