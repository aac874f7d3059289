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
