"""api-py: a small JSON API as a wasi:http/proxy function in Python.

    GET  <prefix>/hello?name=X   (x-user: U)  greets X as U
    POST <prefix>/sum            {"numbers": [1, 2.5]} -> their sum and count
    GET  <prefix>/status/<code>  answers with that status
    GET  <prefix>/backend        calls BACKEND_URL and reports its answer

<prefix> is whatever route the manifest mounts it at (/api-py/...): only the
path after the first segment is looked at.

`scripts/build-polyglot api-py` builds it with componentize-py, which
generates the `wit_world` bindings and `poll_loop` (an asyncio event loop on
wasi:io/poll, with helpers for wasi:http bodies and outgoing requests) from
the wasi:http/proxy world.
"""

import asyncio
import json
import os
from urllib.parse import SplitResult, parse_qs, urlsplit

import poll_loop
from componentize_py_types import Err, Ok
from poll_loop import Sink, Stream
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method,
    Method_Other,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        loop = poll_loop.PollLoop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(handle(request, response_out))


async def handle(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    method = method_name(request.method())
    target = request.path_with_query() or "/"
    status, answer = await route(request, method, urlsplit(target))
    # Guest stdout is not a terminal, so Python buffers it: flush the line.
    print(f"api-py: {method} {target} -> {status}", flush=True)

    response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    sink = Sink(body)
    if status not in (204, 205, 304):  # HTTP forbids a body with these
        await sink.send(json.dumps(answer).encode())
    sink.close()


async def route(request: IncomingRequest, method: str, url: SplitResult) -> tuple[int, dict]:
    path = url.path.split("/")[2:]
    if method == "GET" and path == ["hello"]:
        name = parse_qs(url.query, keep_blank_values=True).get("name", ["world"])[0]
        with request.headers() as headers:
            user = headers.get("x-user")
        return hello(name, user[0].decode() if user else "anonymous")
    if method == "POST" and path == ["sum"]:
        return add_up(await read_all(Stream(request.consume())))
    if method == "GET" and len(path) == 2 and path[0] == "status":
        return status(path[1])
    if method == "GET" and path == ["backend"]:
        return await backend()
    return 404, {"error": "no such path"}


def hello(name: str, user: str) -> tuple[int, dict]:
    return 200, {"message": f"Hello, {name}!", "user": user, "language": "py"}


def add_up(text: bytes) -> tuple[int, dict]:
    try:
        document = json.loads(text)
    except ValueError as error:
        return 400, {"error": f"invalid JSON: {error}"}
    numbers = document.get("numbers") if isinstance(document, dict) else None
    if not isinstance(numbers, list) or not all(
        isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
    ):
        return 400, {"error": 'expected {"numbers": [<number>, ...]}'}
    return 200, {"sum": sum(numbers), "count": len(numbers)}


def status(text: str) -> tuple[int, dict]:
    if not (text.isascii() and text.isdigit() and 200 <= int(text) <= 599):
        return 400, {"error": f"not a status from 200 to 599: {text}"}
    return int(text), {"status": int(text)}


async def backend() -> tuple[int, dict]:
    target = os.environ.get("BACKEND_URL")
    if target is None:
        return 500, {"error": "BACKEND_URL is not set"}
    url = urlsplit(target)
    request = OutgoingRequest(Fields())
    try:
        request.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
        request.set_authority(url.netloc)
        request.set_path_with_query((url.path or "/") + (f"?{url.query}" if url.query else ""))
        response = await poll_loop.send(request)
        backend_status = response.status()
        body = await read_all(Stream(response.consume()))
    except Err as error:  # a wasi:http error-code, such as a refused connection
        return 502, {"error": f"GET {target}: {error.value}"}
    text = body.decode(errors="replace")
    return 200, {"backend_status": backend_status, "backend_body": text}


async def read_all(stream: Stream) -> bytes:
    chunks = []
    while (chunk := await stream.next()) is not None:
        chunks.append(chunk)
    return b"".join(chunks)


def method_name(method: Method) -> str:
    # Method_Get -> "GET"; Method_Other carries its name.
    if isinstance(method, Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()
