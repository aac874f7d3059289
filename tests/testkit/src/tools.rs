//! Tests that need an external tool (a JDK, Mosquitto, openssl, kubectl) when it is missing:
//! a plain `cargo test` skips them and says so; `scripts/test` sets [`REQUIRE_TOOLS_ENV`],
//! under which a missing tool fails the test, so a machine without the tools can never pass
//! the suite by skipping its JVM, broker or TLS tests.

/// Set (to anything but `0` or empty) by `scripts/test`.
pub const REQUIRE_TOOLS_ENV: &str = "KOUPLELESS_REQUIRE_TOOLS";

/// Whether missing tools fail tests ([`REQUIRE_TOOLS_ENV`] is set).
pub fn tools_required() -> bool {
    std::env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What to do about `test` that cannot run because of `reason`: `Ok(line)` to print and
/// skip, `Err(message)` to fail with. Pure; [`skip_or_fail`] applies it.
pub fn missing_tool_verdict(required: bool, test: &str, reason: &str) -> Result<String, String> {
    if required {
        Err(format!(
            "{test} cannot run: {reason}; {REQUIRE_TOOLS_ENV} is set, so this is a failure (install the tools with scripts/ensure-deps)"
        ))
    } else {
        Ok(format!(
            "SKIPPED {test}: {reason} (with {REQUIRE_TOOLS_ENV}=1, as scripts/test runs, this fails)"
        ))
    }
}

/// Called by a test that cannot run because `reason` (a missing tool): prints
/// `SKIPPED <test>: <reason>` to stderr and returns, so the caller returns; or, under
/// [`REQUIRE_TOOLS_ENV`], panics with the reason.
#[track_caller]
pub fn skip_or_fail(test: &str, reason: &str) {
    match missing_tool_verdict(tools_required(), test, reason) {
        Ok(line) => eprintln!("{line}"),
        Err(message) => panic!("{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_loudly_or_fails() {
        let skip = missing_tool_verdict(false, "t", "no javac").unwrap();
        assert!(skip.starts_with("SKIPPED t: no javac"), "{skip}");
        let fail = missing_tool_verdict(true, "t", "no javac").unwrap_err();
        assert!(
            fail.contains("no javac") && fail.contains(REQUIRE_TOOLS_ENV),
            "{fail}"
        );
    }
}
