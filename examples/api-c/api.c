// api-c: a small JSON API as a wasi:http/proxy function in C.
//
//   GET  <prefix>/hello?name=X   (x-user: U)  greets X as U
//   POST <prefix>/sum            {"numbers": [1, 2.5]} -> their sum and count
//   GET  <prefix>/status/<code>  answers with that status
//   GET  <prefix>/backend        calls BACKEND_URL and reports its answer
//
// <prefix> is whatever route the manifest mounts it at (/api-c/...): only the
// path after the first segment is looked at.
//
// It uses the wasi:http/proxy@0.2.12 bindings that `wit-bindgen c` generated
// into ../hello-c/gen. `scripts/build-polyglot api-c` compiles it with clang
// and wasi-libc as a reactor, then makes it a component with the preview1
// adapter, through which getenv and stderr reach WASI 0.2.
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

// --- A growing, NUL-terminated string -------------------------------------------

typedef struct {
    char *ptr;
    size_t len, cap;
} buf_t;

static void buf_append(buf_t *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        if ((b->ptr = realloc(b->ptr, b->cap)) == NULL)
            abort();
    }
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
    b->ptr[b->len] = '\0';
}

static void buf_printf(buf_t *b, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *text;
    int n = vasprintf(&text, format, args);
    va_end(args);
    if (n < 0)
        abort();
    buf_append(b, text, n);
    free(text);
}

// Appends `s` as a JSON string.
static void buf_json_string(buf_t *b, const char *s) {
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_printf(b, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            buf_printf(b, "\\u%04x", *s);
        else
            buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

// --- Answers ----------------------------------------------------------------------

typedef struct {
    int status;
    buf_t json;
} answer_t;

static answer_t error(int status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *message;
    if (vasprintf(&message, format, args) < 0)
        abort();
    va_end(args);
    answer_t answer = {status, {0}};
    buf_printf(&answer.json, "{\"error\": ");
    buf_json_string(&answer.json, message);
    buf_printf(&answer.json, "}");
    free(message);
    return answer;
}

// --- Routes -----------------------------------------------------------------------

static answer_t hello(const char *name, const char *user) {
    char *message;
    if (asprintf(&message, "Hello, %s!", name) < 0)
        abort();
    answer_t answer = {200, {0}};
    buf_printf(&answer.json, "{\"message\": ");
    buf_json_string(&answer.json, message);
    buf_printf(&answer.json, ", \"user\": ");
    buf_json_string(&answer.json, user);
    buf_printf(&answer.json, ", \"language\": \"c\"}");
    free(message);
    return answer;
}

// A reader for exactly {"numbers": [<number>, ...]}, with any whitespace.
typedef struct {
    const char *p;
} reader_t;

static void skip_space(reader_t *r) {
    while (isspace((unsigned char)*r->p))
        r->p++;
}

static bool eat(reader_t *r, const char *token) {
    skip_space(r);
    size_t n = strlen(token);
    if (strncmp(r->p, token, n) != 0)
        return false;
    r->p += n;
    return true;
}

static bool read_number(reader_t *r, double *number) {
    skip_space(r);
    if (*r->p != '-' && !isdigit((unsigned char)*r->p))
        return false;  // strtod would also take "inf", "+1", " 1"...
    char *end;
    *number = strtod(r->p, &end);
    r->p = end;
    return true;
}

// The shortest "%g" that reads back as `x`, as JSON.stringify writes numbers.
static void buf_number(buf_t *b, double x) {
    char text[32];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(text, sizeof text, "%.*g", precision, x);
        if (strtod(text, NULL) == x)
            break;
    }
    buf_append(b, text, strlen(text));
}

static answer_t sum(const char *body) {
    reader_t r = {body};
    double total = 0, number;
    size_t count = 0;
    bool ok = eat(&r, "{") && eat(&r, "\"numbers\"") && eat(&r, ":") && eat(&r, "[");
    if (ok && !eat(&r, "]")) {
        while ((ok = read_number(&r, &number))) {
            total += number;
            count++;
            if (!eat(&r, ","))
                break;
        }
        ok = ok && eat(&r, "]");
    }
    ok = ok && eat(&r, "}");
    skip_space(&r);
    if (!ok || *r.p != '\0')
        return error(400, "expected {\"numbers\": [<number>, ...]}");
    answer_t answer = {200, {0}};
    buf_printf(&answer.json, "{\"sum\": ");
    buf_number(&answer.json, total);
    buf_printf(&answer.json, ", \"count\": %zu}", count);
    return answer;
}

static answer_t status(const char *text) {
    char *end;
    long code = strtol(text, &end, 10);
    if (!isdigit((unsigned char)*text) || *end != '\0' || code < 200 || code > 599)
        return error(400, "not a status from 200 to 599: %s", text);
    answer_t answer = {code, {0}};
    buf_printf(&answer.json, "{\"status\": %ld}", code);
    return answer;
}

static bool read_all(wasi_http_types_own_incoming_body_t body, buf_t *out);

// The cases of wasi:http's error-code, in order.
static const char *const error_codes[] = {
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
};

// A wasi:http error-code as a message (malloc'ed).
static char *error_message(wasi_http_types_error_code_t *code) {
    char *message;
    size_t cases = sizeof error_codes / sizeof error_codes[0];
    if (asprintf(&message, "wasi:http error %s", code->tag < cases ? error_codes[code->tag] : "?") < 0)
        abort();
    wasi_http_types_error_code_free(code);
    return message;
}

// Sends `GET url`; sets *status and *body, or *why (malloc'ed) if it fails.
static bool get(const char *url, int *status, buf_t *body, char **why) {
    const char *authority = strstr(url, "://");
    if (authority == NULL) {
        *why = strdup("not an absolute URL");
        return false;
    }
    authority += 3;
    const char *path = authority + strcspn(authority, "/?");
    wasi_http_types_scheme_t scheme = {
        .tag = strncmp(url, "https:", 6) == 0 ? WASI_HTTP_TYPES_SCHEME_HTTPS : WASI_HTTP_TYPES_SCHEME_HTTP,
    };
    proxy_string_t authority_s = {(uint8_t *)authority, path - authority};
    proxy_string_t path_s = {(uint8_t *)(*path ? path : "/"), *path ? strlen(path) : 1};

    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t req = wasi_http_types_borrow_outgoing_request(request);
    if (!wasi_http_types_method_outgoing_request_set_scheme(req, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(req, &authority_s) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(req, &path_s)) {
        wasi_http_types_outgoing_request_drop_own(request);
        *why = strdup("the URL is not valid");
        return false;
    }

    wasi_http_types_own_future_incoming_response_t future;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
        *why = error_message(&code);
        return false;
    }
    wasi_http_types_borrow_future_incoming_response_t pending =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_own_pollable_t ready =
        wasi_http_types_method_future_incoming_response_subscribe(pending);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);  // before the future it belongs to
    wasi_http_types_result_result_own_incoming_response_error_code_void_t result;
    wasi_http_types_method_future_incoming_response_get(pending, &result);  // ready, so some
    wasi_http_types_future_incoming_response_drop_own(future);
    if (result.val.ok.is_err) {
        *why = error_message(&result.val.ok.val.err);
        return false;
    }

    wasi_http_types_own_incoming_response_t response = result.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t resp = wasi_http_types_borrow_incoming_response(response);
    *status = wasi_http_types_method_incoming_response_status(resp);
    wasi_http_types_own_incoming_body_t response_body;
    bool read = wasi_http_types_method_incoming_response_consume(resp, &response_body) &&
                read_all(response_body, body);
    wasi_http_types_incoming_response_drop_own(response);
    if (!read)
        *why = strdup("reading the body failed");
    return read;
}

static answer_t backend(void) {
    const char *url = getenv("BACKEND_URL");
    if (url == NULL)
        return error(500, "BACKEND_URL is not set");
    int code;
    buf_t body = {0};
    char *why;
    if (!get(url, &code, &body, &why)) {
        answer_t answer = error(502, "GET %s: %s", url, why);
        free(why);
        free(body.ptr);
        return answer;
    }
    answer_t answer = {200, {0}};
    buf_printf(&answer.json, "{\"backend_status\": %d, \"backend_body\": ", code);
    buf_json_string(&answer.json, body.ptr ? body.ptr : "");
    buf_printf(&answer.json, "}");
    free(body.ptr);
    return answer;
}

// --- Requests ---------------------------------------------------------------------

// Decodes %XX and '+' in place.
static void url_decode(char *s) {
    char *out = s;
    for (; *s; s++) {
        if (*s == '+') {
            *out++ = ' ';
        } else if (*s == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
            char hex[3] = {s[1], s[2], '\0'};
            *out++ = (char)strtol(hex, NULL, 16);
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
}

// Returns the decoded value of `key` in `query` (which it changes), or NULL.
static const char *query_param(char *query, const char *key) {
    for (char *pair = strtok(query, "&"); pair != NULL; pair = strtok(NULL, "&")) {
        char *value = strchr(pair, '=');
        if (value != NULL)
            *value++ = '\0';
        url_decode(pair);
        if (strcmp(pair, key) == 0) {
            if (value == NULL)
                return "";
            url_decode(value);
            return value;
        }
    }
    return NULL;
}

// Returns a header's first value (malloc'ed), or NULL.
static char *header(wasi_http_types_borrow_incoming_request_t request, const char *name) {
    wasi_http_types_own_headers_t headers = wasi_http_types_method_incoming_request_headers(request);
    wasi_http_types_field_name_t key = {(uint8_t *)name, strlen(name)};
    wasi_http_types_list_field_value_t values;
    wasi_http_types_method_fields_get(wasi_http_types_borrow_fields(headers), &key, &values);
    wasi_http_types_fields_drop_own(headers);  // before the request it belongs to
    char *value = values.len > 0 ? strndup((char *)values.ptr[0].ptr, values.ptr[0].len) : NULL;
    wasi_http_types_list_field_value_free(&values);
    return value;
}

// Reads a whole body, then drops it.
static bool read_all(wasi_http_types_own_incoming_body_t body, buf_t *out) {
    wasi_http_types_own_input_stream_t stream;
    bool ok = wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                          &stream);
    bool have_stream = ok;
    buf_append(out, "", 0);  // "" for an empty body
    while (ok) {
        proxy_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        wasi_io_streams_borrow_input_stream_t in = wasi_io_streams_borrow_input_stream(stream);
        if (!wasi_io_streams_method_input_stream_blocking_read(in, 64 * 1024, &chunk, &err)) {
            ok = err.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED;  // the end
            if (!ok)
                wasi_io_error_error_drop_own(err.val.last_operation_failed);
            break;
        }
        buf_append(out, (char *)chunk.ptr, chunk.len);
        proxy_list_u8_free(&chunk);
    }
    if (have_stream)
        wasi_io_streams_input_stream_drop_own(stream);  // before the body it belongs to
    wasi_http_types_incoming_body_drop_own(body);
    return ok;
}

static answer_t route(wasi_http_types_borrow_incoming_request_t request, const char *method,
                      char *path, char *query) {
    // The path after the route prefix: "/api-c/status/418" -> "status/418".
    char *rest = strchr(path + 1, '/');
    rest = rest ? rest + 1 : "";
    if (strcmp(method, "GET") == 0 && strcmp(rest, "hello") == 0) {
        const char *name = query_param(query, "name");
        char *user = header(request, "x-user");
        answer_t answer = hello(name ? name : "world", user ? user : "anonymous");
        free(user);
        return answer;
    }
    if (strcmp(method, "POST") == 0 && strcmp(rest, "sum") == 0) {
        wasi_http_types_own_incoming_body_t body;
        buf_t text = {0};
        if (!wasi_http_types_method_incoming_request_consume(request, &body) ||
            !read_all(body, &text)) {
            free(text.ptr);
            return error(400, "cannot read the request body");
        }
        answer_t answer = sum(text.ptr);
        free(text.ptr);
        return answer;
    }
    if (strcmp(method, "GET") == 0 && strncmp(rest, "status/", 7) == 0 && !strchr(rest + 7, '/'))
        return status(rest + 7);
    if (strcmp(method, "GET") == 0 && strcmp(rest, "backend") == 0)
        return backend();
    return error(404, "no such path");
}

static const char *method_name(wasi_http_types_method_t *method) {
    static const char *const names[] = {
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    };
    return method->tag < sizeof names / sizeof names[0] ? names[method->tag] : "OTHER";
}

// blocking-write-and-flush takes at most this many bytes a call.
#define MAX_WRITE 4096

static void respond(exports_wasi_http_incoming_handler_own_response_outparam_t response_out,
                    const answer_t *answer) {
    wasi_http_types_tuple2_field_name_field_value_t content_type = {
        .f0 = {(uint8_t *)"content-type", strlen("content-type")},
        .f1 = {(uint8_t *)"application/json", strlen("application/json")},
    };
    wasi_http_types_list_tuple2_field_name_field_value_t header_list = {&content_type, 1};
    wasi_http_types_own_fields_t headers;
    wasi_http_types_header_error_t header_err;
    if (!wasi_http_types_static_fields_from_list(&header_list, &headers, &header_err))
        abort();
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t borrowed = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(borrowed, answer->status);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_response_body(borrowed, &body) ||
        !wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream))
        abort();
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false,
                                                                        .val.ok = response};
    wasi_http_types_static_response_outparam_set(response_out, &result);

    // HTTP forbids a body with these.
    bool bodiless = answer->status == 204 || answer->status == 205 || answer->status == 304;
    for (size_t done = 0; !bodiless && done < answer->json.len;) {
        size_t n = answer->json.len - done < MAX_WRITE ? answer->json.len - done : MAX_WRITE;
        proxy_list_u8_t chunk = {(uint8_t *)answer->json.ptr + done, n};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
                wasi_io_streams_borrow_output_stream(stream), &chunk, &err))
            abort();
        done += n;
    }
    wasi_io_streams_output_stream_drop_own(stream);  // before the body is finished
    wasi_http_types_error_code_t finish_err;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err))
        abort();
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_borrow_incoming_request_t borrowed =
        wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(borrowed, &method);
    proxy_string_t target = {0};
    wasi_http_types_method_incoming_request_path_with_query(borrowed, &target);
    // Split into path and query; without '?', the query is the empty string at the end.
    char *path = target.len ? strndup((char *)target.ptr, target.len) : strdup("/");
    char *query = path + strcspn(path, "?");
    if (*query == '?')
        *query++ = '\0';

    answer_t answer = route(borrowed, method_name(&method), path, query);
    wasi_http_types_incoming_request_drop_own(request);
    fprintf(stderr, "api-c: %s %.*s -> %d\n", method_name(&method), (int)target.len, (char *)target.ptr,
            answer.status);
    respond(response_out, &answer);

    free(answer.json.ptr);
    free(path);
    proxy_string_free(&target);
    wasi_http_types_method_free(&method);
}
