"""The deliveries' HTTP client (webhooks.http_client) against receivers that answer byte by byte as told: what it
sends, how it reads what comes back (lengths, chunks, a close, too much), and when it keeps a connection."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webhooks.http_client import HEAD_LIMIT, DeliveryClient
from webhooks.safe_resolver import SafeResolver
from webhooks.sender import Outcome, post

LIMIT = 64
Answer = Callable[[bytes], bytes | None]  # the request's bytes -> what to write back (None: write nothing, close)


@dataclass
class Scripted:
    """A TCP server on loopback answering each request with ``answer``; it counts connections and keeps requests."""

    answer: Answer
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_answer: bool = False


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head + await reader.readexactly(length)


@asynccontextmanager
async def scripted(
    answer: Answer, *, close_after_answer: bool = False, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Scripted]:
    server_state = Scripted(answer, close_after_answer=close_after_answer)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_state.connections += 1
        try:
            while (request := await _read_request(reader)) is not None:
                server_state.requests.append(request)
                reply = server_state.answer(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if server_state.close_after_answer:
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()


@pytest.fixture
async def client() -> AsyncIterator[DeliveryClient]:
    made = DeliveryClient(SafeResolver(allow_private=True), excerpt_limit=LIMIT)
    yield made
    await made.close()


def _ok(body: bytes = b"ok") -> Answer:
    return lambda _request: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _post(client: DeliveryClient, url: str, *, timeout: float = 5) -> Outcome:
    headers = {"content-type": "application/json", "webhook-id": "evt_1"}
    return await post(client, url, b'{"a":1}', headers, timeout=timeout, allow_private=True)


async def test_the_request_is_one_post_with_the_headers_given_and_its_length(client: DeliveryClient) -> None:
    async with scripted(_ok()) as receiver:
        outcome = await _post(client, f"http://user:p%40ss@127.0.0.1:{receiver.port}/hook?x=1")
    assert (outcome.status_code, outcome.response_body, outcome.error) == (200, "ok", None)
    head, body = receiver.requests[0].split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?x=1 HTTP/1.1"
    sent = dict(line.split(": ", 1) for line in lines[1:])
    assert sent["Host"] == f"127.0.0.1:{receiver.port}"
    assert sent["content-type"] == "application/json" and sent["webhook-id"] == "evt_1"
    assert sent["Content-Length"] == "7" and body == b'{"a":1}'
    assert sent["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


async def test_a_connection_is_kept_for_the_next_post_to_the_same_origin(client: DeliveryClient) -> None:
    async with scripted(_ok()) as receiver:
        outcomes = [await _post(client, f"http://127.0.0.1:{receiver.port}/") for _ in range(3)]
    assert [o.status_code for o in outcomes] == [200, 200, 200]
    assert receiver.connections == 1


async def test_a_connection_the_receiver_closed_while_idle_is_not_used_again(client: DeliveryClient) -> None:
    async with scripted(_ok(), close_after_answer=True) as receiver:
        first = await _post(client, f"http://127.0.0.1:{receiver.port}/")
        await asyncio.sleep(0.1)  # the receiver's close reaches the idle connection
        second = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert (first.status_code, second.status_code) == (200, 200)
    assert receiver.connections == 2


async def test_a_chunked_body_is_read_decoded(client: DeliveryClient) -> None:
    chunked = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with scripted(lambda _request: chunked) as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
        again = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert (outcome.status_code, outcome.response_body) == (202, "abcde")
    assert again.status_code == 202 and receiver.connections == 1


async def test_a_body_without_length_ends_with_the_connection(client: DeliveryClient) -> None:
    answer = b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nit broke"
    async with scripted(lambda _request: answer, close_after_answer=True) as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert (outcome.status_code, outcome.response_body, outcome.error) == (500, "it broke", "HTTP 500")


async def test_only_an_excerpt_of_an_oversize_body_is_kept_and_its_connection_is_not(client: DeliveryClient) -> None:
    async with scripted(_ok(b"x" * (LIMIT * 100))) as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
        again = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert outcome.status_code == 200 and outcome.response_body == "x" * LIMIT
    assert again.status_code == 200 and receiver.connections == 2


async def test_an_interim_response_is_skipped_for_the_final_one(client: DeliveryClient) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    async with scripted(lambda _request: answer) as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert outcome.status_code == 204


async def test_retry_after_and_location_are_read_from_the_response(client: DeliveryClient) -> None:
    answers = iter(
        [
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 301 Moved\r\nlocation: https://elsewhere.example/\r\nContent-Length: 0\r\n\r\n",
        ]
    )
    async with scripted(lambda _request: next(answers)) as receiver:
        limited = await _post(client, f"http://127.0.0.1:{receiver.port}/")
        moved = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert (limited.status_code, limited.retry_after) == (429, 7.0)
    assert moved.error == "HTTP 301: redirect to https://elsewhere.example/ not followed"


async def test_a_receiver_closing_without_an_answer_is_a_failed_attempt(client: DeliveryClient) -> None:
    async with scripted(lambda _request: None) as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert outcome.status_code is None
    assert outcome.error == "connection closed by the receiver before a response"


async def test_garbage_instead_of_a_response_is_a_failed_attempt(client: DeliveryClient) -> None:
    async with scripted(lambda _request: b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("invalid HTTP response")


async def test_no_answer_within_the_timeout_is_a_timed_out_attempt(client: DeliveryClient) -> None:
    never = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await never.wait()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await _post(client, f"http://127.0.0.1:{port}/", timeout=0.3)
    finally:
        never.set()
        server.close()
    assert outcome.timed_out and outcome.status_code is None
    assert outcome.error == "timeout: no complete response within 0.3s"


async def test_a_refused_connection_is_a_connection_error(client: DeliveryClient) -> None:
    probe = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    outcome = await _post(client, f"http://127.0.0.1:{port}/")
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith(
        f"connection error: Cannot connect to host 127.0.0.1:{port}"
    )


async def test_a_name_that_does_not_resolve_is_a_dns_error(client: DeliveryClient) -> None:
    outcome = await _post(client, "http://no-such-host.invalid/")
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("DNS error:"), outcome.error


async def test_a_receiver_whose_certificate_is_not_trusted_is_a_tls_certificate_error(
    client: DeliveryClient, tmp_path: Path
) -> None:
    async with scripted(_ok(), tls=_self_signed(tmp_path)) as receiver:
        outcome = await _post(client, f"https://localhost:{receiver.port}/")
    assert outcome.status_code is None and receiver.requests == []
    assert outcome.error is not None and outcome.error.startswith("TLS certificate error:"), outcome.error


def _self_signed(directory: Path) -> ssl.SSLContext:
    """A server context with a certificate for localhost that no trust store knows."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


async def test_headers_without_end_are_cut_off(client: DeliveryClient) -> None:
    endless = b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * (HEAD_LIMIT * 4)
    async with scripted(lambda _request: endless) as receiver:
        outcome = await _post(client, f"http://127.0.0.1:{receiver.port}/")
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("invalid HTTP response: headers longer than")
