// The function {{name}}: answers every request with a greeting that names
// its path.
//
// gen/ holds the wasi:http/proxy@0.2.12 bindings that `wit-bindgen c`
// generated (do not edit them); this file implements the one export they
// declare, exports_wasi_http_incoming_handler_handle. printf and the rest of
// stdio work too: build.sh links in the WASI preview1 adapter.
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

// blocking-write-and-flush takes at most this many bytes a call.
#define MAX_WRITE 4096

// Returns a new string: `prefix` + `path` + `suffix`.
static proxy_string_t concat(const char *prefix, proxy_string_t path, const char *suffix) {
    size_t a = strlen(prefix), b = path.len, c = strlen(suffix);
    proxy_string_t s = {malloc(a + b + c), a + b + c};
    if (s.ptr == NULL)
        abort();
    memcpy(s.ptr, prefix, a);
    if (b > 0)  // path.ptr is NULL when the request has no path
        memcpy(s.ptr + a, path.ptr, b);
    memcpy(s.ptr + a + b, suffix, c);
    return s;
}

// Writes `text` to `stream`, then drops the stream.
static void write_and_drop(wasi_io_streams_own_output_stream_t stream, proxy_string_t text) {
    wasi_io_streams_borrow_output_stream_t out = wasi_io_streams_borrow_output_stream(stream);
    for (size_t done = 0; done < text.len;) {
        size_t n = text.len - done < MAX_WRITE ? text.len - done : MAX_WRITE;
        proxy_list_u8_t chunk = {text.ptr + done, n};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(out, &chunk, &err))
            abort();
        done += n;
    }
    wasi_io_streams_output_stream_drop_own(stream);
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    // The path with query; left empty if the request has none.
    proxy_string_t path = {0};
    wasi_http_types_method_incoming_request_path_with_query(
        wasi_http_types_borrow_incoming_request(request), &path);
    wasi_http_types_incoming_request_drop_own(request);
    proxy_string_t text = concat("Hello from {{name}} (C) at ", path, "\n");

    wasi_http_types_tuple2_field_name_field_value_t content_type = {
        .f0 = {(uint8_t *)"content-type", strlen("content-type")},
        .f1 = {(uint8_t *)"text/plain; charset=utf-8", strlen("text/plain; charset=utf-8")},
    };
    wasi_http_types_list_tuple2_field_name_field_value_t header_list = {&content_type, 1};
    wasi_http_types_own_fields_t headers;
    wasi_http_types_header_error_t header_err;
    if (!wasi_http_types_static_fields_from_list(&header_list, &headers, &header_err))
        abort();

    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_own_output_stream_t body_stream;
    if (!wasi_http_types_method_outgoing_response_body(
            wasi_http_types_borrow_outgoing_response(response), &body) ||
        !wasi_http_types_method_outgoing_body_write(
            wasi_http_types_borrow_outgoing_body(body), &body_stream))
        abort();

    wasi_http_types_result_own_outgoing_response_error_code_t result = {
        .is_err = false,
        .val.ok = response,
    };
    wasi_http_types_static_response_outparam_set(response_out, &result);

    write_and_drop(body_stream, text);  // the stream must go before the body is finished
    wasi_http_types_error_code_t finish_err;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err))
        abort();

    proxy_string_free(&text);
    proxy_string_free(&path);
}
