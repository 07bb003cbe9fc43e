"""Run an agent as a local process: never through a shell, always in its own process group.

The agent runs under a tiny `/bin/sh` shim that waits for it and writes its exit code to
`<attempt>.exit` beside its log. The prompt never reaches the shell as code: the agent's argv
goes in as positional parameters and runs as `"$@"`. The record outlives the worker, so an agent
that finishes while its worker is dead is harvested by the reaper instead of being run again.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from spawner.core.logview import stderr_path
from spawner.core.recovery import parse_exit_record
from spawner.runners.base import Invocation, RunnerError
from spawner.states import PromptVia

# The shim: $1 is the exit record, $2 the Python that runs the launcher, $3 the launcher's code, $4
# the log, $5 its stderr sidecar, $6 the lease file, $7 the fence time, the rest the agent's argv.
# The shell's own messages (e.g. "Terminated") go to /dev/null; PWD is unset so the agent's
# environment is unchanged (the launcher also takes back the LC_CTYPE that Python may add for
# itself, unless it was there: $8 of the launcher).
SHIM = (
    "f=$1; py=$2; code=$3; log=$4; side=$5; lease=$6; fence=$7; shift 7; unset PWD; exec 2>/dev/null; "
    'exec "$py" -I -S -c "$code" "$f" "$log" "$side" "$lease" "$fence" "${LC_CTYPE+kept}" "$@"'
)
# The launcher starts the agent with its stdout on the log and its stderr on a pipe, and relays
# the pipe into the same log through its own file description (O_APPEND: the offset after a write
# is the end of that write, whatever stdout wrote meanwhile), noting "start end" of each piece in
# the sidecar, so that a page can mark stderr lines. It stops relaying at end of input, or once the
# agent has ended and nothing came for a quarter of a second (a background child that kept stderr
# open does not hold it up), then writes the exit record and exits with the agent's code. A record
# is written only when the agent ended on its own: a signal to the group stops the launcher too.
#
# Fencing: the worker renews the lease file (its mtime is the time of the worker's last heartbeat
# the database accepted) while it supervises the agent. When the file is older than the fence time
# (below the lease after which another cluster may retry the run) the worker is dead, stopped, or cut
# off from the database: the launcher records "fenced" in place of an exit code (the attempt did
# not end on its own) and stops the whole group, itself included. A fence time of 0 turns this off.
LAUNCHER = """
import os, select, signal, sys, time
record, log, side, lease, fence, lc_ctype, *argv = sys.argv[1:]
fence = float(fence)
if not lc_ctype:
    os.environ.pop("LC_CTYPE", None)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.dup2(w, 2)
    os.close(w)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, b"spawner: cannot run %s: %s\\n" % (argv[0].encode(errors="replace"), str(exc).encode()))
    os._exit(127)
os.close(w)
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
idx = os.open(side, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def fenced():
    try:
        silent = time.time() - os.stat(lease).st_mtime
    except OSError:
        silent = fence + 1
    if silent <= fence:
        return
    with open(record + ".tmp", "w") as f:
        f.write("fenced: no heartbeat for %.1f s (fence %g s)\\n" % (silent, fence))
    os.rename(record + ".tmp", record)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline and not os.waitpid(pid, os.WNOHANG)[0]:
        time.sleep(0.02)
    os.killpg(0, signal.SIGKILL)


poll = select.poll()
poll.register(r, select.POLLIN)
status = None
while True:
    if status is None:
        ended, status = os.waitpid(pid, os.WNOHANG)
        status = status if ended else None
        if status is None and fence:
            fenced()
    if not poll.poll(250 if status is not None else 100):
        if status is not None:
            break
        continue
    data = os.read(r, 65536)
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]
    end = os.lseek(out, 0, os.SEEK_CUR)
    os.write(idx, b"%d %d\\n" % (end - len(data), end))
while status is None:  # it closed its stderr but runs on
    ended, status = os.waitpid(pid, os.WNOHANG if fence else 0)
    if not ended:
        status = None
        fenced()
        time.sleep(0.1)
code = os.waitstatus_to_exitcode(status)
code = 128 - code if code < 0 else code
with open(record, "w") as f:
    f.write("%d\\n" % code)
os._exit(code & 255)
"""
PLACEHOLDER = re.compile(r"\{(prompt|prompt_file|result_file|key|cwd)\}")


def build_argv(invocation: Invocation) -> list[str]:
    """Fill the placeholders of the argv template in one pass (so braces inside the prompt stay
    as written); each element stays exactly one argv element."""
    values = {
        "prompt": invocation.prompt,
        "prompt_file": str(invocation.prompt_path),
        "result_file": str(invocation.result_path),
        "key": invocation.key,
        "cwd": str(invocation.cwd),
    }
    return [
        PLACEHOLDER.sub(lambda m: values[m.group(1)], element)
        for element in invocation.argv_template
        # A tool run with no arguments, not with one empty argument.
        if not (element == "{prompt}" and not invocation.prompt)
    ]


def exit_record_path(log_path: Path) -> Path:
    """Where the shim records the agent's exit code: beside its log."""
    return log_path.with_name(log_path.name.removesuffix(".log") + ".exit")


def lease_path(log_path: Path) -> Path:
    """The file whose mtime says when the agent's worker last heartbeat: beside its log."""
    return log_path.with_name(log_path.name.removesuffix(".log") + ".lease")


def renew_lease(log_path: Path, at: float) -> None:
    """The worker's heartbeat at `at` (a wall-clock time taken before the database accepted it) holds
    the fence off until `at` + fence time. Set to the time of the beat, not of this call: a beat that
    was slow to be accepted must not extend the agent's life beyond what the reaper assumes."""
    with contextlib.suppress(OSError):
        os.utime(lease_path(log_path), (at, at))


def was_fenced(log_path: Path) -> str:
    """Why the launcher stopped the agent, if it fenced it (its worker's heartbeat lapsed); else ""."""
    try:
        text = exit_record_path(log_path).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""
    return text.strip() if text.startswith("fenced") else ""


def owns_group(pgid: int, log_path: Path) -> bool:
    """The process group is still this attempt's agent (a pid may be reused): its launcher names the
    attempt's exit record on its command line, or one of its processes has its result file set (an agent)
    or its log named (a workspace's setup or gate step)."""
    import psutil

    record = str(exit_record_path(log_path))
    result = str(log_path.with_name(log_path.name.removesuffix(".log") + ".result.json"))
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            if record in proc.cmdline():
                return True
            env = proc.environ()
            if env.get("SPAWNER_RESULT_FILE") == result or env.get("SPAWNER_ATTEMPT_LOG") == str(log_path):
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def read_exit_record(log_path: Path) -> int | None:
    """The agent's exit code if it ended on its own, else None."""
    try:
        return parse_exit_record(exit_record_path(log_path).read_text())
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _check_executable(argv0: str, invocation: Invocation) -> None:
    """The shim would only say "not found" in the log: refuse to start instead, clearly."""
    if "/" in argv0:
        path = invocation.cwd / argv0
        if not path.exists():
            raise RunnerError(f"executable {argv0!r} not found")
        if not os.access(path, os.X_OK) or path.is_dir():
            raise RunnerError(f"executable {argv0!r} is not executable")
    elif shutil.which(argv0, path=os.pathsep.join(os.get_exec_path(invocation.env))) is None:
        raise RunnerError(f"executable {argv0!r} not found on PATH")


def build_env(invocation: Invocation) -> dict[str, str]:
    env = dict(invocation.env)
    env["SPAWNER_RESULT_FILE"] = str(invocation.result_path)
    env["SPAWNER_RUN_KEY"] = invocation.key
    if invocation.prompt_via == PromptVia.ENV:
        env["SPAWNER_PROMPT"] = invocation.prompt
    if invocation.prompt_via == PromptVia.FILE:
        env["SPAWNER_PROMPT_FILE"] = str(invocation.prompt_path)
    return env


def stop_group(pgid: int, grace: float, poll=lambda: None) -> None:
    """SIGTERM the whole process group, wait up to `grace`, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        poll()  # reap our own child so it does not linger as a zombie
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def stop_groups(pgids: list[int], grace: float) -> None:
    """Stop several process groups at once: SIGTERM all, one shared grace, then SIGKILL what is left."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(p) for p in pgids):
        time.sleep(0.05)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StartedProcess:
    process: subprocess.Popen
    pid: int
    pgid: int
    _pidfd: int | None = None

    def __post_init__(self) -> None:
        # A pidfd becomes readable the moment the process exits: no polling delay.
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(self.pid)

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return code

    def wait(self, timeout: float) -> int | None:
        if self._pidfd is None:
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        poller.poll(max(0, int(timeout * 1000)))
        return self.poll()

    def stop(self, grace: float) -> int | None:
        try:
            stop_group(self.pgid, grace, self.process.poll)
            return self.process.wait(timeout=grace + 5)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None


class CommandRunner:
    def start(self, invocation: Invocation) -> StartedProcess:
        argv = build_argv(invocation)
        if not argv:
            raise RunnerError("the agent type has an empty command")
        if not invocation.cwd.is_dir():
            raise RunnerError(f"working directory {invocation.cwd} does not exist")
        _check_executable(argv[0], invocation)
        exit_record = exit_record_path(invocation.log_path)
        invocation.log_path.parent.mkdir(parents=True, exist_ok=True)
        uses_prompt_file = invocation.prompt_via in (PromptVia.FILE, PromptVia.STDIN) or any(
            "{prompt_file}" in a for a in invocation.argv_template
        )
        if uses_prompt_file:
            invocation.prompt_path.write_text(invocation.prompt, encoding="utf-8")
        invocation.result_path.unlink(missing_ok=True)
        exit_record.unlink(missing_ok=True)
        lease = lease_path(invocation.log_path)
        lease.touch()
        renew_lease(invocation.log_path, invocation.lease_since or time.time())
        stderr_path(invocation.log_path).unlink(missing_ok=True)
        with open(invocation.log_path, "ab") as log:  # after what setup wrote, if any
            stdin = (
                open(invocation.prompt_path, "rb")  # noqa: SIM115 - closed right after Popen
                if invocation.prompt_via == PromptVia.STDIN
                else subprocess.DEVNULL
            )
            try:
                process = subprocess.Popen(
                    [
                        "/bin/sh",
                        "-c",
                        SHIM,
                        "spawner-agent",
                        str(exit_record),
                        sys.executable,
                        LAUNCHER,
                        str(invocation.log_path),
                        str(stderr_path(invocation.log_path)),
                        str(lease),
                        repr(float(invocation.fence_seconds)),
                        *argv,
                    ],
                    stdin=stdin,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=invocation.cwd,
                    env=build_env(invocation),
                    start_new_session=True,  # own session and process group
                    close_fds=True,
                )
            except FileNotFoundError:
                raise RunnerError(f"executable {argv[0]!r} not found on PATH") from None
            except PermissionError:
                raise RunnerError(f"executable {argv[0]!r} is not executable") from None
            except ValueError as exc:  # e.g. a NUL byte in an argument or the environment
                raise RunnerError(f"cannot pass the prompt to the process: {exc}") from None
            finally:
                if stdin is not subprocess.DEVNULL:
                    stdin.close()
        return StartedProcess(process=process, pid=process.pid, pgid=process.pid)
