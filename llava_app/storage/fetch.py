"""Fetching a picture from a URL without letting the URL reach inside the server's network.

A URL is fetched only over http(s). Every hop (the URL and each redirect, at most
``max_redirects``) is resolved here, each address it resolves to is checked by
``address_refusal`` (loopback, private, link-local such as 169.254.169.254, multicast,
unspecified, reserved and every other non-public range, including IPv4 written as one
number, in hex or octal, or inside an IPv6 address), and the connection then goes to
the address that was checked (the host name stays in the Host header and TLS SNI), so
a second DNS answer cannot swap in an inner address. Hosts the operator lists are
exempt from the address check, not from the rest. The body is streamed up to the
upload size limit, and the whole fetch, redirects included, has one time limit.

This follows ``safehttpx`` (which Gradio uses for its own downloads: it pins the
resolved IP the same way and never follows redirects), but synchronously, checking
every hop, and without its fallback to a public DNS-over-HTTPS resolver.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from llava_app.errors import UserError
from llava_app.messages import Message

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = (301, 302, 303, 307, 308)
#: content types a picture, a video or a PDF may come as (absent is accepted too: the bytes are sniffed)
_MEDIA_TYPES = ("image/", "video/", "application/pdf", "application/octet-stream", "binary/octet-stream")


class FetchError(UserError):
    """A URL that was not fetched, with the reason."""


@dataclass(frozen=True)
class FetchPolicy:
    """What the operator allows: hosts exempt from the address check, and the limits."""

    allow_hosts: tuple[str, ...] = ()  # exact names (or IPs), or "*.example.com" for a domain and its subdomains
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0  # the whole fetch, redirects included
    max_redirects: int = 3

    @classmethod
    def from_list(cls, hosts: str, **limits) -> FetchPolicy:
        """A policy from the comma-separated ``--image-url-allow`` value."""
        return cls(allow_hosts=tuple(h.strip().lower() for h in hosts.split(",") if h.strip()), **limits)

    def allows_host(self, host: str) -> bool:
        """True when the operator listed this host (its address is then not checked)."""
        host = host.lower().rstrip(".")
        for entry in self.allow_hosts:
            if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
                return True
            if host == entry:
                return True
        return False


@dataclass(frozen=True)
class Fetched:
    """A fetched body and where it finally came from."""

    data: bytes
    url: str
    content_type: str


# ----- the address policy: a pure function of the address -------------------------------------
def numeric_host(host: str) -> IPAddress | None:
    """The address a host written as a number means (``2130706433``, ``0x7f.1``, ``127.1``, ``::1``), else None.

    IPv4 follows ``inet_aton``, as resolvers do: one to four parts, each decimal, hex (``0x``)
    or octal (leading ``0``), the last part filling the remaining bytes.
    """
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                values.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            else:
                values.append(int(part, 10) if part.isdigit() else -1)
        except ValueError:
            return None
    if any(v < 0 for v in values) or any(v > 255 for v in values[:-1]):
        return None
    last_bits = 8 * (5 - len(values))
    if values[-1] >= 1 << last_bits:
        return None
    number = 0
    for v in values[:-1]:
        number = number << 8 | v
    return ipaddress.IPv4Address(number << last_bits | values[-1])


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str | IPAddress) -> Message | None:
    """Why the server must not connect to this address (e.g. "a loopback address"), or None for a public one."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = address_refusal(inner)
            return Message("address.inside_ipv6", reason=reason) if reason else None
    checks = [("is_unspecified", "address.unspecified"), ("is_loopback", "address.loopback"),
              ("is_link_local", "address.link_local"), ("is_multicast", "address.multicast"),
              ("is_reserved", "address.reserved"), ("is_private", "address.private")]
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return Message(reason)
    if not ip.is_global:
        return Message("address.not_public")
    return None


# ----- fetching ---------------------------------------------------------------------------------
def _short(url: str | httpx.URL) -> str:
    text = str(url)
    return text if len(text) <= 100 else text[:97] + "..."


def resolve_checked(host: str, port: int, policy: FetchPolicy) -> str:
    """The address to connect to for ``host``: every address it resolves to must pass the policy."""
    allowed = policy.allows_host(host)
    literal = numeric_host(host)
    if literal is not None:
        addresses: Iterable[str] = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError("fetch.host_unknown_because", host=host, kind=exc.__class__.__name__) from None
        addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    addresses = list(addresses)
    if not allowed:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                shown = host if _is_plain_ip(host) else f"{host} ({address})"  # 0x7f.1 (127.0.0.1)
                log.info("refused %s (%s); an operator can allow a host with --image-url-allow", shown, reason)
                raise FetchError("fetch.not_public", url=shown, reason=reason)
    if not addresses:
        raise FetchError("fetch.host_unknown", host=host)
    return addresses[0]


def _is_plain_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


@functools.cache
def _tls_context():
    """The certificate-checking TLS context every fetch uses, built once: httpx would otherwise load the
    certificate bundle again for each request (about 40 ms of CPU)."""
    return httpx.create_ssl_context()


class _PinnedTransport(httpx.HTTPTransport):
    """Connects to the checked address; the URL's host stays in the Host header and TLS SNI."""

    def __init__(self, address: str, **kwargs):
        super().__init__(**kwargs)
        self.address = address

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        request.headers["Host"] = request.url.netloc.decode("ascii")
        request.url = request.url.copy_with(host=self.address)
        request.extensions = {**request.extensions, "sni_hostname": host}
        return super().handle_request(request)


def fetch_url(url: str, policy: FetchPolicy) -> Fetched:
    """GET ``url`` under ``policy``: checked hops, pinned addresses, size and time limits.

    Args:
        url: an http(s) URL.
        policy: the allowed hosts and the limits (``max_bytes``, ``timeout_s``, ``max_redirects``).

    Raises:
        FetchError: naming the reason (scheme, address, redirects, status, type, size, time).

    Example:
        >>> fetch_url("https://example.com/cat.png", FetchPolicy()).data[:4]  # doctest: +SKIP
        b'\\x89PNG'
    """
    deadline = time.monotonic() + policy.timeout_s
    try:
        current = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError("fetch.invalid", url=_short(url), reason=str(exc)) from None
    for _ in range(policy.max_redirects + 1):
        try:
            fetched, location = _fetch_hop(current, policy, deadline)
        except httpx.TimeoutException:
            raise FetchError("fetch.timeout", url=_short(url), seconds=policy.timeout_s) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError("fetch.failed", url=_short(current), kind=type(exc).__name__) from None
        if fetched is not None:
            return fetched
        current = location
    raise FetchError("fetch.redirects", url=_short(url), count=policy.max_redirects)


def _fetch_hop(url: httpx.URL, policy: FetchPolicy, deadline: float) -> tuple[Fetched | None, httpx.URL | None]:
    """One request: the body, or (None, where it redirects)."""
    if url.scheme not in ("http", "https"):
        raise FetchError("fetch.scheme", url=_short(url))
    if not url.host:
        raise FetchError("fetch.no_host", url=_short(url))
    port = url.port or (443 if url.scheme == "https" else 80)
    address = resolve_checked(url.host, port, policy)
    remaining = max(0.01, deadline - time.monotonic())
    transport = _PinnedTransport(address, retries=0, verify=_tls_context())
    headers = {"Accept": "image/*, video/*, application/pdf;q=0.9, */*;q=0.1", "User-Agent": "llava-app"}
    with httpx.Client(transport=transport, trust_env=False, timeout=httpx.Timeout(remaining),
                      follow_redirects=False) as client:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                return None, url.join(response.headers["location"])
            if response.status_code != 200:
                raise FetchError("fetch.status", url=_short(url), status=response.status_code)
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type and not content_type.startswith(_MEDIA_TYPES):
                raise FetchError("fetch.type", url=_short(url), type=content_type)
            return Fetched(_read_limited(response, url, policy, deadline), str(url), content_type), None


def _read_limited(response: httpx.Response, url: httpx.URL, policy: FetchPolicy, deadline: float) -> bytes:
    """The body, refused as soon as it passes the size limit or the deadline."""
    too_big = FetchError("fetch.too_big", url=_short(url), limit=policy.max_bytes / 2**20)  # MB as uploads count
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise too_big
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > policy.max_bytes:
            raise too_big
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("deadline")
        chunks.append(chunk)
    return b"".join(chunks)


def url_name(url: str) -> str:
    """A short display name for a fetched file: the last part of its path, else the host."""
    parsed = httpx.URL(url)
    name = parsed.path.rstrip("/").rsplit("/", 1)[-1]
    return (name or parsed.host or "download")[:80]

