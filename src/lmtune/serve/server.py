"""Run the app under uvicorn on a socket lmtune binds itself, so a port in use is a clear user
error before any model loads (and the tests and benchmark can start a server in a thread)."""

from __future__ import annotations

import errno
import socket
import threading
import time

from lmtune.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve it ({exc.strerror})",
                        ["give an address such as 127.0.0.1 or 0.0.0.0"]) from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: {host}:{port} is already in use (another server?)",
                            ["stop the other server or pick another port, e.g. --port 8001"]) from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror})",
                        ["ports below 1024 need root; pick another --port or --host"]) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(app, log_level: str = "info"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=log_level == "info",
                                         timeout_graceful_shutdown=5))


class ThreadedServer:
    """A uvicorn server in a background thread (tests, benchmarks): `with ThreadedServer(app) as url:`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.server = make_server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
