//! MQTT over TLS with broker certificate verification (upstream skips verification).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use koupleless_controller::config::MqttTls;

fn openssl(args: &[&str], dir: &std::path::Path) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl {args:?}");
}

/// A CA, a broker certificate for `localhost` signed by it, and an unrelated CA.
fn certificates(dir: &std::path::Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other-ca",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
        dir,
    );
    // Mosquitto started as root drops to its own user before reading the files.
    use std::os::unix::fs::PermissionsExt;
    for f in ["server.key", "server.crt", "ca.crt"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_verification() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let plain = koupleless_testkit::free_port();
    let tls = koupleless_testkit::free_port();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("mosquitto.conf"),
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    })
    .arg("-c")
    .arg(dir.path().join("mosquitto.conf"))
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", tls))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", plain))
                    .await
                    .is_ok()
        })
        .await
    );
    let kube = Kube::start().await;
    let with_ca = |id: &str, ca: &str| {
        let mut s = settings(id, Some(tls), false);
        let m = s.mqtt.as_mut().unwrap();
        m.host = "localhost".into();
        m.tls = Some(MqttTls {
            ca_path: dir.path().join(ca),
            client_cert: None,
        });
        s
    };
    // A controller trusting another CA never connects.
    let wrong = Controller::start(&kube, with_ca("mc-wrong", "other.crt")).await;
    let good = Controller::start(&kube, with_ca("mc-good", "ca.crt")).await;
    let base = MqttBase::start(plain, "tls-base").await;
    let name = vnode("tls-base");
    assert!(
        eventually(Duration::from_secs(10), || async {
            kube.memory(&name).await.is_some()
        })
        .await
    );
    assert_eq!(kube.lease_holder(&name).await.as_deref(), Some("mc-good"));
    assert!(good.ready().await);
    assert!(
        !wrong.ready().await,
        "an unverified broker must not be trusted"
    );
    assert!(
        wrong
            .metric(r#"koupleless_controller_tunnel_errors_total{tunnel="mqtt",kind="connection"}"#)
            .await
            >= 1.0
    );
    assert_eq!(
        wrong
            .metric("koupleless_controller_mqtt_connections_total")
            .await,
        0.0
    );
    base.stop().await;
    good.stop().await;
    wrong.stop().await;
    let _ = child.kill();
    let _ = child.wait();
}
