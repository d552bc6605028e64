"""Run pytest with a real Milvus server inside the current network namespace, which must hold only `lo`.

tests/milvus_background.py (for tests/component/test_knowledge_milvus_server.py) runs this as
`unshare --net -- python -m tests.milvus_netns PYTEST_ARGS...` (as root): the new namespace
has a loopback interface and nothing else, so the server (which listens on every interface
and dials the machine's own address) and the tests can only ever talk over loopback.
Exit status: pytest's, or 3 when the namespace is not confined.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess
import sys
import tempfile

from tests.milvus_backends import MILVUS_SERVER_URI_ENV

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def main(pytest_args: list[str]) -> int:
    bring_loopback_up()
    found = interfaces()
    if found != ["lo"]:
        print(f"refusing to start Milvus: this network namespace has interfaces {found}, not only lo", flush=True)
        return 3
    print("network namespace confined; only interface: lo", flush=True)
    from milvus import MilvusServer

    with tempfile.TemporaryDirectory(prefix="chatllm-milvus-") as data:
        server = MilvusServer()
        server.set_base_dir(data)
        server.start()  # waits for the server's own /healthz
        try:
            uri = f"http://127.0.0.1:{server.listen_port}"
            print(f"Milvus standalone server at {uri}", flush=True)
            env = dict(os.environ, **{MILVUS_SERVER_URI_ENV: uri})
            return subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
