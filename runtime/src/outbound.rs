//! Outbound HTTP: what a function may call through
//! `wasi:http/outgoing-handler`, how the call is made, and the trace headers
//! it carries.
//!
//! - Deny by default. A function calls only the origins its manifest lists
//!   (`allowed_outbound_hosts`). The decision is made on the URI the host is
//!   about to connect to, never on a header: the `Host` header is rebuilt
//!   from that URI, so a forged one cannot widen the list, and wasi:http
//!   refuses absolute URLs in the path. A refused call fails in the guest
//!   with `HTTP-request-denied` and is logged.
//! - `http://self` is this host: a function that lists it may call the
//!   other functions of its host by path (`http://self/orders/7`). Only
//!   that entry allows it, never a wildcard. Such calls are served in
//!   process, by the host's own handler ([`OwnHost`]), as if they had come
//!   to its listener, without a connection. They carry how deep they are
//!   (`x-shoal-hops`), and one that would go deeper than [`MAX_SELF_HOPS`]
//!   is refused, so a function that calls itself, or a cycle of them, ends.
//! - One connection pool for the whole host, so calls reuse connections;
//!   a connect timeout and a first-byte timeout bound each call.
//! - The incoming request's trace headers (W3C `traceparent`/`tracestate`,
//!   `x-request-id`, B3, `x-ot-span-context`) are added to each call, unless
//!   the function set them itself, so mesh traces stay whole.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long a call may take to connect, unless it asks for less.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call may wait for the response head, unless it asks for less.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per origin.
const MAX_IDLE_PER_HOST: usize = 32;

/// How long an idle connection is kept.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The headers copied from the incoming request to every outbound call.
pub const PROPAGATED_HEADERS: [&str; 10] = [
    "traceparent",
    "tracestate",
    "x-request-id",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
];

/// The host name that means this host, in `http://self`.
const OWN_HOST: &str = "self";

/// The header that counts the calls to this host (`http://self`) that led
/// to a request: 1 on the first such call, one more on each call made while
/// serving it.
pub const SELF_HOPS_HEADER: &str = "x-shoal-hops";

/// How deep a chain of calls to this host may go: the call that would be
/// one deeper is refused.
pub const MAX_SELF_HOPS: u32 = 16;

static SELF_HOPS: HeaderName = HeaderName::from_static(SELF_HOPS_HEADER);

/// The body of a call to this host (`http://self`): the caller's request
/// body, as the host reads it, and the answer's, as the caller reads it.
pub type CallBody = WasiBody;

/// How a call's body can fail (the caller's request body, or the answer's:
/// the host answers a body that broke off with
/// [`CallError::HttpResponseIncomplete`]).
pub type CallError = Error;

/// The answer to a call to this host, to come.
pub type CallFuture = Pin<Box<dyn Future<Output = http::Response<CallBody>> + Send>>;

/// What answers the functions' calls to their own host (`http://self`) in
/// process: the host's handler of its public listener.
pub trait OwnHost: Send + Sync + 'static {
    /// The answer to `request`, which has an origin-form URI (the path and
    /// query) and the host's listening address in `Host`, as a request to
    /// that listener would.
    fn serve(&self, request: http::Request<CallBody>) -> CallFuture;
}

/// One entry of a function's `allowed_outbound_hosts`:
/// `scheme://host[:port]`. The scheme is `http`, `https` or `*`; the host is
/// a name, an IP address, `*.domain` (any subdomain of `domain`, not
/// `domain` itself) or `*` (any host); without a port, the scheme's default
/// port (80 or 443) is meant, and `:*` means any port. `http://self`, just
/// so, is this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<Scheme>,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.domain`: stored as `.domain`.
    Subdomain(String),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Default,
    Exact(u16),
    Any,
}

impl FromStr for OutboundRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "invalid outbound host `{text}`: {why} (write it like \"https://api.example.com\", \
                 \"http://localhost:8080\" or \"https://*.example.com\")"
            ))
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("it has no scheme");
        };
        let scheme = match scheme {
            "http" => Some(Scheme::HTTP),
            "https" => Some(Scheme::HTTPS),
            "*" => None,
            _ => return bad("the scheme must be http, https or *"),
        };
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return bad("it must be an origin, without path, query or user");
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal's colons are inside its brackets.
            Some((host, port)) if !port.contains(']') => {
                let port = match port {
                    "*" => PortPattern::Any,
                    port => match port.parse() {
                        Ok(port) => PortPattern::Exact(port),
                        Err(_) => return bad("the port must be a number or *"),
                    },
                };
                (host, port)
            }
            _ => (rest, PortPattern::Default),
        };
        if host.eq_ignore_ascii_case(OWN_HOST)
            && (scheme != Some(Scheme::HTTP) || port != PortPattern::Default)
        {
            return bad("this host is `http://self`, with no other scheme and no port");
        }
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if !is_host_name(domain) {
                return bad("a wildcard must be `*.domain`, with a valid domain");
            }
            HostPattern::Subdomain(format!(".{}", domain.to_ascii_lowercase()))
        } else if let Some(literal) = host.strip_prefix('[') {
            match literal.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
                Some(Ok(address)) => HostPattern::Exact(address.to_string()),
                _ => return bad("an IPv6 address must be written `[address]`"),
            }
        } else if host.contains('*') {
            return bad("a wildcard must be `*.domain` or `*`");
        } else if !is_host_name(host) {
            return bad("the host must be a name, an IP address or `[IPv6 address]`");
        } else {
            HostPattern::Exact(host.to_ascii_lowercase())
        };
        Ok(Self {
            scheme,
            host,
            port,
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl OutboundRule {
    fn allows(&self, scheme: &Scheme, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_ref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Exact(exact) => host == exact,
            // This host is allowed by its own entry only.
            _ if host == OWN_HOST => false,
            HostPattern::Subdomain(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Any => true,
        };
        let port_ok = match self.port {
            PortPattern::Default => Some(port) == default_port(scheme),
            PortPattern::Exact(exact) => port == exact,
            PortPattern::Any => true,
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A host name or IPv4 address: letters, digits, `-`, `_` and `.`.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A host as rules compare it: lowercase, and an IPv6 address without its
/// brackets and in its canonical form.
fn canonical_host(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<Ipv6Addr>() {
        Ok(address) => address.to_string(),
        Err(_) => bare.to_ascii_lowercase(),
    }
}

fn default_port(scheme: &Scheme) -> Option<u16> {
    if *scheme == Scheme::HTTP {
        Some(80)
    } else if *scheme == Scheme::HTTPS {
        Some(443)
    } else {
        None
    }
}

/// A function's outbound allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    rules: Vec<OutboundRule>,
}

impl OutboundPolicy {
    /// A policy allowing `rules`, and nothing else.
    pub fn new(rules: Vec<OutboundRule>) -> Self {
        Self { rules }
    }

    /// Whether no call at all is allowed.
    pub fn allows_none(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a call to `scheme://authority` is allowed.
    pub fn allows(&self, scheme: &Scheme, authority: &Authority) -> bool {
        let host = canonical_host(authority.host());
        let Some(port) = authority.port_u16().or_else(|| default_port(scheme)) else {
            return false;
        };
        self.rules
            .iter()
            .any(|rule| rule.allows(scheme, &host, port))
    }
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The host's outbound client: one connection pool for every function.
#[derive(Clone)]
pub(crate) struct OutboundClient {
    client: Client<HttpsConnector, WasiBody>,
    /// What serves `http://self`, once the host listens.
    own: Arc<OnceLock<Own>>,
}

/// This host, as its functions' calls to `http://self` reach it.
struct Own {
    /// Its listener's address: the calls' `Host`.
    host_header: HeaderValue,
    host: Arc<dyn OwnHost>,
}

impl OutboundClient {
    /// A client with pooled connections, HTTP/1.1 and HTTP/2 (ALPN), and
    /// TLS against the webpki root certificates.
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .build(https);
        Self {
            client,
            own: Arc::default(),
        }
    }

    /// Makes `http://self` reach `host`, which listens on `listening` (an
    /// unspecified address is named as loopback in the calls' `Host`). The
    /// first call wins.
    pub(crate) fn set_own_host(&self, listening: SocketAddr, host: Arc<dyn OwnHost>) {
        let ip = match listening.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let address = SocketAddr::new(ip, listening.port()).to_string();
        if let Ok(host_header) = HeaderValue::try_from(address) {
            let _ = self.own.set(Own { host_header, host });
        }
    }
}

/// What one store's outbound calls go through: the function's policy, the
/// shared client, and the incoming request's trace headers.
pub(crate) struct Outbound {
    pub(crate) function: Arc<str>,
    pub(crate) request_id: String,
    pub(crate) policy: Arc<OutboundPolicy>,
    pub(crate) client: OutboundClient,
    pub(crate) propagate: HeaderMap,
}

impl Outbound {
    /// The trace headers of `incoming` to carry onto outbound calls, and
    /// its [`SELF_HOPS_HEADER`], which calls to this host count on from.
    pub(crate) fn trace_headers(incoming: &HeaderMap) -> HeaderMap {
        // Names parsed once: looked up by `&str`, each would be parsed
        // again on every request.
        static NAMES: LazyLock<[HeaderName; PROPAGATED_HEADERS.len()]> =
            LazyLock::new(|| PROPAGATED_HEADERS.map(HeaderName::from_static));
        let mut headers = HeaderMap::new();
        for name in NAMES.iter() {
            for value in incoming.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(hops) = incoming.get(&SELF_HOPS) {
            headers.insert(SELF_HOPS.clone(), hops.clone());
        }
        headers
    }

    /// The calls to this host that led to the request served: its
    /// [`SELF_HOPS_HEADER`], 0 without one (a value that is not a count
    /// counts as the most, so that it cannot restart the count).
    fn self_hops(&self) -> u32 {
        self.propagate.get(&SELF_HOPS).map_or(0, |value| {
            value
                .to_str()
                .ok()
                .and_then(|hops| hops.parse().ok())
                .unwrap_or(MAX_SELF_HOPS)
        })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let Some(uri) = without_user_info(request.uri()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        if !self.policy.allows(scheme, authority) {
            tracing::warn!(
                function = %self.function,
                request_id = %self.request_id,
                target = %format!("{scheme}://{authority}"),
                "outbound call refused: not in the function's allowed_outbound_hosts"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        // `http://self` (allowed only as itself) is served by the host in
        // process, which a runtime outside a host does not have, and counts
        // how deep this call would be in a chain of calls to this host.
        if authority.host().eq_ignore_ascii_case(OWN_HOST) {
            return self.call_own_host(request, options);
        }
        let host = HeaderValue::from_str(authority.as_str()).ok();
        *request.uri_mut() = uri.clone();
        self.add_headers(request.headers_mut(), host);
        tracing::debug!(function = %self.function, request_id = %self.request_id, %uri, "outbound call");
        // The pool connects with its own timeout (`DEFAULT_CONNECT_TIMEOUT`);
        // the call's first-byte timeout bounds everything up to the head.
        let first_byte = first_byte_timeout(options);
        let client = self.client.client.clone();
        Box::new(async move {
            let response = match tokio::time::timeout(first_byte, client.request(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return Err(client_error(&error)),
                Err(_elapsed) => return Err(Error::HttpResponseTimeout),
            };
            let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
            Ok((response, nothing_after()))
        })
    }
}

impl Outbound {
    /// Sends `request`, to `http://self`, to the host's own handler.
    fn call_own_host(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> SendFuture {
        let hops = self.self_hops().saturating_add(1);
        if hops > MAX_SELF_HOPS {
            tracing::warn!(
                function = %self.function,
                request_id = %self.request_id,
                max = MAX_SELF_HOPS,
                "outbound call refused: too deep a chain of calls to this host (http://self)"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let Some(own) = self.client.own.get() else {
            tracing::warn!(
                function = %self.function,
                request_id = %self.request_id,
                "outbound call refused: http://self, but this runtime serves no listener"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        // As a request to the listener reads: the path and query, and the
        // listener's address in `Host`.
        let origin_form = request
            .uri()
            .path_and_query()
            .map_or_else(|| http::Uri::from_static("/"), |path| path.clone().into());
        tracing::debug!(function = %self.function, request_id = %self.request_id, uri = %origin_form, "outbound call to this host");
        *request.uri_mut() = origin_form;
        let headers = request.headers_mut();
        // The count is the host's: whatever the guest set is replaced.
        headers.insert(SELF_HOPS.clone(), HeaderValue::from(hops));
        self.add_headers(headers, Some(own.host_header.clone()));
        let first_byte = first_byte_timeout(options);
        let answer = own.host.serve(request);
        Box::new(async move {
            match tokio::time::timeout(first_byte, answer).await {
                Ok(response) => Ok((response, nothing_after())),
                Err(_elapsed) => Err(Error::HttpResponseTimeout),
            }
        })
    }

    /// Sets a call's `Host` to `host`, where the call goes, and adds the
    /// trace headers the guest did not set itself.
    fn add_headers(&self, headers: &mut HeaderMap, host: Option<HeaderValue>) {
        if let Some(host) = host {
            headers.insert(HOST, host);
        }
        for (name, value) in &self.propagate {
            if *name != SELF_HOPS && !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

/// How long a call may wait for its response head.
fn first_byte_timeout(options: Option<RequestOptions>) -> Duration {
    options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT)
}

/// What is left of a call once its response has come: nothing (its request
/// body is sent by the connection, or read by the host, as the call goes).
fn nothing_after() -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    Box::new(async { Ok(()) })
}

/// `uri` without user information (`user:password@`) in its authority:
/// credentials in a URL are never sent on, neither in the request line nor
/// in `Host`. `None` if what is left is not a valid URI.
fn without_user_info(uri: &http::Uri) -> Option<http::Uri> {
    let Some(authority) = uri.authority() else {
        return Some(uri.clone());
    };
    let Some((_, host)) = authority.as_str().rsplit_once('@') else {
        return Some(uri.clone());
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(host.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// The wasi:http error code for a failed call.
fn client_error(error: &hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;
    if error.is_connect() {
        let refused = error
            .source()
            .and_then(|e| e.source())
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        return if refused {
            Error::ConnectionRefused
        } else {
            Error::DestinationUnavailable
        };
    }
    Error::HttpProtocolError
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn allows(policy: &OutboundPolicy, url: &str) -> bool {
        let uri: http::Uri = url.parse().unwrap();
        policy.allows(uri.scheme().unwrap(), uri.authority().unwrap())
    }

    #[test]
    fn rules_match_scheme_host_and_port() {
        let p = policy(&[
            "https://api.example.com",
            "http://localhost:8080",
            "https://*.svc.local",
            "*://any.test:*",
        ]);
        assert!(allows(&p, "https://api.example.com/x"));
        assert!(allows(&p, "https://API.example.com:443/x"));
        assert!(!allows(&p, "http://api.example.com/x"), "scheme");
        assert!(!allows(&p, "https://api.example.com:8443/x"), "port");
        assert!(!allows(&p, "https://api.example.com.evil.io/x"), "suffix");
        assert!(allows(&p, "http://localhost:8080/"));
        assert!(!allows(&p, "http://localhost/"));
        assert!(allows(&p, "https://a.svc.local/"));
        assert!(allows(&p, "https://a.b.svc.local/"));
        assert!(
            !allows(&p, "https://svc.local/"),
            "*.domain is subdomains only"
        );
        assert!(!allows(&p, "https://evilsvc.local/"));
        assert!(allows(&p, "http://any.test:1234/"));
        assert!(allows(&p, "https://any.test/"));
        assert!(
            !allows(&policy(&[]), "https://api.example.com/"),
            "deny by default"
        );
        assert!(policy(&[]).allows_none());
        assert!(!p.allows_none());
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://x/path",
            "https://x:port",
            "https://a*b.com",
            "https://*.",
            "https://user@x",
            "http://[::1",
            "http://[::1]x",
            "http://[not-v6]",
            "http://a b",
            "http://a\tb:80",
            "http://a%20b",
        ] {
            assert!(bad.parse::<OutboundRule>().is_err(), "{bad} was accepted");
        }
        assert_eq!(
            "http://[::1]:8080".parse::<OutboundRule>().unwrap().port,
            PortPattern::Exact(8080)
        );
    }

    #[test]
    fn this_host_is_allowed_by_its_own_entry_only() {
        assert!(allows(&policy(&["http://self"]), "http://self/orders/7"));
        assert!(allows(&policy(&["http://SELF"]), "http://Self/"));
        for wide in ["http://*", "*://*:*"] {
            let p = policy(&[wide]);
            assert!(allows(&p, "http://example.com/"), "{wide}");
            assert!(!allows(&p, "http://self/"), "{wide} allowed this host");
        }
        assert!(!allows(&policy(&["http://self"]), "http://self:8080/"));
        assert!(!allows(&policy(&["http://self"]), "http://localhost/"));
        for bad in [
            "https://self",
            "*://self",
            "http://self:8080",
            "http://self:*",
        ] {
            let error = bad.parse::<OutboundRule>().unwrap_err();
            assert!(error.contains("`http://self`"), "{bad}: {error}");
        }
    }

    /// A host with no functions.
    struct NotFound;

    impl OwnHost for NotFound {
        fn serve(&self, _: http::Request<CallBody>) -> CallFuture {
            let body = http_body_util::Empty::new().map_err(|never| match never {});
            let mut response = http::Response::new(body.boxed_unsync());
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            Box::pin(async { response })
        }
    }

    #[test]
    fn this_host_is_named_by_its_listening_address() {
        for (listening, own) in [
            ("127.0.0.1:3000", "127.0.0.1:3000"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("10.1.2.3:80", "10.1.2.3:80"),
        ] {
            let client = OutboundClient::new();
            client.set_own_host(listening.parse().unwrap(), Arc::new(NotFound));
            client.set_own_host("192.0.2.1:1".parse().unwrap(), Arc::new(NotFound));
            let host_header = &client.own.get().unwrap().host_header;
            assert_eq!(host_header, own, "{listening}");
        }
    }

    #[tokio::test]
    async fn a_runtime_without_a_listener_refuses_calls_to_itself() {
        let mut outbound = Outbound {
            function: "caller".into(),
            request_id: "1".to_owned(),
            policy: Arc::new(policy(&["http://self"])),
            client: OutboundClient::new(),
            propagate: HeaderMap::new(),
        };
        let body = http_body_util::Empty::new().map_err(|never| match never {});
        let request = http::Request::get("http://self/x")
            .body(body.boxed_unsync())
            .unwrap();
        let sent = outbound.send_request(request, None, Box::new(async { Ok(()) }));
        let sent = Box::into_pin(sent).await;
        assert!(matches!(sent, Err(Error::HttpRequestDenied)));
    }

    #[test]
    fn ipv6_literals_match_in_any_spelling() {
        let p = policy(&["http://[::1]:8080", "https://[2001:DB8::1]"]);
        assert!(allows(&p, "http://[::1]:8080/"));
        assert!(allows(&p, "http://[0:0:0:0:0:0:0:1]:8080/"));
        assert!(!allows(&p, "http://[::2]:8080/"));
        assert!(!allows(&p, "http://[::1]:8081/"));
        assert!(allows(&p, "https://[2001:db8::1]/"));
        assert!(allows(&p, "https://[2001:db8:0::1]:443/"));
    }

    #[test]
    fn user_information_is_taken_out_of_a_url() {
        let uri: http::Uri = "http://user:secret@api.test:8080/x?y".parse().unwrap();
        let clean = without_user_info(&uri).unwrap();
        assert_eq!(clean, "http://api.test:8080/x?y");
        let plain: http::Uri = "http://api.test/x".parse().unwrap();
        assert_eq!(without_user_info(&plain).unwrap(), plain);
    }

    #[test]
    fn trace_headers_are_picked_from_the_incoming_request() {
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        incoming.insert("x-b3-traceid", HeaderValue::from_static("123"));
        incoming.insert("authorization", HeaderValue::from_static("secret"));
        incoming.append("tracestate", HeaderValue::from_static("a=1"));
        incoming.append("tracestate", HeaderValue::from_static("b=2"));
        let picked = Outbound::trace_headers(&incoming);
        assert_eq!(picked.len(), 4);
        assert_eq!(picked["traceparent"], "00-abc-def-01");
        assert_eq!(picked["x-b3-traceid"], "123");
        let states: Vec<_> = picked.get_all("tracestate").iter().collect();
        assert_eq!(states, ["a=1", "b=2"]);
        assert!(picked.get("authorization").is_none());
    }
}
