//! Composition of the `health` command's `healthData` (spec protocol §3.2). Pure: the caller
//! passes the samples and the module list.

use koupleless_protocol::health::PluginHealthMeta;
use koupleless_protocol::{BizHealthMeta, CpuInfo, HealthData, HealthRequest, JvmInfo};

/// One consistent health reading: JVM, CPU and the base's own state from the same sample.
#[derive(Clone, Debug)]
pub struct HealthSample {
    /// The JVM indicator, `None` when no base JVM is known.
    pub jvm: Option<JvmInfo>,
    /// The CPU indicator.
    pub cpu: Option<CpuInfo>,
    /// The base itself (`masterBizInfo`).
    pub master: BizHealthMeta,
}

/// Where health numbers come from (the JVM sampler in production).
pub trait HealthSource: Send + Sync + 'static {
    /// The current reading, taken once per command.
    fn sample(&self) -> HealthSample;
    /// Used metaspace of the base in bytes, for `elapsedSpace`.
    fn metaspace_used(&self) -> Option<i64> {
        self.sample()
            .jvm
            .and_then(|j| j.used_metaspace)
            .filter(|v| *v >= 0)
    }
}

/// Everything `compose` reads.
#[derive(Clone, Debug)]
pub struct HealthInputs {
    /// JVM indicator.
    pub jvm: Option<JvmInfo>,
    /// CPU indicator.
    pub cpu: Option<CpuInfo>,
    /// The base.
    pub master: BizHealthMeta,
    /// Registered modules (without the base).
    pub bizs: Vec<BizHealthMeta>,
    /// Plugins (none outside a SOFAArk base).
    pub plugins: Vec<PluginHealthMeta>,
}

/// How a health request fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthFailure {
    /// Invalid request (`CMD_PROCESS_INTERNAL_ERROR`).
    Invalid(String),
    /// A lookup failed (`FAILED` with this message and no data).
    Failed(String),
}

/// Builds `healthData` for `req`.
pub fn compose(req: &HealthRequest, inp: HealthInputs) -> Result<HealthData, HealthFailure> {
    let kind = req.kind.as_deref().unwrap_or("");
    let (indicators, master, biz, plugin) = match kind {
        "" => (true, true, true, true),
        "system" => (true, false, false, false),
        "biz" => (false, false, true, false),
        "plugin" => (false, false, false, true),
        other => {
            return Err(HealthFailure::Invalid(format!(
                "type: {other} can not be found"
            )));
        }
    };
    let mut out = HealthData::default();
    if indicators {
        let metrics: Vec<&str> = req.metrics.iter().flatten().map(String::as_str).collect();
        let wanted = |id: &str| metrics.is_empty() || metrics.contains(&id);
        // Without a base JVM the `jvm` indicator is not registered, so asking for it fails
        // exactly like asking for any other unknown indicator.
        let registered =
            |m: &str| m == "cpu" && inp.cpu.is_some() || m == "jvm" && inp.jvm.is_some();
        if let Some(unknown) = metrics.iter().find(|m| !registered(m)) {
            tracing::debug!(indicator = unknown, "unknown health indicator requested");
            return Err(HealthFailure::Failed("indicator not registered".into()));
        }
        if wanted("jvm") {
            out.jvm = inp.jvm.clone();
        }
        if wanted("cpu") {
            out.cpu = inp.cpu.clone();
        }
    }
    if master {
        out.master_biz_info = Some(inp.master.clone());
    }
    let name = req.biz_name.as_deref().filter(|s| !s.is_empty());
    let version = req.biz_version.as_deref().filter(|s| !s.is_empty());
    if biz {
        let mut all = inp.bizs.clone();
        all.push(inp.master.clone());
        match (name, version) {
            (Some(n), Some(v)) => {
                let found = all
                    .into_iter()
                    .find(|b| b.biz_name == n && b.biz_version == v);
                out.biz_info =
                    Some(found.ok_or_else(|| HealthFailure::Failed("can not find biz".into()))?);
            }
            (Some(n), None) => {
                let list: Vec<_> = all.into_iter().filter(|b| b.biz_name == n).collect();
                if list.is_empty() {
                    return Err(HealthFailure::Failed(format!("can not find biz: {n}")));
                }
                out.biz_list_info = Some(list);
            }
            (None, _) => out.biz_list_info = Some(all),
        }
    }
    if plugin {
        // Upstream uses `bizName` as the plugin name here, so a module name in an untyped
        // request fails the whole call with `can not find plugin` (spec §3.2 quirk).
        match name {
            Some(n) => {
                let found = inp
                    .plugins
                    .iter()
                    .find(|p| p.plugin_name.as_deref() == Some(n));
                out.plugin_info = Some(
                    found
                        .cloned()
                        .ok_or_else(|| HealthFailure::Failed("can not find plugin".into()))?,
                );
            }
            None => out.plugin_list_info = Some(inp.plugins.clone()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::BizState;

    fn meta(n: &str, v: &str) -> BizHealthMeta {
        BizHealthMeta {
            biz_name: n.into(),
            biz_state: BizState::Activated,
            biz_version: v.into(),
            web_context_path: Some("/".into()),
        }
    }

    fn inputs() -> HealthInputs {
        HealthInputs {
            jvm: Some(JvmInfo {
                max_metaspace: Some(-1),
                ..JvmInfo::default()
            }),
            cpu: Some(CpuInfo {
                count: Some(2),
                ..CpuInfo::default()
            }),
            master: meta("base", "1.0.0"),
            bizs: vec![meta("a", "1"), meta("a", "2")],
            plugins: vec![],
        }
    }

    fn req(
        kind: Option<&str>,
        metrics: &[&str],
        name: Option<&str>,
        version: Option<&str>,
    ) -> HealthRequest {
        HealthRequest {
            kind: kind.map(Into::into),
            metrics: (!metrics.is_empty()).then(|| metrics.iter().map(|s| s.to_string()).collect()),
            biz_name: name.map(Into::into),
            biz_version: version.map(Into::into),
        }
    }

    fn keys(h: &HealthData) -> Vec<&'static str> {
        let mut k = vec![];
        if h.jvm.is_some() {
            k.push("jvm")
        }
        if h.cpu.is_some() {
            k.push("cpu")
        }
        if h.master_biz_info.is_some() {
            k.push("masterBizInfo")
        }
        if h.biz_info.is_some() {
            k.push("bizInfo")
        }
        if h.biz_list_info.is_some() {
            k.push("bizListInfo")
        }
        if h.plugin_info.is_some() {
            k.push("pluginInfo")
        }
        if h.plugin_list_info.is_some() {
            k.push("pluginListInfo")
        }
        k
    }

    #[test]
    fn composition_table() {
        let ok = |r: HealthRequest| keys(&compose(&r, inputs()).unwrap());
        assert_eq!(
            ok(req(None, &[], None, None)),
            [
                "jvm",
                "cpu",
                "masterBizInfo",
                "bizListInfo",
                "pluginListInfo"
            ]
        );
        assert_eq!(ok(req(Some("system"), &[], None, None)), ["jvm", "cpu"]);
        assert_eq!(ok(req(Some("system"), &["cpu"], None, None)), ["cpu"]);
        assert_eq!(ok(req(Some("biz"), &[], None, None)), ["bizListInfo"]);
        assert_eq!(ok(req(Some("biz"), &[], Some("a"), Some("2"))), ["bizInfo"]);
        assert_eq!(ok(req(Some("biz"), &[], Some("a"), None)), ["bizListInfo"]);
        assert_eq!(ok(req(Some("plugin"), &[], None, None)), ["pluginListInfo"]);
        let list = compose(&req(Some("biz"), &[], None, None), inputs())
            .unwrap()
            .biz_list_info
            .unwrap();
        assert_eq!(list.len(), 3, "the list includes the base itself");
    }

    #[test]
    fn failure_table() {
        let no_jvm = HealthInputs {
            jvm: None,
            ..inputs()
        };
        assert_eq!(
            compose(&req(Some("system"), &["jvm"], None, None), no_jvm),
            Err(HealthFailure::Failed("indicator not registered".into()))
        );
        let cases = [
            (
                req(Some("bogus"), &[], None, None),
                HealthFailure::Invalid("type: bogus can not be found".into()),
            ),
            (
                req(Some("system"), &["gc"], None, None),
                HealthFailure::Failed("indicator not registered".into()),
            ),
            (
                req(Some("biz"), &[], Some("zz"), None),
                HealthFailure::Failed("can not find biz: zz".into()),
            ),
            (
                req(Some("biz"), &[], Some("a"), Some("9")),
                HealthFailure::Failed("can not find biz".into()),
            ),
            (
                req(Some("plugin"), &[], Some("p"), None),
                HealthFailure::Failed("can not find plugin".into()),
            ),
            (
                req(None, &[], Some("a"), None),
                HealthFailure::Failed("can not find plugin".into()),
            ),
        ];
        for (r, want) in cases {
            assert_eq!(compose(&r, inputs()), Err(want), "{r:?}");
        }
    }
}
