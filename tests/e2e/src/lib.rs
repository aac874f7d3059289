//! End-to-end tests of the Koupleless agent and module controller together (see `tests/`).
//! The crate has no library code of its own.
