"""TLS material shared by the server, the bridge and the clients: PEM files read and checked
once with one clear error, gRPC channel credentials, and the HTTPS context that re-reads its
files on demand (SIGHUP) without touching open connections, and the gRPC server credentials
(the server's port and the bridge's front door) likewise re-readable."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc


class CertificateError(Exception):
    """A certificate, key or CA file is missing, unreadable, not PEM, or the key does not fit."""


def read_pem(path: str | Path, what: str) -> bytes:
    """The bytes of a PEM file, or CertificateError naming the flag's file."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CertificateError(f"{what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise CertificateError(f"{what} {path}: not a PEM file")
    return data


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key, as PEM bytes (checked to belong together)."""

    cert: bytes
    key: bytes


def load_key_pair(cert: str | Path, key: str | Path, what: str = "--tls-cert/--tls-key") -> KeyPair:
    """Read and check a certificate and its key (OpenSSL refuses a key that does not fit the certificate)."""
    pair = KeyPair(read_pem(cert, "certificate"), read_pem(key, "key"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(Path(cert).expanduser()), str(Path(key).expanduser()))
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"{what} {cert}, {key}: {getattr(exc, 'reason', None) or exc}") from None
    return pair


def channel_credentials(
    ca: str | Path | None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Credentials for a TLS channel: `ca` verifies the server (None: the system's roots); `cert` and
    `key` are this client's certificate for servers that require one (mutual TLS)."""
    if (cert is None) != (key is None):
        raise CertificateError("a client certificate needs both --tls-cert and --tls-key")
    root = read_pem(ca, "--tls-ca") if ca is not None else None
    pair = load_key_pair(cert, key, "--tls-cert/--tls-key") if cert is not None and key is not None else None
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=pair.key if pair else None,
        certificate_chain=pair.cert if pair else None,
    )


class HttpsContext:
    """The server-side `ssl.SSLContext` of an HTTP listener (the bridge, the server's /metrics).

    `context` is handed to aiohttp once; each handshake switches to the newest context built
    from the files (in its SNI callback, which OpenSSL runs for every ClientHello), so `reload()`
    changes the certificate and the client CA for new connections while open ones go on."""

    def __init__(self, cert: str | Path, key: str | Path, client_ca: str | Path | None = None) -> None:
        self._cert, self._key, self._client_ca = Path(cert), Path(key), Path(client_ca) if client_ca else None
        self._current = self._build()
        self.context = self._build()
        self.context.sni_callback = self._use_current

    @property
    def requires_client_certificate(self) -> bool:
        return self._client_ca is not None

    def _build(self) -> ssl.SSLContext:
        load_key_pair(self._cert, self._key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._cert.expanduser(), self._key.expanduser())
        if self._client_ca is not None:
            authorities = read_pem(self._client_ca, "--tls-client-ca").decode("ascii", "replace")
            try:
                context.load_verify_locations(cadata=authorities)
            except ssl.SSLError as exc:
                raise CertificateError(f"--tls-client-ca {self._client_ca}: {exc.reason or exc}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _use_current(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        connection.context = self._current

    def reload(self) -> None:
        """Read the files again; on a bad file keep the current ones (CertificateError says why)."""
        self._current = self._build()


class GrpcCertificates:
    """The server credentials for `add_secure_port` (`--tls-cert/--tls-key`, mutual TLS with
    `--tls-client-ca`), re-readable from their files.

    grpcio's dynamic SSL credentials take a fetcher that gRPC calls before every new handshake (on
    one of its own threads); `reload()` (SIGHUP) reads the files again and hands the new
    configuration to the next fetch. Connections already open keep their TLS session, so a reload
    drops nothing; new connections get the new certificate."""

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
