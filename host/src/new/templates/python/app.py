"""The function {{name}}: answers every request with a greeting that names
its path.

`wit_world` is the bindings module that componentize-py generates from the
world in wit/ when it builds the component.
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
        text = f"Hello from {{name}} (Python) at {path}\n".encode()

        headers = Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        response = OutgoingResponse(headers)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:  # the stream must go before the body is finished
            for start in range(0, len(text), MAX_WRITE):
                stream.blocking_write_and_flush(text[start : start + MAX_WRITE])
        OutgoingBody.finish(body, None)
