"""`python -m chatllm.clients.cli`: the `chatllm` command."""

import sys

from chatllm.clients.cli import main

sys.exit(main())
