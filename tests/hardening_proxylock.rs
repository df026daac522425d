//! Issue 8, items 9, 11 and 12: the proxy's connection limits (idle keep-alive timeout, header
//! read timeout, a bound on open connections), `remove` honouring the deploy lock, and lock
//! contention messages that name the holder (and a dead holder with the exact way out).

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{App, Run, wait_until};

// ---------------------------------------------------------------- item 11: remove and the lock

#[test]
fn item11_remove_refuses_while_the_lock_is_held_and_force_removes() {
    let app = App::new("dctrmlk");
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert!(app.serving().is_some(), "the first release serves");
    let status = app.status_json();
    let proxy = status["proxy"]["container"]
        .as_str()
        .unwrap_or_else(|| panic!("status names the proxy: {status}"))
        .to_string();

    let held = app.run(&["lock", "acquire", "--reason", "incident 4711"], &[]);
    assert_eq!(held.code, 0, "{held}");
    assert!(app.lock_exists());

    let refused = app.run(&["remove", "--yes"], &[]);
    assert_eq!(
        refused.code, 3,
        "remove must refuse while the lock is held: {refused}"
    );
    assert!(
        refused.stderr.contains("incident 4711"),
        "the refusal names the holder: {refused}"
    );
    assert!(
        refused.stderr.contains("--force"),
        "the refusal says how to remove anyway: {refused}"
    );
    // Nothing was removed: the lock, the proxy and the live release are all still there.
    assert!(app.lock_exists(), "the lock is kept");
    assert!(app.serving().is_some(), "the app still serves");
    assert_eq!(app.container_running(&proxy), Some(true), "proxy kept");

    let forced = app.run(&["remove", "--yes", "--force"], &[]);
    assert_eq!(forced.code, 0, "{forced}");
    assert!(!app.lock_exists(), "--force removes the lock too");
    assert!(app.serving().is_none(), "the environment is gone");
}

// ---------------------------------------------------------------- item 12: lock messages

/// Two `lock acquire` at once, several rounds: exactly one wins, and the loser's message names
/// the winner by its reason (not "taken by someone else").
#[test]
fn item12_lock_race_loser_names_the_holder() {
    let app = App::new("dctlkrace");
    // Builds the proxy image the lock container is created from, outside the race.
    let warm = app.run(&["lock", "acquire", "--reason", "warm-up"], &[]);
    assert_eq!(warm.code, 0, "{warm}");
    let released = app.run(&["lock", "release"], &[]);
    assert_eq!(released.code, 0, "{released}");

    for round in 0..4 {
        let reasons = [format!("racer-a-{round}"), format!("racer-b-{round}")];
        let children: Vec<_> = reasons
            .iter()
            .map(|reason| {
                app.command(&["lock", "acquire", "--reason", reason], &[])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn deployctl lock acquire")
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| Run::from(c.wait_with_output().expect("wait for lock acquire")))
            .collect();
        let winners: Vec<usize> = (0..2).filter(|&i| runs[i].code == 0).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one wins:\n{}\n{}",
            runs[0],
            runs[1]
        );
        let (winner, loser) = (winners[0], 1 - winners[0]);
        assert_eq!(runs[loser].code, 3, "round {round}: {}", runs[loser]);
        assert!(
            runs[loser].stderr.contains(&reasons[winner]),
            "round {round}: the loser names the holder ({}): {}",
            reasons[winner],
            runs[loser]
        );
        assert!(
            !runs[loser].stderr.contains("someone else"),
            "round {round}: {}",
            runs[loser]
        );
        let released = app.run(&["lock", "release"], &[]);
        assert_eq!(released.code, 0, "{released}");
        assert!(!app.lock_exists());
    }
}

/// A deploy killed with SIGKILL while it holds the lock leaves a lock whose pid is dead on this
/// host: the next deploy says so and prints the exact command that breaks it, which works.
#[test]
fn item12_deploy_reports_a_dead_holder_with_the_exact_release_command() {
    let app = App::new("dctlkdead");
    let mut killed = app.spawn_watched(&["deploy"], &[], "✓ lock");
    killed.wait_trigger(Duration::from_secs(180));
    let ended = killed.kill9();
    assert!(ended.code.is_none(), "killed by SIGKILL: {}", ended.stderr);
    assert!(app.lock_exists(), "the killed deploy left its lock");

    let blocked = app.run(&["deploy"], &[]);
    assert_eq!(blocked.code, 3, "{blocked}");
    assert!(
        blocked.stderr.contains("stale") && blocked.stderr.contains("no longer runs on this host"),
        "the dead holder is recognised: {blocked}"
    );
    let command = blocked
        .stderr
        .split('`')
        .find(|s| s.starts_with("deployctl lock release --force"))
        .unwrap_or_else(|| panic!("no `deployctl lock release --force …` command: {blocked}"))
        .to_string();
    // The exact command, run as printed (from another directory), breaks the lock.
    let words = shell_words::split(&command).expect("a shell command");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let broken = std::process::Command::new(support::deployctl_bin())
        .args(&words[1..])
        .current_dir(other_dir.path())
        .env_remove("DEPLOYCTL_ENV")
        .env_remove("DEPLOYCTL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run the printed command");
    let broken = Run::from(broken);
    assert_eq!(broken.code, 0, "`{command}`: {broken}");
    assert!(
        wait_until(Duration::from_secs(5), || !app.lock_exists()),
        "`{command}` removed the lock"
    );
}
