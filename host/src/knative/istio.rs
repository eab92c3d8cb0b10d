//! The Istio VirtualService (`networking.istio.io/v1`) that sends each
//! function's routes, under the gateway's prefix, to the Knative Service.
//!
//! One VirtualService for the whole host, not one per function: Istio
//! merges VirtualServices bound to the same gateway and host only loosely
//! (the order of their rules is not defined, and a conflict is settled by
//! whichever came first), and one object is written, applied and removed
//! as a whole, so a function dropped from the manifest leaves nothing
//! behind. Each match becomes its own HTTP rule, named after its function,
//! in the router's order of precedence (see `precedence`), so that the
//! rule Envoy picks, and names in its stats, is the function the host runs.
//!
//! How a route maps, with the gateway prefix `/faas/api` (the host must see
//! the path its router expects, so each match rewrites the prefix away):
//!
//! | route | matches | rewritten to |
//! |---|---|---|
//! | `/fn` (exact) | exact `/faas/api/fn` | `/fn` |
//! | `/fn/...` (wildcard) | exact `/faas/api/fn` | `/fn` |
//! |  | prefix `/faas/api/fn/` | `/fn/` |
//! | `/...` (everything) | exact `/faas/api` | `/` |
//! |  | prefix `/faas/api/` | `/` |
//!
//! A prefix match always ends in `/`, so `/fn/...` never takes `/fnord`,
//! as the host's router would not either. An exact route takes no
//! sub-paths, as in the router. Istio's `rewrite.uri` replaces the whole
//! path of an exact match and the matched part of a prefix match, and keeps
//! the query, so one rewrite cannot serve both kinds of match: hence one
//! rule per match. Every rule strips the same prefix and goes to the same
//! Service, so their order only names the rule; the host's router decides
//! which function serves.

use std::cmp::Reverse;
use std::collections::HashSet;

use serde::Serialize;

use super::service::ObjectMeta;
use super::{Gateway, Options, cluster_host};
use crate::manifest::Manifest;
use crate::router::RoutePattern;

/// Knative's cluster-local gateway, through which the mesh reaches a
/// cluster-local Knative Service.
pub const LOCAL_GATEWAY: &str = "knative-local-gateway.istio-system.svc.cluster.local";

/// The local gateway's HTTP port.
pub const LOCAL_GATEWAY_PORT: u16 = 80;

/// The rule name of routes given with `--route`, for functions deployed to
/// the running host.
pub const EXTRA_ROUTES_NAME: &str = "deployed";

/// An Istio VirtualService.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    /// `networking.istio.io/v1`.
    pub api_version: &'static str,
    /// `VirtualService`.
    pub kind: &'static str,
    /// Its name (the Service's), namespace and labels.
    pub metadata: ObjectMeta,
    /// Where it applies and what it sends where.
    pub spec: VirtualServiceSpec,
}

/// A VirtualService's spec.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualServiceSpec {
    /// The hosts it answers for.
    pub hosts: Vec<String>,
    /// The gateways it binds to.
    pub gateways: Vec<String>,
    /// Its rules, tried in order.
    pub http: Vec<HttpRoute>,
}

/// One rule: a match, its rewrite and its destination.
#[derive(Debug, Clone, Serialize)]
pub struct HttpRoute {
    /// The function it serves.
    pub name: String,
    /// The request paths it takes.
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// The path and authority the host sees.
    pub rewrite: HttpRewrite,
    /// The Knative local gateway.
    pub route: Vec<HttpRouteDestination>,
}

/// A request match, by path only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpMatchRequest {
    /// How the path must look.
    pub uri: StringMatch,
}

/// How a path matches; written as Istio's one-key map (`exact: /fn`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    /// This path exactly (the query aside).
    Exact(String),
    /// Paths starting so.
    Prefix(String),
}

impl Serialize for StringMatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, value) = match self {
            Self::Exact(path) => ("exact", path),
            Self::Prefix(path) => ("prefix", path),
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(key, value)?;
        map.end()
    }
}

/// What a rule rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpRewrite {
    /// The path, or the matched prefix of it; none when the gateway adds
    /// no prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The Knative Service's cluster host, by which the local gateway
    /// routes.
    pub authority: String,
}

/// A weighted destination (the only one).
#[derive(Debug, Clone, Serialize)]
pub struct HttpRouteDestination {
    /// Where requests go.
    pub destination: Destination,
}

/// A service and port.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    /// The service's host name.
    pub host: &'static str,
    /// Its port.
    pub port: PortSelector,
}

/// A port by number.
#[derive(Debug, Clone, Serialize)]
pub struct PortSelector {
    /// The port.
    pub number: u16,
}

impl VirtualService {
    /// The VirtualService sending `manifest`'s routes, and the extra ones,
    /// under the gateway's prefix to the Service `options` describe.
    pub fn new(manifest: &Manifest, options: &Options, gateway: &Gateway) -> Self {
        let authority = cluster_host(options);
        let named_routes = manifest
            .functions
            .iter()
            .flat_map(|f| f.routes.iter().map(|route| (f.name.as_str(), route)))
            .chain(
                gateway
                    .extra_routes
                    .iter()
                    .map(|route| (EXTRA_ROUTES_NAME, route)),
            );
        let mut matches: Vec<_> = named_routes
            .flat_map(|(name, route)| {
                rules(gateway.prefix.as_str(), route)
                    .into_iter()
                    .map(move |(uri, rewrite)| (precedence(route, &uri), name, uri, rewrite))
            })
            .collect();
        matches.sort_by_key(|(precedence, ..)| *precedence);
        let mut sent = HashSet::new();
        let http = matches
            .into_iter()
            // `/fn` and `/fn/...` both match `/faas/api/fn` exactly: once
            // is enough, as both send it to the same place.
            .filter(|(_, _, uri, _)| sent.insert(uri.clone()))
            .map(|(_, name, uri, rewrite)| HttpRoute {
                name: name.to_owned(),
                matches: vec![HttpMatchRequest { uri }],
                rewrite: HttpRewrite {
                    uri: rewrite,
                    authority: authority.clone(),
                },
                route: vec![HttpRouteDestination {
                    destination: Destination {
                        host: LOCAL_GATEWAY,
                        port: PortSelector {
                            number: LOCAL_GATEWAY_PORT,
                        },
                    },
                }],
            })
            .collect();
        Self {
            api_version: "networking.istio.io/v1",
            kind: "VirtualService",
            metadata: ObjectMeta::named(options),
            spec: VirtualServiceSpec {
                hosts: gateway.hosts.clone(),
                gateways: gateway.gateways.clone(),
                http,
            },
        }
    }
}

/// Where a match goes in the VirtualService: first the exact routes, then
/// the exact matches of wildcard routes, then prefixes, longest first. This
/// is the router's own order (an exact route beats a wildcard, the longest
/// wildcard wins), so the rule Envoy picks, and names in its stats, is the
/// function the host will run; and no prefix hides a later one, which
/// Istio would warn of.
fn precedence(route: &RoutePattern, uri: &StringMatch) -> (u8, Reverse<usize>) {
    match (route, uri) {
        (RoutePattern::Exact(_), _) => (0, Reverse(0)),
        (RoutePattern::Prefix(_), StringMatch::Exact(_)) => (1, Reverse(0)),
        (RoutePattern::Prefix(_), StringMatch::Prefix(prefix)) => (2, Reverse(prefix.len())),
    }
}

/// The matches that send `route` under `prefix` (empty, or `/a/b`), each
/// with the path it is rewritten to (`None` when there is no prefix to
/// take away).
pub fn rules(prefix: &str, route: &RoutePattern) -> Vec<(StringMatch, Option<String>)> {
    let rewrite = |to: &str| (!prefix.is_empty()).then(|| to.to_owned());
    match route {
        // The root alone: the gateway's prefix with or without its `/`.
        RoutePattern::Exact(path) if path == "/" => {
            let mut rules = vec![(StringMatch::Exact(format!("{prefix}/")), rewrite("/"))];
            if !prefix.is_empty() {
                rules.push((StringMatch::Exact(prefix.to_owned()), rewrite("/")));
            }
            rules
        }
        RoutePattern::Exact(path) => {
            vec![(StringMatch::Exact(format!("{prefix}{path}")), rewrite(path))]
        }
        RoutePattern::Prefix(path) => {
            let whole = format!("{prefix}{path}");
            let mut rules = Vec::with_capacity(2);
            if !whole.is_empty() {
                let own = if path.is_empty() { "/" } else { path };
                rules.push((StringMatch::Exact(whole.clone()), rewrite(own)));
            }
            rules.push((
                StringMatch::Prefix(format!("{whole}/")),
                rewrite(&format!("{path}/")),
            ));
            rules
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{manifest, options};
    use super::*;

    fn route(text: &str) -> RoutePattern {
        RoutePattern::try_from(text.to_owned()).unwrap()
    }

    fn exact(path: &str) -> StringMatch {
        StringMatch::Exact(path.to_owned())
    }

    fn prefix(path: &str) -> StringMatch {
        StringMatch::Prefix(path.to_owned())
    }

    fn to(path: &str) -> Option<String> {
        Some(path.to_owned())
    }

    #[test]
    fn each_route_form_maps_to_matches_that_strip_the_prefix() {
        let p = "/faas/api";
        assert_eq!(
            rules(p, &route("/fn")),
            [(exact("/faas/api/fn"), to("/fn"))]
        );
        assert_eq!(
            rules(p, &route("/api/users/...")),
            [
                (exact("/faas/api/api/users"), to("/api/users")),
                (prefix("/faas/api/api/users/"), to("/api/users/")),
            ]
        );
        assert_eq!(
            rules(p, &route("/...")),
            [
                (exact("/faas/api"), to("/")),
                (prefix("/faas/api/"), to("/"))
            ]
        );
        assert_eq!(
            rules(p, &route("/")),
            [
                (exact("/faas/api/"), to("/")),
                (exact("/faas/api"), to("/"))
            ]
        );
    }

    #[test]
    fn without_a_prefix_paths_pass_unchanged() {
        assert_eq!(rules("", &route("/fn")), [(exact("/fn"), None)]);
        assert_eq!(
            rules("", &route("/fn/...")),
            [(exact("/fn"), None), (prefix("/fn/"), None)]
        );
        assert_eq!(rules("", &route("/...")), [(prefix("/"), None)]);
        assert_eq!(rules("", &route("/")), [(exact("/"), None)]);
    }

    /// What an Istio rule does to a path: `None` if it does not match, else
    /// the path the host sees.
    fn apply(rule: &(StringMatch, Option<String>), path: &str) -> Option<String> {
        let (matched, rewrite) = rule;
        let rest = match matched {
            StringMatch::Exact(whole) => (path == whole).then_some("")?,
            StringMatch::Prefix(start) => path.strip_prefix(start.as_str())?,
        };
        Some(match rewrite {
            Some(to) => format!("{to}{rest}"),
            None => path.to_owned(),
        })
    }

    #[test]
    fn the_host_sees_the_path_its_router_would_match_and_no_other() {
        let manifest = manifest(
            r#"
[[function]]
name = "fn"
component = "fn.wasm"
routes = ["/fn", "/api/users/..."]
"#,
        );
        let routes = &manifest.functions[0].routes;
        let all: Vec<_> = routes.iter().flat_map(|r| rules("/faas/api", r)).collect();
        let seen = |path: &str| all.iter().find_map(|rule| apply(rule, path));
        assert_eq!(seen("/faas/api/fn").as_deref(), Some("/fn"));
        assert_eq!(seen("/faas/api/fn/x"), None);
        assert_eq!(seen("/faas/api/fnord"), None);
        assert_eq!(seen("/faas/api/api/users").as_deref(), Some("/api/users"));
        assert_eq!(
            seen("/faas/api/api/users/7").as_deref(),
            Some("/api/users/7")
        );
        assert_eq!(seen("/faas/api/api/usersX"), None);
        assert_eq!(seen("/fn"), None);
    }

    #[test]
    fn one_rule_per_match_each_match_once_named_after_its_function_then_the_extra_routes() {
        let manifest = manifest(
            r#"
[[function]]
name = "a"
component = "a.wasm"
routes = ["/a"]

[[function]]
name = "b"
component = "b.wasm"
routes = ["/b/...", "/b"]
"#,
        );
        let mut options = options(Some("/faas/api"));
        let gateway = options.gateway.as_mut().unwrap();
        gateway.extra_routes = vec![route("/uploads/...")];
        let gateway = gateway.clone();
        let vs = VirtualService::new(&manifest, &options, &gateway);
        let names: Vec<&str> = vs.spec.http.iter().map(|r| r.name.as_str()).collect();
        // Exact routes, exact matches of wildcards, then prefixes longest
        // first.
        assert_eq!(names, ["a", "b", "deployed", "deployed", "b"]);
        for rule in &vs.spec.http {
            assert_eq!(rule.rewrite.authority, "shop.apps.svc.cluster.local");
            assert_eq!(rule.route[0].destination.host, LOCAL_GATEWAY);
            assert_eq!(rule.route[0].destination.port.number, 80);
        }
        assert_eq!(vs.spec.http[2].matches[0].uri, exact("/faas/api/uploads"));
        assert_eq!(vs.spec.http[3].matches[0].uri, prefix("/faas/api/uploads/"));
        assert_eq!(vs.metadata.name.as_deref(), Some("shop"));
        assert_eq!(
            vs.spec.gateways,
            ["knative-serving/knative-ingress-gateway"]
        );
        assert_eq!(vs.spec.hosts, ["*"]);
    }

    #[test]
    fn the_first_rule_to_match_is_the_function_the_router_picks() {
        let manifest = manifest(
            r#"
[[function]]
name = "root"
component = "f.wasm"
routes = ["/..."]

[[function]]
name = "api"
component = "f.wasm"
routes = ["/api/..."]

[[function]]
name = "users"
component = "f.wasm"
routes = ["/api/users/..."]

[[function]]
name = "me"
component = "f.wasm"
routes = ["/api/users/me", "/"]
"#,
        );
        let options = options(Some("/faas/api"));
        let vs = VirtualService::new(&manifest, &options, options.gateway.as_ref().unwrap());
        let router = crate::router::Router::new(
            manifest
                .functions
                .iter()
                .flat_map(|f| f.routes.iter().map(|r| (r.clone(), f.name.as_str()))),
        )
        .unwrap();
        for path in [
            "/",
            "/x",
            "/api",
            "/api/",
            "/api/x",
            "/apix",
            "/api/users",
            "/api/users/",
            "/api/users/7",
            "/api/usersx",
            "/api/users/me",
            "/api/users/me/x",
        ] {
            let first = vs.spec.http.iter().find_map(|rule| {
                let sent = (rule.matches[0].uri.clone(), rule.rewrite.uri.clone());
                apply(&sent, &format!("/faas/api{path}")).map(|seen| (&rule.name, seen))
            });
            let (name, seen) = first.unwrap_or_else(|| panic!("{path} is not sent"));
            assert_eq!(seen, path);
            assert_eq!(Some(&name.as_str()), router.lookup(path), "{path}");
        }
        // No prefix hides a later one (Istio warns of that).
        let prefixes: Vec<&str> = vs
            .spec
            .http
            .iter()
            .filter_map(|rule| match &rule.matches[0].uri {
                StringMatch::Prefix(p) => Some(p.as_str()),
                StringMatch::Exact(_) => None,
            })
            .collect();
        for (i, earlier) in prefixes.iter().enumerate() {
            for later in &prefixes[i + 1..] {
                assert!(!later.starts_with(earlier), "{earlier} hides {later}");
            }
        }
    }
}
