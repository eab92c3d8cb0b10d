// hello-cpp: answers every request with "hello from cpp <path>".
//
// It uses the C bindings in ../hello-c/gen (wasi:http/proxy@0.2.12, generated
// by `wit-bindgen c`; see ../hello-c/README.md) and, like hello-c, writes its
// log line through wasi:cli/stdout so that it imports nothing beyond the proxy
// world. Built with -fno-exceptions: a failed WASI call aborts (traps).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy.h"

namespace {

// blocking-write-and-flush takes at most this many bytes a call.
constexpr size_t kMaxWrite = 4096;

void check(bool ok) {
    if (!ok) std::abort();
}

// Writes `text` to `stream`, then drops the stream.
void write_and_drop(wasi_io_streams_own_output_stream_t stream, std::string_view text) {
    auto out = wasi_io_streams_borrow_output_stream(stream);
    for (size_t done = 0; done < text.size();) {
        size_t n = std::min(text.size() - done, kMaxWrite);
        proxy_list_u8_t chunk{reinterpret_cast<uint8_t *>(const_cast<char *>(text.data() + done)), n};
        wasi_io_streams_stream_error_t err;
        check(wasi_io_streams_method_output_stream_blocking_write_and_flush(out, &chunk, &err));
        done += n;
    }
    wasi_io_streams_output_stream_drop_own(stream);
}

// WIT strings and byte lists, viewing `s` without copying it.
proxy_string_t wit_string(std::string_view s) {
    return {reinterpret_cast<uint8_t *>(const_cast<char *>(s.data())), s.size()};
}

}  // namespace

extern "C" void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    std::string path;  // left empty if the request has none
    proxy_string_t wit_path{};
    if (wasi_http_types_method_incoming_request_path_with_query(
            wasi_http_types_borrow_incoming_request(request), &wit_path)) {
        path.assign(reinterpret_cast<char *>(wit_path.ptr), wit_path.len);
        proxy_string_free(&wit_path);
    }
    wasi_http_types_incoming_request_drop_own(request);

    write_and_drop(wasi_cli_stdout_get_stdout(), "hello-cpp handled " + path + "\n");

    proxy_string_t value = wit_string("text/plain");
    wasi_http_types_tuple2_field_name_field_value_t content_type{
        wit_string("content-type"), {value.ptr, value.len}};
    wasi_http_types_list_tuple2_field_name_field_value_t header_list{&content_type, 1};
    wasi_http_types_own_fields_t headers;
    wasi_http_types_header_error_t header_err;
    check(wasi_http_types_static_fields_from_list(&header_list, &headers, &header_err));

    auto response = wasi_http_types_constructor_outgoing_response(headers);
    auto borrowed = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(borrowed, 200);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_own_output_stream_t body_stream;
    check(wasi_http_types_method_outgoing_response_body(borrowed, &body));
    check(wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &body_stream));

    wasi_http_types_result_own_outgoing_response_error_code_t result{};
    result.is_err = false;
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(response_out, &result);

    write_and_drop(body_stream, "hello from cpp " + path);  // the stream must go before the body is finished
    wasi_http_types_error_code_t finish_err;
    check(wasi_http_types_static_outgoing_body_finish(body, nullptr, &finish_err));
}
