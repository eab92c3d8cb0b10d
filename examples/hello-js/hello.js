// hello-js: answers every request with "hello from js <path>".
//
// It implements wasi:http/incoming-handler itself rather than through
// StarlingMonkey's `fetch` event: a fetch Request carries only the parsed URL,
// which drops "." and ".." segments and an empty "?", and the body must echo
// the request's path-with-query exactly.
import { Fields, OutgoingBody, OutgoingResponse, ResponseOutparam } from 'wasi:http/types@0.2.12';

// blocking-write-and-flush takes at most this many bytes a call.
const MAX_WRITE = 4096;
const utf8 = new TextEncoder();

export const incomingHandler = {
  handle(request, responseOut) {
    const path = request.pathWithQuery() ?? '';
    console.log(`hello-js handled ${path}`);

    const headers = Fields.fromList([['content-type', utf8.encode('text/plain')]]);
    const response = new OutgoingResponse(headers);
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });

    const text = utf8.encode(`hello from js ${path}`);
    const stream = body.write();
    for (let start = 0; start < text.length; start += MAX_WRITE) {
      stream.blockingWriteAndFlush(text.subarray(start, start + MAX_WRITE));
    }
    stream[Symbol.dispose](); // the stream must go before the body is finished
    OutgoingBody.finish(body, undefined);
  },
};
