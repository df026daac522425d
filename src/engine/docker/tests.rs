//! Unit tests of the Docker engine that need no daemon, or only an unreachable one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use bollard::API_DEFAULT_VERSION;
use bollard::errors::Error as BollardError;
use bollard::models::RestartPolicyNameEnum;

use crate::engine::{ContainerSpec, EngineError, RestartPolicy};

use super::*;

#[test]
fn host_resolution_prefers_argument_then_env_then_socket() {
    assert_eq!(
        resolve_host(Some("tcp://a:1"), Some("tcp://b:2")),
        "tcp://a:1"
    );
    assert_eq!(resolve_host(Some("  "), Some("tcp://b:2")), "tcp://b:2");
    assert_eq!(resolve_host(None, None), DEFAULT_HOST);
    assert_eq!(resolve_host(None, Some("")), DEFAULT_HOST);
}

fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let vars: Vec<(String, OsString)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn tls_follows_the_docker_cli_variables() {
    assert!(tls_settings(&fake_env(&[])).is_none());
    assert!(tls_settings(&fake_env(&[("DOCKER_TLS_VERIFY", "")])).is_none());
    let tls = tls_settings(&fake_env(&[
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", "/certs"),
    ]))
    .expect("tls on");
    assert_eq!(tls.ca, Path::new("/certs/ca.pem"));
    assert_eq!(tls.cert, Path::new("/certs/cert.pem"));
    assert_eq!(tls.key, Path::new("/certs/key.pem"));
    let tls = tls_settings(&fake_env(&[
        ("DOCKER_TLS_VERIFY", "1"),
        ("HOME", "/home/u"),
    ]))
    .expect("tls on");
    assert_eq!(tls.ca, Path::new("/home/u/.docker/ca.pem"));
}

#[tokio::test]
async fn tls_without_certificates_is_a_clear_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_path = dir.path().to_string_lossy().into_owned();
    let env = fake_env(&[
        ("DOCKER_HOST", "tcp://127.0.0.1:1"),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", &cert_path),
    ]);
    match connect_with(None, &env).await {
        Err(EngineError::Unreachable { host, reason }) => {
            assert_eq!(host, "tcp://127.0.0.1:1");
            assert!(reason.contains("ca.pem"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_failed_tls_handshake_is_unreachable_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(f), "").expect("write");
    }
    // A peer that accepts and hangs up instead of speaking TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let host = format!("tcp://127.0.0.1:{port}");
    let cert_path = dir.path().to_string_lossy().into_owned();
    let env = fake_env(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &cert_path)]);
    let started = std::time::Instant::now();
    let result = connect_with(Some(&host), &env).await;
    server.abort();
    match result {
        Err(EngineError::Unreachable { host: h, .. }) => assert_eq!(h, host),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
}

#[test]
fn too_new_message_yields_the_maximum_version() {
    let v = max_supported_version(
        "client version 1.53 is too new. Maximum supported API version is 1.41",
    )
    .expect("parsed");
    assert_eq!(v.to_string(), "1.41");
    assert!(max_supported_version("something else").is_none());
    assert!(parse_version("1.x").is_none());
}

#[test]
fn unsupported_addresses_are_rejected_clearly() {
    for host in [
        "ssh://me@box",
        "example.com:2375",
        "npipe:////./pipe/docker",
    ] {
        match open(host, None, API_DEFAULT_VERSION) {
            Err(EngineError::Unreachable { host: h, reason }) => {
                assert_eq!(h, host);
                assert!(!reason.is_empty());
            }
            other => panic!("{host}: {other:?}"),
        }
    }
}

#[test]
fn server_errors_map_by_status() {
    let e = |code| BollardError::DockerResponseServerError {
        status_code: code,
        message: "msg".to_string(),
    };
    assert!(matches!(map_error(e(404), "h"), EngineError::NotFound(m) if m == "msg"));
    assert!(matches!(map_error(e(409), "h"), EngineError::Conflict(_)));
    assert!(matches!(map_error(e(500), "h"), EngineError::Api(m) if m == "msg"));
    assert!(matches!(
        map_error(BollardError::SocketNotFoundError("/x".into()), "h"),
        EngineError::Unreachable { .. }
    ));
    assert!(matches!(build_error(e(500), "h"), EngineError::Build(m) if m == "msg"));
}

#[test]
fn lines_are_split_across_chunks() {
    let mut got = Vec::new();
    let mut s = LineSplitter::default();
    s.push(b"a\nb", |l| got.push(l.to_string()));
    s.push(b"c\r\n\nd", |l| got.push(l.to_string()));
    s.finish(|l| got.push(l.to_string()));
    assert_eq!(got, ["a", "bc", "", "d"]);
}

#[test]
fn container_spec_maps_to_the_api_body() {
    use crate::engine::{HealthcheckSpec, PortPublish, VolumeMount};
    let spec = ContainerSpec {
        name: "n".into(),
        image: "img:1".into(),
        labels: BTreeMap::from([("a".into(), "b".into())]),
        env: vec![("K".into(), "v=1".into())],
        cmd: Some(vec!["serve".into()]),
        network: Some("net".into()),
        network_aliases: vec!["web".into()],
        ports: vec![PortPublish {
            host_ip: "127.0.0.1".into(),
            host_port: 8080,
            container_port: 80,
        }],
        restart_policy: RestartPolicy::UnlessStopped,
        healthcheck: Some(HealthcheckSpec {
            test: vec!["/app".into(), "check".into()],
            interval: Duration::from_millis(1500),
            timeout: Duration::from_secs(2),
            retries: 3,
        }),
        mounts: vec![VolumeMount {
            volume: "vol".into(),
            target: "/data".into(),
        }],
        stop_timeout: Some(Duration::from_millis(2500)),
    };
    let body = create_body(&spec);
    assert_eq!(body.env, Some(vec!["K=v=1".to_string()]));
    assert_eq!(body.stop_timeout, Some(3));
    let hc = body.healthcheck.expect("healthcheck");
    assert_eq!(
        hc.test,
        Some(vec!["CMD".into(), "/app".into(), "check".into()])
    );
    assert_eq!(hc.interval, Some(1_500_000_000));
    assert_eq!(hc.timeout, Some(2_000_000_000));
    let host = body.host_config.expect("host config");
    assert_eq!(host.network_mode.as_deref(), Some("net"));
    let bindings = host.port_bindings.expect("ports");
    let b = &bindings["80/tcp"].as_ref().expect("binding")[0];
    assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(b.host_port.as_deref(), Some("8080"));
    assert_eq!(
        host.restart_policy.and_then(|r| r.name),
        Some(RestartPolicyNameEnum::UNLESS_STOPPED)
    );
    let ep = &body
        .networking_config
        .expect("net")
        .endpoints_config
        .expect("eps")["net"];
    assert_eq!(ep.aliases, Some(vec!["web".to_string()]));
}

#[test]
fn created_keys_compare_across_fraction_lengths() {
    assert!(created_key("2024-01-01T00:00:00.5Z") > created_key("2024-01-01T00:00:00.123456789Z"));
}

#[test]
fn a_cached_layer_removed_mid_build_is_recognised() {
    // What the daemon said in CI when a concurrent prune removed a layer this build reused.
    let seen = "failed to get digest sha256:8144171fb076: open /var/lib/docker/image/fuse-overlayfs/imagedb/content/sha256/8144171fb076: no such file or directory";
    assert!(api::is_vanished_layer(seen));
    assert!(api::is_vanished_layer(
        "unknown parent image ID sha256:0123"
    ));
    assert!(!api::is_vanished_layer(
        "The command '/bin/sh -c make' returned a non-zero code: 2"
    ));
}
