"""Kill a dead server's engine processes (run as a script by process_owner.OwnedProcesses).

Usage: reaper.py SERVER_PID. Reads "PID CREATE_TIME" lines on stdin, one per
engine process the server spawned, and "done" when the server has cleaned up
itself. If stdin closes without "done", the server died (SIGKILL, OOM killer):
then the reaper terminates, and a few seconds later kills,
- every listed process that is still the same process (same create time, so a
  reused pid is never hit), and its descendants;
- if the server led its own process group (a shell job, a container's PID 1, a
  systemd service): every other process of that group, which catches an engine
  process spawned in the instant before the server died, before it was listed;
- and again, until nothing is left: a process may spawn another during its grace.

It ignores SIGINT and SIGTERM on purpose: Ctrl-C or a `kill` of the process group
must not take the reaper down before the server it watches.
"""

from __future__ import annotations

import os
import signal
import sys

import psutil

GRACE_SECONDS = 3.0
MAX_PASSES = 5


def read_until_eof() -> tuple[list[tuple[int, float]], bool]:
    """The listed (pid, create time) pairs, and whether the server said it is done."""
    listed: list[tuple[int, float]] = []
    for line in sys.stdin:
        if line.strip() == "done":
            return listed, True
        try:
            pid_text, created_text = line.split()
            listed.append((int(pid_text), float(created_text)))
        except ValueError:
            continue
    return listed, False


def still_running(listed: list[tuple[int, float]]) -> list[psutil.Process]:
    procs = []
    for pid, created in listed:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01:
                procs.append(proc)
                procs.extend(proc.children(recursive=True))
        except psutil.Error:
            continue
    return procs


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=GRACE_SECONDS)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server_pid = int(sys.argv[1])
    server_led_group = os.getpgid(0) == server_pid  # we share the server's group
    listed, done = read_until_eof()
    if done:
        return
    # A process that ignores SIGTERM while it loads (vLLM's engine core) may spawn a worker during the
    # grace before its SIGKILL: look again after each kill, until a look finds nobody.
    for _ in range(MAX_PASSES):
        victims = {p.pid: p for p in still_running(listed)}
        if server_led_group:
            victims.update({p.pid: p for p in group_members(server_pid)})
        if not victims:
            return
        kill(list(victims.values()))


if __name__ == "__main__":
    main()
