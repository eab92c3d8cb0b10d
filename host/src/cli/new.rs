//! `host new`: a new function project (see [`crate::new`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli::run::DEFAULT_PORT;
use crate::manifest::FunctionName;
use crate::new::{self, Language};

/// `host new`'s arguments. Its summary is the doc of its variant of
/// [`super::Command`]; the rest of its help comes after the arguments.
#[derive(Debug, clap::Args)]
#[command(after_long_help = ABOUT)]
pub struct NewArgs {
    /// The function's language.
    #[arg(value_enum)]
    language: Language,

    /// The function's name, 1 to 63 of `a-z`, `0-9`, `-` and `_`: the
    /// project's folder and the function's routes (/NAME, /NAME/...).
    #[arg(value_parser = parse_name)]
    name: FunctionName,

    /// The folder to write the project in; created if need be.
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

/// What `host new --help` says after the arguments.
const ABOUT: &str = "It writes the folder DIR/NAME: a small working function \
(it answers GET /NAME and the paths below with a greeting that names the path), \
what its language's toolchain needs to build it, and a shoal.toml that declares \
it with its build command. Then `host run --build DIR/NAME/shoal.toml` builds \
and serves it. An existing DIR/NAME is refused and left as it is.";

fn parse_name(text: &str) -> Result<FunctionName, String> {
    FunctionName::try_from(text.to_owned())
}

impl NewArgs {
    /// Writes the project; prints its files and how to run it.
    pub fn execute(self) -> anyhow::Result<()> {
        let created = new::create(self.language, &self.name, &self.dir)?;
        let dir = &created.dir;
        println!(
            "Created {}/, a {} function:",
            dir.display(),
            self.language.title()
        );
        for entry in summary(&created.files) {
            println!("  {}", dir.join(entry).display());
        }
        println!("Its build needs {}.", created.needs);
        println!();
        println!("Next:");
        println!("  host run --build {}", dir.join("shoal.toml").display());
        println!("  curl localhost:{DEFAULT_PORT}/{}", self.name);
        Ok(())
    }
}

/// The files to show: each file at the top, each folder with one file as
/// that file, and a bigger folder as `folder/ (N files)`.
fn summary(files: &[PathBuf]) -> Vec<String> {
    let mut folders: BTreeMap<&Path, Vec<&Path>> = BTreeMap::new();
    let mut shown = Vec::new();
    for file in files {
        match file.components().next() {
            Some(first) if file.components().count() > 1 => {
                let folder = Path::new(first.as_os_str());
                let entry = folders.entry(folder).or_default();
                if entry.is_empty() {
                    // Keeps the folder's place among the files.
                    shown.push(folder);
                }
                entry.push(file);
            }
            _ => shown.push(file),
        }
    }
    shown
        .into_iter()
        .map(|path| match folders.get(path).map(Vec::as_slice) {
            Some([file]) => file.display().to_string(),
            Some(files) => format!("{}/ ({} files)", path.display(), files.len()),
            None => path.display().to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_of_several_files_is_one_line() {
        let files: Vec<PathBuf> = ["app.c", "gen/a.h", "gen/a.c", "src/lib.rs", "shoal.toml"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            summary(&files),
            ["app.c", "gen/ (2 files)", "src/lib.rs", "shoal.toml"]
        );
    }
}
