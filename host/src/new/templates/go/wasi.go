// Hand-written glue for the part of wasi:http/proxy@0.2.12 that main.go uses.
//
// Each import is declared with its canonical-ABI core signature: resource
// handles, pointers and lengths are i32, and a result too big for one core
// value is written to a return area whose address is the last parameter.
// `wasm-tools component new` rejects one that does not match the WIT.

package main

import (
	"runtime"
	"unsafe"
)

// handle is a resource handle: an index in this instance's handle table.
type handle = uint32

//go:wasmexport wasi:http/incoming-handler@0.2.12#handle
func exportHandle(request, responseOut handle) { handleRequest(request, responseOut) }

//go:wasmimport wasi:http/types@0.2.12 [method]incoming-request.path-with-query
func importPathWithQuery(self handle, ret unsafe.Pointer)

//go:wasmimport wasi:http/types@0.2.12 [resource-drop]incoming-request
func dropIncomingRequest(self handle)

//go:wasmimport wasi:http/types@0.2.12 [static]fields.from-list
func importFieldsFromList(entries unsafe.Pointer, count uint32, ret unsafe.Pointer)

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

//go:wasmimport wasi:io/streams@0.2.12 [method]output-stream.blocking-write-and-flush
func importBlockingWriteAndFlush(self handle, data unsafe.Pointer, length uint32, ret unsafe.Pointer)

//go:wasmimport wasi:io/streams@0.2.12 [resource-drop]output-stream
func dropOutputStream(self handle)

// ret is the return area of every import above (40 bytes at most, 8-aligned).
// It is a global, so it never moves while the host writes to it. Word 0's low
// byte holds an option's or a result's discriminant (0: none, or ok), the
// payload starts at word 1.
var ret struct {
	_ [0]uint64
	w [10]uint32
}

func retArea() unsafe.Pointer { return unsafe.Pointer(&ret.w) }

func retOK() bool { return uint8(ret.w[0]) == 0 }

// pathWithQuery returns the request's path and query, or "" if it has none.
func pathWithQuery(request handle) string {
	mark := arena.used
	importPathWithQuery(request, retArea()) // an option<string>
	if uint8(ret.w[0]) == 0 {
		return ""
	}
	// The host put the string in the arena: copy it to Go's heap, then free
	// it, unless something else was allocated after it in the meantime.
	end := arena.used
	path := string(unsafe.Slice((*byte)(arenaPointer(ret.w[1])), ret.w[2]))
	if arena.used == end {
		arena.used = mark
	}
	return path
}

// fieldsFromList returns new fields holding one header.
func fieldsFromList(name, value string) handle {
	entry := [4]uint32{stringAddress(name), uint32(len(name)), stringAddress(value), uint32(len(value))}
	importFieldsFromList(unsafe.Pointer(&entry), 1, retArea())
	runtime.KeepAlive(name)
	runtime.KeepAlive(value)
	return resultHandle("fields.from-list")
}

func setStatusCode(response handle, status uint32) {
	if importSetStatusCode(response, status) != 0 {
		panic("outgoing-response.set-status-code failed")
	}
}

func outgoingResponseBody(response handle) handle {
	importOutgoingResponseBody(response, retArea())
	return resultHandle("outgoing-response.body")
}

func outgoingBodyWrite(body handle) handle {
	importOutgoingBodyWrite(body, retArea())
	return resultHandle("outgoing-body.write")
}

func setResponse(responseOut, response handle) {
	importResponseOutparamSet(responseOut, 0, response, 0, 0, 0, 0, 0, 0)
}

func finishBody(body handle) {
	importOutgoingBodyFinish(body, 0, 0, retArea())
	if !retOK() {
		panic("outgoing-body.finish failed")
	}
}

// maxWrite is the most that blocking-write-and-flush takes a call.
const maxWrite = 4096

func writeAll(stream handle, text string) {
	for len(text) > 0 {
		n := min(len(text), maxWrite)
		importBlockingWriteAndFlush(stream, unsafe.Pointer(unsafe.StringData(text)), uint32(n), retArea())
		if !retOK() {
			panic("output-stream.blocking-write-and-flush failed")
		}
		text = text[n:]
	}
}

// resultHandle reads a result<handle, _> from the return area.
func resultHandle(what string) handle {
	if !retOK() {
		panic(what + " failed")
	}
	return ret.w[1]
}

func stringAddress(s string) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s)))) }

// --- cabi_realloc ---------------------------------------------------------------
//
// The module must export cabi_realloc, through which memory is allocated in it
// from outside:
//   - by the preview1 adapter, for its state and its stack, once, while Go's
//     runtime is still starting up: Go's allocator cannot be used yet, and
//     growing the memory behind Go's back corrupts its heap;
//   - by the host, to pass a returned string or list (the request path).
// Neither may call back into the runtime (which may call an import, which is
// not allowed while the host is lowering a value). So every allocation comes
// from a fixed arena in Go's data segment, which Go never moves or frees. The
// adapter's allocations stay for good; the host's are scratch, released by the
// wrapper that made the call once it has copied the value (pathWithQuery).
//
// cabiRealloc may run on whatever stack Go happens to be on (the runtime's,
// during start-up), so it is nosplit: it must not try to grow that stack.

const arenaSize = 1 << 20

var arena struct {
	mem  [arenaSize / 8]uint64 // uint64s for 8-byte alignment
	used uintptr
}

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
