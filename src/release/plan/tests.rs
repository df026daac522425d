//! Unit tests of the planner.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::config::NotifyKind;
use crate::proxy::protocol::Target;
use crate::redact::Redactor;

fn loaded(extra: &str) -> Loaded {
    let text = format!("[app]\nname = \"web\"\n{extra}");
    let config: Config = toml::from_str(&text).expect("test config parses");
    Loaded {
        config,
        env: "prod".into(),
        root: PathBuf::from("."),
        files: vec![],
        redactor: Redactor::new(),
        env_file_vars: BTreeMap::from([("DB_PASSWORD".to_string(), "hunter22".to_string())]),
        warnings: vec![],
    }
}

fn request(version: &str) -> DeployRequest {
    DeployRequest {
        version: version.into(),
        image: None,
        image_id: None,
        skip_tests: false,
        proxy_image: "deployctl-proxy:test".into(),
    }
}

fn release(version: &str, outcome: Outcome, color: &str) -> ReleaseRecord {
    ReleaseRecord {
        id: version.into(),
        version: version.into(),
        image: format!("web:{version}"),
        color: color.parse().expect("a colour"),
        container: format!("web.prod-{color}"),
        git_sha: None,
        author: None,
        started_at: 0,
        finished_at: None,
        duration_ms: None,
        outcome,
        reason: None,
        tests_skipped: false,
        spec: None,
    }
}

fn live(version: &str, color: &str) -> Target {
    Target {
        addr: format!("web.prod-{color}:8080"),
        container: format!("web.prod-{color}"),
        version: version.into(),
        color: color.parse().expect("a colour"),
    }
}

fn container(version: &str, color: &str, running: bool) -> AppContainer {
    AppContainer {
        id: format!("id-{version}-{color}"),
        name: format!("web.prod-{color}"),
        color: color.parse().ok(),
        version: version.into(),
        running,
    }
}

/// The observed state after good releases `versions` (the last one live in `color`).
fn after_releases(versions: &[&str], live_color: &str) -> Observed {
    let last = versions.last().copied().unwrap_or_default();
    let mut releases: Vec<ReleaseRecord> = versions
        .iter()
        .map(|v| release(v, Outcome::Good, "blue"))
        .collect();
    if let Some(r) = releases.last_mut() {
        r.outcome = Outcome::Live;
    }
    Observed {
        proxy: Some(ProxyObserved {
            container: "deployctl-proxy-web.prod".into(),
            image: "deployctl-proxy:test".into(),
            running: true,
        }),
        live: Some(live(last, live_color)),
        containers: vec![container(last, live_color, true)],
        images: versions.iter().map(|v| v.to_string()).collect(),
        releases,
        ..Default::default()
    }
}

fn kinds(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            serde_json::to_value(s).expect("serializes")["step"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn first_deploy_goes_blue_and_creates_the_proxy() {
    let l = loaded(
        "[test]\ncommands = [\"cargo test\"]\n[hooks]\npre_build = [[\"make\", \"assets\"]]\n",
    );
    let plan = plan_deploy(&l, &request("v1"), &Observed::default());
    assert_eq!(plan.color, Color::Blue);
    assert_eq!(plan.container, "web.prod-blue");
    assert_eq!(plan.image, "web:v1");
    assert!(plan.previous.is_none());
    assert_eq!(plan.url, "http://localhost:8080");
    assert_eq!(plan.health_url, "http://web.prod-blue:8080/health");
    assert_eq!(
        kinds(&plan.steps),
        [
            "run_test",
            "run_hook",
            "build_image",
            "acquire_lock",
            "ensure_network",
            "ensure_proxy",
            "start_release",
            "wait_healthy",
            "switch",
            "verify",
            "record_release",
            "release_lock"
        ]
    );
    assert!(matches!(
        &plan.steps[5],
        Step::EnsureProxy {
            action: ProxyAction::Create,
            ..
        }
    ));
    assert_eq!(
        plan.steps[0],
        Step::RunTest {
            command: vec!["cargo".into(), "test".into()],
            shell: false,
            timeout: "10m".parse().expect("a duration")
        }
    );
    // The env file's variables reach the container by name only.
    let Step::StartRelease { env, .. } = &plan.steps[6] else {
        panic!("start step")
    };
    assert_eq!(env, &["DB_PASSWORD".to_string()]);
    assert!(
        !serde_json::to_string(&plan)
            .expect("json")
            .contains("hunter22")
    );
}

#[test]
fn next_deploy_goes_to_the_idle_colour_and_stops_the_old_one_after_verify() {
    let mut observed = after_releases(&["v1"], "blue");
    // A failed earlier attempt left a green container behind: it makes room.
    observed
        .containers
        .push(container("v0-failed", "green", false));
    let l = loaded("");
    let plan = plan_deploy(&l, &request("v2"), &observed);
    assert_eq!(plan.color, Color::Green);
    assert_eq!(
        plan.previous.as_ref().map(|p| p.version.as_str()),
        Some("v1")
    );
    let k = kinds(&plan.steps);
    let pos = |name: &str| k.iter().position(|s| s == name).unwrap_or(usize::MAX);
    assert!(pos("remove_container") < pos("start_release"));
    assert!(pos("switch") < pos("verify") && pos("verify") < pos("stop_container"));
    assert!(plan.steps.contains(&Step::Switch {
        from: Some("web.prod-blue".into()),
        to: "web.prod-green".into(),
        drain_timeout: "30s".parse().expect("a duration"),
        // The router's last check is the health step's, for the new release.
        health: Hidden(crate::host::health_spec(&l.config, "web.prod-green")),
    }));
    assert!(plan.steps.contains(&Step::StopContainer {
        container: "web.prod-blue".into(),
        version: "v1".into()
    }));
    assert!(matches!(
        &plan.steps[pos("ensure_proxy")],
        Step::EnsureProxy {
            action: ProxyAction::Keep,
            ..
        }
    ));
    // Automatic rollback switches back first.
    assert!(
        matches!(&plan.on_failure[0], Step::SwitchBack { to, .. } if to.container == "web.prod-blue")
    );
}

#[test]
fn no_automatic_rollback_means_no_switch_back_in_the_failure_plan() {
    let plan = plan_deploy(
        &loaded("[rollback]\nautomatic = false\n"),
        &request("v2"),
        &after_releases(&["v1"], "blue"),
    );
    assert!(
        !plan
            .on_failure
            .iter()
            .any(|s| matches!(s, Step::SwitchBack { .. } | Step::Switch { .. }))
    );
    assert!(matches!(plan.on_failure[0], Step::StopFailed { .. }));
}

#[test]
fn existing_image_and_skipped_tests_skip_build_and_tests() {
    let l = loaded("[test]\ncommands = [[\"npm\", \"test\"]]\n[hooks]\npre_build = [\"make\"]\n");
    let mut req = request("v9");
    req.image = Some("registry.local/web:v9".into());
    req.skip_tests = true;
    let plan = plan_deploy(&l, &req, &Observed::default());
    let k = kinds(&plan.steps);
    assert_eq!(k[0], "use_image");
    assert!(
        !k.iter()
            .any(|s| s == "build_image" || s == "run_test" || s == "run_hook")
    );
    assert_eq!(plan.image, "registry.local/web:v9");
    assert!(plan.tests_skipped);
}

#[test]
fn unknown_live_state_is_said_and_notifications_hide_their_url() {
    let l = loaded(
        "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.example/T0KEN\"\non = [\"success\"]\n",
    );
    let plan = plan_deploy(&l, &request("v1"), &Observed::unknown("connection refused"));
    assert_eq!(
        plan.live_state,
        LiveState::Unknown("connection refused".into())
    );
    assert!(plan.steps.iter().any(|s| matches!(
        s,
        Step::Notify {
            kinds,
            event: NotifyEvent::Success,
            ..
        } if kinds == &[NotifyKind::Slack]
    )));
    assert!(
        !serde_json::to_string(&plan)
            .expect("json")
            .contains("T0KEN")
    );
    // Only `success` was asked for.
    assert!(
        !plan
            .on_failure
            .iter()
            .any(|s| matches!(s, Step::Notify { .. }))
    );
}

#[test]
fn pruning_keeps_the_newest_good_releases_and_never_the_live_or_last_good() {
    let l = loaded("[deploy]\nkeep_releases = 2\n");
    let observed = after_releases(&["r1", "r2", "r3", "r4", "r5"], "blue");
    let pruned = prune_images(&names(&l), l.config.deploy.keep_releases, &observed, "r6");
    assert_eq!(pruned, ["web:r1", "web:r2", "web:r3", "web:r4"]);
    let plan = plan_deploy(&l, &request("r6"), &observed);
    assert!(plan.steps.contains(&Step::Prune { images: pruned }));

    // keep_releases = 1 still keeps the live release and the last good one.
    let l = loaded("[deploy]\nkeep_releases = 1\n");
    let mut observed = after_releases(&["g1"], "blue");
    observed
        .releases
        .push(release("f2", Outcome::Failed, "green"));
    observed.images.insert("f2".into());
    let pruned = prune_images(&names(&l), l.config.deploy.keep_releases, &observed, "n3");
    assert_eq!(pruned, ["web:f2"]);
}

#[test]
fn rollback_picks_the_last_good_release_and_reuses_its_stopped_container() {
    let mut observed = after_releases(&["v1", "v2"], "green");
    observed.containers.push(container("v1", "blue", false));
    observed.releases[0].spec = Some(Box::new(ReleaseSpec {
        image_id: "sha256:v1".into(),
        env: vec![],
        cmd: None,
        ports: vec![],
        labels: BTreeMap::new(),
        container_id: Some("id-v1-blue".into()),
    }));
    let plan =
        plan_rollback(&loaded(""), None, &observed, "deployctl-proxy:test", false).expect("a plan");
    assert_eq!(plan.image_id.as_deref(), Some("sha256:v1"));
    assert_eq!(plan.version, "v1");
    assert_eq!(plan.color, Color::Blue);
    let k = kinds(&plan.steps);
    assert!(
        !k.iter()
            .any(|s| s == "build_image" || s == "remove_container"),
        "{k:?}"
    );
    assert!(
        plan.steps.iter().any(
            |s| matches!(s, Step::StartRelease { reuse: true, version, .. } if version == "v1")
        )
    );
    assert!(plan.steps.contains(&Step::StopContainer {
        container: "web.prod-green".into(),
        version: "v2".into()
    }));
}

#[test]
fn rollback_to_a_version_recreates_it_when_its_container_is_gone() {
    let observed = after_releases(&["v1", "v2", "v3"], "blue");
    let plan = plan_rollback(&loaded(""), Some("v1"), &observed, "p", false).expect("a plan");
    assert_eq!(plan.version, "v1");
    assert!(
        plan.steps.iter().any(
            |s| matches!(s, Step::StartRelease { reuse: false, image, .. } if image == "web:v1")
        )
    );
}

#[test]
fn rollback_refuses_what_cannot_work() {
    let observed = after_releases(&["v1"], "blue");
    assert!(
        plan_rollback(&loaded(""), None, &observed, "p", false)
            .unwrap_err()
            .contains("no earlier good release")
    );
    assert!(
        plan_rollback(&loaded(""), Some("v1"), &observed, "p", false)
            .unwrap_err()
            .contains("already live")
    );
    assert!(
        plan_rollback(&loaded(""), Some("v7"), &observed, "p", false)
            .unwrap_err()
            .contains("no release v7")
    );
    let mut observed = after_releases(&["v1", "v2"], "green");
    observed.images.remove("v1");
    assert!(
        plan_rollback(&loaded(""), None, &observed, "p", false)
            .unwrap_err()
            .contains("image of v1 is gone")
    );
    // Failed releases are never a rollback target.
    let mut observed = after_releases(&["v1", "v2"], "green");
    observed
        .releases
        .insert(1, release("v1b", Outcome::Failed, "blue"));
    assert_eq!(
        rollback_target(&observed, None).map(|r| r.version.as_str()),
        Ok("v1")
    );
}

#[test]
fn listen_addresses_and_urls() {
    let l = loaded("[proxy]\nlisten = \"127.0.0.1:9000\"\n[health]\npath = \"/up\"\nport = 9100\n");
    assert_eq!(public_url(&l.config), "http://127.0.0.1:9000");
    assert_eq!(health_url(&l.config, "c"), "http://c:9100/up");
}

#[test]
fn typed_values_print_as_the_words_they_replaced() {
    let step = Step::Switch {
        from: Some("a".into()),
        to: "b".into(),
        drain_timeout: "30s".parse().expect("a duration"),
        health: Hidden(crate::host::health_spec(&loaded("").config, "b")),
    };
    let json = serde_json::to_value(&step).expect("a step serializes");
    assert_eq!(json["drain_timeout"], "30s");
    let live = serde_json::to_value(LiveState::Unknown("no Docker".into())).expect("serializes");
    assert_eq!(live, "unknown (no Docker)");
    assert_eq!(LiveState::Known.to_string(), "known");
    let record = Step::RecordRelease {
        version: "v1".into(),
        outcome: Outcome::RolledBack,
    };
    assert_eq!(
        serde_json::to_value(&record).expect("serializes")["outcome"],
        "rolled_back"
    );
    assert_eq!(
        serde_json::to_value(Hook::PreDeploy).expect("serializes"),
        Hook::PreDeploy.as_str()
    );
}

#[test]
fn every_target_of_an_event_is_one_notify_step_sent_at_once() {
    let l = loaded(
        "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.example/a\"\non = [\"success\", \"failure\"]\n\
         [[notify]]\nkind = \"webhook\"\nurl = \"https://hooks.example/b\"\non = [\"failure\"]\n\
         [[notify]]\nkind = \"discord\"\nurl = \"https://hooks.example/c\"\non = [\"failure\"]\n",
    );
    let plan = plan_deploy(&l, &request("v1"), &Observed::default());
    let kinds = |steps: &[Step]| -> Vec<Vec<NotifyKind>> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Notify { kinds, targets, .. } => {
                    assert_eq!(targets.0.len(), kinds.len());
                    Some(kinds.clone())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(kinds(&plan.steps), [vec![NotifyKind::Slack]]);
    assert_eq!(
        kinds(&plan.on_failure),
        [vec![
            NotifyKind::Slack,
            NotifyKind::Webhook,
            NotifyKind::Discord
        ]]
    );
}

fn names(l: &Loaded) -> crate::names::Names {
    crate::names::Names::new(&l.config.app.name, &l.env)
}
