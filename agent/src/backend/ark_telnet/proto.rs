//! The wire side of SOFAArk's telnet port, as pure functions: the command lines the client
//! builds, reply framing, and parsing of `biz -a`, `biz -m` and acknowledgements
//! (spec ark-telnet §1.5, §2, §4.2, §4.3).

use std::path::Path;

use koupleless_protocol::BizState;

use crate::backend::BizKey;

/// The prompt that ends the greeting and every reply (spec §1.5).
pub const PROMPT: &str = "sofa-ark>";

/// The port's line limit: a longer line is dropped with no reply at all (spec §1.5, §1.7).
pub const MAX_LINE_BYTES: usize = 8192;

/// `biz -a`: the one reliable state source (spec §2.3).
pub const LIST: &str = "biz -a";

/// `biz -m .*`: meta blocks of every biz; `.*` is a valid Java regex without whitespace, so
/// it survives tokenizing and never hits the no-reply trap of invalid regexes (spec §2.4).
pub const META_ALL: &str = "biz -m .*";

/// The main class sofa-ark gives the embed-mode base biz (spec §1.4); Arklet's `queryAllBiz`
/// hides the base by this value too.
pub const EMBED_MAIN: &str = "embed main";

/// Why the client refuses to build a command line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The port tokenizes on whitespace and decodes with the JVM default charset, so an
    /// argument must be non-empty printable ASCII without spaces (spec §1.5, §4.2.5).
    #[error("{what} {value:?} cannot be sent over the telnet port: {reason}")]
    BadArgument {
        /// What the argument is.
        what: &'static str,
        /// The argument.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The line would exceed the port's 8192-byte limit and get no reply (spec §1.5).
    #[error(
        "command line of {len} bytes exceeds the telnet port's limit of {MAX_LINE_BYTES} bytes (SOFAArk would drop it without a reply)"
    )]
    TooLong {
        /// The line's length in bytes.
        len: usize,
    },
    /// The jar path cannot be made a `file:` URL.
    #[error("{0} is not an absolute path, so it has no file: URL")]
    NotAbsolute(String),
}

fn check_token(what: &'static str, value: &str) -> Result<(), LineError> {
    let bad = |reason| LineError::BadArgument {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "only printable ASCII without whitespace survives the port",
        ));
    }
    Ok(())
}

fn finish(line: String) -> Result<String, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { len: line.len() });
    }
    Ok(line)
}

/// `biz -i <url>` (spec §2.5). Only `file:` URLs are sent: the agent has already fetched and
/// validated the package, and SOFAArk's own download has no timeout (spec §2.5.2 step 3).
pub fn install_line(file_url: &str) -> Result<String, LineError> {
    check_token("bizUrl", file_url)?;
    if !file_url.starts_with("file:") {
        return Err(LineError::BadArgument {
            what: "bizUrl",
            value: file_url.to_owned(),
            reason: "only file: URLs are sent to the base",
        });
    }
    finish(format!("biz -i {file_url}"))
}

/// The identity argument of `-u`/`-o`: SOFAArk splits it on `:` and needs exactly two parts
/// (spec §2.6, §2.7; `BizIdentityUtils.isValid`).
fn identity_arg(key: &BizKey) -> Result<String, LineError> {
    for (what, part) in [("bizName", &key.name), ("bizVersion", &key.version)] {
        check_token(what, part)?;
        if part.contains(':') {
            return Err(LineError::BadArgument {
                what,
                value: part.clone(),
                reason: "SOFAArk splits identities on ':'",
            });
        }
    }
    Ok(key.to_string())
}

/// `biz -u name:version` (spec §2.6).
pub fn uninstall_line(key: &BizKey) -> Result<String, LineError> {
    finish(format!("biz -u {}", identity_arg(key)?))
}

/// `biz -o name:version` (spec §2.7).
pub fn switch_line(key: &BizKey) -> Result<String, LineError> {
    finish(format!("biz -o {}", identity_arg(key)?))
}

/// The `file:` URL under which the base reads `jar`: the agent's package directory may be
/// mounted elsewhere in the base's container (`dir_in_base`). Percent-encoded, so ASCII only
/// (spec §2.5.3: `file:///abs/path`, spaces as `%20`).
pub fn base_file_url(
    jar: &Path,
    package_dir: &Path,
    dir_in_base: Option<&Path>,
) -> Result<String, LineError> {
    let seen = match (dir_in_base, jar.strip_prefix(package_dir)) {
        (Some(base_dir), Ok(rel)) => base_dir.join(rel),
        _ => jar.to_path_buf(),
    };
    url::Url::from_file_path(&seen)
        .map(|u| u.to_string())
        .map_err(|()| LineError::NotAbsolute(seen.display().to_string()))
}

/// Splits a reply off the read buffer: complete once the buffer ends with `\r\n` and the
/// prompt, which every reply does, blank or not (spec §1.5). Requiring the `\r\n` keeps a biz
/// name that merely contains `sofa-ark>` from ending a reply early. Returns the body without
/// the prompt and trailing line breaks.
pub fn frame_reply(buf: &[u8]) -> Option<String> {
    let end = buf.len().checked_sub(PROMPT.len() + 2)?;
    if &buf[end..end + 2] != b"\r\n" || &buf[end + 2..] != PROMPT.as_bytes() {
        return None;
    }
    let text = String::from_utf8_lossy(&buf[..end]);
    Some(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// How far the greeting has got: the port sends exactly `sofa-ark>` on connect (spec §1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// The buffer is the whole prompt.
    Complete,
    /// A prefix of it so far.
    Partial,
    /// Something else: not a SOFAArk telnet port.
    Foreign,
}

/// Classifies the bytes received since connecting.
pub fn greeting(buf: &[u8]) -> Greeting {
    let prompt = PROMPT.as_bytes();
    if buf == prompt {
        Greeting::Complete
    } else if prompt.starts_with(buf) {
        Greeting::Partial
    } else {
        Greeting::Foreign
    }
}

/// One `biz -a` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Identity.
    pub key: BizKey,
    /// State; text other than the six sofa-ark states is [`BizState::Unknown`].
    pub state: BizState,
}

/// A parsed `biz -a` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every registered biz, the base included, in the port's (meaningless) order.
    pub entries: Vec<Entry>,
}

impl Listing {
    /// The state of `key`, if listed.
    pub fn state_of(&self, key: &BizKey) -> Option<BizState> {
        self.entries.iter().find(|e| &e.key == key).map(|e| e.state)
    }
}

/// Why a `biz -a` reply is not a listing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// No `biz count = N` line: the port's command providers are not registered yet
    /// (window B, spec §1.7), never "zero modules".
    #[error("the base's command port is not ready yet (biz -a answered without a biz count)")]
    NotReady,
    /// Anything else unexpected.
    #[error("unexpected biz -a reply: {0}")]
    Malformed(String),
}

/// Parses a `biz -a` body (spec §2.3, §4.3): `name:version:state` lines, split at the last
/// colons, then `biz count = N`, which must equal the number of lines.
pub fn parse_list(body: &str) -> Result<Listing, ListError> {
    let mut lines: Vec<&str> = body
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let Some(last) = lines.pop() else {
        return Err(ListError::NotReady);
    };
    let Some(count) = last.strip_prefix("biz count = ") else {
        return Err(ListError::Malformed(last.chars().take(200).collect()));
    };
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| ListError::Malformed(format!("bad count line {last:?}")))?;
    let mut entries = Vec::with_capacity(lines.len());
    for line in &lines {
        let parsed = line.rsplit_once(':').and_then(|(id, state)| {
            let (name, version) = id.rsplit_once(':')?;
            Some(Entry {
                key: BizKey::new(name, version),
                state: BizState::parse(state),
            })
        });
        entries.push(parsed.ok_or_else(|| ListError::Malformed(format!("bad biz line {line:?}")))?);
    }
    if entries.len() != count {
        return Err(ListError::Malformed(format!(
            "{} biz lines but biz count = {count}",
            entries.len()
        )));
    }
    Ok(Listing { entries })
}

/// Identity and main class of one `biz -m` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Identity.
    pub key: BizKey,
    /// `MainClass:` value (`embed main` for the base).
    pub main_class: String,
}

/// Parses `biz -m` blocks (spec §2.4: labels padded to 26 columns, one empty line after each
/// block). Lines other than the three needed are ignored; a block without them is skipped.
pub fn parse_meta(body: &str) -> Vec<Meta> {
    let mut out = Vec::new();
    let (mut name, mut version, mut main) = (None, None, None);
    let value =
        |line: &str, label: &str| line.strip_prefix(label).map(|v| v.trim_start().to_owned());
    for line in body
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .chain([""])
    {
        if line.is_empty() {
            if let (Some(n), Some(v), Some(m)) = (name.take(), version.take(), main.take()) {
                out.push(Meta {
                    key: BizKey::new(n, v),
                    main_class: m,
                });
            }
            (name, version, main) = (None, None, None);
        } else if let Some(v) = value(line, "BizName:") {
            name = Some(v);
        } else if let Some(v) = value(line, "Version:") {
            version = Some(v);
        } else if let Some(v) = value(line, "MainClass:") {
            main = Some(v);
        }
    }
    out
}

/// Which asynchronous command an acknowledgement answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncOp {
    /// `biz -i`.
    Install,
    /// `biz -u`.
    Uninstall,
    /// `biz -o`.
    Switch,
}

impl AsyncOp {
    fn word(self) -> &'static str {
        match self {
            AsyncOp::Install => "install",
            AsyncOp::Uninstall => "uninstall",
            AsyncOp::Switch => "switch",
        }
    }
}

/// What the synchronous reply to `-i`/`-u`/`-o` says (spec §2.5.1, §2.6, §2.7, §1.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Queued; only polling tells the outcome.
    Queued,
    /// Install refused because some biz is `resolved` or `broken`.
    Gate,
    /// Refused by security mode (`sofa.ark.telnet.security.enable=true`).
    SecurityMode,
    /// Anything else, e.g. the help text: the line was not understood.
    Unexpected(String),
}

/// The install gate's refusal text (spec §2.5.1).
pub const GATE_TEXT: &str = "Exists some biz whose state is neither 'activated' nor 'deactivated'.";

/// Classifies an acknowledgement body.
pub fn classify_ack(op: AsyncOp, body: &str) -> Ack {
    let w = op.word();
    if body == format!("Start to process {w} command now, pls wait and check.") {
        Ack::Queued
    } else if op == AsyncOp::Install && body == GATE_TEXT {
        Ack::Gate
    } else if body == format!("Cannot execute {w} command in security mode.") {
        Ack::SecurityMode
    } else {
        Ack::Unexpected(body.chars().take(200).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str, v: &str) -> BizKey {
        BizKey::new(n, v)
    }

    #[test]
    fn command_lines_table() {
        assert_eq!(
            install_line("file:///opt/a%20b.jar").unwrap(),
            "biz -i file:///opt/a%20b.jar"
        );
        assert!(matches!(
            install_line("http://h/a.jar"),
            Err(LineError::BadArgument { .. })
        ));
        assert!(matches!(
            install_line("file:///a b.jar"),
            Err(LineError::BadArgument { .. })
        ));
        assert!(matches!(
            install_line("file:///é.jar"),
            Err(LineError::BadArgument { .. })
        ));
        assert!(matches!(
            install_line(""),
            Err(LineError::BadArgument { .. })
        ));
        let long = format!("file:///{}", "a".repeat(MAX_LINE_BYTES));
        assert!(matches!(
            install_line(&long),
            Err(LineError::TooLong { .. })
        ));
        let fits = format!(
            "file:///{}",
            "a".repeat(MAX_LINE_BYTES - "biz -i file:///".len())
        );
        assert_eq!(install_line(&fits).unwrap().len(), MAX_LINE_BYTES);

        assert_eq!(
            uninstall_line(&key("mod1", "0.0.1")).unwrap(),
            "biz -u mod1:0.0.1"
        );
        assert_eq!(
            switch_line(&key("demo", "2.0.0")).unwrap(),
            "biz -o demo:2.0.0"
        );
        for bad in [
            key("master biz", "1.0.0"),
            key("a:b", "1"),
            key("a", "1:2"),
            key("", "1"),
            key("a", ""),
        ] {
            assert!(uninstall_line(&bad).is_err(), "{bad}");
            assert!(switch_line(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_file_url_table() {
        let pkgs = Path::new("/work/packages");
        let jar = Path::new("/work/packages/a-1-2024.jar");
        assert_eq!(
            base_file_url(jar, pkgs, None).unwrap(),
            "file:///work/packages/a-1-2024.jar"
        );
        assert_eq!(
            base_file_url(jar, pkgs, Some(Path::new("/shared/agent pkgs"))).unwrap(),
            "file:///shared/agent%20pkgs/a-1-2024.jar"
        );
        // A jar outside the package directory is passed as it is.
        assert_eq!(
            base_file_url(
                Path::new("/elsewhere/x.jar"),
                pkgs,
                Some(Path::new("/shared"))
            )
            .unwrap(),
            "file:///elsewhere/x.jar"
        );
        assert!(base_file_url(Path::new("rel/x.jar"), pkgs, None).is_err());
        let encoded = base_file_url(Path::new("/tmp/ü.jar"), pkgs, None).unwrap();
        assert!(encoded.is_ascii(), "{encoded}");
    }

    #[test]
    fn framing_table() {
        let cases: [(&[u8], Option<&str>); 8] = [
            (b"\r\nsofa-ark>", Some("")),
            (b"biz count = 1\r\n\r\nsofa-ark>", Some("biz count = 1")),
            (
                b"Start to process install command now, pls wait and check.\r\n\r\nsofa-ark>",
                Some("Start to process install command now, pls wait and check."),
            ),
            (b"demo:1.0.0:activated\r\nbiz count = 1\r\n\r\nsofa-", None),
            (b"sofa-ark>", None),
            // A name containing the prompt does not end the reply early.
            (b"x-sofa-ark>", None),
            (b"", None),
            (b"\r\n", None),
        ];
        for (buf, want) in cases {
            assert_eq!(
                frame_reply(buf).as_deref(),
                want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn greeting_table() {
        assert_eq!(greeting(b"sofa-ark>"), Greeting::Complete);
        assert_eq!(greeting(b"sofa-"), Greeting::Partial);
        assert_eq!(greeting(b""), Greeting::Partial);
        assert_eq!(greeting(b"SSH-2.0-OpenSSH"), Greeting::Foreign);
        assert_eq!(greeting(b"sofa-ark>x"), Greeting::Foreign);
    }

    #[test]
    fn list_parsing_table() {
        // Spec §5.1 (harness bytes, framed).
        let body = "demo:2.0.0:deactivated\r\ndemo:1.0.0:activated\r\nbase:1.0.0:activated\r\nbiz count = 3";
        let l = parse_list(body).unwrap();
        assert_eq!(l.entries.len(), 3);
        assert_eq!(
            l.state_of(&key("demo", "2.0.0")),
            Some(BizState::Deactivated)
        );
        assert_eq!(l.state_of(&key("base", "1.0.0")), Some(BizState::Activated));
        assert_eq!(l.state_of(&key("nope", "1")), None);
        // The default base name has a space; split at the last colons.
        let l = parse_list("master biz:1.0.0:activated\nmod:1:resolved\nbiz count = 2\n").unwrap();
        assert_eq!(
            l.state_of(&key("master biz", "1.0.0")),
            Some(BizState::Activated)
        );
        assert_eq!(l.state_of(&key("mod", "1")), Some(BizState::Resolved));
        assert_eq!(parse_list("biz count = 0").unwrap(), Listing::default());
        let l = parse_list("a:1:weird\nbiz count = 1").unwrap();
        assert_eq!(l.entries[0].state, BizState::Unknown);
        // Window B: blank reply, never "no modules".
        assert_eq!(parse_list(""), Err(ListError::NotReady));
        assert!(matches!(
            parse_list("a:1:activated"),
            Err(ListError::Malformed(_))
        ));
        assert!(matches!(
            parse_list("a:1:activated\nbiz count = 2"),
            Err(ListError::Malformed(_))
        ));
        assert!(matches!(
            parse_list("nocolon\nbiz count = 1"),
            Err(ListError::Malformed(_))
        ));
        assert!(matches!(
            parse_list("biz count = x"),
            Err(ListError::Malformed(_))
        ));
        assert!(matches!(
            parse_list("Plugin Command Tips:"),
            Err(ListError::Malformed(_))
        ));
    }

    #[test]
    fn meta_parsing() {
        // Spec §5.4 block plus an embed base block.
        let body = "BizName:                  demo\r\nVersion:                  1.0.0\r\nPriority:                 100\r\nMainClass:                com.example.Main\r\nWebContextPath:           /\r\nDeny Import Packages:     \\\r\nDeny Import Classes:      \\\r\nDeny Import Resources:    \\\r\n\r\nBizName:                  master biz\r\nVersion:                  1.0.0\r\nPriority:                 100\r\nMainClass:                embed main\r\nWebContextPath:           /\r\nDeny Import Packages:     \\\r\nDeny Import Classes:      \\\r\nDeny Import Resources:    \\";
        assert_eq!(
            parse_meta(body),
            [
                Meta {
                    key: key("demo", "1.0.0"),
                    main_class: "com.example.Main".into()
                },
                Meta {
                    key: key("master biz", "1.0.0"),
                    main_class: EMBED_MAIN.into()
                },
            ]
        );
        assert!(parse_meta("no matched biz candidates.").is_empty());
        assert!(parse_meta("").is_empty());
    }

    #[test]
    fn ack_table() {
        use AsyncOp::*;
        let cases = [
            (
                Install,
                "Start to process install command now, pls wait and check.",
                Ack::Queued,
            ),
            (
                Uninstall,
                "Start to process uninstall command now, pls wait and check.",
                Ack::Queued,
            ),
            (
                Switch,
                "Start to process switch command now, pls wait and check.",
                Ack::Queued,
            ),
            (Install, GATE_TEXT, Ack::Gate),
            (
                Install,
                "Cannot execute install command in security mode.",
                Ack::SecurityMode,
            ),
            (
                Uninstall,
                "Cannot execute uninstall command in security mode.",
                Ack::SecurityMode,
            ),
            (
                Uninstall,
                "Start to process install command now, pls wait and check.",
                Ack::Unexpected("Start to process install command now, pls wait and check.".into()),
            ),
            (Switch, "", Ack::Unexpected(String::new())),
        ];
        for (op, body, want) in cases {
            assert_eq!(classify_ack(op, body), want, "{op:?} {body}");
        }
    }
}
