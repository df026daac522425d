//! The Docker engine layer against the real daemon.
//!
//! Every object a test creates is named `dctest-engine-<random>-…`, carries the label
//! `deployctl.test=1`, and is removed by a `Cleanup` guard whose `Drop` runs the docker CLI, so
//! a failing test leaves nothing behind either.

mod harness;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use support::free_port;

use deployctl::engine::{
    BuildRequest, DockerEngine, Engine, EngineError, HealthcheckSpec, PortPublish, RestartPolicy,
    VolumeMount,
};

use harness::*;

#[tokio::test]
async fn ping_reports_the_negotiated_api_version() {
    let e = engine().await;
    let info = e.ping().await.expect("ping");
    assert_eq!(info.host, e.host());
    assert!(!info.server_version.is_empty());
    let parse = |s: &str| -> (u32, u32) {
        let (a, b) = s.trim().split_once('.').expect("a dotted version");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    let negotiated = parse(&info.api_version);
    // The daemon's own maximum, as the CLI reports it: the negotiated version cannot exceed it.
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .expect("docker version");
    let daemon = parse(&String::from_utf8_lossy(&out.stdout));
    assert!(negotiated <= daemon, "{negotiated:?} > daemon {daemon:?}");
    assert!(negotiated >= (1, 24), "{negotiated:?}");
    // Requests really work at that version.
    assert!(
        e.list_containers(&[(TEST_LABEL, "no-such-value")])
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn unreachable_hosts_fail_fast() {
    for host in ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"] {
        // A bound that only keeps a hang from blocking the suite; it is not a timing assertion.
        let connected =
            tokio::time::timeout(Duration::from_secs(60), DockerEngine::connect(Some(host)))
                .await
                .unwrap_or_else(|_| panic!("{host}: connect hung"));
        match connected {
            Err(EngineError::Unreachable { host: h, reason }) => {
                assert_eq!(h, host);
                assert!(!reason.is_empty());
                let msg = EngineError::Unreachable { host: h, reason }.to_string();
                assert!(msg.contains(host), "{msg}");
            }
            Err(other) => panic!("{host}: expected Unreachable, got {other}"),
            Ok(_) => panic!("{host}: connected?"),
        }
    }
}

#[tokio::test]
async fn build_honours_dockerignore_args_target_and_labels() {
    let e = engine().await;
    let c = Cleanup::new();
    let dockerfile = "FROM scratch AS base\n\
                      ARG GREETING=unset\n\
                      LABEL greeting=$GREETING\n\
                      COPY app /app\n\
                      COPY . /ctx/\n\
                      ENTRYPOINT [\"/app\"]\n\
                      CMD [\"serve\"]\n\
                      FROM base AS final\n\
                      LABEL stage=final\n";
    let ctx = context(dockerfile);
    let root = ctx.path();
    std::fs::write(
        root.join(".dockerignore"),
        "# test\nsecret.txt\nlogs\n!logs/keep.log\n**/*.tmp\nDockerfile\n",
    )
    .expect("write");
    std::fs::write(root.join("secret.txt"), "s").expect("write");
    std::fs::write(root.join("kept.txt"), "k").expect("write");
    std::fs::create_dir_all(root.join("logs")).expect("mkdir");
    std::fs::write(root.join("logs/a.log"), "a").expect("write");
    std::fs::write(root.join("logs/keep.log"), "k").expect("write");
    std::fs::create_dir_all(root.join("sub/deep")).expect("mkdir");
    std::fs::write(root.join("sub/deep/x.tmp"), "x").expect("write");
    std::fs::write(root.join("sub/deep/y.txt"), "y").expect("write");

    let base_tag = c.image("base");
    let final_tag = c.image("final");
    let log_lines = Mutex::new(Vec::<String>::new());
    let sink = |l: &str| log_lines.lock().unwrap().push(l.to_string());
    for (tag, target) in [(&base_tag, Some("base")), (&final_tag, None)] {
        e.build_image(
            &BuildRequest {
                context_dir: root.to_path_buf(),
                dockerfile: "Dockerfile".into(),
                tag: tag.clone(),
                args: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
                target: target.map(str::to_string),
                labels: c.labels(),
            },
            &sink,
        )
        .await
        .expect("build");
    }
    let logged = log_lines.lock().unwrap().clone();
    assert!(
        logged.iter().any(|l| l.contains("FROM scratch")),
        "{logged:?}"
    );
    assert!(logged.iter().all(|l| !l.ends_with('\n')), "{logged:?}");

    assert!(e.image_exists(&final_tag).await.expect("exists"));
    assert!(
        !e.image_exists(&c.name("never-built"))
            .await
            .expect("exists")
    );

    let images = e
        .list_images(&[(TEST_LABEL, "1"), ("dctest.run", &c.prefix)])
        .await
        .expect("list images");
    let find = |tag: &str| {
        images
            .iter()
            .find(|i| i.tags.iter().any(|t| t == tag))
            .unwrap_or_else(|| panic!("{tag} not listed: {images:?}"))
    };
    let base = find(&base_tag);
    let fin = find(&final_tag);
    assert_eq!(
        base.labels.get("greeting").map(String::as_str),
        Some("hello")
    );
    assert_eq!(base.labels.get("stage"), None, "target stopped at base");
    assert_eq!(fin.labels.get("stage").map(String::as_str), Some("final"));
    assert_eq!(fin.labels.get(TEST_LABEL).map(String::as_str), Some("1"));
    // A label filter that does not match lists nothing of ours.
    let none = e
        .list_images(&[("dctest.run", "no-such-run")])
        .await
        .expect("list");
    assert!(none.is_empty());

    // What reached the image: read it from a running container.
    let name = c.container("ls");
    e.create_container(&spec(&c, &name, &final_tag))
        .await
        .expect("create");
    e.start_container(&name).await.expect("start");
    let out = e
        .exec(&name, &strings(&["/app", "ls", "/ctx"]), &|_| {})
        .await
        .expect("exec ls");
    assert_eq!(out.exit_code, 0, "{out:?}");
    let files: Vec<&str> = out.stdout.lines().collect();
    for present in [
        "app",
        "kept.txt",
        "logs/keep.log",
        "sub/deep/y.txt",
        ".dockerignore",
    ] {
        assert!(files.contains(&present), "{present} missing: {files:?}");
    }
    for absent in ["secret.txt", "logs/a.log", "sub/deep/x.tmp", "Dockerfile"] {
        assert!(!files.contains(&absent), "{absent} was sent: {files:?}");
    }
}

#[tokio::test]
async fn build_failures_carry_the_daemon_message() {
    let e = engine().await;
    let c = Cleanup::new();
    let cases = [
        (
            "FROM scratch\nCOPY missing-file.txt /x\n",
            "missing-file.txt",
        ),
        ("FROM scratch\nFROBNICATE now\n", "frobnicate"),
    ];
    for (i, (dockerfile, needle)) in cases.iter().enumerate() {
        let ctx = context(dockerfile);
        let err = e
            .build_image(
                &BuildRequest {
                    context_dir: ctx.path().to_path_buf(),
                    dockerfile: "Dockerfile".into(),
                    tag: c.image(&format!("bad{i}")),
                    args: BTreeMap::new(),
                    target: None,
                    labels: c.labels(),
                },
                &|_| {},
            )
            .await
            .expect_err("the build must fail");
        match err {
            EngineError::Build(msg) => {
                assert!(
                    msg.to_lowercase().contains(needle),
                    "{needle} not in {msg:?}"
                )
            }
            other => panic!("expected a Build error, got {other:?}"),
        }
    }
    // A Dockerfile that is not there fails before anything is sent.
    let ctx = context(APP_DOCKERFILE);
    let err = e
        .build_image(
            &BuildRequest {
                context_dir: ctx.path().to_path_buf(),
                dockerfile: "Nope.Dockerfile".into(),
                tag: c.image("nodf"),
                args: BTreeMap::new(),
                target: None,
                labels: c.labels(),
            },
            &|_| {},
        )
        .await
        .expect_err("missing Dockerfile");
    assert!(
        matches!(&err, EngineError::Build(m) if m.contains("Nope.Dockerfile")),
        "{err:?}"
    );
}

#[tokio::test]
async fn build_from_a_ready_tar() {
    let e = engine().await;
    let c = Cleanup::new();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        builder.append_data(&mut h, path, data).expect("append");
    };
    add("Dockerfile", APP_DOCKERFILE.as_bytes(), 0o644);
    let mut app = Vec::new();
    std::fs::File::open(test_app())
        .and_then(|mut f| f.read_to_end(&mut app))
        .expect("read app");
    add("app", &app, 0o755);
    let tar = builder.into_inner().expect("tar");
    let tag = c.image("fromtar");
    e.build_image_from_tar(tar, &tag, &c.labels())
        .await
        .expect("build from tar");
    let images = e
        .list_images(&[("dctest.run", &c.prefix)])
        .await
        .expect("list");
    assert!(images.iter().any(|i| i.tags.contains(&tag)), "{images:?}");

    // Errors come back as Build errors here too.
    let err = e
        .build_image_from_tar(b"not a tar".to_vec(), &c.image("junk"), &c.labels())
        .await
        .expect_err("junk context");
    assert!(matches!(err, EngineError::Build(_)), "{err:?}");

    e.remove_image(&tag).await.expect("remove image");
    assert!(!e.image_exists(&tag).await.expect("exists"));
    assert!(matches!(
        e.remove_image(&tag).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn container_lifecycle() {
    let e = engine().await;
    let c = Cleanup::new();
    let image = build_app_image(&e, &c).await;
    let net = c.network("net");
    let vol = c.volume("data");
    e.ensure_network(&net, &c.labels()).await.expect("network");
    e.ensure_volume(&vol, &c.labels()).await.expect("volume");

    let name = c.container("web");
    let port = free_port();
    let mut s = spec(&c, &name, &image);
    s.env = vec![("GREETING".into(), "multi word = value".into())];
    s.network = Some(net.clone());
    s.network_aliases = vec![c.name("alias")];
    s.ports = vec![PortPublish {
        host_ip: "127.0.0.1".into(),
        host_port: port,
        container_port: 8080,
    }];
    s.restart_policy = RestartPolicy::UnlessStopped;
    s.healthcheck = Some(HealthcheckSpec {
        test: strings(&["/app", "exit", "0"]),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        retries: 2,
    });
    s.mounts = vec![VolumeMount {
        volume: vol.clone(),
        target: "/data".into(),
    }];
    s.stop_timeout = Some(Duration::from_secs(3));

    let id = e.create_container(&s).await.expect("create");
    assert!(!id.is_empty());
    match e.create_container(&s).await {
        Err(EngineError::Conflict(msg)) => assert!(msg.contains(&name), "{msg}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    let created = e
        .inspect_container(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(created.id, id);
    assert_eq!(created.state.status, "created");
    assert!(!created.state.running);
    assert_eq!(created.state.started_at, None);

    e.start_container(&name).await.expect("start");
    e.start_container(&name)
        .await
        .expect("starting a running container is fine");
    let info = e
        .inspect_container(&id)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.name, name);
    assert_eq!(info.image, image);
    assert!(info.state.running);
    assert_eq!(info.state.status, "running");
    assert!(info.state.started_at.is_some());
    assert_eq!(info.labels.get("dctest.run"), Some(&c.prefix));
    let ip = info.networks.get(&net).expect("attached to the network");
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "ip {ip:?}");
    assert_eq!(
        info.networks.len(),
        1,
        "only on our network: {:?}",
        info.networks
    );

    // Alias and mount as the daemon recorded them.
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{json .NetworkSettings.Networks}} {{json .Mounts}}",
            &name,
        ])
        .output()
        .expect("docker inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&c.name("alias")), "{text}");
    assert!(text.contains(&vol) && text.contains("\"/data\""), "{text}");

    // The healthcheck runs (intervals in nanoseconds, or it would be ~never).
    wait_for("healthy", Duration::from_secs(20), async || {
        let i = e.inspect_container(&name).await.ok()??;
        (i.state.health.as_deref() == Some("healthy")).then_some(())
    })
    .await;

    // The published port answers on the host address it was bound to.
    let greeting = wait_for("the published port", Duration::from_secs(10), async || {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut buf = String::new();
        conn.read_to_string(&mut buf).ok()?;
        (!buf.is_empty()).then_some(buf)
    })
    .await;
    assert!(greeting.starts_with("hello "), "{greeting:?}");

    // Exec: lines reach the sink as they come, output is split by stream, exit code kept.
    let seen = Mutex::new(Vec::<String>::new());
    let out = e
        .exec(&name, &strings(&["/app", "print", "3", "2", "7"]), &|l| {
            seen.lock().unwrap().push(l.to_string())
        })
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, "out 1\nout 2\nout 3\n");
    assert_eq!(out.stderr, "err 1\nerr 2\n");
    assert_eq!(*seen.lock().unwrap(), ["out 1", "out 2", "out 3"]);

    let out = e
        .exec(&name, &strings(&["/app", "env", "GREETING"]), &|_| {})
        .await
        .expect("exec");
    assert_eq!(out.stdout.trim_end(), "multi word = value");

    let out = e
        .exec(&name, &strings(&["/app", "write", "/data/f", "x"]), &|_| {})
        .await
        .expect("exec write");
    assert_eq!(out.exit_code, 0, "{out:?}");
    let out = e
        .exec(&name, &strings(&["/app", "ls", "/data"]), &|_| {})
        .await
        .expect("ls");
    assert_eq!(out.stdout, "f\n");

    // A command that does not exist fails inside the exec, not as an engine error.
    let out = e
        .exec(&name, &strings(&["/no/such/binary"]), &|_| {})
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 126, "{out:?}");
    assert!(out.stdout.contains("/no/such/binary"), "{out:?}");

    // Logs: the last lines of stdout and stderr together.
    let logs = e.logs_tail(&name, 100).await.expect("logs");
    assert!(logs.contains(&"serving".to_string()), "{logs:?}");
    assert!(logs.contains(&"serving-err".to_string()), "{logs:?}");
    assert_eq!(e.logs_tail(&name, 1).await.expect("logs").len(), 1);
    assert!(e.logs_tail(&name, 0).await.expect("logs").is_empty());

    let listed = e
        .list_containers(&[(TEST_LABEL, "1"), ("dctest.run", &c.prefix)])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert!(listed[0].state.running);

    // Restart: a new start time, still running.
    let before = e
        .inspect_container(&name)
        .await
        .expect("inspect")
        .expect("exists");
    e.restart_container(&name, Duration::from_secs(3))
        .await
        .expect("restart");
    let after = e
        .inspect_container(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert!(after.state.running);
    assert_ne!(before.state.started_at, after.state.started_at);

    // Stop: SIGTERM reaches the app, which exits 143; stopping again is fine.
    // Exit code 143 below: SIGTERM ended it, not the SIGKILL that follows the stop timeout.
    e.stop_container(&name, Duration::from_secs(10))
        .await
        .expect("stop");
    e.stop_container(&name, Duration::from_secs(10))
        .await
        .expect("stop again");
    let stopped = e
        .inspect_container(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert!(!stopped.state.running);
    assert_eq!(stopped.state.status, "exited");
    assert_eq!(stopped.state.exit_code, 143);
    assert!(
        e.logs_tail(&name, 10).await.is_ok(),
        "logs of a stopped container"
    );
    assert!(matches!(
        e.exec(&name, &strings(&["/app", "exit", "0"]), &|_| {})
            .await,
        Err(EngineError::Conflict(_))
    ));

    // Removal, then it is gone everywhere.
    e.remove_container(&name, false).await.expect("remove");
    assert!(e.inspect_container(&name).await.expect("inspect").is_none());
    assert!(matches!(
        e.remove_container(&name, true).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        e.start_container(&name).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        e.logs_tail(&name, 5).await,
        Err(EngineError::NotFound(_))
    ));
    let listed = e
        .list_containers(&[("dctest.run", &c.prefix)])
        .await
        .expect("list");
    assert!(listed.is_empty(), "{listed:?}");

    // The volume outlives the container and keeps its data.
    let name2 = c.container("reader");
    let mut s2 = spec(&c, &name2, &image);
    s2.mounts = s.mounts.clone();
    e.create_container(&s2).await.expect("create reader");
    e.start_container(&name2).await.expect("start reader");
    let out = e
        .exec(&name2, &strings(&["/app", "ls", "/data"]), &|_| {})
        .await
        .expect("ls");
    assert_eq!(out.stdout, "f\n");
    // A volume in use cannot go; forced removal of a running container can.
    assert!(matches!(
        e.remove_volume(&vol).await,
        Err(EngineError::Conflict(_))
    ));
    e.remove_container(&name2, true)
        .await
        .expect("force remove");
    e.remove_volume(&vol).await.expect("remove volume");
    e.remove_network(&net).await.expect("remove network");
}

#[tokio::test]
async fn restart_policy_is_honoured() {
    let e = engine().await;
    let c = Cleanup::new();
    let image = build_app_image(&e, &c).await;

    let always = c.container("always");
    let mut s = spec(&c, &always, &image);
    s.cmd = Some(strings(&["exit", "3"]));
    s.restart_policy = RestartPolicy::Always;
    e.create_container(&s).await.expect("create");
    e.start_container(&always).await.expect("start");

    let once = c.container("once");
    let mut s = spec(&c, &once, &image);
    s.cmd = Some(strings(&["print", "1", "0", "3"]));
    e.create_container(&s).await.expect("create");
    e.start_container(&once).await.expect("start");

    // Docker restarts it after each exit, with a growing delay from 100 ms.
    wait_for("two restarts", Duration::from_secs(20), async || {
        let i = e.inspect_container(&always).await.ok()??;
        (i.state.restart_count >= 2).then_some(())
    })
    .await;

    let exited = wait_for("exit", Duration::from_secs(20), async || {
        let i = e.inspect_container(&once).await.ok()??;
        (i.state.status == "exited").then_some(i)
    })
    .await;
    assert_eq!(exited.state.exit_code, 3);
    assert_eq!(exited.state.restart_count, 0);
    assert!(!exited.state.running);
    assert_eq!(e.logs_tail(&once, 5).await.expect("logs"), ["out 1"]);

    // Stopping a container that already exited is fine.
    e.stop_container(&once, Duration::from_secs(1))
        .await
        .expect("stop exited");
}

fn networks_named(name: &str) -> usize {
    let out = Command::new("docker")
        .args(["network", "ls", "--filter", &format!("name={name}")])
        .args(["--format", "{{.Name}}"])
        .output()
        .expect("docker network ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == name)
        .count()
}

#[tokio::test]
async fn network_and_volume_ensure_are_idempotent() {
    let e = engine().await;
    let c = Cleanup::new();

    let net = c.network("net");
    e.ensure_network(&net, &c.labels()).await.expect("create");
    e.ensure_network(&net, &c.labels()).await.expect("exists");
    assert_eq!(networks_named(&net), 1);

    // Racing creators still leave one network of that name (old daemons allow duplicates).
    let raced = c.network("raced");
    let labels = c.labels();
    let results =
        futures_util::future::join_all((0..4).map(|_| e.ensure_network(&raced, &labels))).await;
    for r in results {
        r.expect("ensure under a race");
    }
    assert_eq!(networks_named(&raced), 1);

    e.remove_network(&net).await.expect("remove");
    assert_eq!(networks_named(&net), 0);
    assert!(matches!(
        e.remove_network(&net).await,
        Err(EngineError::NotFound(_))
    ));
    e.remove_network(&raced).await.expect("remove raced");

    let vol = c.volume("vol");
    e.ensure_volume(&vol, &c.labels()).await.expect("create");
    e.ensure_volume(&vol, &c.labels()).await.expect("exists");
    let out = Command::new("docker")
        .args(["volume", "inspect", "-f", "{{json .Labels}}", &vol])
        .output()
        .expect("docker volume inspect");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&c.prefix));
    e.remove_volume(&vol).await.expect("remove");
    assert!(matches!(
        e.remove_volume(&vol).await,
        Err(EngineError::NotFound(_))
    ));
}
