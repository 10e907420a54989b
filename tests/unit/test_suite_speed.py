"""What keeps the suite fast holds: a guard against an update that silently undoes it."""


def test_httpx_clients_in_the_tests_share_one_certificate_checking_context():
    """conftest builds the default SSL context once per test process (each build loads the certificate bundle,
    about 40 ms of CPU, and gradio_client makes a client per request); other settings are built as before."""
    import ssl

    import httpx

    def context(client):
        return client._transport._pool._ssl_context

    with httpx.Client() as a, httpx.Client() as b, httpx.Client(verify=False) as c:
        assert context(a) is context(b)
        assert context(a).verify_mode == ssl.CERT_REQUIRED and context(a).check_hostname
        assert context(c) is not context(a) and context(c).verify_mode == ssl.CERT_NONE
