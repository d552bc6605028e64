"""`python -m tests.fake_chatllm COMMAND ARGS...`: the real `chatllm` command, whose `server` and `serve`
serve tests/fake_engine.py's scripted engine instead of a model (`chatllm.clients.cli.main(engine=...)`).

For process tests whose subject is the process, not the model: signals and drain, kill -9 and what
survives it, TLS reloads, the history export, crash recovery of the knowledge base. The engine
answers FAKE_ANSWER, one word every CHATLLM_FAKE_STALL seconds (default 0.01), so a long answer
(ignore_eos, many tokens) is still streaming while the test acts.
"""

from __future__ import annotations

import os
import sys

from chatllm.clients.cli import main
from tests.fake_engine import FakeEngine

FAKE_ANSWER = "The capital of France is Paris."
STALL_ENV = "CHATLLM_FAKE_STALL"

if __name__ == "__main__":
    engine = FakeEngine(answer=FAKE_ANSWER, stall=float(os.environ.get(STALL_ENV, "0.01")))
    sys.exit(main(engine=engine))
