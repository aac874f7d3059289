//! Conformance scenarios written from the Kubernetes API conventions.
//!
//! Every scenario is a function of a [`Ctx`] (a `kube::Client`, a fresh
//! namespace and a kubeconfig path), so the same code runs against the
//! in-memory server (the default) or, with `KOUPLELESS_REAL_CLUSTER=1`,
//! against the cluster `KUBECONFIG` points at.

mod common;
mod scenarios;

use common::run;
use scenarios::{core, delete, kubectl, patch, runtime, watch};

macro_rules! scenario {
    ($name:ident, $f:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run(stringify!($name), |ctx| Box::pin($f(ctx))).await;
        }
    };
}

scenario!(create_sets_system_fields, core::create_sets_system_fields);
scenario!(already_exists_is_409, core::already_exists_is_409);
scenario!(not_found_is_404_status, core::not_found_is_404_status);
scenario!(generate_name, core::generate_name);
scenario!(stale_update_conflicts, core::stale_update_conflicts);
scenario!(resource_version_increases, core::resource_version_increases);
scenario!(
    noop_update_keeps_resource_version,
    core::noop_update_keeps_resource_version
);
scenario!(label_selectors, core::label_selectors);
scenario!(invalid_selectors_are_400, core::invalid_selectors_are_400);
scenario!(field_selectors, core::field_selectors);
scenario!(pagination_is_consistent, core::pagination_is_consistent);
scenario!(status_isolation_pod, core::status_isolation_pod);
scenario!(
    status_isolation_node_and_deployment,
    core::status_isolation_node_and_deployment
);
scenario!(generation_tracks_spec, core::generation_tracks_spec);
scenario!(
    validation_errors_are_invalid_status,
    core::validation_errors_are_invalid_status
);
scenario!(
    name_mismatch_is_bad_request,
    core::name_mismatch_is_bad_request
);
scenario!(
    pod_spec_is_mostly_immutable,
    core::pod_spec_is_mostly_immutable
);
scenario!(missing_namespace_is_404, core::missing_namespace_is_404);
scenario!(
    events_two_apis_one_storage,
    core::events_two_apis_one_storage
);
scenario!(lease_put_creates, core::lease_put_creates);
scenario!(dry_run_does_not_persist, core::dry_run_does_not_persist);
scenario!(metadata_api, core::metadata_api);
scenario!(binding_subresource, core::binding_subresource);
scenario!(service_allocation, core::service_allocation);

scenario!(merge_patch, patch::merge_patch);
scenario!(json_patch, patch::json_patch);
scenario!(
    strategic_merge_conditions,
    patch::strategic_merge_conditions
);
scenario!(
    strategic_merge_lists_and_directives,
    patch::strategic_merge_lists_and_directives
);
scenario!(
    patch_with_stale_resource_version,
    patch::patch_with_stale_resource_version
);
scenario!(
    unsupported_patch_content_type,
    patch::unsupported_patch_content_type
);
scenario!(
    server_side_apply_ownership,
    patch::server_side_apply_ownership
);
scenario!(server_side_apply_status, patch::server_side_apply_status);

scenario!(watch_order_and_types, watch::watch_order_and_types);
scenario!(watch_resume, watch::watch_resume);
scenario!(watch_too_old_is_410, watch::watch_too_old_is_410);
scenario!(
    watch_selector_transitions,
    watch::watch_selector_transitions
);
scenario!(watch_timeout_ends_stream, watch::watch_timeout_ends_stream);
scenario!(watch_send_initial_events, watch::watch_send_initial_events);
scenario!(
    watch_field_selector_single_object,
    watch::watch_field_selector_single_object
);

scenario!(finalizers_block_deletion, delete::finalizers_block_deletion);
scenario!(graceful_pod_deletion, delete::graceful_pod_deletion);
scenario!(
    unbound_pod_deleted_at_once,
    delete::unbound_pod_deleted_at_once
);
scenario!(delete_preconditions, delete::delete_preconditions);
scenario!(
    propagation_policy_finalizers,
    delete::propagation_policy_finalizers
);
scenario!(delete_collection, delete::delete_collection);
scenario!(namespace_termination, delete::namespace_termination);

scenario!(
    runtime_watcher_and_reflector,
    runtime::watcher_and_reflector
);
scenario!(runtime_controller, runtime::controller_reconciles);

scenario!(kubectl_get_and_describe, kubectl::get_and_describe);
scenario!(kubectl_apply, kubectl::apply);
scenario!(kubectl_patch_label_annotate, kubectl::patch_label_annotate);
scenario!(kubectl_wait_and_delete, kubectl::wait_and_delete);
scenario!(kubectl_get_watch, kubectl::get_watch);
