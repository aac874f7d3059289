//! Package fetch over real HTTP on loopback: a served jar, 404, a redirect, a body over the size
//! limit, a server that stalls (read timeout), an unreachable port, an allow-list refusal, and
//! a served file that is not an Ark biz. Every failure leaves nothing in the store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use koupleless_agent::package::{FetchConfig, PackageError, PackageStore, UrlRule};
use koupleless_testkit::RawZip;
use tokio_util::sync::CancellationToken;

async fn serve(jar: Vec<u8>, not_ark: Vec<u8>) -> (SocketAddr, CancellationToken) {
    let big = vec![0u8; 64 * 1024];
    let app = Router::new()
        .route(
            "/biz.jar",
            get({
                let jar = jar.clone();
                move || async move { jar }
            }),
        )
        .route(
            "/moved.jar",
            get(|| async { Redirect::temporary("/biz.jar") }),
        )
        .route(
            "/repo/biz.jar",
            get({
                let jar = jar.clone();
                move || async move { jar }
            }),
        )
        .route(
            "/repo/inside.jar",
            get(|| async { Redirect::temporary("/repo/biz.jar") }),
        )
        .route(
            "/repo/outside.jar",
            get(|| async { Redirect::temporary("/internal/biz.jar") }),
        )
        .route(
            "/repo/metadata.jar",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/internal/biz.jar",
            get({
                let jar = jar.clone();
                move || async move { jar }
            }),
        )
        .route("/big.jar", get(move || async move { big }))
        .route("/plain.zip", get(move || async move { not_ark }))
        .route(
            "/error.jar",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/stall.jar",
            get(|| async {
                // Headers at once, then a body that never comes.
                let stream = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/java-archive")
                    .body(Body::from_stream(stream))
                    .unwrap()
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(c.cancelled_owned())
            .await
            .unwrap();
    });
    (addr, cancel)
}

fn stored(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_success_and_every_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let jar_path = RawZip::ark_biz("web", "1.0.0", "com.example.Main")
        .write(&tmp.path().join("web.jar"))
        .unwrap();
    let plain_path = RawZip::new()
        .file("a.txt", b"hello")
        .write(&tmp.path().join("plain.zip"))
        .unwrap();
    let (addr, stop) = serve(
        std::fs::read(&jar_path).unwrap(),
        std::fs::read(plain_path).unwrap(),
    )
    .await;
    let base = format!("http://{addr}");

    let mut cfg = FetchConfig::new(tmp.path().join("store"));
    cfg.max_bytes = 32 * 1024;
    cfg.read_timeout = Duration::from_millis(300);
    cfg.connect_timeout = Duration::from_secs(2);
    let store_dir = cfg.dir.clone();
    let store = PackageStore::new(cfg.clone()).unwrap();

    // Served jar: fetched, validated, stored once under the work directory.
    let pkg = store
        .fetch(&format!("{base}/biz.jar"))
        .await
        .expect("fetch");
    assert_eq!(
        (pkg.key.name.as_str(), pkg.key.version.as_str()),
        ("web", "1.0.0")
    );
    assert!(pkg.jar.starts_with(&store_dir));
    assert_eq!(
        std::fs::read(&pkg.jar).unwrap(),
        std::fs::read(&jar_path).unwrap()
    );
    store.remove(&pkg);
    assert!(stored(&store_dir).is_empty());

    // Redirects are followed.
    let pkg = store
        .fetch(&format!("{base}/moved.jar"))
        .await
        .expect("redirect followed");
    assert_eq!(pkg.key.name, "web");
    store.remove(&pkg);

    type Expect = fn(&PackageError) -> bool;
    let cases: Vec<(String, Expect)> = vec![
        (
            format!("{base}/missing.jar"),
            |e| matches!(e, PackageError::NotFound(m) if m.contains("HTTP 404")),
        ),
        (format!("{base}/error.jar"), |e| {
            matches!(e, PackageError::HttpStatus { status: 500, .. })
        }),
        (format!("{base}/big.jar"), |e| {
            matches!(e, PackageError::TooLarge { limit: 32768, .. })
        }),
        (format!("{base}/stall.jar"), |e| {
            matches!(e, PackageError::Timeout { .. })
        }),
        (format!("{base}/plain.zip"), |e| {
            matches!(e, PackageError::NotArkBiz(_))
        }),
        (
            format!("http://127.0.0.1:{}/x.jar", koupleless_testkit::free_port()),
            |e| matches!(e, PackageError::Unreachable { .. }),
        ),
    ];
    for (url, want) in cases {
        let err = store.fetch(&url).await.expect_err(&url);
        assert!(want(&err), "{url}: {err:?}");
        assert!(
            stored(&store_dir).is_empty(),
            "{url}: left {:?}",
            stored(&store_dir)
        );
    }

    // The allow-list is checked before any connection is made.
    let mut strict = cfg.clone();
    strict.allowed_urls = vec![UrlRule::parse("https://repo.example/").unwrap()];
    let err = PackageStore::new(strict)
        .unwrap()
        .fetch(&format!("{base}/biz.jar"))
        .await
        .unwrap_err();
    assert!(matches!(err, PackageError::NotAllowed(_)), "{err:?}");
    stop.cancel();
}

/// Every redirect hop is checked against the allow-list, not only the first URL: an allowed
/// host redirecting outside the allowed path (or to a metadata address) is refused, and the
/// refusal names the hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_hops_are_checked_against_the_allow_list() {
    let tmp = tempfile::tempdir().unwrap();
    let jar = RawZip::ark_biz("web", "1.0.0", "com.example.Main")
        .write(&tmp.path().join("web.jar"))
        .unwrap();
    let (addr, stop) = serve(std::fs::read(&jar).unwrap(), Vec::new()).await;
    let mut cfg = FetchConfig::new(tmp.path().join("store"));
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.allowed_urls = vec![UrlRule::parse(&format!("http://{addr}/repo")).unwrap()];
    let store_dir = cfg.dir.clone();
    let store = PackageStore::new(cfg).unwrap();

    let pkg = store
        .fetch(&format!("http://{addr}/repo/inside.jar"))
        .await
        .expect("a redirect inside the allowed path is followed");
    store.remove(&pkg);

    for (path, hop) in [
        ("/repo/outside.jar", "/internal/biz.jar"),
        ("/repo/metadata.jar", "169.254.169.254"),
    ] {
        let url = format!("http://{addr}{path}");
        let err = store.fetch(&url).await.expect_err(&url);
        match &err {
            PackageError::Refused { reason, .. } => {
                assert!(
                    reason.contains(hop) && reason.contains("--allow-url-prefix"),
                    "{url}: {reason}"
                )
            }
            other => panic!("{url}: want Refused, got {other:?}"),
        }
        assert!(stored(&store_dir).is_empty(), "{url} left a file");
    }
    // Not under the rule's path at a `/` boundary: refused before connecting.
    let err = store
        .fetch(&format!("http://{addr}/repository/biz.jar"))
        .await
        .unwrap_err();
    assert!(matches!(err, PackageError::NotAllowed(_)), "{err:?}");
    stop.cancel();
}

/// `--deny-private-addresses`: an IP literal is refused before connecting, a name on the
/// addresses DNS returns (`localhost` resolves to loopback only), and a redirect to a private
/// address as a hop. Without the flag the same server is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_after_resolution() {
    let tmp = tempfile::tempdir().unwrap();
    let jar = RawZip::ark_biz("web", "1.0.0", "com.example.Main")
        .write(&tmp.path().join("web.jar"))
        .unwrap();
    let (addr, stop) = serve(std::fs::read(&jar).unwrap(), Vec::new()).await;
    let mut cfg = FetchConfig::new(tmp.path().join("store"));
    cfg.connect_timeout = Duration::from_secs(2);
    let open = PackageStore::new(cfg.clone()).unwrap();
    let by_name = format!("http://localhost:{}/biz.jar", addr.port());
    let pkg = open
        .fetch(&by_name)
        .await
        .expect("reachable without the flag");
    open.remove(&pkg);

    cfg.deny_private_addresses = true;
    let store = PackageStore::new(cfg.clone()).unwrap();
    for url in [format!("http://{addr}/biz.jar"), by_name] {
        let err = store.fetch(&url).await.expect_err(&url);
        match &err {
            PackageError::Refused { reason, .. } => assert!(
                reason.contains("--deny-private-addresses") && reason.contains("127.0.0.1"),
                "{url}: {reason}"
            ),
            other => panic!("{url}: want Refused, got {other:?}"),
        }
    }
    assert!(stored(&cfg.dir).is_empty());
    stop.cancel();
}
