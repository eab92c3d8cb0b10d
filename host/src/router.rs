//! Which function serves a path.
//!
//! A route is exact (`/hello`) or a trailing wildcard (`/api/users/...`),
//! which matches `/api/users` and everything below it, segment-wise:
//! `/api/users/7` but not `/api/usersX`. `/...` matches every path.
//! An exact route beats every wildcard; among wildcards the longest wins.
//! Paths are matched as they arrive, still percent-encoded.
//!
//! The table is built once and checked for conflicts; a lookup is one hash
//! probe for the exact routes plus one per `/` in the path.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::Deserialize;

/// The suffix that makes a route a wildcard.
const WILDCARD: &str = "/...";

/// A route a function is served at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum RoutePattern {
    /// Exactly this path.
    Exact(String),
    /// This path and every path below it; stored without the `/...`, so
    /// `/...` itself is the empty prefix.
    Prefix(String),
}

impl TryFrom<String> for RoutePattern {
    type Error = String;

    fn try_from(route: String) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid route `{route}`: {why}"));
        if !route.starts_with('/') {
            return bad("it must start with `/`");
        }
        if route
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return bad("it must be a path, without spaces, `?` or `#`");
        }
        let (path, wildcard) = match route.strip_suffix(WILDCARD) {
            Some(prefix) => (prefix, true),
            None => (route.as_str(), false),
        };
        if path.contains("...") {
            return bad("`...` may only end a route, as `/...`");
        }
        if path.contains("//") {
            return bad("it has an empty segment (`//`)");
        }
        let path = path.to_owned();
        Ok(if wildcard {
            Self::Prefix(path)
        } else {
            Self::Exact(path)
        })
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => f.write_str(path),
            Self::Prefix(prefix) => write!(f, "{prefix}{WILDCARD}"),
        }
    }
}

/// The route that matched a path, printed as the manifest writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    /// An exact route.
    Exact(&'a str),
    /// A wildcard route, by its prefix.
    Prefix(&'a str),
}

impl fmt::Display for RouteMatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => f.write_str(path),
            Self::Prefix(prefix) => write!(f, "{prefix}{WILDCARD}"),
        }
    }
}

/// Two routes that are the same; `first` and `second` are their targets
/// in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict<T> {
    /// The route both claim.
    pub pattern: RoutePattern,
    /// The target that claimed it first.
    pub first: T,
    /// The target that claimed it again.
    pub second: T,
}

/// The route table.
#[derive(Debug, Clone)]
pub struct Router<T> {
    exact: HashMap<String, T>,
    prefix: HashMap<String, T>,
}

impl<T: Clone> Router<T> {
    /// Builds the table; the same route given twice is a conflict.
    pub fn new(
        routes: impl IntoIterator<Item = (RoutePattern, T)>,
    ) -> Result<Self, RouteConflict<T>> {
        let mut router = Self {
            exact: HashMap::new(),
            prefix: HashMap::new(),
        };
        for (pattern, target) in routes {
            let (table, key) = match &pattern {
                RoutePattern::Exact(path) => (&mut router.exact, path.clone()),
                RoutePattern::Prefix(prefix) => (&mut router.prefix, prefix.clone()),
            };
            match table.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(target);
                }
                Entry::Occupied(taken) => {
                    return Err(RouteConflict {
                        pattern,
                        first: taken.get().clone(),
                        second: target,
                    });
                }
            }
        }
        Ok(router)
    }

    /// The target serving `path`, if any.
    pub fn lookup(&self, path: &str) -> Option<&T> {
        self.find(path).map(|(_, target)| target)
    }

    /// The target serving `path`, if any, and the route that matched.
    pub fn find<'p>(&self, path: &'p str) -> Option<(RouteMatch<'p>, &T)> {
        if let Some(target) = self.exact.get(path) {
            return Some((RouteMatch::Exact(path), target));
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(target) = self.prefix.get(candidate) {
                return Some((RouteMatch::Prefix(candidate), target));
            }
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(s: &str) -> RoutePattern {
        RoutePattern::try_from(s.to_owned()).unwrap()
    }

    fn router(routes: &[(&str, &'static str)]) -> Router<&'static str> {
        Router::new(routes.iter().map(|&(r, t)| (route(r), t))).unwrap()
    }

    #[test]
    fn exact_beats_wildcard_and_the_longest_wildcard_wins() {
        let r = router(&[
            ("/...", "root"),
            ("/api/...", "api"),
            ("/api/users/...", "users"),
            ("/api/users/me", "me"),
        ]);
        assert_eq!(r.lookup("/api/users/me"), Some(&"me"));
        assert_eq!(r.lookup("/api/users/7"), Some(&"users"));
        assert_eq!(r.lookup("/api/users"), Some(&"users"));
        assert_eq!(r.lookup("/api/usersX"), Some(&"api"));
        assert_eq!(r.lookup("/api"), Some(&"api"));
        assert_eq!(r.lookup("/other"), Some(&"root"));
        assert_eq!(r.lookup("/"), Some(&"root"));
        let (matched, _) = r.find("/api/users/7").unwrap();
        assert_eq!(matched.to_string(), "/api/users/...");
        assert_eq!(
            r.find("/api/users/me").unwrap().0.to_string(),
            "/api/users/me"
        );
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let r = router(&[("/hello", "hello"), ("/api/...", "api")]);
        assert_eq!(r.lookup("/hello/x"), None);
        assert_eq!(r.lookup("/hell"), None);
        assert_eq!(r.lookup("/"), None);
        assert_eq!(r.lookup("/apis"), None);
    }

    #[test]
    fn the_same_route_twice_is_a_conflict() {
        let conflict = Router::new([(route("/a/..."), 1), (route("/a"), 2), (route("/a/..."), 3)])
            .unwrap_err();
        assert_eq!(
            conflict,
            RouteConflict {
                pattern: route("/a/..."),
                first: 1,
                second: 3
            }
        );
    }

    #[test]
    fn malformed_routes_are_refused() {
        for bad in [
            "", "hello", "/a b", "/a?b", "/a/.../b", "/a...", "//a", "/a#b",
        ] {
            assert!(
                RoutePattern::try_from(bad.to_owned()).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(route("/..."), RoutePattern::Prefix(String::new()));
        assert_eq!(route("/a/b/...").to_string(), "/a/b/...");
    }
}
