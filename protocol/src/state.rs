//! Module states, state-change reasons and the result codes of both layers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::transport::{self, Transport};

/// Lower-cases and strips everything but letters and digits, so `INSTALL_FAILED`,
/// `Install Failed` and `install-failed` compare equal, as the Java and Go readers do.
fn fold(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// State of an Ark biz (module), spec protocol §4.1.
///
/// Serializes as the Java `toString()` (`activated`) over HTTP and as `name()` (`ACTIVATED`)
/// over MQTT; parses case-insensitively. Values no version of the protocol defines (such as
/// the legacy numeric codes `"3"`) parse to [`BizState::Unknown`] rather than failing, so a
/// newer or odd base never breaks a whole status report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BizState {
    /// Not installed.
    Unresolved,
    /// Registered, starting.
    Resolved,
    /// Started and serving.
    Activated,
    /// Started but not the active version, or being stopped.
    Deactivated,
    /// Install or uninstall failed.
    Broken,
    /// Uninstalled.
    Stopped,
    /// A value this crate does not know.
    Unknown,
}

impl BizState {
    /// All states that the protocol defines, in declaration order.
    pub const KNOWN: [BizState; 6] = [
        BizState::Unresolved,
        BizState::Resolved,
        BizState::Activated,
        BizState::Deactivated,
        BizState::Broken,
        BizState::Stopped,
    ];

    /// The Java `toString()` form used over HTTP, in heartbeats and in `simpleBiz.state`.
    pub fn as_lower(self) -> &'static str {
        match self {
            BizState::Unresolved => "unresolved",
            BizState::Resolved => "resolved",
            BizState::Activated => "activated",
            BizState::Deactivated => "deactivated",
            BizState::Broken => "broken",
            BizState::Stopped => "stopped",
            BizState::Unknown => "unknown",
        }
    }

    /// The Java `name()` form used over MQTT.
    pub fn as_upper(self) -> &'static str {
        match self {
            BizState::Unresolved => "UNRESOLVED",
            BizState::Resolved => "RESOLVED",
            BizState::Activated => "ACTIVATED",
            BizState::Deactivated => "DEACTIVATED",
            BizState::Broken => "BROKEN",
            BizState::Stopped => "STOPPED",
            BizState::Unknown => "UNKNOWN",
        }
    }

    /// The spelling for `transport`.
    pub fn as_str_for(self, transport: Transport) -> &'static str {
        match transport {
            Transport::Http => self.as_lower(),
            Transport::Mqtt => self.as_upper(),
        }
    }

    /// Parses case-insensitively; unknown text gives [`BizState::Unknown`].
    pub fn parse(s: &str) -> BizState {
        let f = fold(s);
        BizState::KNOWN
            .into_iter()
            .find(|k| k.as_lower() == f)
            .unwrap_or(BizState::Unknown)
    }
}

impl fmt::Display for BizState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_lower())
    }
}

impl Serialize for BizState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str_for(transport::current()))
    }
}

impl<'de> Deserialize<'de> for BizState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = crate::lenient::Text::deserialize(d)?;
        Ok(BizState::parse(&s.0))
    }
}

/// Serializes a [`BizState`] always lower-case, whatever the transport: `simpleBiz.state` and
/// the heartbeat `state` are written with `toString()` even over MQTT (trap T1).
pub mod lower {
    use super::BizState;
    use serde::Serializer;

    /// `serialize_with` helper.
    pub fn serialize<S: Serializer>(v: &BizState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_lower())
    }
}

/// Why a biz changed state (sofa-ark `StateChangeReason`), spec protocol §4.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateChangeReason {
    /// Biz created from its jar.
    Created,
    /// Started.
    Started,
    /// Start threw.
    InstallFailed,
    /// Stop threw.
    UninstallFailed,
    /// Activation moved between versions.
    Switched,
    /// Stop began.
    Killing,
    /// Stop finished.
    Stopped,
    /// Anything else.
    Undefine,
}

impl StateChangeReason {
    /// Every reason, in declaration order.
    pub const ALL: [StateChangeReason; 8] = [
        StateChangeReason::Created,
        StateChangeReason::Started,
        StateChangeReason::InstallFailed,
        StateChangeReason::UninstallFailed,
        StateChangeReason::Switched,
        StateChangeReason::Killing,
        StateChangeReason::Stopped,
        StateChangeReason::Undefine,
    ];

    /// Java `toString()` form (HTTP).
    pub fn as_display(self) -> &'static str {
        match self {
            StateChangeReason::Created => "Created",
            StateChangeReason::Started => "Started",
            StateChangeReason::InstallFailed => "Install Failed",
            StateChangeReason::UninstallFailed => "Uninstall Failed",
            StateChangeReason::Switched => "Switched",
            StateChangeReason::Killing => "Killing",
            StateChangeReason::Stopped => "Stopped",
            StateChangeReason::Undefine => "Undefine",
        }
    }

    /// Java `name()` form (MQTT).
    pub fn as_name(self) -> &'static str {
        match self {
            StateChangeReason::Created => "CREATED",
            StateChangeReason::Started => "STARTED",
            StateChangeReason::InstallFailed => "INSTALL_FAILED",
            StateChangeReason::UninstallFailed => "UN_INSTALL_FAILED",
            StateChangeReason::Switched => "SWITCHED",
            StateChangeReason::Killing => "KILLING",
            StateChangeReason::Stopped => "STOPPED",
            StateChangeReason::Undefine => "UNDEFINE",
        }
    }

    /// Parses either form case-insensitively; unknown text gives `Undefine`.
    pub fn parse(s: &str) -> StateChangeReason {
        let f = fold(s);
        StateChangeReason::ALL
            .into_iter()
            .find(|r| fold(r.as_display()) == f || fold(r.as_name()) == f)
            .unwrap_or(StateChangeReason::Undefine)
    }
}

impl fmt::Display for StateChangeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_display())
    }
}

impl Serialize for StateChangeReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match transport::current() {
            Transport::Http => self.as_display(),
            Transport::Mqtt => self.as_name(),
        })
    }
}

impl<'de> Deserialize<'de> for StateChangeReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = crate::lenient::Text::deserialize(d)?;
        Ok(StateChangeReason::parse(&s.0))
    }
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The exact wire spelling (identical on every transport).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// The Arklet response envelope `code` (spec protocol §2.2).
    ResponseCode {
        /// The command succeeded.
        Success = "SUCCESS",
        /// The command ran and failed.
        Failed = "FAILED",
        /// No handler for the command id.
        CmdNotFound = "CMD_NOT_FOUND",
        /// Validation failed or the handler threw.
        CmdProcessInternalError = "CMD_PROCESS_INTERNAL_ERROR",
    }
}

wire_enum! {
    /// The sofa-ark `ClientResponse` code inside `data.code` (spec protocol §2.7).
    ArkResultCode {
        /// Done.
        Success = "SUCCESS",
        /// Failed for another reason.
        Failed = "FAILED",
        /// That name:version is already registered.
        RepeatBiz = "REPEAT_BIZ",
        /// No such name:version.
        NotFoundBiz = "NOT_FOUND_BIZ",
        /// The biz is in a state that does not allow the operation.
        IllegalStateBiz = "ILLEGAL_STATE_BIZ",
    }
}

wire_enum! {
    /// Status of an async operation record (`ProcessRecord.status`).
    ProcessStatus {
        /// Accepted, not started.
        Initialized = "INITIALIZED",
        /// Running.
        Executing = "EXECUTING",
        /// Finished successfully.
        Succeeded = "SUCCEEDED",
        /// Finished with a failure.
        Failed = "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biz_state_parse_table() {
        let cases = [
            ("activated", BizState::Activated),
            ("ACTIVATED", BizState::Activated),
            ("Deactivated", BizState::Deactivated),
            ("resolved", BizState::Resolved),
            ("UNRESOLVED", BizState::Unresolved),
            ("broken", BizState::Broken),
            ("STOPPED", BizState::Stopped),
            ("3", BizState::Unknown),
            ("", BizState::Unknown),
        ];
        for (text, want) in cases {
            assert_eq!(BizState::parse(text), want, "{text}");
        }
    }

    #[test]
    fn reason_parses_both_spellings() {
        for r in StateChangeReason::ALL {
            assert_eq!(StateChangeReason::parse(r.as_display()), r);
            assert_eq!(StateChangeReason::parse(r.as_name()), r);
        }
        assert_eq!(
            StateChangeReason::parse("whatever"),
            StateChangeReason::Undefine
        );
    }

    #[test]
    fn state_renders_per_transport() {
        let http = crate::transport::encode(&BizState::Activated, Transport::Http);
        let mqtt = crate::transport::encode(&BizState::Activated, Transport::Mqtt);
        assert_eq!(http, b"\"activated\"");
        assert_eq!(mqtt, b"\"ACTIVATED\"");
        let r = crate::transport::encode(&StateChangeReason::UninstallFailed, Transport::Mqtt);
        assert_eq!(r, b"\"UN_INSTALL_FAILED\"");
    }
}
