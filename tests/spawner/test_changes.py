"""The pure rules of a run's changes: branch names git accepts, the numstat reader, the scope check."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spawner.core import changes
from spawner.spec import KEY_RE


def ref_ok(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], capture_output=True).returncode == 0


@pytest.mark.parametrize("key", ["lint", "a..b", "x.lock", "end.", "a@{b", "integration", "A-1_b.c"])
def test_every_task_key_makes_a_branch_git_accepts(key):
    assert ref_ok(changes.run_branch(7, key))
    assert changes.run_branch(7, key) != changes.integration_branch(7)


@given(st.from_regex(KEY_RE, fullmatch=True))
def test_branch_names_are_valid_and_distinct_per_key(key):
    name = changes.run_branch(3, key)
    assert name.startswith("spawner/3/")
    assert ".." not in name and not name.endswith((".", ".lock")) and "@{" not in name


def test_keys_that_would_read_alike_get_distinct_branches():
    assert changes.run_branch(1, "a..b") != changes.run_branch(1, "a-b")


def test_numstat_reads_counts_binary_files_and_odd_names():
    text = "3\t1\tsrc/app.py\x00-\t-\tlogo.png\x000\t2\tname with\ttab and ü.txt\x00"
    assert changes.parse_numstat(text) == [
        ("src/app.py", 3, 1),
        ("logo.png", None, None),
        ("name with\ttab and ü.txt", 0, 2),
    ]
    assert changes.parse_numstat("") == []


@pytest.mark.parametrize(
    ("path", "patterns", "inside"),
    [
        ("src/app.py", ["src/"], True),
        ("src/app.py", ["src"], True),
        ("src/deep/x.py", ["src/**/*.py"], True),
        ("src/app.py", ["*.py"], False),
        ("app.py", ["*.py"], True),
        ("README.md", ["src/", "docs/**"], False),
        ("weird[1].txt", ["weird[1].txt"], True),
        ("anything", [], True),
    ],
)
def test_in_scope(path, patterns, inside):
    assert changes.in_scope(path, patterns) is inside


def test_summary_and_scope_verdicts():
    summary = changes.summarise(
        [("a.txt", 2, 0), ("README.md", 1, 1), ("x.bin", None, None)], ["a.txt"], base="b", head="h"
    )
    data = summary.as_data()
    assert (data["added"], data["removed"], data["changed"]) == (3, 1, 3)
    assert data["outside_scope"] == ["README.md", "x.bin"]
    assert changes.scope_verdict(summary, "warn").fail is False
    assert changes.scope_verdict(summary, "fail").fail is True
    verdict = changes.scope_verdict(summary, "escalate")
    assert verdict.escalate and verdict.message == "changed 2 files outside its files: README.md, x.bin"
    assert changes.scope_verdict(changes.summarise([("a.txt", 1, 0)], ["a.txt"]), "fail") == changes.ScopeVerdict()


def test_a_huge_change_list_is_cut_and_says_so_but_counts_and_checks_every_file():
    rows = [(f"src/f{i}", 1, 0) for i in range(1500)] + [("zzz/secret.py", 2, 1)]
    summary = changes.summarise(rows, ["src/**"], most=1000)
    assert len(summary.files) == 1000 and summary.truncated
    data = summary.as_data()
    assert (data["changed"], data["added"], data["removed"]) == (1501, 1502, 1)
    assert data["outside_scope"] == ["zzz/secret.py"], "a file past the listed ones is still checked"
    assert changes.scope_verdict(summary, "fail").fail
