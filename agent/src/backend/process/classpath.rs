//! The class path of an unpacked module, and how it is handed to `java`.
//!
//! SOFAArk puts a biz archive's root and every jar under `lib/` on the biz class loader's path;
//! Spring Boot style archives keep classes under `BOOT-INF/classes/` and jars under
//! `BOOT-INF/lib/`. Order follows the archive, as SOFAArk's does (the packager wrote
//! dependencies in resolution order, which matters when two jars hold the same class).

/// Loose classes of a Spring Boot style archive.
pub(crate) const BOOT_CLASSES: &str = "BOOT-INF/classes/";
/// Directories whose jars go on the class path.
const LIB_DIRS: [&str; 2] = ["lib/", "BOOT-INF/lib/"];

/// Above this many bytes the class path goes into an `@argfile` rather than onto the command
/// line (Linux refuses single arguments over 128 KiB).
pub(crate) const INLINE_CLASS_PATH_MAX: usize = 64 * 1024;

/// Why no class path could be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClassPathError {
    /// A nested jar's path contains the class path separator.
    #[error("nested jar {0:?} contains ':', which cannot appear in a class path")]
    Separator(String),
}

/// Class path entries relative to the unpack root, in order: `""` (the root itself), then
/// `BOOT-INF/classes/` if the archive has files there, then every `.jar` under `lib/` or
/// `BOOT-INF/lib/` (any depth) in archive order. `files` are the unpacked file paths.
pub(crate) fn class_path(files: &[String]) -> Result<Vec<String>, ClassPathError> {
    let mut entries = vec![String::new()];
    if files.iter().any(|f| f.starts_with(BOOT_CLASSES)) {
        entries.push(BOOT_CLASSES.to_string());
    }
    for file in files {
        let name = file.rsplit('/').next().unwrap_or(file);
        let is_jar = name.len() > 4 && name.to_ascii_lowercase().ends_with(".jar");
        if is_jar && LIB_DIRS.iter().any(|dir| file.starts_with(dir)) {
            if file.contains(':') {
                return Err(ClassPathError::Separator(file.clone()));
            }
            entries.push(file.clone());
        }
    }
    Ok(entries)
}

/// A Java `@argfile` line holding one argument: quoted, with `\` and `"` escaped (the launcher
/// treats backslash as an escape inside quotes). Arguments never contain line breaks here:
/// unpacking rejects control characters in entry names.
pub(crate) fn argfile_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The arguments of `java`, and the `@argfile` contents when the class path is too long for
/// the command line (then `argfile_arg`, e.g. `@/work/m/classpath.args`, stands in for
/// `-cp <class path>`).
pub(crate) fn java_command(
    marker: &str,
    jvm_args: &[String],
    class_path: &str,
    argfile_arg: &str,
    main_class: &str,
    args: &[String],
) -> (Vec<String>, Option<String>) {
    let mut out = vec![marker.to_string()];
    out.extend(jvm_args.iter().cloned());
    let argfile = if class_path.len() > INLINE_CLASS_PATH_MAX {
        out.push(argfile_arg.to_string());
        Some(format!("-cp\n{}\n", argfile_quote(class_path)))
    } else {
        out.push("-cp".to_string());
        out.push(class_path.to_string());
        None
    };
    out.push(main_class.to_string());
    out.extend(args.iter().cloned());
    (out, argfile)
}

/// A class path entry as the URL Java's `File.toURI().toURL()` would print (`file:/a/b.jar`,
/// directories with a trailing `/`), which is what SOFAArk reports in `classPath`.
pub(crate) fn java_file_url(path: &std::path::Path, is_dir: bool) -> String {
    let url = if is_dir {
        url::Url::from_directory_path(path)
    } else {
        url::Url::from_file_path(path)
    };
    match url {
        Ok(url) => {
            let text = url.to_string();
            match text.strip_prefix("file://") {
                Some(rest) => format!("file:{rest}"),
                None => text,
            }
        }
        Err(()) => format!("file:{}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_path_urls_look_like_javas() {
        use std::path::Path;
        let cases = [
            ("/w/m/unpack", true, "file:/w/m/unpack/"),
            ("/w/m/unpack/lib/a.jar", false, "file:/w/m/unpack/lib/a.jar"),
            ("/w/a b/c.jar", false, "file:/w/a%20b/c.jar"),
        ];
        for (path, dir, want) in cases {
            assert_eq!(java_file_url(Path::new(path), dir), want);
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn class_path_follows_the_sofa_ark_and_spring_boot_layouts() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &[
                    "META-INF/MANIFEST.MF",
                    "com/alipay/sofa/ark/biz/mark",
                    "lib/app.jar",
                    "lib/dep.jar",
                ],
                &["", "lib/app.jar", "lib/dep.jar"],
            ),
            // Archive order, not alphabetical.
            (&["lib/z.jar", "lib/a.jar"], &["", "lib/z.jar", "lib/a.jar"]),
            (
                &[
                    "BOOT-INF/classes/a/Main.class",
                    "BOOT-INF/lib/dep.jar",
                    "BOOT-INF/classpath.idx",
                ],
                &["", "BOOT-INF/classes/", "BOOT-INF/lib/dep.jar"],
            ),
            (
                &["lib/sub/deep.JAR", "lib/readme.txt", "lib/.jar", "lib/abcé"],
                &["", "lib/sub/deep.JAR"],
            ),
            // Jars elsewhere are resources, not class path.
            (&["META-INF/x.jar", "conf/y.jar", "libx/z.jar"], &[""]),
            (&[], &[""]),
        ];
        for (files, want) in cases {
            assert_eq!(
                class_path(&strings(files)).unwrap(),
                strings(want),
                "files {files:?}"
            );
        }
        assert_eq!(
            class_path(&strings(&["lib/a:b.jar"])),
            Err(ClassPathError::Separator("lib/a:b.jar".into()))
        );
    }

    #[test]
    fn argfile_quoting_escapes_backslashes_and_quotes() {
        let cases = [
            ("unpack/lib/a.jar", r#""unpack/lib/a.jar""#),
            ("a b", r#""a b""#),
            (r#"q"uote"#, r#""q\"uote""#),
            (r"back\slash", r#""back\\slash""#),
        ];
        for (arg, want) in cases {
            assert_eq!(argfile_quote(arg), want);
        }
    }

    #[test]
    fn long_class_paths_move_into_an_argfile() {
        let jvm = strings(&["-Xmx32m"]);
        let args = strings(&["--x"]);
        let (cmd, file) = java_command(
            "-Dm=1",
            &jvm,
            "unpack:unpack/lib/a.jar",
            "@cp",
            "a.Main",
            &args,
        );
        assert_eq!(
            cmd,
            strings(&[
                "-Dm=1",
                "-Xmx32m",
                "-cp",
                "unpack:unpack/lib/a.jar",
                "a.Main",
                "--x"
            ])
        );
        assert_eq!(file, None);

        let long = "x".repeat(INLINE_CLASS_PATH_MAX + 1);
        let (cmd, file) = java_command("-Dm=1", &jvm, &long, "@cp", "a.Main", &args);
        assert_eq!(cmd, strings(&["-Dm=1", "-Xmx32m", "@cp", "a.Main", "--x"]));
        assert_eq!(file, Some(format!("-cp\n\"{long}\"\n")));
    }
}
