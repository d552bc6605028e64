"""The bridge's gRPC channel to one or several `chatllm server` replicas.

Everything here is gRPC's own machinery, configured through the channel's service
config (gRFC A17 client-side health checking, A6 retries):

- targets: one `host:port`, a `dns:///name:port` whose records are the replicas
  (a Kubernetes headless Service), or a comma-separated list of IP:port pairs,
  which becomes gRPC's static `ipv4:` / `ipv6:` address list;
- `round_robin` over every address, each connection watched by the standard health
  service: a replica whose readiness service (`chatllm.v1.ChatLLM`) is not SERVING
  (loading, draining, engine dead) or whose connection is down gets no calls;
- a retry policy for UNAVAILABLE: gRPC retries a call only until the server's first
  response arrives (after that the call is committed), so a Generate that a dying
  replica had accepted but not answered moves to another replica, while a stream
  that was already answering ends with its error.

Transport: TLS when `--tls-ca` names the CA of the servers' certificates (plus the bridge's
own client certificate, `--upstream-tls-cert/--upstream-tls-key`, for servers that require
one); gRPC's local credentials on a `unix:` target (`chatllm serve` with TLS: the server
in the same process, on a socket in a private folder); plaintext otherwise.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import grpc

from chatllm.kernel.config import SecurityConfig
from chatllm.kernel.tls import channel_credentials as tls_credentials
from chatllm.proto import SERVICE_NAME

HEALTH_SERVICE = "grpc.health.v1.Health"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Attempts per call (the first one included). Each retry waits a random backoff up to
# initialBackoff * multiplier^n (at most maxBackoff), which lets the health watch and
# the connection state mark a dead replica before the next pick.
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def channel_target(upstream: str) -> str:
    """The gRPC target for `--upstream`: a single target as given, or several
    comma-separated `IP:port` (or `localhost:port`) as one static address list."""
    parts = [part.strip() for part in upstream.split(",") if part.strip()]
    if not parts:
        raise ValueError("--upstream: no target given")
    if len(parts) == 1:
        return parts[0]
    addresses = [_ip_and_port(part) for part in parts]
    versions = {ip.version for ip, _ in addresses}
    if len(versions) > 1:
        raise ValueError(f"--upstream {upstream!r}: mix of IPv4 and IPv6 addresses; list one family")
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addresses)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in addresses)


def _ip_and_port(part: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, _, port_text = part.rpartition(":")
    host = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        ip, port = ipaddress.ip_address(host), int(port_text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError(
            f"--upstream: {part!r} is not IP:port; several targets must be addresses "
            "(a name with several records is one target: dns:///name:port)"
        )
    return ip, port


def service_config(health_service: str = SERVICE_NAME) -> dict[str, Any]:
    """Round-robin over healthy replicas, and retries of UNAVAILABLE before the first response."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": health_service},
        "methodConfig": [
            # Every ChatLLM call, and the bridge's readiness probe (/readyz).
            {
                "name": [{"service": SERVICE_NAME}, {"service": HEALTH_SERVICE, "method": "Check"}],
                "retryPolicy": RETRY_POLICY,
            }
        ],
    }


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.service_config", json.dumps(service_config())),
        # Ours, not one a DNS TXT record might carry.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # A replica that vanishes without closing its connections (a lost node) is noticed
        # within keepalive time + timeout; one whose process dies closes them at once.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


def channel_credentials(security: SecurityConfig, upstream: str) -> grpc.ChannelCredentials | None:
    """The credentials for `upstream` (None: plaintext). Raises CertificateError for an unusable file."""
    if upstream.startswith("unix:"):
        return grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    if security.tls_ca is None and security.upstream_tls_cert is None:
        return None
    return tls_credentials(security.tls_ca, security.upstream_tls_cert, security.upstream_tls_key)


def upstream_channel(upstream: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A channel to the replicas named by `--upstream` (plaintext unless `credentials` are given)."""
    if credentials is None:
        return grpc.aio.insecure_channel(channel_target(upstream), options=channel_options())
    return grpc.aio.secure_channel(channel_target(upstream), credentials, options=channel_options())
