"""The gRPC server's TLS: `--tls-cert/--tls-key`, and with `--tls-client-ca` mutual TLS.

grpcio's dynamic SSL credentials take a fetcher that gRPC calls before every new
handshake (on one of its own threads); `reload()` (SIGHUP) reads the files again and
hands the new configuration to the next fetch. Connections already open keep the TLS
session they made, so a reload drops nothing; new connections get the new certificate.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from chatllm.kernel.tls import load_key_pair, read_pem


class GrpcCertificates:
    """The server credentials for `add_secure_port`, re-readable from their files."""

    def __init__(self, cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=client_ca is not None
        )

    @property
    def mutual(self) -> bool:
        return self._client_ca is not None

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = load_key_pair(self._cert, self._key)
        roots = read_pem(self._client_ca, "--tls-client-ca") if self._client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)], root_certificates=roots)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending  # None: keep the current one

    def reload(self) -> None:
        """Read the files again (CertificateError when one is bad: the current ones stay)."""
        configuration = self._configuration()
        with self._lock:
            self._pending = configuration
