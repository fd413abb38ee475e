"""`labrun serve`: a read-only dashboard of a state directory's runs, on loopback only.

Why the standard library's `http.server` (a `ThreadingHTTPServer`): the pages are the
report's HTML, rendered on the server, and a handful of GETs from one person's browser;
an ASGI stack would add dependencies and a second rendering path for nothing.

What keeps it harmless:
- it listens on a loopback address only (127.0.0.1 by default, or ::1) and refuses any
  other, since it has no login: from another machine, forward the port over SSH;
- it answers only requests whose Host header names that address or localhost with its
  port, so a web page elsewhere cannot reach it through DNS rebinding;
- GET and HEAD only: every other method is 405, and nothing it runs can write;
- every request reads the store through its own read-only snapshot (labrun/readstore.py):
  it never takes the write lock, so a runner writing the run it shows is never slowed;
- pages carry the report's Content-Security-Policy, in a header too, and escape all text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import IO, Any, cast

from labrun.app import find_run, job_of
from labrun.errors import ConfigError, LabrunError, StoreError, UsageError
from labrun.masking import Masker, masker
from labrun.memseries import decode
from labrun.paths import StatePaths
from labrun.reads import Reads
from labrun.readstore import ReadStore
from labrun.report import html_page
from labrun.rows import RunRow
from labrun.states import RunState, TaskState
from labrun.views import build, dashboard
from labrun.views.digest import Charted
from labrun.views.html import CSP, ReportPage, write_html
from labrun.views.model import AttemptView, TaskView

LOOPBACK = {"127.0.0.1": socket.AF_INET, "localhost": socket.AF_INET, "::1": socket.AF_INET6}
DEFAULT_PORT = 8765
RUNS_LISTED = 200
LIVE_SHOWN = 20  # running attempts shown with their log tails
TAIL_BYTES = 2048  # of each log, for a running attempt
LINKED = 50  # tasks (failed, then succeeded) whose attempts' memory pages are linked
_RUN = re.compile(r"^/runs/(\d+)/?$")
_ATTEMPT = re.compile(r"^/runs/(\d+)/attempts/(\d+)/?$")


class Answer(Exception):
    """A page other than 200: its status and its one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Dashboard:
    """What a request reads, and the page it gets; one read-only snapshot per request."""

    def __init__(self, paths: StatePaths) -> None:
        self.paths = paths

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Reads]:
        reader = ReadStore(self.paths.db)  # per request: threads never share a transaction
        try:
            with reader.snapshot() as snap:
                yield snap
        finally:
            reader.close()

    def page(self, path: str) -> str:
        path = path.split("?", 1)[0]
        try:
            if path in ("/", "/runs", "/runs/"):
                return self._runs()
            if found := _RUN.match(path):
                return self._run(found.group(1))
            if found := _ATTEMPT.match(path):
                return self._attempt(found.group(1), int(found.group(2)))
        except UsageError as exc:  # no such run
            raise Answer(404, str(exc)) from None
        except StoreError as exc:  # unreadable store: the message says what to do
            raise Answer(503, str(exc)) from None
        raise Answer(404, f"no page {path}: see the runs at /")

    def _runs(self) -> str:
        with self._snapshot() as snap:
            runs = build.runs_view(snap, RUNS_LISTED)
        return dashboard.runs_page(runs, self.paths.root, time.time())

    def _run(self, ref: str) -> str:
        with self._snapshot() as snap:
            run = find_run(snap, ref)
            report = html_page(snap, self.paths, run, time.time())
        live = report.run.state is RunState.RUNNING
        running = [r for t in report.digest.problems if t.state is TaskState.RUNNING for r in _running(t)]
        mask = _mask(run) if live else masker(())
        shown = [self._tails(run, t, a, mask) for t, a in running[:LIVE_SHOWN]] if live else []
        section = dashboard.live_section(report.run, shown, max(0, len(running) - LIVE_SHOWN))
        linked = [*report.digest.problems[:LINKED], *report.digest.listed[:LINKED]]
        section += dashboard.memory_links(run.id, linked)
        return _render(dataclasses.replace(report, head_extra=dashboard.refresh_tag(live), live=section))

    def _tails(self, run: RunRow, task: TaskView, a: AttemptView, mask: Masker) -> dashboard.Running:
        ends = [_tail(self.paths.log(run.id, task.name, a.n, s)) for s in ("stdout", "stderr")]
        return dashboard.Running(task, a, mask(ends[0]), mask(ends[1]))

    def _attempt(self, ref: str, attempt_id: int) -> str:
        with self._snapshot() as snap:
            run = find_run(snap, ref)
            try:
                row = snap.attempt(attempt_id)
            except IndexError:
                row = None
            if row is None or row.run_id != run.id:
                raise Answer(404, f"run {run.id} has no attempt {attempt_id}")
            task = snap.task(row.task_id)
            text = snap.memory_series([attempt_id]).get(attempt_id)
            view = build.run_view(snap, run)
        if row.outcome is None:
            raise Answer(
                404, f"attempt {attempt_id} of {task.name} still runs: its memory is kept when it ends"
            )
        peak, limit = row.peak_memory, row.memory_limit
        chart = Charted(attempt_id, task.name, row.n, row.outcome, row.started, row.ended, peak, limit)
        return dashboard.attempt_page(view, chart, decode(text))


def _render(page: ReportPage) -> str:
    out = io.StringIO()
    write_html(page, out)
    return out.getvalue()


def _running(task: TaskView) -> Iterator[tuple[TaskView, AttemptView]]:
    for a in task.attempts:
        if a.running:
            yield task, a


def _mask(run: RunRow) -> Masker:
    try:
        return masker(job_of(run).secret_names)
    except ConfigError:
        return masker(())


def _tail(path: str) -> str:
    """The last TAIL_BYTES of a log, from its first whole line; "" when there is none yet."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read(TAIL_BYTES)
    except OSError:
        return ""
    if size > TAIL_BYTES and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return data.decode("utf-8", "replace")


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD of the dashboard's pages; every other method is refused."""

    server_version = "labrun-serve"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        self._send(
            405, _message(405, "labrun serve is read-only: only GET and HEAD"), True, {"Allow": "GET, HEAD"}
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def _answer(self, body: bool) -> None:
        server = cast(Server, self.server)
        host = self.headers.get("Host", "")
        if host.lower() not in server.hosts:
            shown = sorted(server.hosts)[0]
            why = f"this dashboard answers as http://{shown}/ only, not as Host {host!r}"
            self._send(403, _message(403, why), body)
            return
        try:
            status, text = 200, server.dashboard.page(self.path)
        except Answer as exc:
            status, text = exc.status, _message(exc.status, str(exc))
        except LabrunError as exc:
            status, text = 500, _message(500, str(exc))
        except Exception as exc:  # a bug: one line here and in the page, never a traceback
            status, text = (
                500,
                _message(500, f"internal error (a bug in labrun): {type(exc).__name__}: {exc}"),
            )
        self._send(status, text, body)

    def _send(self, status: int, text: str, body: bool, extra: dict[str, str] | None = None) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(len(data)),
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **(extra or {}),
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"labrun serve: {self.address_string()} {format % args}\n")


def _message(status: int, text: str) -> str:
    return dashboard.page(
        f"labrun: {status}", f'<p><a href="/">all runs</a></p><p id="error">{escape(text)}</p>'
    )


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a browser's kept-alive connection never holds Ctrl-C up

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, paths: StatePaths) -> None:
        self.address_family = family  # read by the base class when it makes the socket
        self.dashboard = Dashboard(paths)
        self.hosts: frozenset[str] = frozenset()  # the Host headers it answers, once bound
        super().__init__(address, Handler)


def listen(paths: StatePaths, host: str, port: int) -> Server:
    """The server bound to a loopback address, or UsageError saying what to do instead."""
    family = LOOPBACK.get(host)
    if family is None:
        raise UsageError(
            f"--host {host}: labrun serve listens on loopback only (127.0.0.1, ::1 or localhost): it has "
            f"no login, and run logs may hold secrets; to look from another machine, forward the port "
            f"over SSH: ssh -L {port or DEFAULT_PORT}:127.0.0.1:{port or DEFAULT_PORT} THIS-HOST"
        )
    address = "127.0.0.1" if host == "localhost" else host
    try:
        server = Server((address, port), family, paths)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {address} port {port}: {exc.strerror}; choose another with --port N "
            "(--port 0 takes a free one)"
        ) from None
    bound = server.server_address[1]
    names = ("127.0.0.1", "localhost") if family == socket.AF_INET else ("[::1]", "localhost")
    server.hosts = frozenset(f"{name}:{bound}" for name in names)
    return server


def serve(paths: StatePaths, host: str, port: int, out: IO[str]) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 then (stopping is how a dashboard ends)."""
    server = listen(paths, host, port)
    shown = "[::1]" if server.address_family == socket.AF_INET6 else "127.0.0.1"
    out.write(
        f"labrun serve: http://{shown}:{server.server_address[1]}/ (read-only view of {paths.root}; "
        "Ctrl-C stops it)\n"
    )
    out.flush()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    out.write("labrun serve: stopped\n")
    return 0
