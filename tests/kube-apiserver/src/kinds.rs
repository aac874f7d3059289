//! Per-kind behaviour of the real registry strategies that this server
//! reproduces: what create resets, the defaults applied when a body is
//! decoded, validation, which parts of an object the main resource and the
//! `status` subresource may write, and the events.k8s.io/v1 view of core
//! events.

use crate::errors::{Cause, cause, forbidden_field, invalid_value, required};
use crate::resources::{ResourceDef, Storage};
use crate::selectors::{
    LabelSelector, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_label_key,
    is_label_value,
};
use crate::store::State;
use serde_json::{Map, Value, json};

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The resource itself.
    Main,
    /// `/status`.
    Status,
    /// `/finalize` (namespaces only).
    Finalize,
    /// `/scale` (writes only `spec.replicas`; see [`crate::scale`]).
    Scale,
}

impl Sub {
    /// Subresource name for managedFields.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Sub::Main => None,
            Sub::Status => Some("status"),
            Sub::Finalize => Some("finalize"),
            Sub::Scale => Some("scale"),
        }
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    v[key].as_object_mut().expect("object")
}

fn default_field(m: &mut Map<String, Value>, key: &str, val: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), val);
    }
}

/// SetDefaults_Deployment / SetDefaults_DaemonSet: field by field, so a
/// partly given strategy (`strategy: {}`, as `kubectl create deployment`
/// sends) is completed.
fn default_strategy(spec: &mut Map<String, Value>, key: &str, unavailable: Value, surge: Value) {
    let strategy = spec.entry(key).or_insert_with(|| json!({}));
    let Some(st) = strategy.as_object_mut() else {
        return;
    };
    default_field(st, "type", json!("RollingUpdate"));
    if st.get("type").and_then(Value::as_str) != Some("RollingUpdate") {
        return;
    }
    let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
    if ru.is_null() {
        *ru = json!({});
    }
    if let Some(ru) = ru.as_object_mut() {
        default_field(ru, "maxUnavailable", unavailable);
        default_field(ru, "maxSurge", surge);
    }
}

/// Defaults applied whenever a body of this kind is decoded (create,
/// update, patch), as the real defaulting functions do. Only the subset
/// documented in the crate docs is implemented.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    match def.storage {
        Storage::Pods => {
            let spec = obj_mut(obj, "spec");
            default_pod_spec(spec);
            sync_pod_ips(obj);
        }
        Storage::Deployments | Storage::ReplicaSets | Storage::DaemonSets => {
            let spec = obj_mut(obj, "spec");
            match def.storage {
                Storage::Deployments => {
                    default_field(spec, "replicas", json!(1));
                    default_field(spec, "revisionHistoryLimit", json!(10));
                    default_field(spec, "progressDeadlineSeconds", json!(600));
                    default_strategy(spec, "strategy", json!("25%"), json!("25%"));
                }
                Storage::ReplicaSets => default_field(spec, "replicas", json!(1)),
                _ => {
                    default_field(spec, "revisionHistoryLimit", json!(10));
                    default_strategy(spec, "updateStrategy", json!(1), json!(0));
                }
            }
            if let Some(Value::Object(tpl)) = spec.get_mut("template") {
                if !tpl.get("spec").is_some_and(Value::is_object) {
                    tpl.insert("spec".into(), json!({}));
                }
                if let Some(Value::Object(ps)) = tpl.get_mut("spec") {
                    default_pod_spec(ps);
                }
            }
        }
        Storage::Services => {
            let spec = obj_mut(obj, "spec");
            default_field(spec, "type", json!("ClusterIP"));
            if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
                default_field(spec, "sessionAffinity", json!("None"));
                default_field(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports {
                    if let Value::Object(pm) = p {
                        default_field(pm, "protocol", json!("TCP"));
                        if let Some(port) = pm.get("port").cloned() {
                            default_field(pm, "targetPort", port);
                        }
                    }
                }
            }
        }
        Storage::Namespaces => {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !name.is_empty() {
                let meta = obj_mut(obj, "metadata");
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        Storage::Secrets => {
            default_secret(obj);
        }
        Storage::Nodes
        | Storage::Events
        | Storage::Leases
        | Storage::ConfigMaps
        | Storage::PodDisruptionBudgets
        | Storage::ServiceAccounts
        | Storage::Roles
        | Storage::RoleBindings
        | Storage::ClusterRoles
        | Storage::ClusterRoleBindings
        | Storage::ControllerRevisions => {}
    }
}

/// SetDefaults_Secret and the v1 conversion: `type` Opaque; `stringData`
/// is merged into `data` (base64, `stringData` winning) and not stored.
fn default_secret(obj: &mut Value) {
    use base64::Engine;
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    if m.get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        m.insert("type".into(), json!("Opaque"));
    }
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in sd {
            let text = v.as_str().unwrap_or_default();
            data[k.as_str()] =
                json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
        }
    }
}

/// The v1 conversion keeps `podIP`/`podIPs` (and `hostIP`/`hostIPs`) in
/// step: the singular field is authoritative and becomes the first entry of
/// the list; a list alone fills the singular field.
fn sync_pod_ips(obj: &mut Value) {
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    for (one, many) in [("podIP", "podIPs"), ("hostIP", "hostIPs")] {
        let single = status
            .get(one)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let first = status
            .get(many)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|x| x["ip"].as_str())
            .map(str::to_string);
        match (single.is_empty(), first) {
            (false, None) => {
                status.insert(many.into(), json!([{"ip": single}]));
            }
            (false, Some(f)) if f != single => {
                status.insert(many.into(), json!([{"ip": single}]));
            }
            (true, Some(f)) => {
                status.insert(one.into(), json!(f));
            }
            _ => {}
        }
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                if let Value::Object(cm) = c {
                    default_field(cm, "terminationMessagePath", json!("/dev/termination-log"));
                    default_field(cm, "terminationMessagePolicy", json!("File"));
                    default_field(cm, "resources", json!({}));
                    let image = cm.get("image").and_then(Value::as_str).unwrap_or_default();
                    let policy = if image_tag_is_latest(image) {
                        "Always"
                    } else {
                        "IfNotPresent"
                    };
                    default_field(cm, "imagePullPolicy", json!(policy));
                    if let Some(Value::Array(ports)) = cm.get_mut("ports") {
                        for p in ports {
                            if let Value::Object(pm) = p {
                                default_field(pm, "protocol", json!("TCP"));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// What create resets, allocates or adds (PrepareForCreate).
pub fn prepare_create(def: &ResourceDef, obj: &mut Value, st: &mut State) {
    match def.storage {
        Storage::Pods => {
            let qos = pod_qos(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        Storage::Deployments | Storage::ReplicaSets | Storage::DaemonSets => {
            obj["status"] = json!({});
        }
        Storage::Namespaces => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Storage::Services => {
            obj["status"] = json!({"loadBalancer": {}});
            allocate_service(obj, st);
        }
        // Nodes keep the status they are created with (kubelets register a
        // node with its status in one call).
        // the disruption controller's to fill; zeros are shown (no omitempty)
        Storage::PodDisruptionBudgets => {
            obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0,
                                   "desiredHealthy": 0, "expectedPods": 0});
        }
        Storage::Nodes
        | Storage::Events
        | Storage::Leases
        | Storage::ConfigMaps
        | Storage::Secrets
        | Storage::ServiceAccounts
        | Storage::Roles
        | Storage::RoleBindings
        | Storage::ClusterRoles
        | Storage::ClusterRoleBindings
        | Storage::ControllerRevisions => {}
    }
    if def.has_generation {
        obj["metadata"]["generation"] = json!(1);
    }
}

fn allocate_service(obj: &mut Value, st: &mut State) {
    let spec = obj_mut(obj, "spec");
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ip = if ip.is_empty() {
            let n = st.next_cluster_ip;
            st.next_cluster_ip += 1;
            // 10.96.0.0/12, skipping .0 and the kubernetes service's .1
            let n = n + 1;
            format!("10.{}.{}.{}", 96 + (n >> 16), (n >> 8) & 0xff, n & 0xff)
        } else {
            ip
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        if ip != "None" || spec.get("ipFamilies").is_none() {
            default_field(spec, "ipFamilies", json!(["IPv4"]));
        }
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports {
                if p.get("nodePort").is_none_or(Value::is_null) {
                    p["nodePort"] = json!(st.next_node_port);
                    st.next_node_port += 1;
                }
            }
        }
    }
}

/// The QoS class of a pod spec (Guaranteed / Burstable / BestEffort).
pub fn pod_qos(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            if !req[r].is_null() || !lim[r].is_null() {
                any = true;
            }
            let l = &lim[r];
            let q = if req[r].is_null() { l } else { &req[r] };
            if l.is_null() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Applies the isolation between the main resource and its subresources:
/// `new` is what the client sent (already merged for patches); the fields
/// this endpoint may not write are reset to `old`.
pub fn isolate(def: &ResourceDef, sub: Sub, new: &mut Value, old: &Value) {
    match sub {
        Sub::Main | Sub::Scale => {
            if def.has_status {
                copy_field(new, old, "status");
            }
            if def.storage == Storage::Namespaces {
                // spec.finalizers changes only through /finalize
                copy_field(new, old, "spec");
            }
        }
        Sub::Status => {
            // Everything but status (and metadata other than the reset
            // fields) comes from the stored object.
            let status = new.get("status").cloned();
            let meta = new.get("metadata").cloned();
            *new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mut m) = meta {
                match def.storage {
                    Storage::Pods => {
                        m["ownerReferences"] = old["metadata"]["ownerReferences"].clone();
                        m["deletionTimestamp"] = old["metadata"]["deletionTimestamp"].clone();
                    }
                    Storage::Deployments | Storage::ReplicaSets | Storage::DaemonSets => {
                        m["labels"] = old["metadata"]["labels"].clone();
                    }
                    _ => {}
                }
                drop_nulls(&mut m);
                new["metadata"] = m;
            }
        }
        Sub::Finalize => {
            let finalizers = new["spec"]["finalizers"].clone();
            let meta = new.get("metadata").cloned();
            *new = old.clone();
            new["spec"]["finalizers"] = if finalizers.is_null() {
                json!([])
            } else {
                finalizers
            };
            if let Some(m) = meta {
                new["metadata"] = m;
            }
        }
    }
}

fn drop_nulls(m: &mut Value) {
    if let Some(o) = m.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
}

fn copy_field(new: &mut Value, old: &Value, key: &str) {
    let Some(n) = new.as_object_mut() else { return };
    match old.get(key) {
        Some(v) => {
            n.insert(key.to_string(), v.clone());
        }
        None => {
            n.remove(key);
        }
    }
}

/// Whether `metadata.generation` must increase (anything outside metadata
/// and status changed).
pub fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(new) != strip(old)
}

/// Validates an object about to be stored. `old` is set on updates.
pub fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = validate_meta(def, obj);
    match def.storage {
        Storage::Pods => {
            validate_pod_spec(&obj["spec"], "spec", old.is_none(), &mut errs);
            if let Some(old) = old {
                validate_pod_update(obj, old, &mut errs);
            }
        }
        Storage::Deployments | Storage::ReplicaSets | Storage::DaemonSets => {
            validate_workload(obj, old, &mut errs);
        }
        Storage::Services => {
            let spec = &obj["spec"];
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
                errs.push(cause(
                    "FieldValueNotSupported",
                    "spec.type",
                    format!(
                        "Unsupported value: {ty:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                    ),
                ));
            }
            let headless = spec["clusterIP"].as_str() == Some("None");
            if ty != "ExternalName"
                && !headless
                && spec["ports"].as_array().is_none_or(|a| a.is_empty())
            {
                errs.push(required("spec.ports"));
            }
            if let Some(old) = old {
                let oip = old["spec"]["clusterIP"].as_str().unwrap_or_default();
                let nip = spec["clusterIP"].as_str().unwrap_or_default();
                if !oip.is_empty() && oip != nip && ty != "ExternalName" {
                    errs.push(invalid_value(
                        "spec.clusterIPs[0]",
                        &json!(nip),
                        "may not change once set",
                    ));
                }
            }
        }
        // events.k8s.io/v1 creates are checked on the v1 form, see
        // `events_v1_validate`.
        Storage::Events if !def.is_events_v1() => validate_core_event(obj, &mut errs),
        Storage::ConfigMaps => validate_config_map(obj, old, &mut errs),
        Storage::Secrets => validate_secret(obj, old, &mut errs),
        Storage::PodDisruptionBudgets => validate_pdb(&obj["spec"], &mut errs),
        Storage::Roles | Storage::ClusterRoles => errs.extend(crate::rbac::validate_rules(
            &obj["rules"],
            def.storage == Storage::Roles,
        )),
        Storage::ControllerRevisions => {
            // ValidateControllerRevision: revision >= 0, data immutable
            if obj["revision"].as_i64().is_some_and(|r| r < 0) {
                errs.push(invalid_value(
                    "revision",
                    &obj["revision"],
                    "must be greater than or equal to 0",
                ));
            }
            if let Some(old) = old
                && old["data"] != obj["data"]
            {
                errs.push(invalid_value("data", &obj["data"], "field is immutable"));
            }
        }
        Storage::RoleBindings | Storage::ClusterRoleBindings => {
            errs.extend(crate::rbac::validate_binding(def.storage, obj, old))
        }
        Storage::Leases => {
            if obj["spec"]["leaseDurationSeconds"]
                .as_i64()
                .is_some_and(|n| n <= 0)
            {
                errs.push(invalid_value(
                    "spec.leaseDurationSeconds",
                    &obj["spec"]["leaseDurationSeconds"],
                    "must be greater than 0",
                ));
            }
            if obj["spec"]["leaseTransitions"]
                .as_i64()
                .is_some_and(|n| n < 0)
            {
                errs.push(invalid_value(
                    "spec.leaseTransitions",
                    &obj["spec"]["leaseTransitions"],
                    "must be greater than or equal to 0",
                ));
            }
        }
        _ => {}
    }
    errs
}

/// ValidatePodDisruptionBudgetSpec.
fn validate_pdb(spec: &Value, errs: &mut Vec<Cause>) {
    if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
        errs.push(invalid_value(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for f in ["minAvailable", "maxUnavailable"] {
        let field = format!("spec.{f}");
        match &spec[f] {
            Value::Null => {}
            Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => errs.push(invalid_value(
                &field,
                &spec[f],
                "must be greater than or equal to 0",
            )),
            Value::String(p) => {
                let digits = p
                    .strip_suffix('%')
                    .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                match digits.map(str::parse::<u64>) {
                    Some(Ok(n)) if n > 100 => {
                        errs.push(invalid_value(&field, &spec[f], "must not be greater than 100%"))
                    }
                    Some(Ok(_)) => {}
                    _ => errs.push(invalid_value(
                        &field,
                        &spec[f],
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    )),
                }
            }
            _ => {}
        }
    }
    if !spec["selector"].is_null()
        && let Err(e) = LabelSelector::from_label_selector(&spec["selector"])
    {
        errs.push(invalid_value("spec.selector", &spec["selector"], &e));
    }
    if let Some(p) = spec["unhealthyPodEvictionPolicy"].as_str()
        && p != "AlwaysAllow"
        && p != "IfHealthyBudget"
    {
        errs.push(cause(
            "FieldValueNotSupported",
            "spec.unhealthyPodEvictionPolicy",
            format!(
                "Unsupported value: {p:?}: supported values: \"AlwaysAllow\", \"IfHealthyBudget\""
            ),
        ));
    }
}

/// validation.IsConfigMapKey: the messages for a bad ConfigMap/Secret key.
fn config_key_errors(key: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if key.len() > 253 {
        out.push("must be no more than 253 characters");
    }
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        out.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        );
    }
    match key {
        "." => out.push("must not be '.'"),
        ".." => out.push("must not be '..'"),
        k if k.starts_with("..") => out.push("must not start with '..'"),
        _ => {}
    }
    out
}

const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

/// The size limit of a ConfigMap's or Secret's data (core.MaxSecretSize).
const MAX_DATA_SIZE: usize = 1024 * 1024;

fn validate_keys(obj: &Value, field: &str, errs: &mut Vec<Cause>) -> usize {
    let mut size = 0;
    for (k, v) in obj[field].as_object().into_iter().flatten() {
        for msg in config_key_errors(k) {
            errs.push(invalid_value(&format!("{field}[{k}]"), &json!(k), msg));
        }
        size += v.as_str().map_or(0, str::len);
    }
    size
}

/// The `immutable` rules shared by ConfigMaps and Secrets.
fn validate_immutable(obj: &Value, old: Option<&Value>, fields: &[&str], errs: &mut Vec<Cause>) {
    let Some(old) = old else {
        return;
    };
    if old["immutable"].as_bool() != Some(true) {
        return;
    }
    if obj["immutable"].as_bool() != Some(true) {
        errs.push(forbidden_field("immutable", IMMUTABLE_SET));
    }
    for f in fields {
        let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(Map::is_empty);
        if obj[*f] != old[*f] && !(empty(&obj[*f]) && empty(&old[*f])) {
            errs.push(forbidden_field(f, IMMUTABLE_SET));
        }
    }
}

/// ValidateConfigMap and ValidateConfigMapUpdate.
fn validate_config_map(obj: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let mut size = validate_keys(obj, "data", errs);
    for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
        for msg in config_key_errors(k) {
            errs.push(invalid_value(&format!("binaryData[{k}]"), &json!(k), msg));
        }
        // base64 in JSON: the decoded size is about three quarters
        size += v.as_str().map_or(0, |s| s.len() / 4 * 3);
    }
    for k in obj["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if obj["binaryData"].get(k).is_some() {
            errs.push(invalid_value(
                &format!("data[{k}]"),
                &json!(k),
                "duplicate of key present in binaryData",
            ));
        }
    }
    if size > MAX_DATA_SIZE {
        errs.push(cause(
            "FieldValueTooLong",
            "",
            format!("Too long: may not be more than {MAX_DATA_SIZE} bytes"),
        ));
    }
    validate_immutable(obj, old, &["data", "binaryData"], errs);
}

/// ValidateSecret and ValidateSecretUpdate, with the keys each built-in
/// secret type requires.
fn validate_secret(obj: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let size = validate_keys(obj, "data", errs) / 4 * 3;
    if size > MAX_DATA_SIZE {
        errs.push(cause(
            "FieldValueTooLong",
            "data",
            format!("Too long: may not be more than {MAX_DATA_SIZE} bytes"),
        ));
    }
    let has = |k: &str| obj["data"].get(k).is_some();
    let ty = obj["type"].as_str().unwrap_or_default();
    let required_keys: &[&str] = match ty {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    };
    for k in required_keys {
        if !has(k) {
            errs.push(required(&format!("data[{k}]")));
        }
    }
    if ty == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errs.push(required("data[username]"));
        errs.push(required("data[password]"));
    }
    if ty == "kubernetes.io/service-account-token"
        && obj["metadata"]["annotations"]["kubernetes.io/service-account.name"].is_null()
    {
        errs.push(required(
            "metadata.annotations[kubernetes.io/service-account.name]",
        ));
    }
    if let Some(old) = old
        && old["type"] != obj["type"]
    {
        errs.push(invalid_value("type", &obj["type"], "field is immutable"));
    }
    validate_immutable(obj, old, &["data"], errs);
}

fn validate_meta(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let (ok, why) = match def.storage {
        Storage::Namespaces => (
            is_dns1123_label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        Storage::Services => (
            is_dns1035_label(name),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        _ => (
            is_dns1123_subdomain(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
    };
    if name.is_empty() {
        errs.push(cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    } else if !ok {
        errs.push(invalid_value("metadata.name", &json!(name), why));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if !is_label_key(k) {
                errs.push(invalid_value("metadata.labels", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => errs.push(invalid_value(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                )),
            }
        }
    } else if !meta["labels"].is_null() {
        errs.push(invalid_value(
            "metadata.labels",
            &meta["labels"],
            "must be a map of strings",
        ));
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in ann {
            if !is_label_key(k) {
                errs.push(invalid_value("metadata.annotations", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            if !v.is_string() {
                errs.push(invalid_value(
                    "metadata.annotations",
                    v,
                    "annotation values must be strings",
                ));
            }
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        }
        if total > 256 * 1024 {
            errs.push(cause(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if let Some(fs) = meta["finalizers"].as_array() {
        for (i, f) in fs.iter().enumerate() {
            if !f.as_str().is_some_and(is_label_key) {
                errs.push(invalid_value(
                    &format!("metadata.finalizers[{i}]"),
                    f,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
        }
    }
    errs
}

fn validate_pod_spec(spec: &Value, at: &str, creating: bool, errs: &mut Vec<Cause>) {
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or_default();
                let field = format!("{at}.containers[{i}]");
                if name.is_empty() {
                    errs.push(required(&format!("{field}.name")));
                } else if !is_dns1123_label(name) {
                    errs.push(invalid_value(&format!("{field}.name"), &json!(name), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
                } else if seen.contains(&name) {
                    errs.push(cause(
                        "FieldValueDuplicate",
                        &format!("{field}.name"),
                        format!("Duplicate value: {name:?}"),
                    ));
                }
                seen.push(name);
                if creating && c["image"].as_str().unwrap_or_default().trim().is_empty() {
                    errs.push(required(&format!("{field}.image")));
                }
            }
        }
        _ => errs.push(required(&format!("{at}.containers"))),
    }
    if let Some(n) = spec["nodeName"].as_str().filter(|n| !n.is_empty())
        && !is_dns1123_subdomain(n)
    {
        errs.push(invalid_value(
            &format!("{at}.nodeName"),
            &json!(n),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    for list in ["containers", "initContainers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let port = p["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(invalid_value(
                        &format!("{at}.{list}[{i}].ports[{j}].containerPort"),
                        &p["containerPort"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    if let Some(rp) = spec["restartPolicy"].as_str()
        && !["Always", "OnFailure", "Never"].contains(&rp)
    {
        errs.push(cause(
            "FieldValueNotSupported",
            &format!("{at}.restartPolicy"),
            format!(
                "Unsupported value: {rp:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        ));
    }
    if spec["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|n| n < 0)
    {
        errs.push(invalid_value(
            &format!("{at}.terminationGracePeriodSeconds"),
            &spec["terminationGracePeriodSeconds"],
            "must be greater than or equal to 0",
        ));
    }
}

/// The pod spec fields an update may change (PodSpec validation allows
/// container images, activeDeadlineSeconds, added tolerations,
/// terminationGracePeriodSeconds and removing scheduling gates).
fn validate_pod_update(new: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let neutral = |spec: &Value| {
        let mut s = spec.clone();
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            if let Some(Value::Array(cs)) = s.get_mut(list) {
                for c in cs {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("image");
                    }
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            for k in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                m.remove(k);
            }
        }
        s
    };
    if neutral(&new["spec"]) != neutral(&old["spec"]) {
        errs.push(forbidden_field(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    if let (Some(o), Some(n)) = (
        old["spec"]["tolerations"].as_array(),
        new["spec"]["tolerations"].as_array(),
    ) && o.iter().any(|t| !n.contains(t))
    {
        errs.push(forbidden_field(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
}

fn validate_workload(obj: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let sel = &spec["selector"];
    let has_sel = sel.is_object()
        && (sel["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
            || sel["matchExpressions"]
                .as_array()
                .is_some_and(|a| !a.is_empty()));
    if !has_sel {
        errs.push(required("spec.selector"));
    } else {
        match LabelSelector::from_label_selector(sel) {
            Ok(s) => {
                let labels = crate::selectors::labels_of(&spec["template"]);
                if !s.matches(&labels) {
                    errs.push(invalid_value(
                        "spec.template.metadata.labels",
                        &spec["template"]["metadata"]["labels"],
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => errs.push(invalid_value("spec.selector", sel, &e)),
        }
    }
    if spec["replicas"].as_i64().is_some_and(|n| n < 0) {
        errs.push(invalid_value(
            "spec.replicas",
            &spec["replicas"],
            "must be greater than or equal to 0",
        ));
    }
    validate_pod_spec(&spec["template"]["spec"], "spec.template.spec", true, errs);
    if let Some(rp) = spec["template"]["spec"]["restartPolicy"].as_str()
        && rp != "Always"
    {
        errs.push(cause(
            "FieldValueNotSupported",
            "spec.template.spec.restartPolicy",
            format!("Unsupported value: {rp:?}: supported values: \"Always\""),
        ));
    }
    if let Some(old) = old
        && old["spec"]["selector"] != spec["selector"]
    {
        errs.push(invalid_value("spec.selector", sel, "field is immutable"));
    }
}

/// The legacy (core/v1) event rules: an event about a namespaced object
/// lives in that object's namespace; events with `eventTime` need the
/// reporting fields.
fn validate_core_event(ev: &Value, errs: &mut Vec<Cause>) {
    let ns = ev["metadata"]["namespace"].as_str().unwrap_or_default();
    let io_ns = ev["involvedObject"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let mismatch = |errs: &mut Vec<Cause>| {
        errs.push(invalid_value(
            "involvedObject.namespace",
            &json!(io_ns),
            "does not match event.namespace",
        ))
    };
    if ev["eventTime"].is_null() {
        if io_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                mismatch(errs);
            }
        } else if ns != io_ns {
            mismatch(errs);
        }
    } else {
        if io_ns.is_empty() && ns != "default" && ns != "kube-system" {
            mismatch(errs);
        }
        for f in [
            "reportingComponent",
            "reportingInstance",
            "action",
            "reason",
        ] {
            if ev[f].as_str().is_none_or(str::is_empty) {
                errs.push(required(f));
            }
        }
    }
}

/// Validation of an events.k8s.io/v1 Event on create (in its v1 form).
pub fn events_v1_validate(ev: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    if ev["eventTime"].is_null() {
        errs.push(required("eventTime"));
    }
    match ev["type"].as_str() {
        Some("Normal") | Some("Warning") => {}
        _ => errs.push(cause(
            "FieldValueNotSupported",
            "type",
            format!(
                "Unsupported value: {}: supported values: \"Normal\", \"Warning\"",
                ev["type"]
            ),
        )),
    }
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if ev[f].as_str().is_none_or(str::is_empty) {
            errs.push(required(f));
        }
    }
    if ev["note"].as_str().is_some_and(|n| n.len() > 1024) {
        errs.push(cause(
            "FieldValueTooLong",
            "note",
            "Too long: may not be more than 1024 bytes",
        ));
    }
    errs
}

const EVENT_RENAMES: &[(&str, &str)] = &[
    // (core/v1, events.k8s.io/v1)
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// core/v1 Event (storage form) → events.k8s.io/v1 Event.
pub fn event_to_v1(core: &Value) -> Value {
    let mut out = core.clone();
    if let Some(m) = out.as_object_mut() {
        for (from, to) in EVENT_RENAMES {
            if let Some(v) = m.remove(*from) {
                m.insert((*to).to_string(), v);
            }
        }
        m.insert("apiVersion".into(), json!("events.k8s.io/v1"));
        // empty objects (e.g. an unset core `source`) are not shown in v1
        m.retain(|_, v| !v.as_object().is_some_and(|o| o.is_empty()));
        if !m.contains_key("metadata") {
            m.insert("metadata".into(), json!({}));
        }
    }
    out
}

/// events.k8s.io/v1 Event → core/v1 Event (storage form).
pub fn event_from_v1(v1: &Value) -> Value {
    let mut out = v1.clone();
    if let Some(m) = out.as_object_mut() {
        for (core, v1name) in EVENT_RENAMES {
            if let Some(v) = m.remove(*v1name) {
                m.insert((*core).to_string(), v);
            }
        }
        m.insert("apiVersion".into(), json!("v1"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_and_secret_validation() {
        let cm = |v: Value| {
            let mut o = json!({"metadata": {"name": "c", "namespace": "n"}});
            o.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            o
        };
        let fields = |errs: Vec<Cause>| -> Vec<String> {
            errs.into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        let check = |o: &Value, old: Option<&Value>| {
            let mut errs = Vec::new();
            validate_config_map(o, old, &mut errs);
            fields(errs)
        };
        assert!(check(&cm(json!({"data": {"a.b_C-1": "x"}})), None).is_empty());
        assert_eq!(
            check(&cm(json!({"data": {"a b": "x", "..": "y"}})), None),
            [
                "data[..]: Invalid value: \"..\": must not be '..'",
                "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ]
        );
        assert_eq!(
            check(
                &cm(json!({"data": {"k": "x"}, "binaryData": {"k": "eA=="}})),
                None
            ),
            ["data[k]: Invalid value: \"k\": duplicate of key present in binaryData"]
        );
        let frozen = cm(json!({"data": {"k": "x"}, "immutable": true}));
        assert!(check(&frozen, Some(&frozen)).is_empty());
        assert_eq!(
            check(&cm(json!({"data": {"k": "y"}})), Some(&frozen)),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let secret =
            |ty: &str, data: Value| json!({"metadata": {"name": "s"}, "type": ty, "data": data});
        let check_s = |o: &Value, old: Option<&Value>| {
            let mut errs = Vec::new();
            validate_secret(o, old, &mut errs);
            fields(errs)
        };
        assert!(check_s(&secret("Opaque", json!({"a": "eA=="})), None).is_empty());
        assert_eq!(
            check_s(
                &secret("kubernetes.io/tls", json!({"tls.crt": "eA=="})),
                None
            ),
            ["data[tls.key]: Required value"]
        );
        assert_eq!(
            check_s(&secret("kubernetes.io/basic-auth", json!({})), None),
            [
                "data[username]: Required value",
                "data[password]: Required value"
            ]
        );
        let old = secret("Opaque", json!({}));
        assert_eq!(
            check_s(
                &secret("kubernetes.io/ssh-auth", json!({"ssh-privatekey": "eA=="})),
                Some(&old)
            ),
            ["type: Invalid value: \"kubernetes.io/ssh-auth\": field is immutable"]
        );
    }

    #[test]
    fn secret_defaults_merge_string_data() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "eA==", "b": "eQ=="},
                           "stringData": {"b": "hello", "c": ""}});
        default_secret(&mut s);
        assert_eq!(
            s,
            json!({"metadata": {"name": "s"}, "type": "Opaque",
                   "data": {"a": "eA==", "b": "aGVsbG8=", "c": ""}})
        );
        let mut typed = json!({"type": "kubernetes.io/tls"});
        default_secret(&mut typed);
        assert_eq!(typed, json!({"type": "kubernetes.io/tls"}));
    }
}
