//! The manifest: which functions a host serves, from which components, at
//! which routes.
//!
//! ```toml
//! [[function]]
//! name = "hello"                 # [a-z0-9-_], at most 63 characters
//! component = "hello.wasm"       # relative to this file
//! routes = ["/hello", "/api/hello/..."]
//! events = [{ type = "com.example.order.*", source = "/shop" }]  # CloudEvents it takes
//! env = { GREETING = "hi" }      # the only variables the guest sees
//! idle_timeout = "5m"            # scale to zero after this long unused
//! min_instances = 0              # 1 keeps it warm
//! max_instance_reuse = 1         # >1: one instance serves that many requests
//! memory = "256MiB"              # linear memory per instance
//! timeout = "60s"                # per request
//! max_concurrency = 100          # requests at once
//! max_queue = 100                # requests waiting; past it, 503
//! queue_timeout = "5s"           # longest wait; past it, 503
//! max_body = "32MiB"             # request body; past it, 413
//! allowed_outbound_hosts = ["https://api.example.com"]  # deny by default
//! build = { command = "cargo build --release --target wasm32-wasip2",
//!           workdir = "hello", watch = ["src/**/*.rs"] }    # host run --build
//! ```
//!
//! Parsing produces types that cannot hold a bad value ([`FunctionName`],
//! [`RoutePattern`], [`EnvName`]); unknown fields are errors. Every error
//! names the file, the line and column, and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use serde::Deserialize;
use toml::Spanned;

use shoal_runtime::{
    DEFAULT_MAX_BODY, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, EPOCH_TICK, Limits, OutboundPolicy,
    OutboundRule,
};

use crate::admission::{
    DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT, GateLimits,
};
use crate::build::{self, BuildSpec};
use crate::events::Trigger;
use crate::router::RoutePattern;

/// The longest function name: a DNS label, so names can become Kubernetes
/// and metric label values unchanged.
pub const MAX_NAME_LEN: usize = 63;

/// A parsed, checked manifest.
#[derive(Debug)]
pub struct Manifest {
    /// The functions, in the order declared; shared with the registry's
    /// sources, which hold them as long as they serve.
    pub functions: Vec<Arc<FunctionDecl>>,
}

/// One declared function.
#[derive(Debug, Clone)]
pub struct FunctionDecl {
    /// Its unique name.
    pub name: FunctionName,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    /// Where it is served.
    pub routes: Vec<RoutePattern>,
    /// The CloudEvents it takes, at the host's events path.
    pub events: Vec<Trigger>,
    /// The only environment variables the guest sees.
    pub env: BTreeMap<EnvName, String>,
    /// How long it stays warm without requests; `None` takes the host's
    /// default.
    pub idle_timeout: Option<Duration>,
    /// Above 0, the function is kept warm and never scales to zero.
    pub min_instances: u32,
    /// How many requests one instance serves, one after the other: 1, a
    /// fresh instance per request, unless the function opts into reuse.
    pub max_instance_reuse: NonZeroU32,
    /// Memory, time and request body size per request.
    pub limits: Limits,
    /// Requests at once, and how many may wait, for how long.
    pub gate: GateLimits,
    /// The origins it may call; none unless listed.
    pub outbound: OutboundPolicy,
    /// How to build its component from its sources, if the manifest says.
    pub build: Option<BuildSpec>,
}

impl FunctionDecl {
    /// A function with no environment and the host's default scaling.
    pub fn new(name: FunctionName, component: PathBuf, routes: Vec<RoutePattern>) -> Self {
        Self {
            name,
            component,
            routes,
            events: Vec::new(),
            env: BTreeMap::new(),
            idle_timeout: None,
            min_instances: 0,
            max_instance_reuse: NonZeroU32::MIN,
            limits: Limits::default(),
            gate: GateLimits::default(),
            outbound: OutboundPolicy::default(),
            build: None,
        }
    }
}

/// A manifest that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}: {source}", file.display())]
    Read {
        /// The manifest file.
        file: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("{}:{line}:{column}: {message}\n{excerpt}", file.display())]
    Invalid {
        /// The manifest file.
        file: PathBuf,
        /// 1-based line of the offending field.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// The offending line, with a marker under the field.
        excerpt: String,
    },
}

impl Manifest {
    /// Reads and checks the manifest at `file`.
    pub fn load(file: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Parses and checks manifest text; `file` names it in errors and
    /// anchors relative component paths.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ManifestError> {
        let invalid = |span: Range<usize>, message: String| invalid(file, text, span, message);
        let raw = RawManifest::parse(text).map_err(|(span, message)| invalid(span, message))?;

        if raw.function.is_empty() {
            return Err(invalid(
                0..0,
                "the manifest declares no functions: add a `[[function]]` table".to_owned(),
            ));
        }

        let base = file.parent().unwrap_or(Path::new(""));
        let mut names: HashMap<&FunctionName, usize> = HashMap::with_capacity(raw.function.len());
        // Each route with the function that claimed it first: the same
        // route twice is the one conflict a route table has (an exact
        // route and a wildcard of the same path are different routes).
        let mut claimed: HashMap<&RoutePattern, &FunctionName> =
            HashMap::with_capacity(raw.function.len());
        let mut functions = Vec::with_capacity(raw.function.len());
        for decl in &raw.function {
            let name = decl.name.get_ref();
            if let Some(&first) = names.get(name) {
                return Err(invalid(
                    decl.name.span(),
                    format!(
                        "field `name`: function `{name}` is declared twice (first on line {})",
                        line_of(text, first),
                    ),
                ));
            }
            names.insert(name, decl.name.span().start);
            check_routes(decl, name, &invalid)?;
            for route in decl.routes() {
                let Some(&first) = claimed.get(route.get_ref()) else {
                    claimed.insert(route.get_ref(), name);
                    continue;
                };
                let pattern = route.get_ref();
                let message = if first == name {
                    format!("field `routes`: function `{name}` lists route `{pattern}` twice")
                } else {
                    format!(
                        "field `routes`: route `{pattern}` of function `{name}` is already taken by function `{first}`"
                    )
                };
                return Err(invalid(route.span(), message));
            }
            let component = base.join(decl.component.get_ref());
            let mut function = decl.to_decl(name.clone(), component);
            if let Some(build) = &decl.build {
                function.build = Some(build.resolve(base, &invalid)?);
            }
            functions.push(Arc::new(function));
        }

        Ok(Self { functions })
    }
}

/// One function definition sent to a running host (`PUT
/// /v1/functions/NAME`): the fields of a manifest's `[[function]]` table,
/// with `name` optional (it must match NAME if given) and `component`
/// naming an uploaded component by digest (`"sha256:..."`).
pub fn parse_definition(
    text: &str,
    name: &FunctionName,
    resolve_component: impl FnOnce(&str) -> Result<PathBuf, String>,
) -> Result<FunctionDecl, ManifestError> {
    let file = Path::new("definition.toml");
    let invalid = |span: Range<usize>, message: String| invalid(file, text, span, message);
    let raw: RawFunction<Option<Spanned<FunctionName>>> = toml::from_str(text)
        .map_err(|e| invalid(e.span().unwrap_or(0..0), e.message().to_owned()))?;
    if let Some(given) = &raw.name
        && given.get_ref() != name
    {
        return Err(invalid(
            given.span(),
            format!(
                "field `name`: the definition is for function `{}`, not `{name}`",
                given.get_ref()
            ),
        ));
    }
    check_routes(&raw, name, &invalid)?;
    if let Some(build) = &raw.build {
        return Err(invalid(
            build.command.span(),
            "field `build`: a deployed function is built before its component is uploaded"
                .to_owned(),
        ));
    }
    let component = resolve_component(raw.component.get_ref())
        .map_err(|why| invalid(raw.component.span(), format!("field `component`: {why}")))?;
    Ok(raw.to_decl(name.clone(), component))
}

/// Refuses a function that nothing reaches: no routes, no events.
fn check_routes<N>(
    raw: &RawFunction<N>,
    name: &FunctionName,
    invalid: &impl Fn(Range<usize>, String) -> ManifestError,
) -> Result<(), ManifestError> {
    if raw.routes().is_empty() && raw.events.is_empty() {
        let span = raw
            .routes
            .as_ref()
            .map_or(raw.component.span(), Spanned::span);
        return Err(invalid(
            span,
            format!(
                "field `routes`: function `{name}` has no routes and no events; \
                 add `routes = [\"/{name}\"]` or `events = [{{ type = \"...\" }}]`"
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    function: Vec<RawFunction<Spanned<FunctionName>>>,
}

/// The size of the parts a large manifest is parsed in, in parallel; one
/// under twice this size is parsed whole. Small enough that the parser's
/// token list and document tree of one part fit in memory the allocator
/// has just freed from the part before: with parts of 1 MiB, every part
/// faulted in fresh pages (100,000 functions: 103k minor faults to ready,
/// against 73k with these).
const PARSE_IN_PARTS: usize = 1 << 16;

impl RawManifest {
    /// Parses manifest text; an error is its span in `text` and message.
    ///
    /// A large manifest (thousands of functions) is cut before some of its
    /// `[[function]]` lines into parts of about [`PARSE_IN_PARTS`], which
    /// are parsed on as many threads as there are CPUs, their spans moved
    /// back to where they are in `text`. It is cut only where that is
    /// certain to mean the same TOML: nothing but comments before the first
    /// `[[function]]`, and no multi-line strings anywhere (inside one, a
    /// `[[function]]` line would not be a table).
    fn parse(text: &str) -> Result<Self, (Range<usize>, String)> {
        let parse = |part: &str, offset: usize| {
            toml::from_str::<Self>(part)
                .map(|raw| Self {
                    function: raw
                        .function
                        .into_iter()
                        .map(|f| if offset == 0 { f } else { f.shifted(offset) })
                        .collect(),
                })
                .map_err(|e| {
                    let span = e.span().unwrap_or(0..0);
                    (
                        span.start + offset..span.end + offset,
                        e.message().to_owned(),
                    )
                })
        };
        let parts = Self::parts(text);
        if parts.len() < 2 {
            return parse(text, 0);
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = parts.len().div_ceil(threads);
        let parsed: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = parts
                .chunks(per_thread)
                .map(|mine| {
                    scope.spawn(move || {
                        mine.iter()
                            .map(|&(offset, part)| parse(part, offset))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("the parse does not panic"))
                .collect()
        });
        // The first error in the text is the one reported.
        let parsed = parsed.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Sized once: grown part by part, the list (hundreds of bytes a
        // function) was copied again at every doubling, on fresh pages.
        let mut function = Vec::with_capacity(parsed.iter().map(|p| p.function.len()).sum());
        for mut part in parsed {
            function.append(&mut part.function);
        }
        Ok(Self { function })
    }

    /// `text` cut into parts of about [`PARSE_IN_PARTS`] bytes, each with
    /// its offset, where that is safe; else `text` whole.
    fn parts(text: &str) -> Vec<(usize, &str)> {
        let whole = vec![(0, text)];
        let has = |needle: &[u8]| memchr::memmem::find(text.as_bytes(), needle).is_some();
        if text.len() < 2 * PARSE_IN_PARTS || has(b"\"\"\"") || has(b"'''") {
            return whole;
        }
        let is_header = |line: &str| {
            line.trim_start()
                .strip_prefix("[[function]]")
                .is_some_and(|rest| {
                    let rest = rest.trim_start();
                    rest.is_empty() || rest.starts_with('#')
                })
        };
        let mut cuts = Vec::new();
        let mut offset = 0;
        let mut last_cut = None;
        for line in text.split_inclusive('\n') {
            if is_header(line) {
                if last_cut.is_none_or(|last| offset - last >= PARSE_IN_PARTS) {
                    cuts.push(offset);
                    last_cut = Some(offset);
                }
            } else if last_cut.is_none() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    return whole;
                }
            }
            offset += line.len();
        }
        let Some(&first) = cuts.first() else {
            return whole;
        };
        cuts.push(text.len());
        cuts.windows(2)
            .map(|cut| (cut[0], &text[cut[0]..cut[1]]))
            .filter(|(at, _)| *at >= first)
            .collect()
    }
}

/// A `[[function]]` table as written; `N` is how its name is given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction<N> {
    name: N,
    component: Spanned<String>,
    routes: Option<Spanned<Vec<Spanned<RoutePattern>>>>,
    #[serde(default)]
    events: Vec<Trigger>,
    #[serde(default)]
    env: BTreeMap<EnvName, String>,
    idle_timeout: Option<HumanDuration>,
    #[serde(default)]
    min_instances: u32,
    max_instance_reuse: Option<NonZeroU32>,
    memory: Option<MemoryLimit>,
    timeout: Option<Timeout>,
    max_concurrency: Option<NonZeroU32>,
    max_queue: Option<u32>,
    queue_timeout: Option<HumanDuration>,
    max_body: Option<ByteSize>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<AllowedHost>,
    build: Option<RawBuild>,
}

/// A function's `build`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: Spanned<String>,
    workdir: Option<String>,
    #[serde(default)]
    watch: Vec<Spanned<String>>,
}

impl RawBuild {
    /// The build, its folder resolved against the manifest's `base`.
    fn resolve(
        &self,
        base: &Path,
        invalid: &impl Fn(Range<usize>, String) -> ManifestError,
    ) -> Result<BuildSpec, ManifestError> {
        if self.command.get_ref().trim().is_empty() {
            return Err(invalid(
                self.command.span(),
                "field `build.command`: the command is empty".to_owned(),
            ));
        }
        for glob in &self.watch {
            build::check_glob(glob.get_ref())
                .map_err(|why| invalid(glob.span(), format!("field `build.watch`: {why}")))?;
        }
        Ok(BuildSpec {
            command: self.command.get_ref().clone(),
            workdir: base.join(self.workdir.as_deref().unwrap_or("")),
            watch: self.watch.iter().map(|g| g.get_ref().clone()).collect(),
        })
    }
}

impl RawFunction<Spanned<FunctionName>> {
    /// The same table with every span `by` bytes further on: for a table
    /// parsed from a part of the manifest that starts there.
    fn shifted(self, by: usize) -> Self {
        fn moved<T>(spanned: Spanned<T>, by: usize) -> Spanned<T> {
            let span = spanned.span();
            Spanned::new(span.start + by..span.end + by, spanned.into_inner())
        }
        // Names every field: a new one does not compile until it is named
        // here, and shifted below if it holds a span (the rest go by `..self`).
        let Self {
            name: _,
            component: _,
            routes: _,
            build: _,
            events: _,
            env: _,
            idle_timeout: _,
            min_instances: _,
            max_instance_reuse: _,
            memory: _,
            timeout: _,
            max_concurrency: _,
            max_queue: _,
            queue_timeout: _,
            max_body: _,
            allowed_outbound_hosts: _,
        } = &self;
        Self {
            name: moved(self.name, by),
            component: moved(self.component, by),
            routes: self.routes.map(|routes| {
                let span = routes.span();
                let each = routes.into_inner().into_iter().map(|r| moved(r, by));
                Spanned::new(span.start + by..span.end + by, each.collect())
            }),
            build: self.build.map(|build| RawBuild {
                command: moved(build.command, by),
                watch: build.watch.into_iter().map(|w| moved(w, by)).collect(),
                ..build
            }),
            ..self
        }
    }
}

impl<N> RawFunction<N> {
    /// Its routes, as written.
    fn routes(&self) -> &[Spanned<RoutePattern>] {
        self.routes.as_ref().map_or(&[], |routes| routes.get_ref())
    }

    /// The declaration of function `name`, served from `component`.
    ///
    /// Copied, not moved: the parsed table's strings lie among the parser's
    /// own short-lived allocations, and keeping them would keep those pages
    /// (moving them out of 100,000 tables left 200 MB resident once ready,
    /// against 171 MB with copies).
    fn to_decl(&self, name: FunctionName, component: PathBuf) -> FunctionDecl {
        FunctionDecl {
            name,
            component,
            routes: self.routes().iter().map(|r| r.get_ref().clone()).collect(),
            events: self.events.clone(),
            env: self.env.clone(),
            idle_timeout: self.idle_timeout.map(|t| t.0),
            min_instances: self.min_instances,
            max_instance_reuse: self.max_instance_reuse.unwrap_or(NonZeroU32::MIN),
            limits: Limits {
                memory: self.memory.map_or(DEFAULT_MEMORY_LIMIT, |m| m.0),
                timeout: self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
                max_body: self.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0),
            },
            gate: GateLimits {
                max_concurrency: self
                    .max_concurrency
                    .map_or(DEFAULT_MAX_CONCURRENCY, NonZeroU32::get),
                max_queue: self.max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
                queue_timeout: self.queue_timeout.map_or(DEFAULT_QUEUE_TIMEOUT, |t| t.0),
            },
            outbound: OutboundPolicy::new(
                self.allowed_outbound_hosts
                    .iter()
                    .map(|rule| rule.0.clone())
                    .collect(),
            ),
            build: None,
        }
    }
}

/// One entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct AllowedHost(OutboundRule);

impl TryFrom<String> for AllowedHost {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse().map(Self)
    }
}

/// A size written for people: `"256MiB"`, `"64 KiB"`, `"1GB"`, `"1000"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct ByteSize(u64);

impl TryFrom<String> for ByteSize {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.parse::<bytesize::ByteSize>() {
            Ok(size) if size.as_u64() > 0 => Ok(Self(size.as_u64())),
            Ok(_) => Err(format!("invalid size `{text}`: it must be more than zero")),
            Err(e) => Err(format!(
                "invalid size `{text}`: {e} (write it like \"256MiB\", \"64KiB\" or \"1GB\")"
            )),
        }
    }
}

/// The memory of one instance: at least one WebAssembly page (64 KiB), at
/// most the 4 GiB a 32-bit linear memory can address.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct MemoryLimit(u64);

impl MemoryLimit {
    const RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(4 << 30);
}

impl TryFrom<String> for MemoryLimit {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let ByteSize(bytes) = ByteSize::try_from(text.clone())?;
        if !Self::RANGE.contains(&bytes) {
            return Err(format!(
                "invalid memory `{text}`: it must be from 64KiB (one WebAssembly page) to 4GiB"
            ));
        }
        Ok(Self(bytes))
    }
}

/// A request's timeout: at least one tick of the engine's epoch, which is
/// how finely deadlines are kept.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Timeout(Duration);

impl TryFrom<String> for Timeout {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let HumanDuration(duration) = HumanDuration::try_from(text.clone())?;
        if duration < EPOCH_TICK {
            return Err(format!(
                "invalid timeout `{text}`: it must be at least {}",
                humantime::format_duration(EPOCH_TICK)
            ));
        }
        Ok(Self(duration))
    }
}

/// A duration written for people: `"90s"`, `"5m"`, `"1h 30m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct HumanDuration(Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match humantime::parse_duration(&text) {
            Ok(duration) if !duration.is_zero() => Ok(Self(duration)),
            Ok(_) => Err(format!(
                "invalid duration `{text}`: it must be more than zero"
            )),
            Err(e) => Err(format!(
                "invalid duration `{text}`: {e} (write it like \"90s\", \"5m\" or \"250ms\")"
            )),
        }
    }
}

/// A function's name: 1 to [`MAX_NAME_LEN`] of `a-z`, `0-9`, `-` and `_`,
/// starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

impl From<FunctionName> for String {
    fn from(name: FunctionName) -> String {
        name.0
    }
}

impl FunctionName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A valid name made from a file stem: lowercased, other characters
    /// replaced by `-`. Used to name a bare component.
    pub fn from_stem(stem: &str) -> Self {
        let mut name: String = stem
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
                _ => '-',
            })
            .take(MAX_NAME_LEN)
            .collect();
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            name.insert(0, 'f');
            name.truncate(MAX_NAME_LEN);
        }
        Self(name)
    }
}

impl TryFrom<String> for FunctionName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let valid_chars = name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'));
        if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars {
            return Err(format!(
                "invalid function name `{name}`: use 1 to {MAX_NAME_LEN} of a-z, 0-9, `-` and `_`"
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "invalid function name `{name}`: it must start with a letter or a digit"
            ));
        }
        Ok(Self(name))
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment variable name: not empty, no `=`, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct EnvName(String);

impl EnvName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "invalid environment variable name `{name}`: it must be non-empty, without `=` or NUL"
            ));
        }
        Ok(Self(name))
    }
}

fn invalid(file: &Path, text: &str, span: Range<usize>, message: String) -> ManifestError {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let column = text[line_start..start].chars().count() + 1;
    let source_line = &text[line_start..line_end];
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let line = line_of(text, start);
    let excerpt = format!(
        "{line:>4} | {source_line}\n     | {}{}",
        " ".repeat(column - 1),
        "^".repeat(width)
    );
    ManifestError::Invalid {
        file: file.to_owned(),
        line,
        column,
        message,
        excerpt,
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("dir/shoal.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_valid_manifest_resolves_components_against_its_folder() {
        let manifest = parse(
            r#"
[[function]]
name = "hello"
component = "hello.wasm"
routes = ["/hello", "/api/..."]
env = { GREETING = "hi" }
"#,
        )
        .unwrap();
        let f = &manifest.functions[0];
        assert_eq!(f.name.as_str(), "hello");
        assert_eq!((f.idle_timeout, f.min_instances), (None, 0));
        assert_eq!(f.component, Path::new("dir/hello.wasm"));
        assert_eq!(f.routes.len(), 2);
        assert_eq!(
            f.env.iter().next().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(("GREETING", "hi"))
        );
    }

    /// A manifest of `count` functions over 2 MiB, every one with spans in
    /// its name, component, routes and build.
    fn large_manifest(count: usize) -> String {
        let mut text = String::from("# many functions\n\n");
        for i in 0..count {
            text.push_str(&format!(
                "[[function]] # number {i}\nname = \"f{i}\"\ncomponent = \"c{i}.wasm\"\n\
                 routes = [\"/f{i}\", \"/g{i}/...\"]\nenv = {{ N = \"{i}\" }}\n\
                 [function.build]\ncommand = \"make {i}\"\nwatch = [\"src/*.c\"]\n\n"
            ));
        }
        assert!(text.len() > 2 * PARSE_IN_PARTS);
        text
    }

    /// What a parse found, with every span.
    fn spans(raw: &RawManifest) -> Vec<String> {
        raw.function
            .iter()
            .map(|f| {
                let build = f.build.as_ref().expect("every one has a build");
                format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                    (f.name.span(), f.name.get_ref().as_str()),
                    (f.component.span(), f.component.get_ref()),
                    f.routes.as_ref().map(Spanned::span),
                    f.routes().iter().map(Spanned::span).collect::<Vec<_>>(),
                    (build.command.span(), build.command.get_ref()),
                    build.watch.iter().map(Spanned::span).collect::<Vec<_>>(),
                    f.env,
                )
            })
            .collect()
    }

    #[test]
    fn a_large_manifest_parsed_in_parts_is_what_it_is_whole() {
        let text = large_manifest(20_000);
        assert!(RawManifest::parts(&text).len() > 1, "cut into parts");
        let whole: RawManifest = toml::from_str(&text).unwrap();
        let in_parts = RawManifest::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(spans(&in_parts), spans(&whole));
        assert_eq!(parse(&text).unwrap().functions.len(), 20_000);
    }

    #[test]
    fn an_error_in_a_later_part_names_its_own_line() {
        let text = large_manifest(20_000);
        // A TOML error, and an error found after parsing (a name declared
        // twice), both far into the file.
        let broken = text.replace("routes = [\"/f19000\",", "routes = [\"/f19000\" \"/x\",");
        let whole = toml::from_str::<RawManifest>(&broken).err().unwrap();
        let line = line_of(&broken, whole.span().unwrap().start);
        assert!(line > 150_000, "{line}");
        let error = parse(&broken).unwrap_err();
        assert!(error.contains(&format!("shoal.toml:{line}:")), "{error}");

        let twice = text.replace("name = \"f19999\"", "name = \"f3\"");
        let error = parse(&twice).unwrap_err();
        let line = line_of(
            &twice,
            twice.find("name = \"f3\"\ncomponent = \"c19999").unwrap(),
        );
        assert!(error.contains(&format!("shoal.toml:{line}:")), "{error}");
        assert!(error.contains("declared twice"), "{error}");
    }

    #[test]
    fn a_manifest_is_cut_only_where_the_cut_cannot_change_its_meaning() {
        let text = large_manifest(20_000);
        // In a multi-line string, `[[function]]` is text, not a table.
        let multi_line = text.replace("N = \"7\"", "N = \"\"\"\n[[function]]\n\"\"\"");
        assert_eq!(RawManifest::parts(&multi_line).len(), 1);
        // Something before the first function.
        let prelude = format!("x = 1\n{text}");
        assert_eq!(RawManifest::parts(&prelude).len(), 1);
        assert!(parse(&prelude).unwrap_err().contains("unknown field `x`"));
        // Small ones are parsed whole.
        assert_eq!(
            RawManifest::parts(&large_manifest(20_000)[..100_000]).len(),
            1
        );
    }

    #[test]
    fn scaling_fields_parse_human_durations() {
        let manifest = parse(
            "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/a\"]\n\
             idle_timeout = \"1m 30s\"\nmin_instances = 1\n",
        )
        .unwrap();
        let f = &manifest.functions[0];
        assert_eq!(f.idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(f.min_instances, 1);
    }

    #[test]
    fn limits_parse_sizes_and_durations_and_default_the_rest() {
        let manifest = parse(
            "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/a\"]\n\
             memory = \"64 MiB\"\ntimeout = \"2s\"\nmax_concurrency = 3\nmax_body = \"1KiB\"\n",
        )
        .unwrap();
        let f = &manifest.functions[0];
        assert_eq!(f.limits.memory, 64 << 20);
        assert_eq!(f.limits.timeout, Duration::from_secs(2));
        assert_eq!(f.gate.max_concurrency, 3);
        assert_eq!(f.gate.max_queue, DEFAULT_MAX_QUEUE);
        assert_eq!(f.gate.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
        assert_eq!(f.limits.max_body, 1024);
    }

    #[test]
    fn names_are_made_valid_from_file_stems() {
        assert_eq!(
            FunctionName::from_stem("Hello_World.v2").as_str(),
            "hello_world-v2"
        );
        assert_eq!(FunctionName::from_stem("-x").as_str(), "f-x");
        assert!(FunctionName::try_from(FunctionName::from_stem(&"é".repeat(100)).0).is_ok());
    }

    #[test]
    fn a_build_runs_in_its_folder_and_a_deployed_function_has_none() {
        let manifest = parse(
            "[[function]]\nname = \"a\"\ncomponent = \"a/out.wasm\"\nroutes = [\"/a\"]\n\
             build = { command = \"make\", workdir = \"a\", watch = [\"src/**/*.c\"] }\n\
             [[function]]\nname = \"b\"\ncomponent = \"b.wasm\"\nroutes = [\"/b\"]\n\
             build = { command = \"make b\" }\n",
        )
        .unwrap();
        let build = manifest.functions[0].build.as_ref().unwrap();
        assert_eq!(build.workdir, Path::new("dir/a"));
        assert_eq!(build.watch, ["src/**/*.c"]);
        let build = manifest.functions[1].build.as_ref().unwrap();
        assert_eq!(build.workdir, Path::new("dir/"));
        assert!(build.watch.is_empty());
        assert!(
            parse("[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nroutes = [\"/a\"]\nbuild = { command = \" \" }\n")
                .unwrap_err()
                .contains("field `build.command`: the command is empty")
        );

        let name = FunctionName::try_from("a".to_owned()).unwrap();
        let error = parse_definition(
            "component = \"sha256:00\"\nroutes = [\"/a\"]\nbuild = { command = \"make\" }\n",
            &name,
            |_| Ok(PathBuf::from("a.wasm")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("field `build`: a deployed function is built"),
            "{error}"
        );
    }
}
