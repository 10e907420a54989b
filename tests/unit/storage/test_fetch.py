"""Fetching pictures from URLs without reaching into the server's network.

The address policy is checked as a pure function of the address (nothing connects to a
private or link-local address here, not even to show it is refused). Real fetches go
to a test server on 127.0.0.1 only, which the tests allow with the operator's list.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import make_image

from llava_app.storage import fetch as fetch_module
from llava_app.storage.fetch import FetchError, FetchPolicy, address_refusal, fetch_url, numeric_host, url_name
from llava_app.storage.images import ImageError, ImageLimits, decode_image

PNG = make_image("orange", (30, 30))


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "a loopback address"),
    ("127.0.0.2", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a link-local address"),
    ("224.0.0.1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("240.0.0.1", "a reserved address"),
    ("4000::1", "a reserved address"),
    ("100.64.0.1", "not a public address"),  # carrier-grade NAT: neither private nor global
    ("::1", "a loopback address"),
    ("::", "an unspecified address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a private address"),
    ("ff02::1", "a multicast address"),
    ("::ffff:127.0.0.1", "a loopback address inside an IPv6 address"),
    ("::ffff:169.254.169.254", "a link-local address (where cloud metadata services live) inside an IPv6"),
    ("2002:7f00:1::", "a loopback address inside an IPv6 address"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a00:1", "a private address inside an IPv6 address"),  # NAT64 of 10.0.0.1
])
def test_inner_addresses_are_refused_by_the_policy(address, reason):
    assert str(address_refusal(address)).startswith(reason)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_pass_the_policy(address):
    assert address_refusal(address) is None


@pytest.mark.parametrize("host, address", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("017700000001", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"), ("0251.0376.0251.0376", "169.254.169.254"), ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("10.0.0.1", "10.0.0.1"),
])
def test_numeric_hosts_are_read_as_resolvers_read_them(host, address):
    assert str(numeric_host(host)) == address


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "0x1g.1", "127.0.0.1.nip.io", ""])
def test_names_are_not_numeric_hosts(host):
    assert numeric_host(host) is None


@pytest.fixture
def no_connections(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("url, reason", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),
    ("http://0x7f.1/", "0x7f.1 (127.0.0.1) is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback address inside an IPv6 address"),
    ("http://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe is a link-local address (where cloud metadata"),
    ("http://10.0.0.7:8080/cat.png", "10.0.0.7 is a private address"),
    ("file:///etc/passwd", "only http and https URLs are fetched"),
    ("gopher://example.com/", "only http and https URLs are fetched"),
])
def test_refusals_name_the_reason_before_any_connection(no_connections, url, reason):
    with pytest.raises(FetchError) as err:
        fetch_url(url, FetchPolicy())
    assert reason in str(err.value)


def test_a_name_that_resolves_to_any_inner_address_is_refused(no_connections, monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 80))]
    monkeypatch.setattr(fetch_module.socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(FetchError, match=r"pics.example \(10.0.0.5\) is a private address"):
        fetch_url("http://pics.example/cat.png", FetchPolicy())


def test_the_allow_list_matches_hosts_and_domains():
    policy = FetchPolicy.from_list(" Pics.Corp.Example , *.cdn.example,127.0.0.1")
    assert policy.allows_host("pics.corp.example") and policy.allows_host("PICS.corp.example.")
    assert policy.allows_host("cdn.example") and policy.allows_host("a.b.cdn.example")
    assert policy.allows_host("127.0.0.1")
    assert not policy.allows_host("corp.example") and not policy.allows_host("evilcdn.example")
    assert not policy.allows_host("2130706433")  # the operator allowed a spelling, not every spelling


# ----- a real server, on 127.0.0.1 only ----------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def do_GET(self):  # noqa: N802 - the http.server name
        self.seen.append((self.path, self.headers.get("Host", "")))
        route = getattr(self, "route_" + self.path.strip("/").split("?")[0].replace("-", "_").replace(".", "_"), None)
        if route is None:
            self.send_error(404)
            return
        route()

    def reply(self, body: bytes, content_type: str = "image/png", length: bool = True):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_photo_png(self):
        self.reply(PNG)

    def route_big(self):
        self.reply(PNG + b"\0" * 200_000)

    def route_big_unannounced(self):  # no Content-Length: the limit must hold while streaming
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        for _ in range(50):
            self.wfile.write(b"\0" * 10_000)

    def route_slow(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):  # a byte every 0.1 s: each read is quick, the whole is not
            self.wfile.write(b"\0")
            self.wfile.flush()
            time.sleep(0.1)

    def route_page_html(self):
        self.reply(b"<!doctype html><title>not a picture</title>", "text/html; charset=utf-8")

    def route_lies_png(self):
        self.reply(b"<!doctype html><title>not a picture</title>", "image/png")

    def route_to_other_loopback(self):
        self.redirect(f"http://127.0.0.2:{self.server.server_address[1]}/photo.png")

    def route_to_photo(self):
        self.redirect("/photo.png")

    def route_loop(self):
        self.redirect("/loop")

    def redirect(self, location: str):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ALLOWED = FetchPolicy(allow_hosts=("127.0.0.1",), max_bytes=100_000, timeout_s=3.0)


def fetch_image(url: str):
    """A picture from ``url`` as the app takes one: fetched, then decoded as uploads are."""
    return decode_image(fetch_url(url, ALLOWED).data, ImageLimits(), url_name(url))


def test_an_allowed_host_is_fetched_and_decoded_as_uploads_are(server):
    img = fetch_image(f"{server}/photo.png")
    assert img.size == (30, 30) and img.getpixel((1, 1)) == (255, 165, 0)
    redirected = fetch_url(f"{server}/to-photo", ALLOWED)
    assert redirected.data == PNG and redirected.url.endswith("/photo.png")


def test_the_test_server_is_refused_without_the_allowance(server):
    _Handler.seen.clear()
    with pytest.raises(FetchError, match="127.0.0.1 is a loopback address: this server fetches pictures only "
                                         "from public addresses"):
        fetch_url(f"{server}/photo.png", FetchPolicy())
    assert _Handler.seen == []  # refused before connecting


def test_a_redirect_from_the_allowed_host_to_another_loopback_address_is_refused(server):
    with pytest.raises(FetchError, match="127.0.0.2 is a loopback address"):
        fetch_url(f"{server}/to-other-loopback", ALLOWED)


def test_redirects_are_followed_at_most_three_times(server):
    _Handler.seen.clear()
    with pytest.raises(FetchError, match="redirects more than 3 times"):
        fetch_url(f"{server}/loop", ALLOWED)
    assert len(_Handler.seen) == 4  # the URL and three redirects


@pytest.mark.parametrize("path", ["/big", "/big-unannounced"])
def test_oversized_responses_are_refused(server, path):
    with pytest.raises(FetchError, match="is larger than the 0 MB upload limit"):
        fetch_url(server + path, ALLOWED)


def test_a_slow_response_is_cut_at_the_time_limit(server):
    start = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 1 s"):
        fetch_url(f"{server}/slow", FetchPolicy(allow_hosts=("127.0.0.1",), timeout_s=1.0))
    assert time.monotonic() - start < 2.5


def test_non_image_responses_are_refused(server):
    with pytest.raises(FetchError, match="is text/html, not a picture, video or PDF"):
        fetch_url(f"{server}/page.html", ALLOWED)
    with pytest.raises(ImageError, match="lies.png is not an image this app reads"):
        fetch_image(f"{server}/lies.png")  # labelled image/png; the bytes decide
    with pytest.raises(FetchError, match="answered HTTP 404"):
        fetch_url(f"{server}/missing.png", ALLOWED)


def test_the_connection_goes_to_the_address_that_was_checked(server, monkeypatch):
    """A name is resolved once, by the fetcher; the connection goes to that address, the name stays the Host."""
    port = int(server.rsplit(":", 1)[1])
    calls = []

    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "127.0.0.1":  # the transport's connect, by address (no name lookup)
            return real(host, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    _Handler.seen.clear()
    fetched = fetch_url(f"http://pics.test:{port}/photo.png", FetchPolicy(allow_hosts=("pics.test",)))
    assert fetched.data == PNG and calls == ["pics.test"]
    assert _Handler.seen == [("/photo.png", f"pics.test:{port}")]


def test_every_fetch_checks_certificates_with_one_context_built_once(server, monkeypatch):
    """Loading the certificate bundle costs about 40 ms of CPU; it is done once, not for every hop."""
    import ssl

    from llava_app.storage import fetch

    contexts = []
    real_init = fetch._PinnedTransport.__init__

    def init(self, address, **kwargs):
        contexts.append(kwargs.get("verify"))
        real_init(self, address, **kwargs)

    monkeypatch.setattr(fetch._PinnedTransport, "__init__", init)
    fetch_url(f"{server}/to-photo", ALLOWED)  # two hops
    fetch_url(f"{server}/photo.png", ALLOWED)
    assert len(contexts) == 3 and all(c is contexts[0] for c in contexts)
    assert isinstance(contexts[0], ssl.SSLContext)
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
