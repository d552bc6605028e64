"""Regenerate the Python stubs from proto/chatllm/v1/*.proto.

Run `python proto/generate.py` after editing a .proto; the test suite fails when
the committed stubs are stale. `generate(out_dir)` writes them elsewhere so the
test can compare.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = sorted((PROTO_ROOT / "chatllm" / "v1").glob("*.proto"))
# protoc writes absolute imports rooted at the proto path (`from chatllm.v1 import
# ...`); the stubs live in the `chatllm.proto` namespace, so rewrite them.
_IMPORT = re.compile(r"^from chatllm\.v1 import", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over the protos, writing stubs under out_dir."""
    import importlib.resources

    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in PROTO_FILES],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    written = sorted((out_dir / "chatllm" / "v1").glob("*_pb2*.py*"))
    for path in written:
        text = path.read_text()
        path.write_text(_IMPORT.sub("from chatllm.proto.chatllm.v1 import", text))
    return written


if __name__ == "__main__":
    for path in generate(PROTO_ROOT):
        print(path.relative_to(PROTO_ROOT.parent))
    sys.exit(0)
