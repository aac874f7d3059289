//! Module packages: fetching `bizUrl` once per install, validating the Ark biz jar and reading
//! its manifest before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::BizKey;

/// A fetched and validated Ark biz package, stored under the agent's work directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Identity from the manifest (`Ark-Biz-Name`, `Ark-Biz-Version`).
    pub key: BizKey,
    /// `Start-Class`, else `Main-Class`.
    pub main_class: String,
    /// Manifest `priority` (default 100); lower installs first in a batch.
    pub priority: i32,
    /// Manifest `web-context-path`, if any.
    pub web_context_path: Option<String>,
    /// Every main manifest attribute, for `BizModel.attributes`-style reporting.
    pub attributes: BTreeMap<String, String>,
    /// The jar file, owned by the agent (removed on uninstall or failed install).
    pub jar: PathBuf,
    /// The `bizUrl` it was fetched from.
    pub url: String,
}
