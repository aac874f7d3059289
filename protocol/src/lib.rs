//! The wire contract between Koupleless bases and the module controller.
//!
//! Pure data: no I/O, no async runtime, no Kubernetes types. Everything here is shaped by the
//! upstream Java Arklet (fastjson 1.2.83 output) and Go ModuleController V2 decoders, as
//! specified in `spec/protocol.md`:
//!
//! - [`command`]: Arklet command ids, request bodies, the HTTP response envelope.
//! - [`biz`]: biz (module) shapes, state records, async operation records.
//! - [`health`]: the `health` command and its `healthData` document.
//! - [`mqtt`]: topics, the `{data, publishTimestamp}` envelope, heartbeat and reply bodies.
//! - [`state`]: biz states, reasons and result codes, spelled per transport.
//! - [`ids`]: validated identities, env names, virtual Node names, label values.
//! - [`error_code`]: the two-level error codes we add on failures.
//! - [`lenient`]: request decoding as lenient as the Java side.
//! - [`transport`]: encoding for HTTP or MQTT (enum casing, compact JSON).
//!
//! # Compatibility notes
//!
//! Every example of the spec and every body captured from the real Java Arklet decodes into
//! these types and re-encodes to the same JSON value (`tests/golden.rs`); what surprised us on
//! the way:
//!
//! - **Doubles.** serde_json's default float parser is not correctly rounded (it read
//!   `-9.78545925218564e-132` one ULP off), so this crate enables its `float_roundtrip`
//!   feature: a Java double then passes through unchanged. Our exponent is written `e`/`e+308`
//!   where Java writes `E`/`E308`; every JSON parser reads them as the same number.
//! - **Key order.** The MQTT `bizOperation` and `batchInstallBizResponse` bodies are Java maps,
//!   written in hash order (`bizName, response, command, bizVersion`); beans are sorted. We
//!   write struct order; no reader depends on order, so tests compare values, never text.
//! - **Requests omit `"async":false`**, so a decoded request re-encodes to what the client
//!   sent. Java's `arkBizMeta` only exists for async requests and then reads `"async":true`,
//!   plus `installStrategy` filled with its default: set [`InstallBizRequest::install_strategy`]
//!   before echoing an install request.
//! - **Clearing the retained baseline** delivers an empty payload on `base/baseline`. It is not
//!   a JSON document, so decoding it as `Vec<BizSpec>` fails; Java treats it as a null list and
//!   answers with a FAILED `bizList is null` batch response. The transport has to map it.
//! - **Unknown request keys are dropped**, as in Java: S003's `moduleName`/`moduleVersion`,
//!   `pluginName`, a misnamed `installRequests` all decode to "not given".
//! - **A biz whose `main` throws** is reported by Java as
//!   `Internal Error: java.lang.reflect.InvocationTargetException` (the reflective wrapper has
//!   no message); the module's own exception only appears in `errorStackTrace`.
//! - serde's derived decoders also accept a JSON array for a struct (fields by position); only
//!   [`lenient`] insists on an object, as the Java side does for requests.

pub mod biz;
pub mod command;
pub mod error_code;
pub mod health;
pub mod ids;
pub mod lenient;
pub mod mqtt;
pub mod state;
pub mod transport;

pub use biz::{
    BatchInstallResponse, BizInfo, BizModel, BizSpec, ClientResponse, CommandModel, ProcessRecord,
    SimpleBizInfo, StateRecord,
};
pub use command::{
    BatchInstallBizRequest, BizOpRequest, CommandId, InstallBizRequest, InstallStrategy, Output,
    QueryBizOpsRequest, Response,
};
pub use error_code::ErrorCode;
pub use health::{BizHealthMeta, CpuInfo, Health, HealthData, HealthRequest, JvmInfo};
pub use ids::{BaseIdentity, Env, LabelValue, VNodeName};
pub use mqtt::{BaseMetadata, BaseStatus, Envelope, Topic};
pub use state::{ArkResultCode, BizState, ProcessStatus, ResponseCode, StateChangeReason};
pub use transport::Transport;
