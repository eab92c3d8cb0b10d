//! `host new`: a new function project, in one of several languages, that
//! builds and serves as written.
//!
//! A project is a folder named for the function. It holds the function's
//! sources (a greeting that names the request's path), what the language's
//! toolchain needs (a Cargo.toml, a package.json, WIT files, a build
//! script...) and a `shoal.toml` declaring the function with its `build`
//! ([`crate::build`]), so that `host run --build NAME/shoal.toml` builds it
//! and serves it at `/NAME` and below.
//!
//! The files are templates under `templates/`, embedded in the binary. In a
//! text template, `{{name}}` stands for the function's name, `{{crate}}`
//! for it as a Rust crate name and `{{language}}` for the language; a
//! template may also take the text of a shared one (`{{componentize.sh}}`,
//! the step that C and Go share). Other files are written unchanged:
//! - `templates/wit/deps`: the WIT of WASI 0.2.12, as in the `wit/` folder
//!   of crate wasmtime-wasi-http 48.0.8. JavaScript, Python and Go projects
//!   carry it; JavaScript's is relabelled 0.2.10, the wasi:http version that
//!   componentize-js's engine (StarlingMonkey) exports.
//! - the C bindings of `wasi:http/proxy@0.2.12` that wit-bindgen 0.63.0
//!   generated for `examples/hello-c/gen` (embedded from there), so that a
//!   C project needs no wit-bindgen; and `examples/hello-go/wasi.go`, the Go
//!   example's hand-written imports.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::manifest::FunctionName;

/// The languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust on the `wasip2` crate: Cargo.toml, src/lib.rs. Built with cargo
    /// for wasm32-wasip2.
    Rust,
    /// JavaScript (or `javascript`): package.json, app.js (a `fetch` event
    /// handler), wit/. Built with componentize-js 0.23.0, which npm
    /// installs.
    #[value(alias = "javascript")]
    Js,
    /// Python (or `py`): app.py, wit/, build.sh. Built with componentize-py
    /// 0.25.1, from PATH or installed into .venv.
    #[value(alias = "py")]
    Python,
    /// C: app.c, gen/ (the wasi:http bindings), build.sh. Built with clang
    /// and wasi-libc, then wasm-tools.
    C,
    /// Go: main.go, wasi.go (the wasi:http imports), go.mod, wit/, build.sh.
    /// Built with Go 1.24 or newer, then wasm-tools.
    Go,
}

impl Language {
    /// Every language, in the order `--help` lists them.
    pub const ALL: [Language; 5] = [
        Language::Rust,
        Language::Js,
        Language::Python,
        Language::C,
        Language::Go,
    ];

    /// Its name on the command line.
    pub fn label(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Js => "js",
            Language::Python => "python",
            Language::C => "c",
            Language::Go => "go",
        }
    }

    /// Its name in prose, and in the greeting the function answers with.
    pub fn title(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Js => "JavaScript",
            Language::Python => "Python",
            Language::C => "C",
            Language::Go => "Go",
        }
    }

    fn template(self) -> &'static Template {
        match self {
            Language::Rust => &RUST,
            Language::Js => &JS,
            Language::Python => &PYTHON,
            Language::C => &C,
            Language::Go => &GO,
        }
    }

    /// Refuses a name the language's toolchain cannot take.
    fn check_name(self, name: &FunctionName) -> anyhow::Result<()> {
        if self == Language::Rust && name.as_str().starts_with(|c: char| c.is_ascii_digit()) {
            bail!(
                "`{name}` cannot name a Rust package, which must not start with a digit: \
                 choose a name that starts with a letter"
            );
        }
        Ok(())
    }
}

/// What a language's project is made of.
struct Template {
    /// Its own files.
    files: &'static [File],
    /// The WASI version its `wit/` is labelled with, if it carries one.
    wit: Option<&'static str>,
    /// The component its build writes, relative to the project.
    component: &'static str,
    /// The build command (`sh -c`, in the project).
    command: &'static str,
    /// The sources whose change calls for a new build (globs).
    watch: &'static [&'static str],
    /// What the build needs on the machine, in a sentence.
    needs: &'static str,
}

/// One file of a template.
struct File {
    /// Where it goes in the project.
    path: &'static str,
    contents: Contents,
}

enum Contents {
    /// Text with `{{key}}`s to replace.
    Template(&'static str),
    /// The same, written executable.
    Script(&'static str),
    /// Written unchanged.
    Bytes(&'static [u8]),
}

/// A text template from `templates/`.
macro_rules! template {
    ($path:literal => $template:literal) => {
        File {
            path: $path,
            contents: Contents::Template(include_str!(concat!("templates/", $template))),
        }
    };
}

/// An executable text template from `templates/`.
macro_rules! script {
    ($path:literal => $template:literal) => {
        File {
            path: $path,
            contents: Contents::Script(include_str!(concat!("templates/", $template))),
        }
    };
}

/// A file from `templates/`, written unchanged.
macro_rules! bytes {
    ($path:literal => $template:literal) => {
        File {
            path: $path,
            contents: Contents::Bytes(include_bytes!(concat!("templates/", $template))),
        }
    };
}

const RUST: Template = Template {
    files: &[
        template!("Cargo.toml" => "rust/Cargo.toml"),
        template!("src/lib.rs" => "rust/src/lib.rs"),
        template!(".gitignore" => "rust/gitignore"),
    ],
    wit: None,
    component: "target/wasm32-wasip2/release/{{crate}}.wasm",
    // The target folder is named, so that CARGO_TARGET_DIR cannot move
    // the component away from where the manifest says.
    command: "cargo build --release --target wasm32-wasip2 --target-dir target",
    watch: &["Cargo.toml", "src/**/*.rs"],
    needs: "cargo, with the wasm32-wasip2 target (rustup target add wasm32-wasip2)",
};

const JS: Template = Template {
    files: &[
        template!("package.json" => "js/package.json"),
        template!("app.js" => "js/app.js"),
        template!(".gitignore" => "js/gitignore"),
    ],
    wit: Some("0.2.10"),
    component: "{{name}}.wasm",
    command: "npm install --no-audit --no-fund && \
              npx componentize-js app.js --wit wit --world-name function -o {{name}}.wasm",
    watch: &["app.js", "package.json", "wit/**/*.wit"],
    needs: "node and npm (npm installs componentize-js into node_modules)",
};

const PYTHON: Template = Template {
    files: &[
        template!("app.py" => "python/app.py"),
        script!("build.sh" => "python/build.sh"),
        template!(".gitignore" => "python/gitignore"),
    ],
    wit: Some(WIT_VERSION),
    component: "{{name}}.wasm",
    command: "sh build.sh",
    watch: &["app.py", "build.sh", "wit/**/*.wit"],
    needs: "componentize-py 0.25.1 on PATH, or python3 to install it into .venv",
};

const C: Template = Template {
    files: &[
        template!("app.c" => "c/app.c"),
        script!("build.sh" => "c/build.sh"),
        // The C example's bindings, the same files.
        bytes!("gen/proxy.h" => "../../../../examples/hello-c/gen/proxy.h"),
        bytes!("gen/proxy.c" => "../../../../examples/hello-c/gen/proxy.c"),
        bytes!("gen/proxy_component_type.o" => "../../../../examples/hello-c/gen/proxy_component_type.o"),
        template!(".gitignore" => "c/gitignore"),
    ],
    wit: None,
    component: "{{name}}.wasm",
    command: "sh build.sh",
    watch: &["*.c", "*.h", "build.sh"],
    needs: "clang with wasi-libc (Debian: apt-get install clang lld wasi-libc \
            libclang-rt-dev-wasm32), wasm-tools, and cargo once to fetch the WASI adapter",
};

const GO: Template = Template {
    files: &[
        template!("main.go" => "go/main.go"),
        // The Go example's hand-written imports, the same file.
        bytes!("wasi.go" => "../../../../examples/hello-go/wasi.go"),
        template!("go.mod" => "go/go.mod"),
        script!("build.sh" => "go/build.sh"),
        template!(".gitignore" => "go/gitignore"),
    ],
    wit: Some(WIT_VERSION),
    component: "{{name}}.wasm",
    command: "sh build.sh",
    watch: &["*.go", "go.mod", "build.sh", "wit/**/*.wit"],
    needs: "Go 1.24 or newer, wasm-tools, and cargo once to fetch the WASI adapter",
};

/// The WASI version of the WIT in `templates/wit`.
const WIT_VERSION: &str = "0.2.12";

/// A WASI package of `templates/wit/deps`, and where it goes.
macro_rules! wasi_package {
    ($file:literal) => {
        (
            concat!("wit/deps/", $file),
            include_str!(concat!("templates/wit/deps/", $file)),
        )
    };
}

/// The WIT a project carries in `wit/`: its world, and the WASI packages.
const WIT: &[(&str, &str)] = &[
    ("wit/world.wit", include_str!("templates/wit/world.wit")),
    wasi_package!("cli.wit"),
    wasi_package!("clocks.wit"),
    wasi_package!("filesystem.wit"),
    wasi_package!("http.wit"),
    wasi_package!("io.wit"),
    wasi_package!("random.wit"),
    wasi_package!("sockets.wit"),
];

/// The manifest every project gets.
const MANIFEST: &str = include_str!("templates/shoal.toml");

/// Templates that others include whole, by file name.
const SHARED: &[(&str, &str)] = &[("componentize.sh", include_str!("templates/componentize.sh"))];

/// A file of a new project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFile {
    /// Its path in the project.
    pub path: PathBuf,
    /// What it holds.
    pub contents: Vec<u8>,
    /// Whether it is a script to run.
    pub executable: bool,
}

/// A project written by [`create`].
#[derive(Debug)]
pub struct Created {
    /// Its folder.
    pub dir: PathBuf,
    /// Its files, relative to `dir`, in the order written.
    pub files: Vec<PathBuf>,
    /// What its build needs on the machine, in a sentence.
    pub needs: &'static str,
}

/// The files of function `name`'s project in `language`, `shoal.toml`
/// last.
pub fn project(language: Language, name: &FunctionName) -> anyhow::Result<Vec<ProjectFile>> {
    language.check_name(name)?;
    let template = language.template();
    let crate_name = name.as_str().replace('-', "_");
    let mut vars = vec![
        ("name", name.as_str()),
        ("crate", crate_name.as_str()),
        ("language", language.title()),
    ];
    vars.extend_from_slice(SHARED);

    let mut files = Vec::new();
    for file in template.files {
        let (contents, executable) = match file.contents {
            Contents::Template(text) => (render(text, &vars).into_bytes(), false),
            Contents::Script(text) => (render(text, &vars).into_bytes(), true),
            Contents::Bytes(bytes) => (bytes.to_vec(), false),
        };
        files.push(ProjectFile {
            path: PathBuf::from(file.path),
            contents,
            executable,
        });
    }
    if let Some(version) = template.wit {
        files.extend(WIT.iter().map(|(path, text)| ProjectFile {
            path: PathBuf::from(path),
            contents: text.replace(WIT_VERSION, version).into_bytes(),
            executable: false,
        }));
    }

    let component = render(template.component, &vars);
    let command = render(template.command, &vars);
    let watch = template
        .watch
        .iter()
        .map(|glob| format!("\"{glob}\""))
        .collect::<Vec<_>>()
        .join(", ");
    vars.extend([
        ("component", component.as_str()),
        ("command", command.as_str()),
        ("watch", watch.as_str()),
    ]);
    files.push(ProjectFile {
        path: PathBuf::from("shoal.toml"),
        contents: render(MANIFEST, &vars).into_bytes(),
        executable: false,
    });
    Ok(files)
}

/// Writes function `name`'s project in `language` into the new folder
/// `parent/name` (`parent` is created if need be). Refuses a folder that
/// exists; removes what it wrote if it fails half-way.
pub fn create(language: Language, name: &FunctionName, parent: &Path) -> anyhow::Result<Created> {
    let files = project(language, name)?;
    // `./NAME` reads better as `NAME`, in messages.
    let dir = if parent == Path::new(".") {
        PathBuf::from(name.as_str())
    } else {
        parent.join(name.as_str())
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    match std::fs::create_dir(&dir) {
        Err(error) if error.kind() == ErrorKind::AlreadyExists => bail!(
            "{} already exists: remove it, or choose another name or --dir",
            dir.display()
        ),
        result => result.with_context(|| format!("cannot create folder {}", dir.display()))?,
    }
    if let Err(error) = write_files(&dir, &files) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(error);
    }
    Ok(Created {
        dir,
        files: files.into_iter().map(|file| file.path).collect(),
        needs: language.template().needs,
    })
}

fn write_files(dir: &Path, files: &[ProjectFile]) -> anyhow::Result<()> {
    for file in files {
        let path = dir.join(&file.path);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create folder {}", folder.display()))?;
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if file.executable {
            make_executable(&path)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// `text` with each `{{key}}` of `vars` replaced by its value, in one pass
/// (a value is not searched for keys). Other `{{`s stay as they are.
fn render(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            let key = &after[..end];
            let (_, value) = vars.iter().find(|(k, _)| *k == key)?;
            Some((value, end))
        });
        match value {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn name(text: &str) -> FunctionName {
        FunctionName::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn render_replaces_known_keys_once() {
        let vars = [("name", "hi"), ("loop", "{{name}}")];
        assert_eq!(render("a {{name}} b", &vars), "a hi b");
        assert_eq!(render("{{loop}}", &vars), "{{name}}");
        assert_eq!(render("{{other}} {{name", &vars), "{{other}} {{name");
        assert_eq!(render("x = {{0}};", &vars), "x = {{0}};");
    }

    #[test]
    fn every_template_is_filled_in() {
        for language in Language::ALL {
            for file in project(language, &name("my-fn")).unwrap() {
                let Ok(text) = std::str::from_utf8(&file.contents) else {
                    continue;
                };
                // The generated C bindings are not templates.
                if file.path.starts_with("gen") {
                    continue;
                }
                assert!(
                    !text.contains("{{"),
                    "{} of {}: {text}",
                    file.path.display(),
                    language.label()
                );
            }
        }
    }

    #[test]
    fn every_manifest_declares_the_function_and_its_build() {
        let dir = Path::new("/projects/my-fn");
        for language in Language::ALL {
            let files = project(language, &name("my-fn")).unwrap();
            let manifest = files.last().unwrap();
            assert_eq!(manifest.path, Path::new("shoal.toml"));
            let text = std::str::from_utf8(&manifest.contents).unwrap();
            let manifest = Manifest::parse(text, &dir.join("shoal.toml"))
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", language.label()));
            let [function] = &manifest.functions[..] else {
                panic!("one function")
            };
            assert_eq!(function.name.as_str(), "my-fn");
            let routes: Vec<String> = function.routes.iter().map(|r| r.to_string()).collect();
            assert_eq!(routes, ["/my-fn", "/my-fn/..."]);
            assert!(function.component.starts_with(dir));
            let build = function.build.as_ref().expect("a build");
            assert_eq!(build.workdir, dir);
            assert!(!build.watch.is_empty());
            // The build's sources are files of the project.
            let globs = build
                .watch
                .iter()
                .map(|glob| globset::Glob::new(glob).unwrap().compile_matcher());
            for glob in globs {
                assert!(
                    files.iter().any(|file| glob.is_match(&file.path)),
                    "{}: {} matches no file",
                    language.label(),
                    glob.glob()
                );
            }
        }
    }

    #[test]
    fn the_javascript_wit_is_relabelled_for_its_engine() {
        let files = project(Language::Js, &name("f")).unwrap();
        let http = files
            .iter()
            .find(|file| file.path == Path::new("wit/deps/http.wit"))
            .unwrap();
        let text = std::str::from_utf8(&http.contents).unwrap();
        assert!(text.contains("package wasi:http@0.2.10;"));
        assert!(!text.contains("0.2.12"));
    }

    #[test]
    fn a_rust_package_cannot_start_with_a_digit() {
        let error = project(Language::Rust, &name("2fa")).unwrap_err();
        assert!(
            error.to_string().contains("must not start with a digit"),
            "{error}"
        );
        assert!(project(Language::Go, &name("2fa")).is_ok());
    }

    #[test]
    fn an_existing_folder_is_refused_and_kept() {
        let parent = tempfile::tempdir().unwrap();
        let created = create(Language::Python, &name("f"), parent.path()).unwrap();
        assert_eq!(created.dir, parent.path().join("f"));
        let app = created.dir.join("app.py");
        std::fs::write(&app, "mine").unwrap();
        let error = create(Language::Rust, &name("f"), parent.path()).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(std::fs::read_to_string(app).unwrap(), "mine");
    }
}
