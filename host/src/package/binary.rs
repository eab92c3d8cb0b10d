//! The host binary and, if it is dynamically linked, what it needs to
//! start: its ELF interpreter (the dynamic loader) and the shared libraries
//! it links, found with `ldd`, each put in the image at the path where the
//! loader looks for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// A file the host binary needs, and where it goes in the image.
pub(super) struct Needed {
    /// Its path on this machine, which is also its path in the image.
    pub(super) path: PathBuf,
}

/// The dynamic loader and shared libraries `binary` needs; none if it is
/// statically linked.
pub(super) fn needed_files(binary: &Path) -> anyhow::Result<Vec<Needed>> {
    let bytes = std::fs::read(binary)
        .with_context(|| format!("cannot read the host binary {}", binary.display()))?;
    let elf = object::File::parse(&*bytes).with_context(|| {
        format!(
            "{} is not an executable this tool can read",
            binary.display()
        )
    })?;
    if elf.format() != object::BinaryFormat::Elf {
        bail!("{} is not an ELF executable", binary.display());
    }
    if !is_dynamic(&elf) {
        return Ok(Vec::new());
    }
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run `ldd` to find the host binary's shared libraries")?;
    if !output.status.success() {
        bail!(
            "`ldd {}` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
}

/// Whether the ELF file asks for a dynamic loader (a `PT_INTERP` segment).
fn is_dynamic(elf: &object::File<'_>) -> bool {
    use object::read::elf::ProgramHeader as _;
    let interp = object::elf::PT_INTERP;
    match elf {
        object::File::Elf64(file) => file
            .elf_program_headers()
            .iter()
            .any(|segment| segment.p_type(file.endian()) == interp),
        object::File::Elf32(file) => file
            .elf_program_headers()
            .iter()
            .any(|segment| segment.p_type(file.endian()) == interp),
        _ => false,
    }
}

/// The absolute paths `ldd` lists: `libc.so.6 => /lib/.../libc.so.6 (0x..)`
/// and the loader, `/lib64/ld-linux-x86-64.so.2 (0x..)`. The kernel's
/// `linux-vdso.so.1` has no file.
fn parse_ldd(output: &str) -> anyhow::Result<Vec<Needed>> {
    let mut needed = Vec::new();
    for line in output.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let path = rest.trim().split(' ').next().unwrap_or_default();
                if path == "not" {
                    bail!(
                        "the host binary needs {}, which is not found here",
                        name.trim()
                    );
                }
                path
            }
            None => line.split(' ').next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            needed.push(Needed {
                path: PathBuf::from(path),
            });
        }
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_the_loader_and_the_libraries() {
        let output = "\tlinux-vdso.so.1 (0x00007ffc6b5f4000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c5e0000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c3ff000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1d97c000)\n";
        let paths: Vec<_> = parse_ldd(output)
            .unwrap()
            .into_iter()
            .map(|needed| needed.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = "\tlibfoo.so.1 => not found\n";
        assert!(parse_ldd(missing).is_err());
    }
}
