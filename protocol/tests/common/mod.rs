//! Helpers shared by the integration tests: fixture access and JSON value comparison.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The fixture directory of this crate; the tests never read `/work/shared`, so they run from a
/// fresh clone.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// The bytes of `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

/// Parses `tests/fixtures/<rel>` as JSON.
pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// Every fixture file, as paths relative to the fixture directory (`spec/x.json`), sorted.
/// Only the data directories are listed, not the README.
pub fn all_fixtures() -> Vec<String> {
    let root = fixtures_dir();
    let mut out = Vec::new();
    for dir in ["spec", "real-http", "real-mqtt"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("fixture directory exists") {
            let name = entry.expect("readable directory entry").file_name();
            out.push(format!("{dir}/{}", name.to_string_lossy()));
        }
    }
    out.sort();
    out
}

/// Compares two JSON documents as values, returning where they first differ.
///
/// Object key order is irrelevant (fastjson writes maps in hash order). Numbers must agree in
/// kind as well as value: an integer on one side and a float on the other is a difference,
/// because Go decodes a float literal into an `int64` field as an error (trap T3). Floats
/// compare by numeric value, so `-9.5367431640625E-7` equals `-9.5367431640625e-7`.
pub fn json_diff(expected: &Value, actual: &Value) -> Result<(), String> {
    diff_at("$", expected, actual)
}

fn diff_at(path: &str, expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => diff_at(&p, ev, av)?,
                    None => return Err(format!("{p}: missing, expected {ev}")),
                }
            }
            if let Some(k) = a.keys().find(|k| !e.contains_key(*k)) {
                return Err(format!("{path}.{k}: unexpected key with value {}", a[k]));
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: expected {} elements, got {}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                diff_at(&format!("{path}[{i}]"), ev, av)?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) => {
            let same = match (e.is_f64(), a.is_f64()) {
                (true, true) => e.as_f64() == a.as_f64(),
                (false, false) => e.as_i64() == a.as_i64() && e.as_u64() == a.as_u64(),
                _ => false,
            };
            if same {
                Ok(())
            } else {
                Err(format!(
                    "{path}: expected {e}, got {a} (integer vs float matters)"
                ))
            }
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// Whether `json` contains whitespace outside string literals, i.e. is not compact.
pub fn has_whitespace_outside_strings(json: &[u8]) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            return true;
        }
    }
    false
}
