// The function {{name}}: answers every request with a greeting that names
// its path.
//
// Go has no wasi:http bindings that build offline, so wasi.go declares the
// few imports this function uses by hand. build.sh builds it as a wasip1
// reactor (-buildmode=c-shared) and turns that into a component with the WASI
// preview1 adapter, through which os.Stdout and the rest of Go's runtime
// reach WASI 0.2.
package main

// main is required by the c-shared build mode; the host calls handleRequest.
func main() {}

func handleRequest(request, responseOut handle) {
	path := pathWithQuery(request)
	dropIncomingRequest(request)

	response := newOutgoingResponse(fieldsFromList("content-type", "text/plain; charset=utf-8"))
	setStatusCode(response, 200)
	body := outgoingResponseBody(response)
	stream := outgoingBodyWrite(body)
	setResponse(responseOut, response)

	writeAll(stream, "Hello from {{name}} (Go) at "+path+"\n")
	dropOutputStream(stream) // the stream must go before the body is finished
	finishBody(body)
}
