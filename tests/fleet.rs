//! A fleet of three real Docker hosts (the lab: each its own engine in its own network namespace,
//! reached over SSH), deploying one release to all of them: the image shipped without a
//! registry, 0 failed requests on every host's URL, a failure on one host leaving all on the old
//! release, an unreachable host refused up front, drift shown and repaired, a daemon killed after
//! the switch. One lab is shared by the scenarios, which run in order in one test (each with an
//! app of its own where it matters); the lab is removed when the test ends, also on failure.

#[path = "support/lab.rs"]
mod lab;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use lab::{Lab, LabHost, LabOptions};
use serde_json::Value;
use support::{App, Load, body_version, http_get_at, phase_done};

/// The app on every lab host: its proxy publishes `port` on each host's address.
struct FleetApp {
    app: App,
    hosts: Vec<String>,
    ips: Vec<String>,
    ssh_config: String,
}

impl FleetApp {
    fn new(lab: &Lab, prefix: &str) -> FleetApp {
        let app = App::new(prefix);
        let f = FleetApp {
            hosts: lab.hosts.iter().map(LabHost::ssh_host).collect(),
            ips: lab.hosts.iter().map(|h| h.ip.clone()).collect(),
            ssh_config: lab.ssh_config().display().to_string(),
            app,
        };
        f.configure(&f.hosts, "");
        f
    }

    /// Rewrites environments/test.toml: these engines, the proxy on every address, `extra`.
    fn configure(&self, hosts: &[String], extra: &str) {
        let list: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        let docker = if hosts.len() == 1 {
            format!("host = {}", list[0])
        } else {
            format!("hosts = [{}]", list.join(", "))
        };
        std::fs::write(
            self.app.root().join("environments/test.toml"),
            format!(
                "[docker]\n{docker}\n\n[proxy]\nlisten = \"{}\"\n{extra}\n",
                self.app.port
            ),
        )
        .expect("write the overlay");
        self.app.commit("fleet configuration");
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![("DEPLOYCTL_SSH_CONFIG", self.ssh_config.as_str())]
    }

    fn run(&self, args: &[&str]) -> support::Run {
        self.app.run(args, &self.env())
    }

    /// The version each host's proxy serves (None: no 200).
    fn serving(&self) -> Vec<Option<String>> {
        self.ips
            .iter()
            .map(|ip| {
                http_get_at(ip, self.app.port, "/", Duration::from_secs(5))
                    .ok()
                    .filter(|(s, _)| *s == 200)
                    .and_then(|(_, b)| body_version(&b))
            })
            .collect()
    }

    fn assert_serving(&self, version: &str, why: &str) {
        let want: Vec<Option<String>> = vec![Some(version.to_string()); self.ips.len()];
        assert_eq!(self.serving(), want, "{why}");
    }
}

impl Drop for FleetApp {
    fn drop(&mut self) {
        // `App`'s own cleanup talks to the machine's daemon; the fleet's objects are on the lab
        // hosts, which the lab removes with everything on them.
        let _ = self.run(&["remove", "--yes", "--force"]);
    }
}

/// Containers of `app` on a lab host running `version`.
fn running_version(host: &LabHost, app: &str, version: &str) -> usize {
    host.docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=deployctl.app={app}"),
        "--filter",
        &format!("label=deployctl.version={version}"),
    ])
    .map(|out| out.split_whitespace().count())
    .unwrap_or(0)
}

/// Kills (SIGKILL) every container `name` that starts on `host` until the returned guard is
/// dropped: a release that crashes on that host only.
struct CrashOn {
    child: std::process::Child,
}

impl CrashOn {
    fn start(host: &LabHost, name: &str) -> CrashOn {
        let script = format!(
            "docker events --filter container={name} --filter event=start --format x | \
             while read -r _; do docker kill {name} >/dev/null 2>&1; done"
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("DOCKER_HOST", host.docker_host())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the crash watcher");
        CrashOn { child }
    }
}

impl Drop for CrashOn {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_fleet_of_three_hosts_over_ssh() {
    let lab = Lab::start_with(3, LabOptions { ssh: true });
    let fleet = FleetApp::new(&lab, "fleet");
    ships_the_image_and_deploys_under_load(&lab, &fleet);
    rolls_back_every_host(&fleet);
    a_crash_on_one_host_leaves_every_host_on_the_old_release(&lab, &fleet);
    drift_is_shown_and_repaired(&lab, &fleet);
    an_unreachable_host_changes_nothing(&lab, &fleet);
    builds_here_and_ships_to_a_single_remote_host(&lab);
    the_lock_covers_every_host(&lab, &fleet);
    a_daemon_killed_after_the_switch_sends_the_others_back(&lab, &fleet);
}

fn ships_the_image_and_deploys_under_load(lab: &Lab, fleet: &FleetApp) {
    // The first deploy: built on h1, which alone has the image; shipped to h2 and h3.
    let run = fleet.run(&["deploy", "--release", "v1", "--output", "json"]);
    run.assert_code(0);
    let report = run.json();
    let hosts = report["hosts"].as_array().expect("a row per host");
    assert_eq!(hosts.len(), 3, "{report:#}");
    assert!(hosts[0]["image_bytes"].is_null(), "h1 built it: {report:#}");
    for h in &hosts[1..] {
        assert!(
            h["image_bytes"].as_u64().unwrap_or(0) > 100_000,
            "{} did not get the image: {report:#}",
            h["host"]
        );
    }
    fleet.assert_serving("v1", "every host serves the first release");

    // The second deploy under load on all three hosts' URLs: not one failed request.
    let loads: Vec<Load> = fleet
        .ips
        .iter()
        .map(|ip| Load::start_at(ip, fleet.app.port, 20))
        .collect();
    let run = fleet.run(&["deploy", "--release", "v2", "--output", "json"]);
    let stats: Vec<_> = loads.into_iter().map(Load::stop).collect();
    run.assert_code(0);
    for (ip, s) in fleet.ips.iter().zip(&stats) {
        assert!(
            s.sent > 20,
            "{ip}: too little load to prove anything: {s:?}"
        );
        assert_eq!(
            s.failed, 0,
            "{ip}: failed requests during the deploy: {s:?}"
        );
    }
    fleet.assert_serving("v2", "every host serves the new release");
    let report = run.json();
    let spread = report["switch_spread_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no switch spread: {report:#}"));
    assert!(spread >= 0.0);
    assert!(
        report["hosts"].as_array().is_some_and(|h| h[1..]
            .iter()
            .all(|h| h["image_bytes"].as_u64().unwrap_or(0) > 0)),
        "v2 is a new image: it was shipped before the switch: {report:#}"
    );

    // status: one row per host, all on v2, the top-level version kept.
    let run = fleet.run(&["status", "--output", "json"]);
    run.assert_code(0);
    let status = run.json();
    assert_eq!(status["live"]["version"], "v2", "{status:#}");
    let rows = status["hosts"].as_array().expect("hosts");
    assert_eq!(rows.len(), 3);
    for (row, host) in rows.iter().zip(&lab.hosts) {
        assert_eq!(row["host"], host.ssh_host());
        assert_eq!(row["live"]["version"], "v2");
        assert_eq!(row["healthy"], true, "{status:#}");
        if host.ssh_host().starts_with("ssh://") {
            assert!(
                row["url"].as_str().is_some_and(|u| u.contains(&host.ip)),
                "{row}"
            );
        }
    }
}

fn rolls_back_every_host(fleet: &FleetApp) {
    fleet.run(&["rollback"]).assert_code(0);
    fleet.assert_serving("v1", "the rollback goes back on every host");
}

fn a_crash_on_one_host_leaves_every_host_on_the_old_release(lab: &Lab, fleet: &FleetApp) {
    let status = fleet.run(&["status", "--output", "json"]).json();
    let live_color = status["live"]["color"].as_str().expect("a live colour");
    let idle = if live_color == "blue" {
        "green"
    } else {
        "blue"
    };
    let crash = CrashOn::start(&lab.hosts[2], &fleet.app.container(idle));
    let run = fleet.run(&["deploy", "--release", "v3", "--output", "json"]);
    drop(crash);
    run.assert_code(1);
    let report = run.json();
    let reason = report["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&lab.hosts[2].ssh_host()),
        "the reason names the host: {reason}\n{run}"
    );
    assert_eq!(report["failure"]["host"], lab.hosts[2].ssh_host());
    fleet.assert_serving("v1", "no host was switched");
    for h in &lab.hosts {
        assert_eq!(
            running_version(h, &fleet.app.name, "v3"),
            0,
            "{}: the failed release still runs",
            h.name
        );
    }
}

fn drift_is_shown_and_repaired(lab: &Lab, fleet: &FleetApp) {
    // Someone deploys to h2 alone.
    fleet.configure(&[fleet.hosts[1].clone()], "");
    fleet.run(&["deploy", "--release", "v4"]).assert_code(0);
    fleet.configure(&fleet.hosts, "");
    assert_eq!(
        fleet.serving(),
        vec![Some("v1".into()), Some("v4".into()), Some("v1".into())]
    );
    let run = fleet.run(&["status", "--output", "json"]);
    assert_ne!(run.code, 0, "drift is a problem:\n{run}");
    let status = run.json();
    assert_eq!(status["drift"], true, "{status:#}");
    assert!(
        status["live"].is_null(),
        "no single live version: {status:#}"
    );
    assert!(
        status["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p.as_str().unwrap_or("").contains("v4"))),
        "{status:#}"
    );
    // h2 is live on the other colour now; the next deploy brings all three to one release.
    let run = fleet.run(&["deploy", "--release", "v5", "--output", "json"]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["hosts"][1]["flipped"], true, "{report:#}");
    fleet.assert_serving("v5", "the deploy repaired the drift");
    let run = fleet.run(&["status"]);
    run.assert_code(0);
    for h in &lab.hosts {
        assert_eq!(running_version(h, &fleet.app.name, "v5"), 1, "{}", h.name);
    }
}

fn an_unreachable_host_changes_nothing(lab: &Lab, fleet: &FleetApp) {
    // An address on the lab's bridge that no host has.
    let last = &lab.hosts[2].ip;
    let (net, _) = last.rsplit_once('.').expect("an IPv4 address");
    let ghost = format!("ssh://root@{net}.99");
    let mut hosts = fleet.hosts[..2].to_vec();
    hosts.push(ghost.clone());
    fleet.configure(&hosts, "");
    let run = fleet.run(&["deploy", "--release", "v6"]);
    fleet.configure(&fleet.hosts, "");
    run.assert_code(4);
    assert!(
        run.stderr.contains(&format!("{net}.99")),
        "the error names the host:\n{run}"
    );
    fleet.assert_serving("v5", "nothing changed anywhere");
    for h in &lab.hosts {
        assert_eq!(running_version(h, &fleet.app.name, "v6"), 0, "{}", h.name);
    }
}

fn the_lock_covers_every_host(lab: &Lab, fleet: &FleetApp) {
    let lock = format!("deployctl-lock-{}", fleet.app.pair());
    let held = |h: &LabHost| h.docker(&["inspect", &lock]).is_ok();
    fleet
        .run(&["lock", "acquire", "--reason", "incident"])
        .assert_code(0);
    assert!(lab.hosts.iter().all(held), "every host's lock is taken");
    let status = fleet.run(&["lock", "status", "--output", "json"]).json();
    assert_eq!(
        status["hosts"].as_array().map(Vec::len),
        Some(3),
        "{status:#}"
    );
    let run = fleet.run(&["deploy", "--release", "v8"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("incident"),
        "the holder is named:\n{run}"
    );
    fleet.assert_serving("v5", "a locked fleet is not touched");
    fleet.run(&["lock", "release"]).assert_code(0);
    assert!(!lab.hosts.iter().any(held), "every host's lock is released");
}

fn builds_here_and_ships_to_a_single_remote_host(lab: &Lab) {
    let solo = FleetApp::new(lab, "local");
    let host = &lab.hosts[0];
    solo.configure(&[host.ssh_host()], "[build]\nlocal = true\n");
    let run = solo.run(&["deploy", "--release", "v1", "--dry-run"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!(
            "ship {}:v1 from this machine to each of {}",
            solo.app.name,
            host.ssh_host()
        )),
        "the plan says where the image goes:\n{run}"
    );
    solo.run(&["deploy", "--release", "v1"]).assert_code(0);
    let on_host = host
        .docker(&[
            "images",
            "-q",
            "--filter",
            &format!("label=deployctl.app={}", solo.app.name),
        ])
        .unwrap_or_default();
    assert_eq!(on_host.split_whitespace().count(), 1, "shipped: {on_host}");
    let here = support::docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=deployctl.app={}", solo.app.name),
    ])
    .unwrap_or_default();
    assert!(!here.trim().is_empty(), "built on this machine's engine");
    assert_eq!(
        http_get_at(&host.ip, solo.app.port, "/", Duration::from_secs(5))
            .ok()
            .and_then(|(_, b)| body_version(&b)),
        Some("v1".to_string())
    );
}

fn a_daemon_killed_after_the_switch_sends_the_others_back(lab: &Lab, fleet: &FleetApp) {
    fleet.configure(&fleet.hosts, "[verify]\nwindow = \"5s\"\n");
    let env = fleet.env();
    let mut run =
        fleet
            .app
            .spawn_watched(&["deploy", "--release", "v7"], &env, phase_done("switch"));
    run.wait_trigger(Duration::from_secs(120));
    let dead = &lab.hosts[2];
    let pid = dead.dockerd_pid().expect("h3's dockerd pid");
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let ended = run.wait_within(Duration::from_secs(120));
    assert_eq!(ended.code, Some(1), "{}", ended.stderr);
    let result: &Value = ended.events.last().expect("a result document");
    let reason = result["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&dead.ssh_host()),
        "the report names the dead host: {reason}"
    );
    assert_eq!(result["outcome"], "rolled_back", "{result:#}");
    let serving = fleet.serving();
    assert_eq!(
        serving[..2],
        [Some("v5".to_string()), Some("v5".to_string())],
        "the reachable hosts went back"
    );
}
