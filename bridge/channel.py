"""How the bridge dials a replica: the channel's options and credentials (one channel per replica;
bridge/routing/replicas.py opens them).

Each channel is gRPC's own machinery, configured through its service config: client-side health
checking (gRFC A17) on the readiness service `chatllm.v1.ChatLLM`, so a call never goes out to a
replica gRPC already knows is not SERVING (loading, draining, engine dead) or unreachable, and
`round_robin` within the target (a plain `name:port` whose DNS name has several records still
spreads over them). Retries are the bridge's, across replicas (bridge/routing/routed_call.py).

Transport: TLS when `--tls-ca` names the CA of the servers' certificates (plus the bridge's
own client certificate, `--upstream-tls-cert/--upstream-tls-key`, for servers that require
one); gRPC's local credentials on a `unix:` target (`chatllm serve` with TLS: the server
in the same process, on a socket in a private folder); plaintext otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from chatllm.kernel.config import SecurityConfig
from chatllm.kernel.tls import channel_credentials as tls_credentials
from chatllm.proto import SERVICE_NAME

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def service_config(health_service: str = SERVICE_NAME) -> dict[str, Any]:
    return {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": health_service}}


def channel_options(authority: str | None = None) -> list[tuple[str, Any]]:
    """Options of one replica's channel; `authority` is the name an address was resolved from."""
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(service_config())),
        ("grpc.service_config_disable_resolution", 1),  # ours, not one a DNS TXT record might carry
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # A replica that vanishes without closing its connections (a lost node) is noticed within
        # keepalive time + timeout; one whose process dies closes them at once.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    if authority is not None:  # TLS checks the certificate against the name, not the address
        options += [("grpc.ssl_target_name_override", authority), ("grpc.default_authority", authority)]
    return options


def channel_credentials(security: SecurityConfig, upstream: str) -> grpc.ChannelCredentials | None:
    """The credentials for `upstream` (None: plaintext). Raises CertificateError for an unusable file."""
    if upstream.startswith("unix:"):
        return grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
    if security.tls_ca is None and security.upstream_tls_cert is None:
        return None
    return tls_credentials(security.tls_ca, security.upstream_tls_cert, security.upstream_tls_key)
