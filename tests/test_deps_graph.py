"""The pure dependency logic: cycles, the implicit dependency on task 0, what a finish unblocks."""

from __future__ import annotations

from labrun.deps import Tracker, find_cycle, upstream_map, upstream_of


def test_find_cycle_returns_the_path_back_to_its_start() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_every_task_waits_for_task_0() -> None:
    graph = upstream_map([("setup", ()), ("a", ()), ("b", ("a",))], has_setup=True)
    assert graph == {"setup": (), "a": ("setup",), "b": ("setup", "a")}


def tracker(graph: dict[str, tuple[str, ...]], counts: dict[str, int | None]) -> Tracker:
    t = Tracker(graph)
    for spec, n in counts.items():
        if n is not None:
            t.load(spec, n, None, started=not graph[spec])
    return t


def test_a_failure_skips_dependents_transitively_and_names_the_cause() -> None:
    graph = {"a": (), "b": ("a",), "c": ("b",), "d": ()}
    t = tracker(graph, {"a": 2, "b": 1, "c": 1, "d": 1})
    assert t.initial().promote == ()
    plan = t.finished("a", "a[1]", ok=False, how="failed: exited 3")
    assert plan.promote == ()
    assert plan.skip == {
        "b": "upstream task a[1] failed: exited 3",
        "c": "upstream task a[1] failed: exited 3",
    }
    assert upstream_of(plan.skip["c"]) == ["a[1]"]
    # a[0] finishing later changes nothing: b and c are decided
    assert t.finished("a", "a[0]", ok=True, how="") == type(plan)()


def test_a_spec_starts_when_all_of_its_upstream_tasks_succeeded() -> None:
    graph = {"a": (), "b": (), "c": ("a", "b")}
    t = tracker(graph, {"a": 2, "b": 1, "c": 1})
    assert t.finished("a", "a[0]", True, "").promote == ()
    assert t.finished("b", "b", True, "").promote == ()
    assert t.finished("a", "a[1]", True, "").promote == ("c",)


def test_a_fan_out_over_task_0_waits_for_its_rows() -> None:
    graph = upstream_map([("setup", ()), ("p", ()), ("f", ("p",))], has_setup=True)
    t = tracker(graph, {"setup": 1, "p": None, "f": 1})
    assert t.created("p", 3).promote == ()  # task 0 has not finished yet
    assert t.finished("setup", "setup", True, "").promote == ("p",)
    for i in range(3):
        plan = t.finished("p", f"p[{i}]", True, "")
    assert plan.promote == ("f",)


def test_an_empty_manifest_lets_dependents_run() -> None:
    graph = upstream_map([("setup", ()), ("p", ()), ("f", ("p",))], has_setup=True)
    t = tracker(graph, {"setup": 1, "p": None, "f": 1})
    t.created("p", 0)
    assert t.finished("setup", "setup", True, "").promote == ("p", "f")
