//! Per-transport rendering of enums.
//!
//! The Java Arklet serializes HTTP responses with fastjson's `WriteEnumUsingToString` and MQTT
//! messages with the defaults, so the same `BizState` is `"activated"` over HTTP and
//! `"ACTIVATED"` over MQTT (spec protocol §1.2, trap T1). Rather than duplicating every biz
//! shape per transport, the enum serializers consult the transport that the outermost
//! [`encode`] call selected. Serialization is synchronous, so a thread-local scoped to that call
//! is exact: nothing else can run on the thread while it is set.

use std::cell::Cell;

use serde::Serialize;

/// Which wire the JSON is written for; decides how enums are spelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP responses: enums by Java `toString()` (`activated`, `Started`, `Install Failed`).
    #[default]
    Http,
    /// MQTT messages and the HTTP heartbeat: enums by Java `name()` (`ACTIVATED`, `STARTED`).
    Mqtt,
}

thread_local! {
    static CURRENT: Cell<Transport> = const { Cell::new(Transport::Http) };
}

/// The transport selected by the innermost [`encode`] call on this thread (HTTP outside one).
pub fn current() -> Transport {
    CURRENT.with(Cell::get)
}

/// Restores the previous transport even if serialization panics.
struct Scope(Transport);

impl Scope {
    fn enter(t: Transport) -> Self {
        Scope(CURRENT.with(|c| c.replace(t)))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Serializes `value` as compact JSON with enums spelled for `transport`.
///
/// Compact output matters: arkctl detects outcomes by the substring `"code":"FAILED"` (T8).
pub fn encode<T: Serialize + ?Sized>(value: &T, transport: Transport) -> Vec<u8> {
    let _scope = Scope::enter(transport);
    // Serializing our own types into a Vec cannot fail: every map key is a string.
    serde_json::to_vec(value).expect("protocol types always serialize")
}

/// Like [`encode`] but into a [`serde_json::Value`], for embedding into a larger document.
pub fn to_value<T: Serialize + ?Sized>(value: &T, transport: Transport) -> serde_json::Value {
    let _scope = Scope::enter(transport);
    serde_json::to_value(value).expect("protocol types always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_restores_previous_transport() {
        assert_eq!(current(), Transport::Http);
        {
            let _a = Scope::enter(Transport::Mqtt);
            assert_eq!(current(), Transport::Mqtt);
            {
                let _b = Scope::enter(Transport::Http);
                assert_eq!(current(), Transport::Http);
            }
            assert_eq!(current(), Transport::Mqtt);
        }
        assert_eq!(current(), Transport::Http);
    }
}
