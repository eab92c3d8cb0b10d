// hello-go answers every request with "hello from go <path>".
//
// Go has no wasi:http bindings that build offline, so wasi.go declares the few
// imports this function uses by hand. scripts/build-polyglot builds it as a
// wasip1 reactor (-buildmode=c-shared) and turns it into a component with the
// WASI preview1 adapter.
package main

import "fmt"

// main is required by the c-shared build mode; the host calls handleRequest.
func main() {}

func handleRequest(request, responseOut handle) {
	path := pathWithQuery(request)
	dropIncomingRequest(request)
	fmt.Println("hello-go handled", path) // os.Stdout goes through the adapter to wasi:cli/stdout

	response := newOutgoingResponse(fieldsFromList("content-type", "text/plain"))
	setStatusCode(response, 200)
	body := outgoingResponseBody(response)
	stream := outgoingBodyWrite(body)
	setResponse(responseOut, response)

	writeAll(stream, "hello from go "+path)
	dropOutputStream(stream) // the stream must go before the body is finished
	finishBody(body)
}
