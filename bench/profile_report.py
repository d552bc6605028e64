"""Where a process's CPU went, from a py-spy raw profile (`bench/serving.py --profile DIR` writes them).

py-spy samples every thread, idle ones included; a sample whose innermost frames wait (epoll, a lock, a
queue) is idle and left out. The rest are the busy samples: each function's share of them as the
innermost frame (self) and anywhere on the stack (inclusive; grpc's compiled frames counted as one).

    .venv/bin/python bench/profile_report.py DIR/chatllm-serve-OpenAI-SSE-N32-r0.txt [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

IDLE = (
    "epoll_wait",
    "PyThread_acquire_lock_timed",
    "_queue_SimpleQueue_get",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "poll (libc",
    "select (libc",
    "nanosleep",
    "sem_wait",
    "__futex",
)
LINE = re.compile(r":\d+\)")


def frame_name(frame: str) -> str:
    """`func (file:line)` without the line; every frame inside grpc's compiled core is one name."""
    return "grpc core (cygrpc)" if "cygrpc" in frame else LINE.sub(")", frame)


def summarize(path: Path) -> tuple[int, int, collections.Counter[str], collections.Counter[str]]:
    """(busy samples, idle samples, self counts, inclusive counts)."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        if any(mark in frame for frame in frames[-6:] for mark in IDLE):
            idle += n
            continue
        busy += n
        own[frame_name(frames[-1])] += n
        for name in {frame_name(frame) for frame in frames}:
            anywhere[name] += n
    return busy, idle, own, anywhere


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    busy, idle, own, anywhere = summarize(args.profile)
    print(f"{busy} busy samples ({idle} idle left out)")
    for title, counts in (("self", own), ("inclusive", anywhere)):
        print(f"--- {title}")
        for name, n in counts.most_common(args.top):
            print(f"{100 * n / max(busy, 1):5.1f}% {name[:140]}")


if __name__ == "__main__":
    main()
