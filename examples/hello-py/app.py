"""hello-py: answers every request with "hello from py <path>".

`wit_world` is the bindings module that componentize-py generates from the
wasi:http/proxy world when it builds the component.
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# blocking-write-and-flush takes at most this many bytes a call.
MAX_WRITE = 4096


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or ""
        # Guest stdout is not a terminal, so Python buffers it: flush the line.
        print(f"hello-py handled {path}", flush=True)

        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        text = f"hello from py {path}".encode()
        with body.write() as stream:  # the stream must be dropped before `finish`
            for start in range(0, len(text), MAX_WRITE):
                stream.blocking_write_and_flush(text[start : start + MAX_WRITE])
        OutgoingBody.finish(body, None)
