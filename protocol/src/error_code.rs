//! The documented two-level error codes `<Source>.<Type>` (spec protocol §7.1).
//!
//! Upstream documents them and never emits them. We send them in an extra optional
//! `errorCode` field, never in place of the existing `code` values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Who is responsible for a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The user's module or input.
    User,
    /// The agent (Arklet) itself.
    Arklet,
    /// The module controller.
    ModuleController,
    /// Something upstream of us (a package repository, DNS).
    OtherUpstream,
}

macro_rules! codes {
    ($($variant:ident => ($source:ident, $ty:literal, $doc:literal)),+ $(,)?) => {
        /// A two-level error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant),+
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The responsible party.
            pub fn source(self) -> ErrorSource {
                match self { $(ErrorCode::$variant => ErrorSource::$source),+ }
            }

            /// The type part, e.g. `InstallBizFailed`.
            pub fn kind(self) -> &'static str {
                match self { $(ErrorCode::$variant => $ty),+ }
            }
        }
    };
}

codes! {
    UnknownError => (Arklet, "UnknownError", "Anything not classified."),
    InvalidParameter => (ModuleController, "InvalidParameter", "A request field is missing or malformed."),
    InvalidRequest => (ModuleController, "InvalidRequest", "The request itself is unusable (unknown command, not JSON)."),
    DecodeUrlFailed => (OtherUpstream, "DecodeURLFailed", "`bizUrl` is not a usable URL."),
    NoMatchedBiz => (Arklet, "NoMatchedBiz", "No module with that name and version."),
    InvalidBizName => (Arklet, "InvalidBizName", "The module name or version is invalid."),
    InstallationRequirementNotMet => (Arklet, "InstallationRequirementNotMet", "The package is not an installable Ark biz."),
    PullBizError => (Arklet, "PullBizError", "The package could not be fetched."),
    PullBizTimeOut => (Arklet, "PullBizTimeOut", "Fetching the package timed out."),
    DiskFull => (User, "DiskFull", "No space left for the package."),
    MachineMalfunction => (User, "MachineMalfunction", "The machine failed (I/O error, cannot start a process)."),
    MetaspaceFull => (User, "MetaspaceFull", "The base has no metaspace left for the module."),
    InstallBizExecuting => (Arklet, "InstallBizExecuting", "Another command for the same module is running."),
    InstallBizTimedOut => (Arklet, "InstallBizTimedOut", "The install did not finish in time."),
    InstallBizFailed => (Arklet, "InstallBizFailed", "The install failed."),
    InstallBizUserError => (User, "InstallBizUserError", "The module's own start-up failed."),
    UninstallBizFailed => (Arklet, "UninstallBizFailed", "The uninstall failed."),
    UnInstallationRequirementNotMet => (Arklet, "UnInstallationRequirementNotMet", "The module cannot be uninstalled (e.g. the base itself)."),
    NetworkError => (Arklet, "NetworkError", "A network call failed."),
}

impl ErrorCode {
    /// The source part, e.g. `Arklet`.
    pub fn source_str(self) -> &'static str {
        match self.source() {
            ErrorSource::User => "User",
            ErrorSource::Arklet => "Arklet",
            ErrorSource::ModuleController => "ModuleController",
            ErrorSource::OtherUpstream => "OtherUpstream",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.source_str(), self.kind())
    }
}

/// Text that is not a known two-level code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.to_string() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_format_and_parse() {
        assert_eq!(
            ErrorCode::InstallBizFailed.to_string(),
            "Arklet.InstallBizFailed"
        );
        assert_eq!(ErrorCode::MetaspaceFull.to_string(), "User.MetaspaceFull");
        assert_eq!(
            ErrorCode::DecodeUrlFailed.to_string(),
            "OtherUpstream.DecodeURLFailed"
        );
        for c in ErrorCode::ALL {
            assert_eq!(c.to_string().parse::<ErrorCode>(), Ok(*c));
            let s = c.to_string();
            let (src, ty) = s.split_once('.').unwrap();
            assert!(src.chars().next().unwrap().is_ascii_uppercase() && !ty.contains('.'));
        }
    }
}
