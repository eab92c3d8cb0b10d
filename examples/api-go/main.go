// api-go: a small JSON API as a wasi:http/proxy function in Go.
//
//	GET  <prefix>/hello?name=X   (x-user: U)  greets X as U
//	POST <prefix>/sum            {"numbers": [1, 2.5]} -> their sum and count
//	GET  <prefix>/status/<code>  answers with that status
//	GET  <prefix>/backend        calls BACKEND_URL and reports its answer
//
// <prefix> is whatever route the manifest mounts it at (/api-go/...): only the
// path after the first segment is looked at.
//
// Go has no wasi:http bindings that build offline, so wasi.go declares the
// WASI functions this one uses by hand. scripts/build-polyglot api-go builds it
// as a wasip1 reactor (-buildmode=c-shared) and turns it into a component with
// the WASI preview1 adapter, through which os.Getenv and os.Stdout work.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// main is required by the c-shared build mode; the host calls handleRequest.
func main() {}

// object is a JSON object to answer with.
type object = map[string]any

func handleRequest(request, responseOut handle) {
	method, target := requestMethod(request), pathWithQuery(request)
	status, answer := route(request, method, target)
	dropIncomingRequest(request)
	fmt.Printf("api-go: %s %s -> %d\n", method, target, status)

	body, err := json.Marshal(answer)
	if err != nil {
		panic(err)
	}
	respond(responseOut, status, "application/json", body)
}

func route(request handle, method, target string) (int, object) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return 400, object{"error": err.Error()}
	}
	// The path after the route prefix: "/api-go/status/418" -> "status/418".
	_, path, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	code, isStatus := strings.CutPrefix(path, "status/")
	switch {
	case method == "GET" && path == "hello":
		name, user := "world", "anonymous"
		if query := u.Query(); query.Has("name") {
			name = query.Get("name")
		}
		if value, ok := requestHeader(request, "x-user"); ok {
			user = value
		}
		return hello(name, user)
	case method == "POST" && path == "sum":
		body, err := requestBody(request)
		if err != nil {
			return 400, object{"error": err.Error()}
		}
		return sum(body)
	case method == "GET" && isStatus && !strings.Contains(code, "/"):
		return status(code)
	case method == "GET" && path == "backend":
		return backend()
	}
	return 404, object{"error": "no such path"}
}

func hello(name, user string) (int, object) {
	return 200, object{"message": "Hello, " + name + "!", "user": user, "language": "go"}
}

func sum(body []byte) (int, object) {
	var document struct {
		Numbers *[]float64 `json:"numbers"`
	}
	var syntax *json.SyntaxError
	switch err := json.Unmarshal(body, &document); {
	case errors.As(err, &syntax):
		return 400, object{"error": "invalid JSON: " + err.Error()}
	case err != nil || document.Numbers == nil: // a value of another type, or no numbers
		return 400, object{"error": `expected {"numbers": [<number>, ...]}`}
	}
	total := 0.0
	for _, n := range *document.Numbers {
		total += n
	}
	return 200, object{"sum": total, "count": len(*document.Numbers)}
}

func status(text string) (int, object) {
	code, err := strconv.Atoi(text)
	if err != nil || strings.Trim(text, "0123456789") != "" || code < 200 || code > 599 {
		return 400, object{"error": "not a status from 200 to 599: " + text}
	}
	return code, object{"status": code}
}

func backend() (int, object) {
	target, ok := os.LookupEnv("BACKEND_URL")
	if !ok {
		return 500, object{"error": "BACKEND_URL is not set"}
	}
	status, body, err := httpGet(target)
	if err != nil {
		return 502, object{"error": "GET " + target + ": " + err.Error()}
	}
	return 200, object{"backend_status": status, "backend_body": string(body)}
}
