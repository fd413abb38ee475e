"""`labrun serve` against real runs: the runs list and a live run while a runner writes,
nothing but GET and HEAD, loopback only, the Host header checked, hostile text escaped,
Ctrl-C a clean stop (checked by `serving` after every test)."""

from __future__ import annotations

from pathlib import Path

from helpers import finished_run, labrun, start_labrun, write_job
from serving import listening_addresses, request, serving, wait_for_page

# Each task says it started, writes to stderr, then waits for the test's `go` file.
LIVE_JOB = """
[job]
name = "live"
[defaults]
memory = "64MiB"
[[tasks]]
name = "work"
items = ["a", "b"]
command = "echo started {{item}}; echo warming-{{item}} >&2; while [ ! -e {go} ]; do sleep 0.05; done"
[[tasks]]
name = "after"
depends_on = ["work"]
command = "echo done"
"""


def test_a_live_run_is_shown_while_its_runner_writes(tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = write_job(tmp_path, LIVE_JOB.format(go=go))
    state = tmp_path / "state"
    runner = start_labrun(state, "run", str(job), "--plain", cwd=tmp_path)
    try:
        with serving(state) as base:
            runs = wait_for_page(base, "/", ">running<")
            assert '<a href="/runs/1">1</a>' in runs and "live" in runs and 'http-equiv="refresh"' in runs
            page = wait_for_page(base, "/runs/1", "warming-b")  # both attempts and their logs
            assert 'http-equiv="refresh" content="5"' in page and "Running now" in page
            assert "started a" in page and "warming-a" in page and "work[0]" in page
            assert 'id="graph"' in page  # work -> after
            go.touch()  # the tasks end; the runner records them while we read
            assert runner.wait(timeout=120) == 0
            page = wait_for_page(base, "/runs/1", "<tr><th>state<td>succeeded")
            assert "refresh" not in page and "Running now" not in page
            assert "<td>after<td>succeeded" in page
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_only_get_and_head_are_answered(tmp_path: Path) -> None:
    state = finished_run(tmp_path, '[job]\nname = "one"\n[[tasks]]\nname = "t"\ncommand = "true"\n', 0)
    with serving(state) as base:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, headers, body = request(base, method, "/runs/1")
            assert (status, headers["allow"]) == (405, "GET, HEAD"), method
            assert "read-only" in body
        status, headers, body = request(base, "HEAD", "/runs/1")
        assert status == 200 and body == "" and int(headers["content-length"]) > 1000
        status, headers, body = request(base, "GET", "/runs/1")
        assert status == 200 and len(body.encode()) == int(headers["content-length"])
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
        assert request(base, "GET", "/runs/9")[0] == 404
        assert request(base, "GET", "/etc/passwd")[0] == 404
    rows = labrun(state, "report", "1", "--format", "tsv").stdout.splitlines()
    assert len(rows) == 2  # nothing was added or changed by those requests


def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    state = finished_run(tmp_path, '[job]\nname = "one"\n[[tasks]]\nname = "t"\ncommand = "true"\n', 0)
    with serving(state) as base:
        port = base.rsplit(":", 1)[1]
        status, _, body = request(base, "GET", "/", host=f"evil.example:{port}")
        assert status == 403 and "evil.example" in body and "/runs/1" not in body
        assert request(base, "GET", "/", host=f"localhost:{port}")[0] == 200
        assert request(base, "GET", "/", host=f"127.0.0.1:{int(port) + 1}")[0] == 403


def test_it_listens_on_loopback_only_and_refuses_another_address(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(state) as base:
        port = int(base.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
        status, _, body = request(base, "GET", "/")
        assert status == 200 and "No runs yet" in body
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        done = labrun(state, "serve", "--host", host, "--port", "0")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "loopback only" in done.stderr and "ssh -L 8765:127.0.0.1:8765" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_busy_port_says_how_to_choose_another(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(state) as base:
        port = base.rsplit(":", 1)[1]
        done = labrun(state, "serve", "--port", port)
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1 port {port}" in done.stderr
    assert "--port 0" in done.stderr


def test_hostile_text_of_a_run_is_escaped_on_every_page(tmp_path: Path) -> None:
    body = (
        '[job]\nname = "hostile"\n[defaults]\nretry_delay = 0\n[[tasks]]\nname = "fan"\n'
        'items = ["<script>alert(1)</script>"]\n'
        "command = \"echo '<img src=x onerror=alert(2)>' >&2; exit 3\"\n"
    )
    state = finished_run(tmp_path, body)
    with serving(state) as base:
        for path in ("/", "/runs/1", "/runs/1/attempts/1"):
            status, _, page = request(base, "GET", path)
            assert status == 200, path
            assert "<script>alert" not in page and "<img src=x" not in page, path
        page = request(base, "GET", "/runs/1")[2]
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
        )
