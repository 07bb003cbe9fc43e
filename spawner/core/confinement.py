"""Which prompts an agent type of kind `path` (pytest, ruff) accepts: one path or pytest node id
inside the run's working directory. Anything else would let a user with the launch permission
run code from anywhere on the server (pytest imports the files it is given)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

TEXT = "text"
PATH = "path"


def path_prompt_problem(prompt: str, cwd: str, resolve: Callable[[str], str]) -> str:
    """Why `prompt` is not a path inside `cwd`; "" if it is (or is empty).

    `resolve` makes a path absolute with symlinks followed and `..` collapsed
    (os.path.realpath), so this stays free of I/O and testable with plain data.
    """
    if prompt == "":
        return ""
    if prompt[0] in "-@":
        # An option, or pytest's @file of more arguments: never a path.
        return f"must be a path inside the working directory, not {prompt[0]!r}..."
    if any(c in prompt for c in "\x00\n\r"):
        return "must be one path on one line"
    path = prompt.split("::", 1)[0]  # a pytest node id: file::Class::test[param]
    if not path:
        return "must start with a path"
    base = resolve(cwd)
    target = resolve(posixpath.join(base, path))  # an absolute path replaces the base
    if target != base and not target.startswith(base.rstrip("/") + "/"):
        return f"{path!r} is outside the working directory {base}"
    return ""
