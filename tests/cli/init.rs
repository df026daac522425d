//! `init` writes a loadable starter and never overwrites; shell completions.

use super::*;

#[test]
fn init_writes_a_loadable_starter_and_never_overwrites() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let run = deployctl(tmp.path(), &["init", "myapp"]);
    run.assert_code(0);
    let files = [
        "deploy.toml",
        "environments/staging.toml",
        "environments/production.toml",
    ];
    for f in files {
        assert!(
            tmp.path().join("myapp").join(f).is_file(),
            "{f} not written:\n{}",
            run.transcript()
        );
    }
    snapshot("init", &run, Some(tmp.path()));

    // What init wrote loads, for both environments, with the directory's name as the app name.
    for env in ["staging", "production"] {
        let run = deployctl(
            tmp.path(),
            &[
                "config",
                "--env",
                env,
                "--config",
                "myapp/deploy.toml",
                "--output",
                "json",
            ],
        );
        run.assert_code(0);
        assert_eq!(
            run.json()["config"]["app"]["name"],
            "myapp",
            "{}",
            run.stdout
        );
    }
    // The same through an absolute --config from elsewhere.
    let abs = tmp.path().join("myapp/deploy.toml");
    deployctl(
        Path::new(REPO),
        &[
            "config",
            "--env",
            "staging",
            "--config",
            &abs.display().to_string(),
        ],
    )
    .assert_code(0);

    // A second init refuses and leaves the user's edits alone.
    let deploy_toml = tmp.path().join("myapp/deploy.toml");
    let edited = format!(
        "{}\n# edited by the user\n",
        std::fs::read_to_string(&deploy_toml).expect("read")
    );
    std::fs::write(&deploy_toml, &edited).expect("edit deploy.toml");
    let again = deployctl(tmp.path(), &["init", "myapp"]);
    again.assert_code(2);
    assert!(
        again.stderr.contains("init never overwrites"),
        "{}",
        again.transcript()
    );
    assert_eq!(std::fs::read_to_string(&deploy_toml).expect("read"), edited);
    snapshot("init_again", &again, Some(tmp.path()));

    // One existing file is enough to write none.
    let partial = tmp.path().join("partial");
    std::fs::create_dir_all(partial.join("environments")).expect("mkdir");
    std::fs::write(partial.join("environments/production.toml"), "").expect("write");
    let run = deployctl(tmp.path(), &["init", "partial"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("partial/environments/production.toml already exists"),
        "{}",
        run.stderr
    );
    assert!(
        !partial.join("deploy.toml").exists(),
        "init wrote deploy.toml anyway"
    );
}

// ---------------------------------------------------------------- completions

#[test]
fn completions_bash() {
    let run = deployctl(Path::new(REPO), &["completions", "bash"]);
    run.assert_code(0);
    assert!(run.stderr.is_empty(), "{}", run.transcript());
    assert!(run.stdout.contains("_deployctl()"), "{}", run.stdout);
    assert!(
        run.stdout.contains("complete -F _deployctl"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--dry-run"), "subcommand flags missing");

    let bad = deployctl(Path::new(REPO), &["completions", "tcsh"]);
    bad.assert_code(2);
    assert!(
        bad.stderr.contains("invalid value 'tcsh'"),
        "{}",
        bad.transcript()
    );
}
