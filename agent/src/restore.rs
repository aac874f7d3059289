//! Re-installing what a previous run of the agent had installed (the state file).

use koupleless_protocol::BizState;

use crate::backend::RuntimeBackend;
use crate::engine::Engine;
use crate::package::{self, Package};

/// Installs every remembered module again: the stored jar when it is still there, else a fresh
/// fetch of its URL. Serving versions first, so activation ends as it was.
pub async fn restore<B: RuntimeBackend>(engine: &Engine<B>) {
    let mut remembered = engine.remembered();
    if remembered.is_empty() {
        return;
    }
    remembered.sort_by_key(|r| !r.active);
    tracing::info!(
        modules = remembered.len(),
        "restoring modules from the previous run"
    );
    for r in remembered {
        if engine.module(&r.key).is_some() {
            continue;
        }
        let pkg = match restore_package(engine, &r.jar, &r.url).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(biz = %r.key, error = %e, "cannot restore module: package unavailable");
                continue;
            }
        };
        let _guard = match engine.try_lock(
            r.key.to_string(),
            koupleless_protocol::CommandId::InstallBiz,
        ) {
            Ok(g) => g,
            Err(_) => continue,
        };
        match engine.install(pkg, r.args.clone(), r.envs.clone()).await {
            Ok(inst) => {
                if r.active && inst.model.biz_state != Some(BizState::Activated) {
                    engine.switch(&r.key).await;
                }
                tracing::info!(biz = %r.key, "module restored");
            }
            Err(e) => tracing::error!(biz = %r.key, error = %e, "cannot restore module"),
        }
    }
}

async fn restore_package<B: RuntimeBackend>(
    engine: &Engine<B>,
    jar: &std::path::Path,
    url: &str,
) -> Result<Package, package::PackageError> {
    let stored = jar.to_owned();
    if stored.exists() {
        let check = stored.clone();
        let inspected = tokio::task::spawn_blocking(move || package::inspect(&check)).await;
        if let Ok(Ok(m)) = inspected {
            return Ok(Package {
                key: m.key,
                main_class: m.main_class,
                priority: m.priority,
                web_context_path: m.web_context_path,
                attributes: m.attributes,
                jar: stored,
                url: url.to_owned(),
            });
        }
    }
    engine.store().fetch(url).await
}
