//! The SSH step: the key into an ssh-agent and nowhere else, the agent reused within a job, the
//! error without a key, known_hosts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Agent, Scratch, action, files_containing, fingerprint, keygen, script};

#[test]
fn action_ssh_key_is_loaded_into_an_agent_and_nowhere_else() {
    let b = Scratch::new();
    let keys = tempfile::tempdir().unwrap();
    let comment = "canary-comment-7f3a";
    let (private, public) = keygen(keys.path(), comment, "");
    let fp = fingerprint(&public);
    // A line of the key's body: base64 that no other text contains.
    let body = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .max_by_key(|l| l.len())
        .unwrap()
        .to_string();
    let ssh = script(&action(), "ssh");
    let host = "ssh://deploy@deployctl-action-test.invalid";
    // CRLF line ends and a missing final newline, as a secret pasted from elsewhere may have.
    let pasted = private.trim_end().replace('\n', "\r\n");
    let env = [
        ("INPUT_SSH_KEY", pasted.as_str()),
        ("INPUT_KNOWN_HOSTS", ""),
        ("INPUT_DOCKER_HOST", host),
    ];
    let ran = b.run(&ssh, &env);
    let agent = Agent::started_by(&ran);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let agent = agent.expect("SSH_AUTH_SOCK and SSH_AGENT_PID in GITHUB_ENV");
    assert!(agent.keys().contains(&fp), "agent keys: {}", agent.keys());
    assert_eq!(agent.keys().lines().count(), 1);
    // Nothing of the key in the log: no body, fingerprint or comment; and no file of it.
    let log = ran.log();
    for (what, text) in [
        ("body", body.as_str()),
        ("fingerprint", &fp),
        ("comment", comment),
    ] {
        assert!(!log.contains(text), "the log shows the key's {what}: {log}");
        for dir in ["home", "tmp", "runner"] {
            let found = files_containing(&b.path(dir), text.as_bytes());
            assert!(found.is_empty(), "the key's {what} is in {found:?}");
        }
    }
    let environ = fs::read(format!("/proc/{}/environ", agent.pid)).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains(&body) && !environ.contains("INPUT_SSH_KEY"));
    // The host's key is in no known_hosts file that ssh reads: a warning says what to set.
    assert!(
        log.contains("::warning::no host key for deployctl-action-test.invalid"),
        "{log}"
    );
    assert!(!log.contains("::error::"), "{log}");

    // The next run in the job (GITHUB_ENV carried SSH_AUTH_SOCK) keeps that agent, with or
    // without the key again.
    let sock = ("SSH_AUTH_SOCK", agent.sock.as_str());
    let pid = ("SSH_AGENT_PID", agent.pid.as_str());
    let again = b.run(&ssh, &[env[0], env[1], env[2], sock, pid]);
    let _second = Agent::started_by(&again);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(again.github_env, "", "a second agent was started");
    assert!(
        again.stdout.contains("ssh-agent of this job reused"),
        "{again:?}"
    );
    assert_eq!(agent.keys().lines().count(), 1, "{}", agent.keys());
    let no_key = b.run(&ssh, &[("INPUT_SSH_KEY", ""), env[1], env[2], sock, pid]);
    let _third = Agent::started_by(&no_key);
    assert_eq!(no_key.code, Some(0), "an agent key is enough: {no_key:?}");
}

#[test]
fn action_ssh_docker_host_without_a_key_fails_with_an_error() {
    let b = Scratch::new();
    let ssh = script(&action(), "ssh");
    let input = |host| {
        [
            ("INPUT_SSH_KEY", ""),
            ("INPUT_KNOWN_HOSTS", ""),
            ("INPUT_DOCKER_HOST", host),
        ]
    };
    let ran = b.run(&ssh, &input("ssh://deploy@example.invalid"));
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stdout
            .contains("::error::docker-host is an ssh:// URL but no SSH key")
    );
    assert!(ran.stdout.contains("set the ssh-key input"), "{ran:?}");
    // An agent without keys is no better.
    let empty = Agent::start(&b);
    let mut env = input("ssh://deploy@example.invalid").to_vec();
    env.push(("SSH_AUTH_SOCK", &empty.sock));
    assert_eq!(b.run(&ssh, &env).code, Some(2));
    // An identity file that ssh would use is.
    fs::create_dir(b.path("home/.ssh")).unwrap();
    fs::write(b.path("home/.ssh/id_ed25519"), "a key file").unwrap();
    assert_eq!(b.run(&ssh, &env).code, Some(0));
    fs::remove_dir_all(b.path("home/.ssh")).unwrap();
    // Other engines need no key.
    for host in [
        "",
        "tcp://example.invalid:2376",
        "unix:///var/run/docker.sock",
    ] {
        let ran = b.run(&ssh, &input(host));
        assert_eq!(ran.code, Some(0), "{host}: {ran:?}");
        assert_eq!(ran.log(), "", "{host}");
        assert_eq!(ran.github_env, "", "{host}: no agent without a key");
    }
}

#[test]
fn action_encrypted_or_garbled_ssh_key_is_refused_without_a_prompt() {
    let b = Scratch::new();
    let keys = tempfile::tempdir().unwrap();
    let (encrypted, _) = keygen(keys.path(), "enc", "a passphrase");
    let ssh = script(&action(), "ssh");
    for key in [
        encrypted.as_str(),
        "not a key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n",
    ] {
        let ran = b.run(
            &ssh,
            &[
                ("INPUT_SSH_KEY", key),
                ("INPUT_KNOWN_HOSTS", ""),
                ("INPUT_DOCKER_HOST", "ssh://deploy@example.invalid"),
            ],
        );
        // The agent it started goes away with the test.
        let _agent = Agent::started_by(&ran);
        assert_eq!(ran.code, Some(2), "{ran:?}");
        assert!(
            ran.stdout
                .contains("::error::ssh-add refused the ssh-key input"),
            "{ran:?}"
        );
        assert!(!ran.log().contains(key.lines().nth(1).unwrap_or(key)));
    }
}

#[test]
fn action_known_hosts_are_appended_once_with_private_modes() {
    let b = Scratch::new();
    let dot_ssh = b.path("home/.ssh");
    fs::create_dir(&dot_ssh).unwrap();
    fs::set_permissions(&dot_ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let known = dot_ssh.join("known_hosts");
    // An existing file whose last line has no newline, readable by all.
    fs::write(&known, "old.example ssh-ed25519 AAAAold").unwrap();
    fs::set_permissions(&known, fs::Permissions::from_mode(0o644)).unwrap();
    let lines = "# from ssh-keyscan\r\nnew.example ssh-ed25519 AAAAnew\r\n\r\n  old.example ssh-ed25519 AAAAold  \r\n[new.example]:2222 ssh-ed25519 AAAAport";
    let env = [
        ("INPUT_SSH_KEY", ""),
        ("INPUT_KNOWN_HOSTS", lines),
        ("INPUT_DOCKER_HOST", ""),
    ];
    let ssh = script(&action(), "ssh");
    let want = "old.example ssh-ed25519 AAAAold\nnew.example ssh-ed25519 AAAAnew\n\
                [new.example]:2222 ssh-ed25519 AAAAport\n";
    let ran = b.run(&ssh, &env);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("2 line(s) added"), "{ran:?}");
    assert_eq!(fs::read_to_string(&known).unwrap(), want);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dot_ssh), mode(&known)), (0o700, 0o600));
    let ran = b.run(&ssh, &env);
    assert!(ran.stdout.contains("0 line(s) added"), "{ran:?}");
    assert_eq!(
        fs::read_to_string(&known).unwrap(),
        want,
        "lines added twice"
    );
    // From nothing: the directory and the file are made private.
    fs::remove_dir_all(&dot_ssh).unwrap();
    assert_eq!(b.run(&ssh, &env).code, Some(0));
    let fresh = "new.example ssh-ed25519 AAAAnew\nold.example ssh-ed25519 AAAAold\n\
                 [new.example]:2222 ssh-ed25519 AAAAport\n";
    assert_eq!(fs::read_to_string(&known).unwrap(), fresh);
    assert_eq!((mode(&dot_ssh), mode(&known)), (0o700, 0o600));
}
