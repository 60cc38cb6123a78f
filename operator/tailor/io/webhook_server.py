"""A hardened HTTP(S) server for the alert webhook: TLS from files that can be rotated, one
deadline per request, a cap on requests in flight and a token bucket per client address.

Why not `ThreadingHTTPServer` as it comes: it starts a thread per connection without bound; its
socket timeout applies to each `recv`, so a client sending a byte every few seconds holds a
thread forever (slowloris); and wrapping its listening socket in TLS does every handshake in the
accept loop, where one client that never sends its ClientHello stalls all the others. Here the
accept loop only accepts: the handshake, the request line, the headers and the body are read in
the connection's own thread under one deadline (`Limits.request_timeout`, the socket timeout
being set to what is left before every read; the handshake, request line and headers must
arrive within `Limits.header_timeout`).

Admission has two stages, so that callers who have not proved who they are cannot crowd out
those who have: a connection takes one of `Limits.max_connections` (at most
`max_in_flight_per_source` from one address) until its headers are read, and only an
authenticated request takes one of the `Limits.max_in_flight` work slots (`begin_work`; none
free: 503). A connection beyond the connection limit is answered 503 by a small, bounded pool of
refusers (beyond that it is closed). Measured by the chaos suite: with one stage, 50 slow
clients from 50 addresses held all 16 slots for their whole deadline, and good callers got 503
in 185 of 210 requests.
"""

from __future__ import annotations

import functools
import io
import logging
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("tailor.io.webhook_server")
Refused = Callable[[str], None]  # called with the reason of every refusal the server makes


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # Alertmanager's payloads are a few KiB
    request_timeout: float = 10.0  # TLS handshake, request line, headers and body, together
    header_timeout: float = 5.0  # ... of which the handshake, request line and headers
    max_connections: int = 256  # connections not yet authenticated or served; beyond: 503 ...
    max_in_flight_per_source: int = 8  # ... and from one client address (one slow client
    # cannot take every connection)
    max_in_flight: int = 16  # authenticated requests being served at once; beyond: 503
    rate: float = 20.0  # requests per second per client address (sustained) ...
    burst: int = 40  # ... and at once; beyond: 429 with Retry-After
    max_sources: int = 4096  # client addresses remembered (least recently seen forgotten)


class TokenBuckets:
    """One token bucket per source: `burst` tokens, refilled at `rate` per second; each request
    takes one. A source whose bucket is full is indistinguishable from an unknown one, so the
    least recently seen sources are forgotten beyond `max_sources` at no cost to fairness."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_sources: int = 4096) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.clock, self.max_sources = rate, burst, clock, max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, source: str) -> float:
        """0 when the request may go ahead (a token was taken), else the seconds until the
        source has a token again (nothing taken)."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.pop(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[source] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
            return wait


class CertificateFiles:
    """A server SSLContext for a certificate and key read from files, rebuilt when either file
    changes (checked for each new connection: two `stat` calls), so a rotated Secret takes
    effect without a restart. A pair that fails to load (a rotation seen half-way) keeps the
    previous context and is tried again on the next connection; the first load must succeed."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._seen = self._signature()
        self._context = self._load()

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns)
                     for s in (self.cert.stat(), self.key.stat()))

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                signature = self._signature()
                if signature != self._seen:
                    self._context, self._seen = self._load(), signature
                    log.info("webhook certificate reloaded from %s", self.cert)
            except (OSError, ssl.SSLError) as error:
                log.warning("webhook certificate %s not reloaded (keeping the previous one): "
                            "%s", self.cert, error)
            return self._context


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with the time left before the request's deadline as each read's timeout,
    so the request as a whole, not each byte of it, is bounded."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.expired = sock, deadline, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError("the request's deadline passed")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise


class _Writer(io.BufferedIOBase):
    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock, self.timeout = sock, timeout

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)
        return len(data)


class LimitedHandler(BaseHTTPRequestHandler):
    """A request handler whose reads share the connection's deadline. Subclasses implement
    do_POST and friends as usual; `self.server` is the `HardenedServer`."""

    server: HardenedServer
    working: bool = False  # holds a work slot (begin_work)

    def __init__(self, request: Any, client_address: Any, server: HardenedServer,
                 deadline: float) -> None:
        self.deadline = deadline
        self.accepted = deadline - server.limits.request_timeout
        super().__init__(request, client_address, server)

    def parse_request(self) -> bool:
        """The headers are in: the body may take the rest of the request's deadline."""
        parsed = super().parse_request()
        self.reader.deadline = self.deadline
        return parsed

    def begin_work(self) -> bool:
        """Take a work slot for an authenticated request (released when it ends); False when
        all are taken."""
        self.working = self.working or self.server.work.acquire(blocking=False)
        return self.working

    def setup(self) -> None:
        self.connection = self.request
        self.working = False
        headers_by = min(self.deadline, self.accepted + self.server.limits.header_timeout)
        self.reader = _DeadlineReader(self.connection, headers_by)
        self.rfile = io.BufferedReader(self.reader)
        self.wfile = _Writer(self.connection, self.server.limits.request_timeout)

    def handle(self) -> None:
        super().handle()
        if self.reader.expired:
            self.server.refused("timeout")

    def finish(self) -> None:
        self.rfile.close()
        if self.working:
            self.working = False
            self.server.work.release()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class HardenedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[LimitedHandler], limits: Limits,
                 certificates: CertificateFiles | None, refused: Refused) -> None:
        self.limits, self.certificates, self.refused = limits, certificates, refused
        self.buckets = TokenBuckets(limits.rate, limits.burst, max_sources=limits.max_sources)
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self.work = threading.BoundedSemaphore(limits.max_in_flight)
        self._per_source: dict[str, int] = {}
        self._lock = threading.Lock()
        self._refusers = threading.BoundedSemaphore(limits.max_in_flight)  # a few suffice
        super().__init__(address, handler)

    @property
    def scheme(self) -> str:
        return "https" if self.certificates else "http"

    @property
    def work_free(self) -> int:
        """Work slots free now (threading's semaphores count in `_value`, their only count)."""
        return int(self.work._value)

    @property
    def in_flight(self) -> int:
        """Connections being served now (refusals aside)."""
        with self._lock:
            return sum(self._per_source.values())

    def process_request(self, request: Any, client_address: Any) -> None:
        """Runs in the accept loop: hands the connection to a thread and returns at once."""
        deadline = time.monotonic() + self.limits.request_timeout
        target: Callable[..., None]
        release: Callable[[], None]
        if self._admit(client_address[0]):
            target, release = self._serve, functools.partial(self._release, client_address[0])
            args: tuple[Any, ...] = (request, client_address, deadline)
        elif self._refusers.acquire(blocking=False):
            target, release = self._refuse_busy, self._refusers.release
            args = (request, min(deadline, time.monotonic() + 2))
        else:
            self.refused("busy")
            _close(request, 0)
            return
        try:
            threading.Thread(target=target, args=args, daemon=True).start()
        except RuntimeError:  # no thread to be had: as good as busy
            release()
            self.refused("busy")
            _close(request, 0)

    def _admit(self, source: str) -> bool:
        with self._lock:
            if self._per_source.get(source, 0) >= self.limits.max_in_flight_per_source:
                return False
            if not self._slots.acquire(blocking=False):
                return False
            self._per_source[source] = self._per_source.get(source, 0) + 1
            return True

    def _release(self, source: str) -> None:
        with self._lock:
            self._per_source[source] -= 1
            if not self._per_source[source]:
                del self._per_source[source]
            self._slots.release()

    def _secure(self, request: socket.socket, deadline: float) -> socket.socket | None:
        """The connection after its TLS handshake (bounded by the deadline); None if it failed."""
        if self.certificates is None:
            return request
        request.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            return self.certificates.context().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as error:
            self.refused("timeout" if isinstance(error, TimeoutError) else "tls-error")
            log.debug("TLS handshake with a webhook client failed: %s", error)
            _close(request, 0)
            return None

    def _serve(self, request: socket.socket, client_address: Any, deadline: float) -> None:
        limits = self.limits
        try:
            handshake_by = min(deadline, deadline - limits.request_timeout + limits.header_timeout)
            secured = self._secure(request, handshake_by)
            if secured is not None:
                try:
                    handler: Any = self.RequestHandlerClass
                    handler(secured, client_address, self, deadline)
                except Exception:  # a broken connection must not end the server
                    self.handle_error(secured, client_address)
                finally:
                    _close(secured, max(min(deadline - time.monotonic(), 1.0), 0))
        finally:
            self._release(client_address[0])

    def _refuse_busy(self, request: socket.socket, deadline: float) -> None:
        self.refused("busy")
        try:
            secured = self._secure(request, deadline)
            if secured is not None:
                body = b'{"error": "too many requests in flight; retry"}'
                head = (f"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n").encode()
                try:
                    secured.settimeout(max(deadline - time.monotonic(), 0.001))
                    secured.sendall(head + body)
                except OSError:
                    pass
                _close(secured, max(min(deadline - time.monotonic(), 0.5), 0))
        finally:
            self._refusers.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # the client went away: its business
            log.debug("webhook connection from %s failed", client_address[0], exc_info=True)
        else:
            log.exception("the webhook failed to serve %s", client_address[0])


def _close(sock: socket.socket, linger: float) -> None:
    """Closes after reading (and discarding) what the client still sends, for up to `linger`
    seconds and 64 KiB: closing with unread data makes the kernel reset the connection, which
    can destroy the response (a 401 or 413) before the client has read it."""
    try:
        if linger > 0:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(linger)
            end, left = time.monotonic() + linger, 1 << 16
            while left > 0 and time.monotonic() < end:
                chunk = sock.recv(min(left, 8192))
                if not chunk:
                    break
                left -= len(chunk)
    except OSError:
        pass
    finally:
        sock.close()
