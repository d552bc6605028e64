"""A Debian daemon the tests start themselves (redis-server, prometheus): its own process group, its
output appended to a log file, and a stop that ends it and only it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path


class DaemonProcess:
    """`binary argv...` from Debian's `package`, started at once; `stop(grace)` SIGTERMs it, and SIGKILLs
    its group when it has not exited within `grace` seconds."""

    def __init__(self, package: str, binary: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
        found = shutil.which(binary)
        assert found, f"{binary} is missing: `make test-system` installs Debian's {package} package"
        self.log_path = log_path
        with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [found, *argv], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace: float) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
