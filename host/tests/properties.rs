//! Property tests: the manifest parser never panics, whatever it is given,
//! and the router agrees with a simple reference model of routing.

use std::path::Path;

use proptest::prelude::*;
use shoal_host::manifest::Manifest;
use shoal_host::router::{RoutePattern, Router};

/// Routing as the README states it, by brute force: an exact route wins;
/// otherwise the longest wildcard whose prefix is the path or a
/// `/`-bounded ancestor of it.
fn reference_lookup(routes: &[(RoutePattern, usize)], path: &str) -> Option<usize> {
    if let Some((_, target)) = routes
        .iter()
        .find(|(route, _)| matches!(route, RoutePattern::Exact(p) if p == path))
    {
        return Some(*target);
    }
    routes
        .iter()
        .filter_map(|(route, target)| match route {
            RoutePattern::Prefix(prefix)
                if path == prefix
                    || (path.starts_with(prefix.as_str())
                        && path[prefix.len()..].starts_with('/')) =>
            {
                Some((prefix.len(), *target))
            }
            _ => None,
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, target)| target)
}

/// Paths from a small alphabet, so that routes and paths collide often.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["a", "b", "ab", ""], 0..4).prop_map(|segments| {
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            path.push_str(&segment);
        }
        if path.is_empty() {
            "/".to_owned()
        } else {
            path
        }
    })
}

fn route() -> impl Strategy<Value = String> {
    (path(), any::<bool>()).prop_map(|(path, wildcard)| {
        if !wildcard {
            return path;
        }
        let base = path.trim_end_matches('/');
        format!("{base}/...")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_router_matches_the_reference_model(routes in prop::collection::vec(route(), 0..8), paths in prop::collection::vec(path(), 1..16)) {
        // Keep the first claim of each route: duplicates are conflicts.
        let mut unique: Vec<(RoutePattern, usize)> = Vec::new();
        for (target, text) in routes.iter().enumerate() {
            let Ok(pattern) = RoutePattern::try_from(text.clone()) else { continue };
            if unique.iter().all(|(p, _)| *p != pattern) {
                unique.push((pattern, target));
            }
        }
        let router = Router::new(unique.clone()).expect("no duplicates were kept");
        for path in paths {
            prop_assert_eq!(router.lookup(&path).copied(), reference_lookup(&unique, &path), "path {}", path);
        }
    }

    #[test]
    fn a_route_claimed_twice_is_always_a_conflict(route in route(), others in prop::collection::vec(route(), 0..4)) {
        let Ok(pattern) = RoutePattern::try_from(route) else { return Ok(()) };
        let mut routes: Vec<(RoutePattern, usize)> = others
            .into_iter()
            .filter_map(|r| RoutePattern::try_from(r).ok())
            .filter(|p| *p != pattern)
            .enumerate()
            .map(|(i, p)| (p, i + 2))
            .collect();
        routes.dedup_by(|a, b| a.0 == b.0);
        let mut seen = std::collections::HashSet::new();
        routes.retain(|(p, _)| seen.insert(p.clone()));
        routes.insert(0, (pattern.clone(), 0));
        routes.push((pattern.clone(), 1));
        let conflict = Router::new(routes).unwrap_err();
        prop_assert_eq!(conflict.pattern, pattern);
        prop_assert_eq!((conflict.first, conflict.second), (0, 1));
    }

    #[test]
    fn route_patterns_never_panic_and_print_back_to_themselves(text in ".{0,40}") {
        if let Ok(pattern) = RoutePattern::try_from(text) {
            let printed = pattern.to_string();
            prop_assert_eq!(RoutePattern::try_from(printed), Ok(pattern));
        }
    }

    #[test]
    fn the_manifest_parser_never_panics_on_any_text(text in "(?s).{0,300}") {
        let _ = Manifest::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn the_manifest_parser_never_panics_on_near_manifests(
        name in prop::sample::select(vec!["\"hello\"", "\"Hello\"", "\"\"", "1", "\"a-b_c\"", "[]"]),
        routes in prop::sample::select(vec!["[\"/a\"]", "[]", "\"/a\"", "[\"/a\", \"/a\"]", "[\"a\"]", "[\"/a/...\", \"/...\"]", "[1]"]),
        extra in prop::sample::select(vec![
            "", "env = { A = \"1\" }", "env = { \"=\" = \"x\" }", "timeout = \"0s\"", "timeout = \"5\"",
            "memory = \"1 TiB\"", "memory = \"lots\"", "max_concurrency = 0", "min_instances = -1",
            "bogus = true", "max_body = 12", "idle_timeout = \"1h\"", "max_instance_reuse = 3",
        ]),
        twice in any::<bool>(),
    ) {
        let table = format!("[[function]]\nname = {name}\ncomponent = \"a.wasm\"\nroutes = {routes}\n{extra}\n");
        let text = if twice { format!("{table}\n{table}") } else { table };
        match Manifest::parse(&text, Path::new("fuzz.toml")) {
            Ok(manifest) => prop_assert!(!manifest.functions.is_empty()),
            // Every refusal names the file and a line.
            Err(error) => prop_assert!(error.to_string().starts_with("fuzz.toml:"), "{}", error),
        }
    }
}
