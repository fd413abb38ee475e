"""The report's charts beyond the timeline: GPU lanes, the dependency graph when small,
and the memory over time of failed attempts, from real runs where a run is what they show."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import Counter
from pathlib import Path

from helpers import labrun, write_job
from test_nodes_config_gpus import lab_file
from test_report_digest import attempt, task

from labrun.app import RunOptions, open_reader, run_job
from labrun.config.lab import load_lab
from labrun.report import write_report
from labrun.states import Outcome, RunState, TaskState
from labrun.views import depgraph, series_svg, svg
from labrun.views.digest import CHARTED, Bar, Charted, Digest
from labrun.views.model import TaskView

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MIB = 1024 * 1024


def test_attempts_that_held_gpus_get_a_lane_per_gpu_in_a_real_run(tmp_path: Path) -> None:
    lab = load_lab(lab_file(tmp_path, "[nodes.local]\ncpus = 4\ngpus = [0, 1]\n"))
    job = write_job(
        tmp_path,
        '[job]\nname = "gpus"\n[[tasks]]\nname = "train"\nitems = ["a", "b"]\ngpus = 1\n'
        'command = "echo $CUDA_VISIBLE_DEVICES"\n[[tasks]]\nname = "cpu"\ncommand = "true"\n',
    )
    assert run_job(str(job), lab, RunOptions(quiet=True)).state is RunState.SUCCEEDED
    reader, paths = open_reader(lab)
    out = tmp_path / "r.html"
    write_report(reader, paths, "last", "html", str(out))
    timeline = out.read_text().split('id="timeline"')[1].split("</svg>")[0]
    lanes = re.findall(r'class="n">local GPU (\d)</text>', timeline)
    assert sorted(lanes) == ["0", "1"]  # each of the two train attempts held its own GPU
    assert timeline.count("<rect") == 3 + 2  # every attempt on the node, the GPU ones again


def test_gpu_lanes_come_after_the_nodes_and_name_node_and_device() -> None:
    bars = [
        Bar("a", 1, "box", 0.0, 1.0, "succeeded", None, None, gpus=(1,)),
        Bar("b", 1, "box", 0.0, 1.0, "failed", None, None),
        Bar("c", 1, "alpha", 0.0, 1.0, "succeeded", None, None, gpus=(0, 1)),
    ]
    labels = [(label, [b.task for b in band]) for label, band in svg.bands(bars)]
    assert labels == [
        ("alpha", ["c"]),
        ("box", ["a", "b"]),
        ("alpha GPU 0", ["c"]),
        ("alpha GPU 1", ["c"]),
        ("box GPU 1", ["a"]),
    ]


def test_the_pipeline_example_report_draws_its_dependency_graph(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    state = tmp_path / "state"
    done = labrun(state, "run", "pipeline.toml", "--plain", cwd=tmp_path / "examples", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "r.html"
    assert labrun(state, "report", "last", "-o", str(out)).returncode == 0
    graph = out.read_text().split('id="graph"')[1].split("</svg>")[0]
    boxes = re.findall(r"<title>([^<]*)</title>", graph)
    assert [b.split(":")[0] for b in boxes] == ["setup", "count", "total"]
    assert all("succeeded" in b for b in boxes)
    assert graph.count('marker-end="url(#arrow)"') == 3  # setup -> count, setup -> total, count -> total
    assert graph.count(" C") + graph.count("C") >= 1  # setup -> total bends around count


def test_columns_follow_the_longest_path_and_a_large_graph_is_not_drawn() -> None:
    diamond = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ("a", "d")}
    assert depgraph.columns(diamond) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}
    assert depgraph.small(diamond)
    wide = {f"t{i}": ("t0",) if i else () for i in range(depgraph.MAX_SPECS + 1)}
    assert not depgraph.small(wide)
    hostile = {"<b>x</b>": ()}
    drawn = depgraph.graph(hostile, {"<b>x</b>": Counter({TaskState.FAILED: 2})})
    assert "&lt;b&gt;x&lt;/b&gt;" in drawn and "<b>" not in drawn and "2 failed" in drawn


def _task(i: int, outcome: Outcome, attempt_id: int) -> TaskView:
    a = dataclasses.replace(attempt(1, outcome, MIB, MIB), attempt_id=attempt_id)
    return task(i, TaskState.FAILED if outcome is not Outcome.SUCCEEDED else TaskState.SUCCEEDED, a)


def test_oom_killed_attempts_are_charted_first_and_the_number_is_bounded() -> None:
    digest = Digest()
    for i in range(CHARTED + 5):
        digest.add(_task(i, Outcome.FAILED, i + 1))
    digest.add(_task(999, Outcome.OOM, 999))
    digest.add(_task(1000, Outcome.SUCCEEDED, 1000))
    charted = digest.charted
    assert len(charted) == CHARTED and charted[0].attempt_id == 999
    assert all(c.outcome in (Outcome.OOM, Outcome.FAILED) for c in charted)


def test_a_series_chart_is_drawn_against_the_limit_and_its_caption_holds_the_facts() -> None:
    c = Charted(7, "<i>grow</i>", 1, Outcome.OOM, 100.0, 105.0, 100 * MIB, 100 * MIB)
    figure = series_svg.figure(c, [(0.5, 10 * MIB), (1.5, 50 * MIB), (4.5, 95 * MIB)])
    assert (
        "&lt;i&gt;grow&lt;/i&gt; attempt 1: oom after 5.0s, peak 100.0MiB, limit 100.0MiB; 3 samples"
        in figure
    )
    assert "<i>" not in figure and 'class="limit"' in figure
    (points,) = re.findall(r'<polyline points="([^"]+)"', figure)
    assert len(points.split()) == 3
    unsampled = series_svg.figure(c, [])
    assert "not sampled" in unsampled and "<svg" not in unsampled
