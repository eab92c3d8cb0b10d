//! Knative's probes, answered by the host itself.
//!
//! Knative checks a revision's container through its queue-proxy, which
//! sends `K-Kubelet-Probe: queue`, and the kubelet sends a `kube-probe/...`
//! user agent; `K-Network-Probe` marks the mesh's and the activator's own
//! checks. None of them is a request for a function: the host answers them
//! without routing, without waking a function and without counting them as
//! traffic (scale to zero is unaffected), ready once every component has
//! compiled.

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::body::HostBody;

/// The header Knative's queue-proxy puts on its probes of the container.
const KUBELET_PROBE: &str = "k-kubelet-probe";

/// The header of Knative's network probes.
const NETWORK_PROBE: &str = "k-network-probe";

/// The user agent prefix of the kubelet's HTTP probes.
const KUBE_PROBE_AGENT: &[u8] = b"kube-probe/";

/// Whether `request` is one of Knative's or the kubelet's probes.
pub fn is_probe<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(KUBELET_PROBE)
        || headers.contains_key(NETWORK_PROBE)
        || headers
            .get(header::USER_AGENT)
            .is_some_and(|agent| agent.as_bytes().starts_with(KUBE_PROBE_AGENT))
}

/// The answer to a probe: 200 once every component has compiled, 503 (with
/// a `Retry-After`) before.
pub fn answer(ready: bool) -> Response<HostBody> {
    let (status, text) = if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: components are still compiling\n",
        )
    };
    let mut response = Response::new(HostBody::text(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !ready {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, value: &str) -> Request<()> {
        Request::builder()
            .uri("/")
            .header(name, value)
            .body(())
            .unwrap()
    }

    #[test]
    fn knatives_and_the_kubelets_probes_are_recognised_and_nothing_else() {
        assert!(is_probe(&request("K-Kubelet-Probe", "queue")));
        assert!(is_probe(&request("K-Network-Probe", "probe")));
        assert!(is_probe(&request("User-Agent", "kube-probe/1.31")));
        assert!(!is_probe(&request(
            "User-Agent",
            "curl/8.5 kube-probe/1.31"
        )));
        assert!(!is_probe(&request("K-Proxy-Request", "activator")));
        assert!(!is_probe(&request("X-Kubelet-Probe", "queue")));
    }

    #[test]
    fn a_probe_is_answered_503_until_ready() {
        assert_eq!(answer(false).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer(false).headers().contains_key(header::RETRY_AFTER));
        assert_eq!(answer(true).status(), StatusCode::OK);
    }
}
