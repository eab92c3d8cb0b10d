// Hand-written glue for the part of wasi:http/proxy@0.2.12 that main.go uses:
// reading the request, answering it, and one outgoing GET.
//
// Each import is declared with its canonical-ABI core signature: resource
// handles, pointers and lengths are i32, and a result too big for one core
// value is written to a return area whose address is the last parameter.
// `wasm-tools component new` rejects one that does not match the WIT. The
// signatures and return-area offsets are those of the `extern` blocks in the
// wasip2 crate (its src/proxy.rs and src/imports.rs).

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"unsafe"
)

// handle is a resource handle: an index in this instance's handle table.
type handle = uint32

//go:wasmexport wasi:http/incoming-handler@0.2.12#handle
func exportHandle(request, responseOut handle) { handleRequest(request, responseOut) }

// --- Imports -----------------------------------------------------------------------

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-request.method
func importRequestMethod(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-request.path-with-query
func importPathWithQuery(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-request.headers
func requestHeaders(self handle) handle

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-request.consume
func importRequestConsume(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]incoming-request
func dropIncomingRequest(self handle)

//go:wasmimport wasi:http/types@0.2.12 [constructor]fields
func newFields() handle

//go:wasmimport wasi:http/types@0.2.12 [static]fields.from-list
func importFieldsFromList(entries unsafe.Pointer, count uint32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]fields.get
func importFieldsGet(self handle, name unsafe.Pointer, nameLength uint32, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]fields
func dropFields(self handle)

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-body.stream
func importIncomingBodyStream(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]incoming-body
func dropIncomingBody(self handle)

//go:wasmimport wasi:http/types@0.2.12 [constructor]outgoing-response
func newOutgoingResponse(headers handle) handle

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-response.set-status-code
func importSetStatusCode(self handle, status uint32) uint32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-response.body
func importOutgoingResponseBody(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-body.write
func importOutgoingBodyWrite(self handle, ret unsafe.Pointer)

// The response is a result<outgoing-response, error-code>, flattened: the
// discriminant, then the slots that the largest error-code case needs.
//
//go:wasmimport wasi:http/types@0.2.12 [static]response-outparam.set
func importResponseOutparamSet(param handle, isErr uint32, okOrCase uint32, a uint32, b uint64, c, d, e, f uint32)

//go:wasmimport wasi:http/types@0.2.12 [static]outgoing-body.finish
func importOutgoingBodyFinish(body handle, hasTrailers uint32, trailers handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [constructor]outgoing-request
func newOutgoingRequest(headers handle) handle

// Options are passed as (is-some, value...); a scheme as (case, other's string).
//
//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-scheme
func importSetScheme(self handle, isSome, scheme uint32, other unsafe.Pointer, otherLength uint32) uint32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-authority
func importSetAuthority(self handle, isSome uint32, authority unsafe.Pointer, length uint32) uint32

//go:wasmimport wasi:http/types@0.2.12 [method]outgoing-request.set-path-with-query
func importSetPathWithQuery(self handle, isSome uint32, path unsafe.Pointer, length uint32) uint32

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]outgoing-request
func dropOutgoingRequest(self handle)

//go:wasmimport wasi:http/outgoing-handler@0.2.12 handle
func importOutgoingHandle(request handle, hasOptions uint32, options handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [method]future-incoming-response.subscribe
func subscribeFutureResponse(self handle) handle

//go:wasmimport wasi:http/types@0.2.12 [method]future-incoming-response.get
func importFutureResponseGet(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]future-incoming-response
func dropFutureResponse(self handle)

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-response.status
func incomingResponseStatus(self handle) uint32

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-response.consume
func importResponseConsume(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]incoming-response
func dropIncomingResponse(self handle)

//go:wasmimport wasi:io/poll@0.2.12 [method]pollable.block
func block(self handle)

//go:wasmimport wasi:io/poll@0.2.12 [resource-drop]pollable
func dropPollable(self handle)

//go:wasmimport wasi:io/streams@0.2.12 [method]input-stream.blocking-read
func importBlockingRead(self handle, length uint64, ret unsafe.Pointer)

//go:wasmimport wasi:io/streams@0.2.12 [resource-drop]input-stream
func dropInputStream(self handle)

//go:wasmimport wasi:io/streams@0.2.12 [method]output-stream.blocking-write-and-flush
func importBlockingWriteAndFlush(self handle, data unsafe.Pointer, length uint32, ret unsafe.Pointer)

//go:wasmimport wasi:io/streams@0.2.12 [resource-drop]output-stream
func dropOutputStream(self handle)

//go:wasmimport wasi:io/error@0.2.12 [resource-drop]error
func dropIOError(self handle)

// --- The return area -----------------------------------------------------------------
//
// ret is the return area of every import above (56 bytes at most, for
// future-incoming-response.get; 8-aligned). It is a global, so it never moves
// while the host writes to it. Results, options and variants start with a
// one-byte discriminant (0: ok, or none), followed by their payload at the
// payload's alignment.
var ret [8]uint64

func retArea() unsafe.Pointer { return unsafe.Pointer(&ret) }

// retByte and retWord read the return area at an offset in bytes.
func retByte(offset uintptr) uint8  { return *(*uint8)(unsafe.Add(retArea(), offset)) }
func retWord(offset uintptr) uint32 { return *(*uint32)(unsafe.Add(retArea(), offset)) }

// resultHandle reads a result<handle, _> whose payload is at offset 4.
func resultHandle(what string) handle {
	if retByte(0) != 0 {
		panic(what + " failed")
	}
	return retWord(4)
}

// lifted copies a string or list<u8> that the host wrote into the arena.
func lifted(address, length uint32) []byte {
	if length == 0 {
		return nil
	}
	return bytes.Clone(unsafe.Slice((*byte)(arenaPointer(address)), length))
}

// pointer and address locate a string's bytes, for an import.
func pointer(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }
func address(s string) uint32         { return uint32(uintptr(pointer(s))) }

// --- The request ---------------------------------------------------------------------

var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

func requestMethod(request handle) string {
	defer freeArenaTo(arena.used)
	importRequestMethod(request, retArea()) // a variant: a case, or other(string)
	if c := retByte(0); int(c) < len(methods) {
		return methods[c]
	}
	return string(lifted(retWord(4), retWord(8)))
}

// pathWithQuery returns the request's path and query, or "/" if it has none.
func pathWithQuery(request handle) string {
	defer freeArenaTo(arena.used)
	importPathWithQuery(request, retArea()) // an option<string>
	if retByte(0) == 0 {
		return "/"
	}
	return string(lifted(retWord(4), retWord(8)))
}

// requestHeader returns the first value of a request header.
func requestHeader(request handle, name string) (string, bool) {
	defer freeArenaTo(arena.used)
	headers := requestHeaders(request)
	importFieldsGet(headers, pointer(name), uint32(len(name)), retArea()) // a list<list<u8>>
	runtime.KeepAlive(name)
	dropFields(headers) // before the request it belongs to
	if retWord(4) == 0 {
		return "", false
	}
	first := (*[2]uint32)(arenaPointer(retWord(0))) // address and length of the first value
	return string(lifted(first[0], first[1])), true
}

// requestBody reads the whole request body.
func requestBody(request handle) ([]byte, error) {
	importRequestConsume(request, retArea())
	return readAll(resultHandle("incoming-request.consume"))
}

// readAll reads an incoming body to its end, then drops it.
func readAll(body handle) ([]byte, error) {
	defer dropIncomingBody(body)
	importIncomingBodyStream(body, retArea())
	stream := resultHandle("incoming-body.stream")
	defer dropInputStream(stream) // before the body it belongs to (defers run last first)
	var all []byte
	for {
		chunk, err := blockingRead(stream)
		if err == errClosed {
			return all, nil
		} else if err != nil {
			return nil, err
		}
		all = append(all, chunk...)
	}
}

var errClosed = errors.New("stream closed")

// The most that one read asks for: the host copies it into the arena.
const maxRead = 64 << 10

func blockingRead(stream handle) ([]byte, error) {
	defer freeArenaTo(arena.used)
	importBlockingRead(stream, maxRead, retArea()) // a result<list<u8>, stream-error>
	switch {
	case retByte(0) == 0:
		return lifted(retWord(4), retWord(8)), nil
	case retByte(4) == 1: // stream-error::closed
		return nil, errClosed
	default: // stream-error::last-operation-failed(error)
		dropIOError(retWord(8))
		return nil, errors.New("reading the body failed")
	}
}

// --- The response ----------------------------------------------------------------------

// respond sends a whole response.
func respond(responseOut handle, status int, contentType string, body []byte) {
	response := newOutgoingResponse(fieldsFromList("content-type", contentType))
	if importSetStatusCode(response, uint32(status)) != 0 {
		panic("outgoing-response.set-status-code failed")
	}
	importOutgoingResponseBody(response, retArea())
	outgoing := resultHandle("outgoing-response.body")
	importOutgoingBodyWrite(outgoing, retArea())
	stream := resultHandle("outgoing-body.write")
	importResponseOutparamSet(responseOut, 0, response, 0, 0, 0, 0, 0, 0)

	if status != 204 && status != 205 && status != 304 { // HTTP forbids a body with these
		writeAll(stream, body)
	}
	dropOutputStream(stream) // the stream must go before the body is finished
	importOutgoingBodyFinish(outgoing, 0, 0, retArea())
	if retByte(0) != 0 {
		panic("outgoing-body.finish failed")
	}
}

// fieldsFromList returns new fields holding one header.
func fieldsFromList(name, value string) handle {
	entry := [4]uint32{address(name), uint32(len(name)), address(value), uint32(len(value))}
	importFieldsFromList(unsafe.Pointer(&entry), 1, retArea())
	runtime.KeepAlive(name)
	runtime.KeepAlive(value)
	return resultHandle("fields.from-list")
}

// maxWrite is the most that blocking-write-and-flush takes a call.
const maxWrite = 4096

func writeAll(stream handle, data []byte) {
	for len(data) > 0 {
		n := min(len(data), maxWrite)
		importBlockingWriteAndFlush(stream, unsafe.Pointer(unsafe.SliceData(data)), uint32(n), retArea())
		if retByte(0) != 0 {
			panic("output-stream.blocking-write-and-flush failed")
		}
		data = data[n:]
	}
}

// --- An outgoing request -----------------------------------------------------------------

// httpGet sends `GET target` and returns the answer's status and body.
func httpGet(target string) (int, []byte, error) {
	u, err := url.Parse(target)
	if err != nil {
		return 0, nil, err
	}
	scheme := uint32(0) // scheme::HTTP
	if u.Scheme == "https" {
		scheme = 1
	}
	authority, path := u.Host, u.RequestURI()
	request := newOutgoingRequest(newFields()) // GET is the default method
	if importSetScheme(request, 1, scheme, nil, 0) != 0 ||
		importSetAuthority(request, 1, pointer(authority), uint32(len(authority))) != 0 ||
		importSetPathWithQuery(request, 1, pointer(path), uint32(len(path))) != 0 {
		dropOutgoingRequest(request)
		return 0, nil, errors.New("not a valid URL")
	}
	runtime.KeepAlive(authority)
	runtime.KeepAlive(path)

	future, err := sendRequest(request)
	if err != nil {
		return 0, nil, err
	}
	ready := subscribeFutureResponse(future)
	block(ready)
	dropPollable(ready) // before the future it belongs to
	response, err := futureResponse(future)
	dropFutureResponse(future)
	if err != nil {
		return 0, nil, err
	}
	defer dropIncomingResponse(response)
	importResponseConsume(response, retArea())
	body, err := readAll(resultHandle("incoming-response.consume"))
	return int(incomingResponseStatus(response)), body, err
}

// sendRequest starts a request; the future gives its response.
func sendRequest(request handle) (handle, error) {
	defer freeArenaTo(arena.used)
	importOutgoingHandle(request, 0, 0, retArea()) // a result<future-incoming-response, error-code>
	if retByte(0) != 0 {
		return 0, errorCode(retByte(8))
	}
	return retWord(8), nil
}

// futureResponse takes the response of a future that is ready.
func futureResponse(future handle) (handle, error) {
	defer freeArenaTo(arena.used)
	// An option<result<result<incoming-response, error-code>>>: some at 0, the
	// outer result at 8, the inner one at 16, its payload at 24.
	importFutureResponseGet(future, retArea())
	if retByte(0) == 0 || retByte(8) != 0 {
		panic("future-incoming-response.get: no response")
	}
	if retByte(16) != 0 {
		return 0, errorCode(retByte(24))
	}
	return retWord(24), nil
}

// errorCode is a wasi:http error-code, known here by its case alone.
type errorCode uint8

// The cases of wasi:http's error-code, in order.
var errorCodes = [...]string{
	"DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
	"destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
	"connection-terminated", "connection-timeout", "connection-read-timeout",
	"connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
	"TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
	"HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
	"HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
	"HTTP-request-header-size", "HTTP-request-trailer-section-size", "HTTP-request-trailer-size",
	"HTTP-response-incomplete", "HTTP-response-header-section-size", "HTTP-response-header-size",
	"HTTP-response-body-size", "HTTP-response-trailer-section-size", "HTTP-response-trailer-size",
	"HTTP-response-transfer-coding", "HTTP-response-content-coding", "HTTP-response-timeout",
	"HTTP-upgrade-failed", "HTTP-protocol-error", "loop-detected", "configuration-error",
	"internal-error",
}

func (e errorCode) Error() string {
	if int(e) < len(errorCodes) {
		return "wasi:http error " + errorCodes[e]
	}
	return fmt.Sprintf("wasi:http error %d", uint8(e))
}

// --- cabi_realloc ---------------------------------------------------------------
//
// The module must export cabi_realloc, through which memory is allocated in it
// from outside:
//   - by the preview1 adapter, for its state and its stack, once, while Go's
//     runtime is still starting up: Go's allocator cannot be used yet, and
//     growing the memory behind Go's back corrupts its heap;
//   - by the host, to pass a returned string or list (the path, a header, a
//     chunk of a body).
// Neither may call back into the runtime (which may call an import, which is
// not allowed while the host is lowering a value). So every allocation comes
// from a fixed arena in Go's data segment, which Go never moves or frees. The
// adapter's allocations stay for good; the host's are scratch: a function that
// calls such an import starts with `defer freeArenaTo(arena.used)`, and copies
// what it needs out of the arena before it returns.
//
// cabiRealloc may run on whatever stack Go happens to be on (the runtime's,
// during start-up), so it is nosplit: it must not try to grow that stack.

const arenaSize = 1 << 20

var arena struct {
	mem  [arenaSize / 8]uint64 // uint64s for 8-byte alignment
	used uintptr
}

// freeArenaTo frees what was allocated in the arena since it was `used` full.
func freeArenaTo(used uintptr) { arena.used = used }

//go:nosplit
func arenaPointer(address uint32) unsafe.Pointer {
	base := unsafe.Pointer(&arena.mem)
	return unsafe.Add(base, uintptr(address)-uintptr(base))
}

//go:wasmexport cabi_realloc
//go:nosplit
func cabiRealloc(oldAddress, oldSize, align, newSize uint32) uint32 {
	base := uintptr(unsafe.Pointer(&arena.mem))
	start := (base + arena.used + uintptr(align) - 1) &^ (uintptr(align) - 1)
	if start+uintptr(newSize) > base+arenaSize {
		panic("cabi_realloc: arena exhausted")
	}
	arena.used = start + uintptr(newSize) - base
	if oldAddress != 0 {
		copy(unsafe.Slice((*byte)(arenaPointer(uint32(start))), newSize),
			unsafe.Slice((*byte)(arenaPointer(oldAddress)), min(oldSize, newSize)))
	}
	return uint32(start)
}
