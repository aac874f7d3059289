//! Unpacking an Ark biz jar into a module directory, the way SOFAArk unpacks a biz on install,
//! but refusing every entry that could write outside that directory.
//!
//! Rules (decided by [`plan_entry`], a pure function): entry names are relative `/`-separated
//! paths; absolute names, Windows drive prefixes, backslashes, `..` components, control
//! characters and symbolic links are rejected, and the whole unpack fails on the first such
//! entry. Files are created with `create_new` (a duplicate entry fails instead of overwriting)
//! and mode `0644` whatever the archive says, so an archive cannot plant set-uid or executable
//! files. Because nothing in the fresh directory is ever a symlink, joining validated
//! components onto it cannot leave it. Size and entry-count limits stop zip bombs; bytes are
//! counted as they are written, not taken from the (forgeable) headers.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry name would escape the module directory or is otherwise unsafe.
    #[error("unsafe entry {entry:?} in module archive: {reason}")]
    UnsafeEntry {
        /// The entry name as stored in the archive.
        entry: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Two entries with the same path.
    #[error("duplicate entry {0:?} in module archive")]
    Duplicate(String),
    /// The unpacked size would pass the limit.
    #[error("module archive unpacks to more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The archive has more entries than allowed.
    #[error("module archive has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// The file is not a readable zip archive.
    #[error("module archive {path} is not a readable jar: {message}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The zip reader's complaint.
        message: String,
    },
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Limits on what one archive may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes written.
    pub max_bytes: u64,
    /// Number of entries (files and directories).
    pub max_entries: usize,
}

/// What to do with one archive entry: create a directory or a file at a path relative to the
/// destination (`/`-separated, normalised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EntryPlan {
    /// Create this directory (empty for the destination itself, e.g. `./`).
    Dir(String),
    /// Write this file.
    File(String),
}

/// Decides where an entry goes, or why it must not be unpacked.
pub(crate) fn plan_entry(name: &str, is_symlink: bool) -> Result<EntryPlan, UnpackError> {
    let unsafe_entry = |reason| UnpackError::UnsafeEntry {
        entry: name.to_string(),
        reason,
    };
    if is_symlink {
        return Err(unsafe_entry("symbolic links are not allowed"));
    }
    if name.is_empty() {
        return Err(unsafe_entry("empty name"));
    }
    if name.chars().any(char::is_control) {
        return Err(unsafe_entry("control character in name"));
    }
    if name.contains('\\') {
        return Err(unsafe_entry("backslash in name"));
    }
    if name.starts_with('/') {
        return Err(unsafe_entry("absolute path"));
    }
    let mut parts = Vec::new();
    for (i, part) in name.split('/').enumerate() {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_entry("parent directory component")),
            _ if i == 0 && part.len() == 2 && part.ends_with(':') => {
                return Err(unsafe_entry("drive prefix"));
            }
            _ => parts.push(part),
        }
    }
    let path = parts.join("/");
    if name.ends_with('/') {
        Ok(EntryPlan::Dir(path))
    } else if path.is_empty() {
        Err(unsafe_entry("no file name"))
    } else {
        Ok(EntryPlan::File(path))
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> UnpackError {
    let context = context.into();
    move |source| UnpackError::Io { context, source }
}

/// Unpacks `jar` into the existing, empty directory `dest`. Returns the relative paths of the
/// files written, in archive order (class path order follows it). Blocking: run it on a
/// blocking thread. On error, `dest` may hold a partial tree; the caller removes it.
pub(crate) fn unpack(
    jar: &Path,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<Vec<String>, UnpackError> {
    let file = std::fs::File::open(jar).map_err(io(format!("opening {}", jar.display())))?;
    let zip_err = |e: zip::result::ZipError| UnpackError::Zip {
        path: jar.to_path_buf(),
        message: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    if archive.len() > limits.max_entries {
        return Err(UnpackError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let mut written = 0u64;
    let mut files = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(zip_err)?;
        let name = entry.name().map_err(zip_err)?.into_owned();
        match plan_entry(&name, entry.is_symlink())? {
            EntryPlan::Dir(rel) => {
                let path = dest.join(&rel);
                std::fs::create_dir_all(&path)
                    .map_err(io(format!("creating {}", path.display())))?;
            }
            EntryPlan::File(rel) => {
                let path = dest.join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("creating {}", parent.display())))?;
                }
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&path)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => UnpackError::Duplicate(name.clone()),
                        _ => UnpackError::Io {
                            context: format!("creating {}", path.display()),
                            source: e,
                        },
                    })?;
                let budget = limits.max_bytes - written;
                // One byte past the budget is enough to know the limit is broken.
                let copied = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
                    .map_err(io(format!("unpacking {name}")))?;
                if copied > budget {
                    return Err(UnpackError::TooLarge {
                        limit: limits.max_bytes,
                    });
                }
                out.flush()
                    .map_err(io(format!("writing {}", path.display())))?;
                written += copied;
                files.push(rel);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_planned_or_rejected() {
        use EntryPlan::{Dir, File};
        let ok: &[(&str, EntryPlan)] = &[
            ("META-INF/MANIFEST.MF", File("META-INF/MANIFEST.MF".into())),
            ("lib/", Dir("lib".into())),
            ("lib/a.jar", File("lib/a.jar".into())),
            ("./lib//b.jar", File("lib/b.jar".into())),
            ("./", Dir(String::new())),
            ("a/./b", File("a/b".into())),
            ("weird name ü.txt", File("weird name ü.txt".into())),
            ("c:d/e", File("c:d/e".into())),
            ("..foo/bar", File("..foo/bar".into())),
        ];
        for (name, want) in ok {
            assert_eq!(
                plan_entry(name, false).ok().as_ref(),
                Some(want),
                "entry {name:?}"
            );
        }
        let rejected: &[(&str, bool, &str)] = &[
            ("../evil", false, "parent directory component"),
            ("lib/../../evil", false, "parent directory component"),
            ("a/..", false, "parent directory component"),
            ("/etc/passwd", false, "absolute path"),
            ("//server/share", false, "absolute path"),
            ("C:/Windows/evil", false, "drive prefix"),
            ("..\\evil", false, "backslash in name"),
            ("lib\\a.jar", false, "backslash in name"),
            ("a\u{0}b", false, "control character in name"),
            ("a\nb", false, "control character in name"),
            ("", false, "empty name"),
            (".", false, "no file name"),
            ("lib/link.jar", true, "symbolic links are not allowed"),
        ];
        for (name, symlink, want) in rejected {
            match plan_entry(name, *symlink) {
                Err(UnpackError::UnsafeEntry { reason, .. }) => {
                    assert_eq!(reason, *want, "entry {name:?}")
                }
                other => panic!("entry {name:?}: expected rejection, got {other:?}"),
            }
        }
    }
}
