//! Conformance scenarios written from the Kubernetes API conventions.
//!
//! Every scenario is a function of a [`Ctx`] (a `kube::Client`, a fresh
//! namespace and a kubeconfig path), so the same code runs against the
//! in-memory server (the default) or, with `KOUPLELESS_REAL_CLUSTER=1`,
//! against the cluster `KUBECONFIG` points at.

mod common;
mod scenarios;

use common::run;
use scenarios::{core, delete, imperative, kubectl, patch, runtime, watch};

/// Says where the scenarios ran, so a skipped real-cluster comparison is
/// visible in the test output.
#[test]
fn real_cluster_mode() {
    if common::real_cluster() {
        eprintln!("conformance scenarios run against the cluster KUBECONFIG points at");
    } else {
        eprintln!(
            "SKIP real cluster: the scenarios ran against the in-memory test server; \
             set KOUPLELESS_REAL_CLUSTER=1 with KUBECONFIG pointing at a cluster to run them there"
        );
    }
}

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
scenario!(pod_ip_fields_stay_in_step, core::pod_ip_fields_stay_in_step);
scenario!(field_validation, core::field_validation);

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
scenario!(runtime_event_recorder, runtime::event_recorder);

scenario!(kubectl_get_and_describe, kubectl::get_and_describe);
scenario!(kubectl_apply, kubectl::apply);
scenario!(kubectl_patch_label_annotate, kubectl::patch_label_annotate);
scenario!(kubectl_wait_and_delete, kubectl::wait_and_delete);
scenario!(kubectl_get_watch, kubectl::get_watch);

scenario!(kubectl_create_generators, imperative::create_generators);
scenario!(kubectl_scale, imperative::scale);
scenario!(kubectl_rollout, imperative::rollout);
scenario!(
    kubectl_label_annotate_workloads,
    imperative::label_annotate_workloads
);
scenario!(kubectl_cordon_and_drain, imperative::cordon_and_drain);
scenario!(
    eviction_respects_budgets,
    imperative::eviction_respects_budgets
);

/// Behaviour specific to the test server (its knobs and its documented
/// refusals); these do not run against a real cluster.
mod local {
    use crate::common::{obj, pod, status};
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use koupleless_kube_apiserver::{Config, start_with};
    use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn bookmarks_are_periodic() {
        let (client, server) = start_with(Config {
            bookmark_interval: Duration::from_millis(200),
            ..Default::default()
        })
        .await
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "default");
        pods.create(&PostParams::default(), &pod("b", json!({}), None))
            .await
            .unwrap();
        let rv = server.resource_version().to_string();
        let mut stream = Box::pin(
            pods.watch(&WatchParams::default().timeout(30), &rv)
                .await
                .unwrap(),
        );
        let mut bookmarks = 0;
        while bookmarks < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match ev {
                WatchEvent::Bookmark(b) => {
                    assert_eq!(b.metadata.resource_version, rv);
                    bookmarks += 1;
                }
                _ => panic!("only bookmarks expected"),
            }
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn history_limit_answers_410() {
        let (client, server) = start_with(Config {
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let start = server.resource_version().to_string();
        for i in 0..10 {
            pods.create(
                &PostParams::default(),
                &pod(&format!("h{i}"), json!({}), None),
            )
            .await
            .unwrap();
        }
        let mut stream = Box::pin(
            pods.watch(&WatchParams::default().timeout(5), &start)
                .await
                .unwrap(),
        );
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
            _ => panic!("expected 410"),
        }
        // the last five are still there
        let recent = (server.resource_version() - 4).to_string();
        let mut stream = Box::pin(
            pods.watch(&WatchParams::default().timeout(5), &recent)
                .await
                .unwrap(),
        );
        assert!(matches!(
            stream.try_next().await.unwrap().unwrap(),
            WatchEvent::Added(_)
        ));
        // compact() expires everything so far
        let now = server.compact().to_string();
        let rv_before = (server.resource_version() - 1).to_string();
        let mut stream = Box::pin(
            pods.watch(&WatchParams::default().timeout(5), &rv_before)
                .await
                .unwrap(),
        );
        assert!(
            matches!(stream.try_next().await.unwrap().unwrap(), WatchEvent::Error(s) if s.code == 410)
        );
        let _ = pods
            .watch(&WatchParams::default().timeout(1), &now)
            .await
            .unwrap();
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_ends_open_watches() {
        let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let stream = pods
            .watch(&WatchParams::default().timeout(290), "0")
            .await
            .unwrap();
        let reader = tokio::spawn(async move { stream.collect::<Vec<_>>().await });
        let began = Instant::now();
        server.shutdown().await;
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("watch ended")
            .unwrap();
        assert!(began.elapsed() < Duration::from_secs(5));
        assert!(
            pods.list(&ListParams::default()).await.is_err(),
            "the server is gone"
        );
    }

    /// Generators of kinds this server does not store get the real server's
    /// answer for an unknown resource.
    #[tokio::test]
    async fn kubectl_create_of_unstored_kinds_is_404() {
        let bin = crate::common::kubectl_bin().expect("kubectl (set KUBECTL or put it on PATH)");
        let (_client, server) = koupleless_kube_apiserver::start().await.unwrap();
        let kc = server.write_kubeconfig_tempfile().unwrap();
        let path = kc.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .env("KUBECONFIG", path)
                .args(["create", "job", "j1", "--image=busybox"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the server could not find the requested resource"),
            "{err}"
        );
        server.shutdown().await;
    }

    /// A client that accepts only protobuf gets objects, lists, errors and
    /// watch events in protobuf (what has no protobuf form is 406).
    #[tokio::test]
    async fn protobuf_only_clients_get_protobuf() {
        use http_body_util::BodyExt;
        use koupleless_kube_apiserver::protobuf;
        let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &pod("p1", json!({"app": "pb"}), None),
        )
        .await
        .unwrap();
        let send = |path: String| {
            let client = client.clone();
            async move {
                let req = http::Request::get(path)
                    .header("accept", protobuf::CONTENT_TYPE)
                    .body(kube::client::Body::empty())
                    .unwrap();
                client.send(req).await.unwrap()
            }
        };
        let body = |resp: http::Response<kube::client::Body>| async move {
            let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
            let code = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (code, ct, bytes)
        };
        let (code, ct, bytes) = body(send("/api/v1/namespaces/default/pods/p1".into()).await).await;
        assert_eq!((code, ct.as_str()), (200, protobuf::CONTENT_TYPE));
        let obj = protobuf::decode(&bytes).unwrap();
        assert_eq!(
            (obj["kind"].as_str(), obj["metadata"]["name"].as_str()),
            (Some("Pod"), Some("p1"))
        );
        let (_, _, bytes) =
            body(send("/api/v1/namespaces/default/pods?labelSelector=app%3Dpb".into()).await).await;
        let list = protobuf::decode(&bytes).unwrap();
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["items"][0]["metadata"]["name"], "p1");
        let (code, ct, bytes) =
            body(send("/api/v1/namespaces/default/pods/missing".into()).await).await;
        assert_eq!((code, ct.as_str()), (404, protobuf::CONTENT_TYPE));
        let st = protobuf::decode(&bytes).unwrap();
        assert_eq!(
            (
                st["kind"].as_str(),
                st["reason"].as_str(),
                st["code"].as_i64()
            ),
            (Some("Status"), Some("NotFound"), Some(404))
        );
        // discovery has no protobuf form here
        let (code, _, _) = body(send("/api/v1".into()).await).await;
        assert_eq!(code, 406);
        // watch: length-prefixed WatchEvent frames
        let resp = send("/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=5".into()).await;
        assert_eq!(
            resp.headers()["content-type"],
            "application/vnd.kubernetes.protobuf;stream=watch"
        );
        pods.create(&PostParams::default(), &pod("p2", json!({}), None))
            .await
            .unwrap();
        let mut stream = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        while events.len() < 2 {
            let frame = tokio::time::timeout(Duration::from_secs(5), stream.frame())
                .await
                .expect("a watch frame in time")
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            while buf.len() >= 4 {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                let ev: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
                // WatchEvent: type (1), object (2) = RawExtension { raw (1) }
                let (ty, obj) = watch_event(&ev);
                events.push((
                    ty,
                    protobuf::decode(&obj).unwrap()["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ));
            }
        }
        assert_eq!(
            events,
            [
                ("ADDED".to_string(), "p1".to_string()),
                ("ADDED".to_string(), "p2".to_string())
            ]
        );
        server.shutdown().await;
    }

    /// Splits a meta/v1 WatchEvent (two length-delimited fields, the second a
    /// RawExtension) by hand, so the test does not trust the encoder's tables.
    fn watch_event(b: &[u8]) -> (String, Vec<u8>) {
        fn field(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = b[0] >> 3;
            let (mut len, mut i, mut shift) = (0usize, 1, 0);
            loop {
                len |= ((b[i] & 0x7f) as usize) << shift;
                shift += 7;
                i += 1;
                if b[i - 1] & 0x80 == 0 {
                    break;
                }
            }
            (tag, &b[i..i + len], &b[i + len..])
        }
        let (t1, ty, rest) = field(b);
        let (t2, ext, _) = field(rest);
        let (t3, raw, _) = field(ext);
        assert_eq!((t1, t2, t3), (1, 2, 1));
        (String::from_utf8(ty.to_vec()).unwrap(), raw.to_vec())
    }

    #[tokio::test]
    async fn refusals_are_errors() {
        let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
        // a protobuf envelope naming no type
        let req = http::Request::post("/api/v1/namespaces")
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(b"k8s\x00".to_vec())
            .unwrap();
        assert_eq!(
            status(client.request_text(req).await.unwrap_err()).code,
            400
        );
        // media types other than JSON, YAML and protobuf
        let req = http::Request::post("/api/v1/namespaces")
            .header("content-type", "application/cbor")
            .body(vec![0xa0])
            .unwrap();
        assert_eq!(
            status(client.request_text(req).await.unwrap_err()).code,
            415
        );
        // protobuf-only tables
        let req = http::Request::get("/api/v1/namespaces")
            .header(
                "accept",
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io",
            )
            .body(vec![])
            .unwrap();
        assert_eq!(
            status(client.request_text(req).await.unwrap_err()).code,
            406
        );
        // resources that are not served
        let req = http::Request::get("/api/v1/namespaces/default/persistentvolumeclaims")
            .body(vec![])
            .unwrap();
        assert_eq!(
            status(client.request_text(req).await.unwrap_err()).code,
            404
        );
        let req = http::Request::get("/api/v1/namespaces/default/pods/x/log")
            .body(vec![])
            .unwrap();
        assert_eq!(
            status(client.request_text(req).await.unwrap_err()).code,
            404
        );
        // lists at an older exact resourceVersion
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &obj(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})))
            .await
            .unwrap();
        let old = (server.resource_version() - 1).to_string();
        let lp = ListParams::default()
            .at(&old)
            .matching(kube::api::VersionMatch::Exact);
        assert_eq!(status(pods.list(&lp).await.unwrap_err()).code, 410);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn binary_serves_until_interrupted() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        /// Kills the server if the test fails before it exits, so no process outlives the test.
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                if let Ok(None) = self.0.try_wait() {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
        }
        let mut guard = KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_koupleless-kube-apiserver"))
                .args(["--port", "0", "--kubeconfig"])
                .arg(&kc)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let child = &mut guard.0;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
        let cfg = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kc).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        koupleless_kube_apiserver::install_crypto_provider();
        let client = kube::Client::try_from(cfg).unwrap();
        let pods: Api<Pod> = Api::namespaced(client, "default");
        pods.create(&PostParams::default(), &pod("bin", json!({}), None))
            .await
            .unwrap();
        // Ctrl-C: a graceful exit
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let began = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "{st:?}");
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the server did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn kubeconfig_and_binary_helpers() {
        let (_client, server) = koupleless_kube_apiserver::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = server.write_kubeconfig(dir.path().join("config")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&server.base_url()));
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        koupleless_kube_apiserver::install_crypto_provider();
        let client = kube::Client::try_from(cfg).unwrap();
        let v = client.apiserver_version().await.unwrap();
        assert_eq!(v.major, "1");
        server.shutdown().await;
    }
}
