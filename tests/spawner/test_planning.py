"""Planning: waves, cycles, file-scope conflicts, critical path and the estimated speedup."""

from __future__ import annotations

import pytest

from spawner.core import planning
from spawner.core.planning import PlanTask
from spawner.spec.templating import dep_refs


def task(
    key: str, *deps: str, priority: int = 1, estimate: float | None = None, prompt: str = "", **kwargs
) -> PlanTask:
    return PlanTask(key=key, depends_on=deps, priority=priority, estimate=estimate, dep_refs=dep_refs(prompt), **kwargs)


def chain(n: int) -> dict[str, tuple[str, ...]]:
    """t0 <- t1 <- ... <- t(n-1), listed last task first so a walk must go deep."""
    return {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in reversed(range(n))}


# --- cycles -----------------------------------------------------------------------


def test_a_graph_without_a_cycle_has_none():
    assert planning.find_cycle({"a": (), "b": ("a",), "c": ("a", "b")}) is None


def test_a_two_task_cycle_is_returned_closed():
    assert planning.find_cycle({"a": ("b",), "b": ("a",)}) == ["a", "b", "a"]


def test_a_self_dependency_is_a_cycle():
    assert planning.find_cycle({"a": ("a",)}) == ["a", "a"]


def test_a_cycle_leaves_out_the_tasks_that_lead_into_it():
    deps = {"start": ("x",), "x": ("y",), "y": ("z",), "z": ("x",)}
    assert planning.find_cycle(deps) == ["x", "y", "z", "x"]


def test_unknown_dependencies_are_ignored_when_looking_for_cycles():
    assert planning.find_cycle({"a": ("ghost",)}) is None


def test_a_chain_of_a_thousand_tasks_is_walked_without_recursion_errors():
    deps = chain(1000)
    assert planning.find_cycle(deps) is None
    assert len(planning.waves(deps)) == 1000
    assert len(planning.ancestors(deps)["t999"]) == 999


def test_a_cycle_at_the_end_of_a_long_chain_is_found():
    deps = chain(1000)
    deps["t0"] = ("t999",)
    cycle = planning.find_cycle(deps)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 1001


# --- waves and ancestors ----------------------------------------------------------


def test_waves_group_tasks_by_how_many_dependencies_deep_they_are():
    deps = {"a": (), "b": (), "c": ("a",), "d": ("c", "b"), "e": ("a",)}
    assert planning.waves(deps) == [["a", "b"], ["c", "e"], ["d"]]


def test_waves_keep_the_spec_order_inside_a_wave():
    deps = {"z": ("y",), "m": (), "y": (), "a": ()}
    assert planning.waves(deps) == [["m", "y", "a"], ["z"]]


def test_no_tasks_make_no_waves():
    assert planning.waves({}) == []


def test_ancestors_are_transitive():
    deps = {"a": (), "b": ("a",), "c": ("b",), "d": ()}
    assert planning.ancestors(deps) == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a", "b"}),
        "d": frozenset(),
    }


def test_dependencies_first_puts_every_task_after_its_dependencies():
    deps = {"d": ("b", "c"), "c": ("a",), "b": ("a",), "a": ()}
    order = planning.dependencies_first(deps)
    assert sorted(order) == ["a", "b", "c", "d"]
    assert all(order.index(dep) < order.index(key) for key, ds in deps.items() for dep in ds)


# --- critical path ----------------------------------------------------------------


def test_the_critical_path_is_the_longest_chain_by_duration():
    deps = {"a": (), "b": (), "c": ("a",), "d": ("b",)}
    durations = {"a": 10, "b": 1, "c": 1, "d": 20}
    assert planning.critical_path(deps, durations) == (21, ["b", "d"])


def test_the_critical_path_follows_the_slowest_dependency():
    deps = {"fast": (), "slow": (), "join": ("fast", "slow")}
    assert planning.critical_path(deps, {"fast": 1, "slow": 5, "join": 2}) == (7, ["slow", "join"])


def test_a_task_without_a_duration_counts_as_zero():
    assert planning.critical_path({"a": (), "b": ("a",)}, {"b": 3}) == (3, ["a", "b"])


def test_no_tasks_have_an_empty_critical_path():
    assert planning.critical_path({}, {}) == (0.0, [])


# --- file scopes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/**", "src/a.py"),
        ("src/a.py", "src/a.py"),
        ("docs/", "docs/x.md"),
        ("docs", "docs/sub/x.md"),
        ("**/*.py", "tests/x.py"),
        ("**/*.py", "x.py"),
        ("**/*.py", "docs/"),
        ("src/*.py", "src/a.py"),
        ("src/*.py", "src/test_*"),
        ("src/**/models.py", "src/app/deep/models.py"),
        ("./src/a.py", "src/a.py"),
        (".", "anything/at/all"),
        ("src/a[xy]", "src/*y"),
        ("src/[ab].py", "src/*.py"),
        ("src/?.py", "src/a.py"),
        ("src/*", "src/deep/a.py"),
    ],
)
def test_globs_that_can_match_the_same_file_overlap(a, b):
    assert planning.globs_overlap(a, b)
    assert planning.globs_overlap(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/*.py", "src/*.js"),
        ("a/b.py", "a/c.py"),
        ("docs/", "src/"),
        ("src/*.py", "tests/x.py"),
        ("src/**/*.py", "docs/x.md"),
        ("src/[ab].py", "src/*.js"),
        ("src/a[xy]b", "src/*c"),
        ("src/?.py", "src/ab.py"),
        ("*.py", "src/a.py"),
        ("**/*.py", "docs/*.md"),
        ("src/*.js", "src/**/*.py"),
    ],
)
def test_globs_that_cannot_match_the_same_file_do_not_overlap(a, b):
    assert not planning.globs_overlap(a, b)
    assert not planning.globs_overlap(b, a)


def test_tasks_that_may_touch_the_same_files_at_once_conflict():
    deps = {"a": (), "b": (), "c": ()}
    files = {"a": ["src/**"], "b": ["docs/", "src/x.py"], "c": ["tests/"]}
    (conflict,) = planning.file_conflicts(deps, files)
    assert conflict == planning.Conflict("a", "b", "src/**", "src/x.py")
    assert conflict.describe() == (
        "tasks 'a' and 'b' may both touch 'src/**' and 'src/x.py' with no dependency between them"
    )


def test_a_dependency_in_either_direction_settles_a_file_conflict():
    files = {"a": ["src/"], "b": ["src/"], "c": ["src/"]}
    assert planning.file_conflicts({"a": (), "b": ("a",), "c": ("b",)}, files) == []
    assert planning.file_conflicts({"a": ("b",), "b": (), "c": ("a",)}, files) == []


def test_tasks_without_files_never_conflict():
    assert planning.file_conflicts({"a": (), "b": ()}, {"a": ["src/"]}) == []


def test_every_conflicting_pair_is_reported_once():
    deps = {"a": (), "b": (), "c": ()}
    files = {k: ["README.md", "src/"] for k in deps}
    pairs = [(c.first, c.second) for c in planning.file_conflicts(deps, files)]
    assert pairs == [("a", "b"), ("a", "c"), ("b", "c")]


# --- plan order and simulated wall time -------------------------------------------


def test_plan_order_goes_by_wave_then_priority_then_spec_order():
    tasks = [
        task("late", "first"),
        task("first", priority=2),
        task("urgent", priority=0),
        task("also", priority=2),
        task("urgent-late", "first", priority=0),
    ]
    assert planning.plan_order(tasks) == ["urgent", "first", "also", "urgent-late", "late"]


def test_independent_tasks_share_the_slots():
    tasks = [task(k) for k in "abcd"]
    durations = dict.fromkeys("abcd", 10.0)
    assert planning.simulate_wall(tasks, durations, max_parallel=2) == 20
    assert planning.simulate_wall(tasks, durations, max_parallel=4) == 10
    assert planning.simulate_wall(tasks, durations, max_parallel=1) == 40


def test_a_dependent_task_waits_for_its_dependency():
    tasks = [task("a"), task("b", "a"), task("c")]
    durations = {"a": 5.0, "b": 5.0, "c": 1.0}
    assert planning.simulate_wall(tasks, durations, max_parallel=8) == 10


def test_the_simulation_starts_p0_first_when_slots_are_short():
    tasks = [task("a"), task("b"), task("quick", priority=0), task("after", "quick", priority=0)]
    durations = {"a": 10.0, "b": 10.0, "quick": 1.0, "after": 10.0}
    # quick and a start at once; after follows quick at 1, b follows a at 10. In spec order it is 21.
    assert planning.simulate_wall(tasks, durations, max_parallel=2) == 20


def test_no_tasks_take_no_time():
    assert planning.simulate_wall([], {}, max_parallel=3) == 0


# --- the plan ---------------------------------------------------------------------


def test_the_plan_estimates_the_speedup_from_declared_durations():
    tasks = [task(k, estimate=60) for k in "abcd"] + [task("join", *"abcd", estimate=30)]
    plan = planning.make_plan(tasks, max_parallel=4, sequential=False, aggregation="merge")
    assert plan.waves == [["a", "b", "c", "d"], ["join"]]
    assert plan.order == ["a", "b", "c", "d", "join"]
    assert (plan.sum_seconds, plan.estimated_wall_seconds) == (270, 90)
    assert plan.estimated_speedup == pytest.approx(3.0)
    assert (plan.critical_path, plan.critical_path_seconds) == (["a", "join"], 90)
    assert plan.durations_known


def test_a_sequential_plan_has_no_speedup():
    tasks = [task(k, estimate=10) for k in "abc"]
    plan = planning.make_plan(tasks, max_parallel=3, sequential=True, aggregation="")
    assert plan.estimated_wall_seconds == 30
    assert plan.estimated_speedup == 1.0


def test_unknown_durations_count_as_one_second_each_and_are_flagged():
    tasks = [task("a", estimate=4), task("b"), task("c")]
    plan = planning.make_plan(tasks, max_parallel=2, sequential=False, aggregation="")
    assert not plan.durations_known
    assert plan.sum_seconds == 6
    assert plan.estimated_wall_seconds == 4


def test_an_empty_plan_has_a_speedup_of_one():
    plan = planning.make_plan([], max_parallel=3, sequential=False, aggregation="")
    assert (plan.estimated_wall_seconds, plan.estimated_speedup, plan.waves) == (0, 1.0, [])


# --- independence checks ----------------------------------------------------------


def checks(tasks: list[PlanTask], aggregation: str = "merge") -> dict[str, tuple[bool, str]]:
    return {name: (ok, detail) for name, ok, detail in planning.independence_checks(tasks, aggregation=aggregation)}


def test_independent_tasks_with_their_own_files_pass_every_check():
    tasks = [task("a", files=("src/a.py",)), task("b", files=("src/b.py",))]
    assert checks(tasks) == {
        "no hidden dependency": (True, "no task uses an undeclared result"),
        "distinct file scopes": (True, "every task declares its own files"),
        "aggregation defined": (True, "results combined by 'merge'"),
    }


def test_using_a_result_without_depending_on_it_is_a_hidden_dependency():
    tasks = [task("plan"), task("build", prompt="do {{ deps.plan.summary }}")]
    ok, detail = checks(tasks)["no hidden dependency"]
    assert not ok
    assert detail == "'build' uses the result of 'plan' but does not depend on it"


def test_using_the_result_of_a_declared_or_transitive_dependency_is_fine():
    tasks = [
        task("plan"),
        task("build", "plan", prompt="{{deps.plan.summary}}"),
        task("ship", "build", prompt="{{ deps.plan.output }} and {{ deps.build }}"),
    ]
    assert checks(tasks)["no hidden dependency"][0]


def test_a_hidden_dependency_on_a_dotted_key_is_found():
    tasks = [task("web.app"), task("docs", prompt="describe {{ deps.web.app.summary }}")]
    ok, detail = checks(tasks)["no hidden dependency"]
    assert not ok and "'web.app'" in detail


def test_a_reference_to_a_task_that_does_not_exist_is_not_a_hidden_dependency():
    assert checks([task("a", prompt="{{ deps.nobody.summary }}")])["no hidden dependency"][0]


def test_overlapping_file_scopes_fail_the_check_and_say_why():
    tasks = [task("a", files=("src/**",)), task("b", files=("src/x.py",)), task("c")]
    ok, detail = checks(tasks)["distinct file scopes"]
    assert not ok
    assert "tasks 'a' and 'b' may both touch" in detail


def test_tasks_without_files_are_counted_in_the_scope_check():
    tasks = [task("a", files=("src/",)), task("b"), task("c")]
    assert checks(tasks)["distinct file scopes"] == (
        True,
        "no overlap among declared scopes (2 tasks without files)",
    )


def test_a_batch_without_an_aggregation_fails_that_check():
    assert checks([task("a")], aggregation="")["aggregation defined"] == (
        False,
        "no aggregation strategy set",
    )


# --- bounded scope checks ---------------------------------------------------------


def test_patterns_of_many_segments_or_many_double_stars_are_compared_without_recursion():
    assert planning.globs_overlap("**/" * 600 + "x", "**/" * 600 + "x")
    assert not planning.globs_overlap("a/" * 1500 + "x.py", "a/" * 1500 + "y.py")
    assert planning.globs_overlap("*/" * 1500 + "x", "a/" * 1500 + "x")


def test_patterns_under_different_directories_are_not_compared_pair_by_pair():
    deps = {f"t{i}": () for i in range(1000)}
    files = {f"t{i}": [f"src/m{i}/f{j}/**" for j in range(20)] for i in range(1000)}
    # 20,000 patterns: comparing every pair would be 200 million comparisons, far over this budget.
    assert planning.file_conflicts(deps, files, budget=200_000) == []


def test_overlaps_are_found_across_directory_levels_whatever_the_spec_order():
    deps = {"deep": (), "wild": (), "top": (), "other": ()}
    files = {"deep": ["src/app/models.py"], "wild": ["**/models.py"], "top": ["src"], "other": ["docs/*.md"]}
    pairs = {(c.first, c.second) for c in planning.file_conflicts(deps, files)}
    assert pairs == {("deep", "wild"), ("deep", "top"), ("wild", "top")}


def test_too_many_broad_patterns_are_refused_rather_than_compared_for_minutes():
    deps = {f"t{i}": () for i in range(800)}
    files = {f"t{i}": [f"*/**/*.e{i}"] for i in range(800)}
    with pytest.raises(planning.TooManyScopes, match="start them with a directory name"):
        planning.file_conflicts(deps, files)


def test_a_long_chain_of_broad_patterns_is_refused_too():
    deps = {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in range(1000)}
    files = {f"t{i}": [f"**/m{i}/f{j}.py" for j in range(20)] for i in range(1000)}
    with pytest.raises(planning.TooManyScopes):
        planning.file_conflicts(deps, files)


def test_conflicts_stop_at_the_limit():
    deps = {f"t{i}": () for i in range(100)}
    conflicts = planning.file_conflicts(deps, dict.fromkeys(deps, ["**"]), limit=5)
    assert len(conflicts) == 5


def test_the_scope_check_of_a_plan_says_when_there_are_too_many_patterns_to_compare():
    tasks = [planning.PlanTask(key=f"t{i}", files=(f"*/**/*.e{i}",)) for i in range(800)]
    ok, detail = checks(tasks)["distinct file scopes"]
    assert not ok and "too many 'files' patterns" in detail


def test_the_scope_check_of_a_plan_names_a_few_conflicts_and_says_there_may_be_more():
    tasks = [planning.PlanTask(key=f"t{i}", files=("**",)) for i in range(100)]
    ok, detail = checks(tasks)["distinct file scopes"]
    assert not ok and detail.count("may both touch") == planning.MAX_CONFLICTS_SHOWN
    assert detail.endswith("and maybe more")
