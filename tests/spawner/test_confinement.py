"""Path prompts (pytest, ruff) stay inside the run's working directory."""

from __future__ import annotations

import os

import pytest

from spawner.core.confinement import path_prompt_problem


def fake_fs(links: dict[str, str]):
    """A resolver over plain data: normpath, then symlinks by prefix."""

    def resolve(path: str) -> str:
        path = os.path.normpath(path)
        for link, target in links.items():
            if path == link or path.startswith(link + "/"):
                return os.path.normpath(target + path[len(link) :])
        return path

    return resolve


RESOLVE = fake_fs({"/srv/work/escape": "/etc", "/srv/work/inner": "/srv/work/tests"})


@pytest.mark.parametrize(
    "prompt",
    ["", "tests", "tests/test_a.py", "tests/test_a.py::TestX::test_y[a/../../b]", "./inner/test_a.py", "a/../b.py"],
)
def test_paths_and_node_ids_inside_the_working_directory_are_accepted(prompt):
    assert path_prompt_problem(prompt, "/srv/work", RESOLVE) == ""


@pytest.mark.parametrize(
    "prompt, why",
    [
        ("/tmp/x/test_evil.py", "outside"),
        ("../other/test_a.py", "outside"),
        ("tests/../../etc/passwd", "outside"),
        ("escape/test_a.py", "outside"),  # a symlink out
        ("/tmp/x/test_evil.py::test_it", "outside"),
        ("-p evil", "not '-'"),
        ("--rootdir=/", "not '-'"),
        ("@/tmp/args.txt", "not '@'"),
        ("::test_x", "start with a path"),
        ("tests/a.py\n/tmp/b.py", "one line"),
        ("/srv/workshop/test_a.py", "outside"),
    ],
)
def test_paths_leaving_the_working_directory_and_options_are_refused(prompt, why):
    assert why in path_prompt_problem(prompt, "/srv/work", RESOLVE)
