//! The scenarios, grouped by topic. Each takes a [`crate::common::Ctx`].

pub mod core;
pub mod delete;
pub mod imperative;
pub mod kubectl;
pub mod patch;
pub mod runtime;
pub mod watch;
