"""TLS and mutual TLS on the gRPC port and the HTTP API's (HTTPS), with certificates that rotate
without a restart.

``LLM_TLS_CERT_FILE`` / ``LLM_TLS_KEY_FILE`` (PEM) turn TLS on; with ``LLM_TLS_CLIENT_CA_FILE``
only clients presenting a certificate that CA signed get through the handshake (mutual TLS).

Rotation is by file change, not by signal: :meth:`CertificateReloader.refresh` re-reads the
files only when their inode, size or modification time changed (three ``stat`` calls), and each
loaded set gets the next *generation*. grpc asks :meth:`CertificateReloader.fetch` before each
new connection's handshake (a refresh, then the current set if grpc serves an older
generation); other transports refresh on their own schedule and compare generations too, so
whichever side sees a change first, every side serves it. That follows cert-manager and
Kubernetes secret mounts (an atomic symlink swap changes the inode) with nothing to signal.
Connections already open keep the certificate they were made with, so their streams run on. A
new set that does not load (half written, key not matching) is not served: the current one
stays and one line is logged, once per change.

HTTPS: asyncio runs the handshakes on the event loop with the ``ssl.SSLContext`` the server was
given, and a context only loads a chain from files. Each loaded set therefore carries a whole
context of its own (chain, key, client CA), built off the loop by ``refresh``; the server's
context has an ``sni_callback``, which OpenSSL runs at every ClientHello (with a server name or
without), and it moves the connection onto the current set's context (``SSLObject.context``,
the standard library's documented way to switch certificates mid-handshake). Swapping whole
contexts rather than calling ``load_cert_chain`` again also lets a rotated client CA *replace*
the old one (a context can add CAs but not drop them). There is no per-connection hook before
the handshake where the files could be stat'ed off the loop, so :meth:`CertificateReloader.watch`
refreshes every ``HTTPS_CHECK_INTERVAL_S`` in a worker thread (and every gRPC handshake
refreshes too): a rotation reaches new HTTPS connections within that interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from .config import TlsSettings

log = logging.getLogger("llm_manager_server.tls")

CERT_VARIABLE = "LLM_TLS_CERT_FILE"
KEY_VARIABLE = "LLM_TLS_KEY_FILE"
CLIENT_CA_VARIABLE = "LLM_TLS_CLIENT_CA_FILE"

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
# How often the HTTPS side looks at the files (three stat calls, in a worker thread).
HTTPS_CHECK_INTERVAL_S = 2.0

_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


class CertificateProblem(Exception):
    """A certificate, key or CA file that cannot be served; ``variable`` names its setting.
    (config.py turns it into its ``ConfigError``; this module cannot import config.py, which
    imports it.)"""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Certificates:
    """One loaded set: the server's chain and key, and the CA its clients' certificates need;
    ``context`` is the same set as HTTPS serves it."""

    chain: bytes
    key: bytes = field(repr=False)  # a private key never reaches a log line or a repr
    client_ca: bytes | None
    context: ssl.SSLContext = field(repr=False, compare=False)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.chain)], self.client_ca)


def _read(variable: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CertificateProblem(variable, f"cannot read {path!r}: {error.strerror}") from None


def _check_certificates(variable: str, path: str, data: bytes, into: ssl.SSLContext | None = None) -> None:
    """Checks that ``data`` is PEM certificates, by loading them as trusted CAs (into ``into``,
    where they are wanted, or a throwaway context)."""
    if _PEM_CERTIFICATE not in data:
        raise CertificateProblem(variable, f"{path!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----')")
    try:
        (into or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)).load_verify_locations(cadata=data.decode("latin-1"))
    except ssl.SSLError:
        raise CertificateProblem(variable, f"{path!r} holds a PEM block that is not a valid certificate") from None


def _refuse_passphrase() -> bytes:
    # Without this callback OpenSSL would prompt on the terminal for an encrypted key.
    raise CertificateProblem(KEY_VARIABLE, "the private key is encrypted: give it unencrypted (grpc takes no passphrase)")


def read_certificates(cert_file: str, key_file: str, client_ca_file: str | None) -> Certificates:
    """Reads and checks one set: PEM, a key that belongs to the certificate, a parseable CA.
    Raises :class:`CertificateProblem` naming the variable at fault. Blocking: off the loop."""
    chain = _read(CERT_VARIABLE, cert_file)
    key = _read(KEY_VARIABLE, key_file)
    client_ca = _read(CLIENT_CA_VARIABLE, client_ca_file) if client_ca_file else None
    _check_certificates(CERT_VARIABLE, cert_file, chain)
    if not _PEM_PRIVATE_KEY.search(key):
        raise CertificateProblem(KEY_VARIABLE, f"{key_file!r} is not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----')")
    if b"ENCRYPTED" in key:
        _refuse_passphrase()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 at least; no client certificate asked
    if client_ca is not None and client_ca_file is not None:
        _check_certificates(CLIENT_CA_VARIABLE, client_ca_file, client_ca, into=context)
        context.verify_mode = ssl.CERT_REQUIRED
    # The standard library checks that the key is the certificate's; it reads the files by
    # path, which the reloader's before/after stat comparison keeps consistent with `chain`.
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise CertificateProblem(KEY_VARIABLE, f"{key_file!r} is not the private key of the certificate in {CERT_VARIABLE}") from None
        raise CertificateProblem(KEY_VARIABLE, f"{key_file!r} is not a valid PEM private key") from None
    except OSError as error:  # deleted between the read and the check
        raise CertificateProblem(KEY_VARIABLE, f"cannot read {key_file!r}: {error.strerror}") from None
    return Certificates(chain, key, client_ca, context)


_Stamp = tuple[tuple[int, int, int] | None, ...]


class CertificateReloader:
    """The server's TLS credentials; serves a rotated certificate from the next handshake on.

    One reload state for every transport: ``current`` is the newest set that loaded and
    ``generation`` counts the sets loaded so far (0: the one read at start-up). A transport
    remembers the generation it serves and picks up ``current`` when it falls behind, so one
    transport's refresh never hides a change from another."""

    def __init__(self, settings: TlsSettings) -> None:
        assert settings.cert_file is not None and settings.key_file is not None, "TLS is on"
        self._paths = (settings.cert_file, settings.key_file, settings.client_ca_file)
        self._lock = threading.Lock()  # grpc calls fetch on its own threads, concurrently
        self._stamp = self._stamp_now()  # taken before the read: a change during it is seen next time
        self.current = read_certificates(*self._paths)
        self.generation = 0
        self._grpc_generation = 0
        self._rejected: _Stamp | None = None
        self.mutual = settings.client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        # types-grpcio's fetcher type leaves out the None (no change) that grpc documents.
        return grpc.dynamic_ssl_server_credentials(
            self.current.configuration(), self.fetch, require_client_authentication=self.mutual  # type: ignore[arg-type]
        )

    def _stamp_now(self) -> _Stamp:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            if path is None:
                continue
            try:
                status = os.stat(path)  # follows symlinks: a swapped Kubernetes secret shows
            except OSError:
                stamps.append(None)  # missing for a moment mid-rotation: read_certificates says so
            else:
                stamps.append((status.st_ino, status.st_size, status.st_mtime_ns))
        return tuple(stamps)

    def refresh(self) -> None:
        """Loads the files into ``current`` (and the next ``generation``) when they changed and
        load; otherwise keeps the current set. Blocking (file reads): call it off the event loop."""
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        stamp = self._stamp_now()
        if stamp in (self._stamp, self._rejected):
            return
        try:
            loaded = read_certificates(*self._paths)
        except CertificateProblem as problem:
            if self._stamp_now() == stamp:  # settled, not still being written: say so once
                self._rejected = stamp
                log.warning("TLS: keeping the current certificate; the changed files do not load: %s", problem)
            return
        if self._stamp_now() != stamp:
            return  # written to while read: the next refresh reads the settled files
        self._stamp, self._rejected, self.current = stamp, None, loaded
        self.generation += 1
        log.info("TLS: serving the certificate now in %s to new connections", self._paths[0])

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's fetcher: the current configuration when grpc serves an older generation (the
        files changed and load, seen now or by another transport's refresh), else ``None``
        (keep serving the one it has)."""
        with self._lock:
            self._refresh_locked()
            if self._grpc_generation == self.generation:
                return None
            self._grpc_generation = self.generation
            return self.current.configuration()

    def https_context(self) -> ssl.SSLContext:
        """The context to give the HTTPS server: the start-up set's, whose ``sni_callback`` puts
        each new connection on the current set's context."""
        front = self.current.context
        front.sni_callback = self._use_current
        return front

    def _use_current(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        # On the event loop, per handshake: one attribute read, no file access.
        current = self.current.context
        if connection.context is not current:
            connection.context = current

    async def watch(self, interval_s: float = HTTPS_CHECK_INTERVAL_S) -> None:
        """Refreshes every ``interval_s`` until cancelled, so HTTPS follows a rotation even
        when no gRPC handshake happens to refresh first."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.refresh)


__all__ = ["HTTPS_CHECK_INTERVAL_S", "CertificateProblem", "CertificateReloader", "Certificates", "read_certificates"]
