"""Speculation decisions (labrun/speculation.py): every threshold, and the known bugs of
Tez, Spark and Hive that the rules guard against."""

from __future__ import annotations

from pathlib import Path

import pytest

from labrun.config.job import parse_job
from labrun.errors import ConfigError
from labrun.speculation import (
    FEW_TASKS,
    Figures,
    Rules,
    Running,
    Straggler,
    choose_node,
    stragglers,
    threshold,
)

RULES = Rules(after=5.0)  # the default factor 3, 5 succeeded, 90 % done, 10 % share
DONE = Figures(succeeded=11, median=1.0, done=11, total=12)  # 11 of 12 tasks done, median 1 s


def one(r: Running, figures: Figures = DONE, rules: Rules = RULES, **kw: object) -> list[Straggler]:
    args: dict[str, object] = {"attempts_running": 1, "speculative_now": 0, "ready_waiting": False}
    args.update(kw)
    return stragglers([r], {"t": figures}, {"t": rules}, **args)  # type: ignore[arg-type]


def test_a_straggler_past_both_thresholds_gets_a_copy_with_its_figures() -> None:
    found = one(Running(7, "t", "a", elapsed=6.0))
    assert [(s.task_id, s.node) for s in found] == [(7, "a")]
    why = found[0].why
    assert "running 6.0s, past 5.0s" in why and "3x the median 1.0s of 11 succeeded" in why
    assert "speculate_after 5.0s" in why and "11 of 12 tasks t done" in why


@pytest.mark.parametrize(("elapsed", "copied"), [(4.9, False), (5.0, False), (5.1, True)])
def test_not_before_speculate_after(elapsed: float, copied: bool) -> None:
    assert bool(one(Running(1, "t", "a", elapsed))) is copied


@pytest.mark.parametrize(("elapsed", "copied"), [(29.9, False), (30.0, False), (30.1, True)])
def test_not_before_three_times_the_median(elapsed: float, copied: bool) -> None:
    figures = Figures(succeeded=11, median=10.0, done=11, total=12)
    assert bool(one(Running(1, "t", "a", elapsed), figures)) is copied
    assert threshold(RULES, figures) == 30.0


@pytest.mark.parametrize(("succeeded", "copied"), [(0, False), (4, False), (5, True)])
def test_not_before_five_succeeded_tez_3317(succeeded: int, copied: bool) -> None:
    """No speculation at zero progress or on too little history: no median to compare with."""
    figures = Figures(succeeded, 1.0 if succeeded else None, succeeded, 6)
    assert bool(one(Running(1, "t", "a", 1000.0), figures)) is copied


@pytest.mark.parametrize(("done", "copied"), [(8, False), (17, False), (18, True), (19, True)])
def test_not_before_ninety_percent_done(done: int, copied: bool) -> None:
    figures = Figures(succeeded=done, median=1.0, done=done, total=20)  # 90 % of 20 is 18
    assert bool(one(Running(1, "t", "a", 1000.0), figures)) is copied


def test_few_tasks_need_only_the_five_successes() -> None:
    figures = Figures(succeeded=5, median=1.0, done=5, total=FEW_TASKS - 1)  # 5 of 9: 56 %
    assert one(Running(1, "t", "a", 1000.0), figures)
    many = Figures(succeeded=5, median=1.0, done=5, total=FEW_TASKS)
    assert not one(Running(1, "t", "a", 1000.0), many)


def test_at_most_one_extra_attempt_per_task() -> None:
    assert not one(Running(1, "t", "a", 1000.0, copied=True))
    assert not one(Running(1, "t", "a", 1000.0, live_attempts=2))


def test_not_after_the_task_finished_or_while_its_success_is_recorded_tez_4062_4068() -> None:
    assert not one(Running(1, "t", "a", 1000.0, task_running=False))
    assert not one(Running(1, "t", "a", 1000.0, live_attempts=0))  # its end is being taken in


def test_only_task_names_with_speculate_on() -> None:
    found = stragglers([Running(1, "t", "a", 1000.0)], {"t": DONE}, {}, 1, 0, False)
    assert found == []


def test_none_while_a_ready_task_waits_for_capacity() -> None:
    assert not one(Running(1, "t", "a", 1000.0), ready_waiting=True)


def test_at_most_ten_percent_of_running_attempts_at_once_the_most_overdue_first() -> None:
    running = [Running(i, "t", "a", 10.0 + i) for i in range(30)]
    found = stragglers(running, {"t": DONE}, {"t": RULES}, 30, 0, False)
    assert [s.task_id for s in found] == [29, 28, 27]  # 10 % of 30
    assert len(stragglers(running, {"t": DONE}, {"t": RULES}, 30, 2, False)) == 1
    assert stragglers(running, {"t": DONE}, {"t": RULES}, 30, 3, False) == []
    assert len(stragglers(running[:3], {"t": DONE}, {"t": RULES}, 3, 0, False)) == 1  # at least one
    assert stragglers(running[:3], {"t": DONE}, {"t": RULES}, 3, 1, False) == []


def test_the_copy_goes_to_another_node_tez_4042() -> None:
    assert choose_node("a", free=["a", "b"], able=["a", "b"]) == "b"
    assert choose_node("a", free=["a"], able=["a", "b"]) is None  # wait for b rather than a
    assert choose_node("a", free=["a"], able=["a"]) == "a"  # one machine: its own node
    assert choose_node("a", free=[], able=["a", "b"]) is None
    assert choose_node("a", free=["c", "b"], able=["a", "b", "c"]) == "c"


def test_never_two_successes_and_the_winner_is_not_killed_spark_4879_hive_27899() -> None:
    """The decisions of issue 11: the second success of a task is recorded superseded, not
    counted and not a second success; the first success supersedes (stops) the others
    and never itself."""
    import dataclasses

    from labrun.decisions import AttemptView, Ended, Record, Succeed, Supersede, on_end
    from labrun.retry import Policy
    from labrun.rows import TaskRow
    from labrun.states import AttemptState, Outcome, TaskState

    policy = Policy(3, 0.0, 0.0, 14, ())
    first = AttemptView(1, 1, "a", AttemptState.RUNNING)
    copy = AttemptView(2, 2, "b", AttemptState.RUNNING)
    task = TaskRow(
        id=1, run_id=1, seq=1, spec="t", name="t[0]", item="0", idx=0, state=TaskState.RUNNING,
        attempts=2, failures=0, memory=1, not_before=0.0, reason=None,
    )  # fmt: skip
    won = on_end(task, [first, copy], Ended(copy, Outcome.SUCCEEDED, "exited 0"), policy, 0.0, 0.0)
    assert any(isinstance(i, Succeed) for i in won)
    assert [i.attempt_ids for i in won if isinstance(i, Supersede)] == [(1,)]  # the loser, not the winner
    after = dataclasses.replace(task, state=TaskState.SUCCEEDED)
    late = on_end(after, [first, copy], Ended(first, Outcome.SUCCEEDED, "exited 0"), policy, 0.0, 0.0)
    assert not any(isinstance(i, Succeed) for i in late)
    record = next(i for i in late if isinstance(i, Record))
    assert record.outcome is Outcome.SUPERSEDED and not record.counted


SPEC_JOB = """
[job]
name = "s"
[[tasks]]
name = "fit"
speculate = true
outputs = ["{out}"]
command = "true"
"""


def test_speculate_is_refused_when_copies_would_write_the_same_outputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_job(SPEC_JOB.replace("{out}", "model.pt"), str(tmp_path / "job.toml"))
    text = str(err.value)
    assert f"{tmp_path / 'job.toml'}:6" in text and "tasks[0].speculate" in text, text
    assert "output 'model.pt' is the same path for every attempt" in text
    assert "{attempt_dir}/result.txt" in text and "speculate_shared_outputs = true" in text
    body = SPEC_JOB.replace("{out}", "model.pt") + "speculate_shared_outputs = true\n"
    assert parse_job(body, str(tmp_path / "job.toml")).tasks[0].speculate_shared_outputs
    for scoped in ("{attempt_dir}/model.pt", "out/{attempt}/model.pt"):
        spec = parse_job(SPEC_JOB.replace("{out}", scoped), str(tmp_path / "job.toml")).tasks[0]
        assert spec.speculate and spec.speculate_after == 300.0


def test_speculate_keys_from_defaults(tmp_path: Path) -> None:
    body = SPEC_JOB.replace("speculate = true\n", "").replace(
        "[[tasks]]", '[defaults]\nspeculate = true\nspeculate_after = "2s"\n[[tasks]]'
    )
    with pytest.raises(ConfigError) as err:  # pointed at the task's outputs
        parse_job(body.replace("{out}", "m.pt"), str(tmp_path / "job.toml"))
    assert "tasks[0].outputs" in str(err.value)
    spec = parse_job(body.replace("{out}", "{attempt_dir}/m.pt"), str(tmp_path / "job.toml")).tasks[0]
    assert (spec.speculate, spec.speculate_after) == (True, 2.0)
