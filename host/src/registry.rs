//! The functions a host serves and the route table that finds them.

use std::sync::Arc;

use shoal_runtime::{Function, FunctionSpec, LoadError, Provenance, Runtime};

use crate::manifest::{FunctionDecl, Manifest};
use crate::router::Router;

/// Every function of the manifest, loaded, behind its routes.
pub struct Registry {
    router: Router<Arc<Function>>,
    len: usize,
}

impl Registry {
    /// Loads every function of `manifest` (compiling or mapping its
    /// artifact) and builds the route table. Stops at the first function
    /// that cannot be loaded.
    pub fn load(runtime: &Runtime, manifest: &Manifest) -> Result<Self, LoadError> {
        let mut routes = Vec::new();
        for decl in &manifest.functions {
            let function = Arc::new(runtime.load(spec(decl))?);
            let report = function.load_report();
            let how = match report.provenance {
                Provenance::Compiled => "compiled",
                Provenance::Cached => "loaded from the artifact cache",
                Provenance::Recompiled => "compiled again (the cached artifact was unusable)",
            };
            tracing::info!(
                function = %decl.name,
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                routes = ?decl.routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "function {how}"
            );
            routes.extend(decl.routes.iter().map(|r| (r.clone(), function.clone())));
        }
        let router = Router::new(routes).unwrap_or_else(|conflict| {
            // `Manifest::parse` has already refused every conflict.
            unreachable!(
                "route {} conflicts after the manifest was checked",
                conflict.pattern
            )
        });
        Ok(Self {
            router,
            len: manifest.functions.len(),
        })
    }

    /// The function serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Arc<Function>> {
        self.router.lookup(path)
    }

    /// How many functions are registered.
    pub fn function_count(&self) -> usize {
        self.len
    }
}

fn spec(decl: &FunctionDecl) -> FunctionSpec {
    FunctionSpec {
        name: decl.name.to_string(),
        component: decl.component.clone(),
        env: decl
            .env
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
            .collect(),
    }
}
