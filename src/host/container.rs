//! The container spec of a release: how a new release's container is made from the configuration,
//! what the ledger keeps of it (no secret values), and how a recorded release is re-created as it ran.

use crate::config::Loaded;
use crate::engine::{ContainerSpec, HealthcheckSpec, RestartPolicy, labels};
use crate::names::{Color, Names};
use crate::proxy::protocol::{ReleaseSpec, SpecEnv};
use crate::util::now_unix;

/// The spec of a new release's container, from the current configuration.
pub fn release_spec(
    loaded: &Loaded,
    names: &Names,
    container: &str,
    image: &str,
    color: Color,
    version: &str,
    network: &str,
) -> ContainerSpec {
    let config = &loaded.config;
    let mut container_labels = names.labels("app");
    container_labels.extend([
        (labels::COLOR.to_string(), color.to_string()),
        (labels::VERSION.to_string(), version.to_string()),
        (labels::CREATED.to_string(), now_unix().to_string()),
        (
            labels::DEPLOY_ID.to_string(),
            format!("{}-{}", now_unix(), std::process::id()),
        ),
    ]);
    // Env file first, then app.env, then what deployctl itself tells the app.
    let mut env: Vec<(String, String)> = loaded
        .env_file_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(config.app.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.push(("DEPLOYCTL_VERSION".into(), version.into()));
    env.push(("DEPLOYCTL_COLOR".into(), color.to_string()));
    let h = &config.health;
    ContainerSpec {
        name: container.to_string(),
        image: image.to_string(),
        labels: container_labels,
        env,
        cmd: None,
        network: Some(network.to_string()),
        network_aliases: vec![],
        ports: vec![],
        restart_policy: RestartPolicy::UnlessStopped,
        healthcheck: h.docker_cmd.as_ref().map(|cmd| HealthcheckSpec {
            test: std::iter::once("CMD".to_string())
                .chain(cmd.iter().cloned())
                .collect(),
            interval: h.interval.get(),
            timeout: h.timeout.get(),
            retries: h.unhealthy_threshold,
        }),
        mounts: vec![],
        stop_timeout: Some(config.deploy.stop_timeout.get()),
    }
}

/// What the ledger keeps of a container spec: everything but secret values (a variable whose name
/// is secret, that comes from the env file, or whose value holds a secret keeps only its name).
pub fn spec_record(
    loaded: &Loaded,
    spec: &ContainerSpec,
    image_id: &str,
    container_id: String,
) -> ReleaseSpec {
    let secret = |name: &str, value: &str| {
        loaded.config.app.secret_env.iter().any(|s| s == name)
            || loaded.env_file_vars.contains_key(name)
            || loaded.redactor.redact(value) != value
    };
    ReleaseSpec {
        image_id: image_id.to_string(),
        env: spec
            .env
            .iter()
            .map(|(name, value)| SpecEnv {
                name: name.clone(),
                value: (!secret(name, value)).then(|| value.clone()),
            })
            .collect(),
        cmd: spec.cmd.clone(),
        ports: spec
            .ports
            .iter()
            .map(|p| format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port))
            .collect(),
        labels: spec.labels.clone(),
        container_id: Some(container_id),
    }
}

/// The container spec of a release re-created as it ran, from its ledger record: its image id,
/// environment, command and labels; secret values read again by name from the configuration;
/// only colour, version and creation labels are this run's.
pub fn restored_spec(
    loaded: &Loaded,
    names: &Names,
    restore: &ReleaseSpec,
    container: &str,
    color: Color,
    version: &str,
) -> Result<ContainerSpec, String> {
    let mut spec = release_spec(
        loaded,
        names,
        container,
        &restore.image_id,
        color,
        version,
        &names.network(),
    );
    let mut env = Vec::with_capacity(restore.env.len());
    for e in &restore.env {
        let value = match (&e.value, e.name.as_str()) {
            (_, "DEPLOYCTL_VERSION") => version.to_string(),
            (_, "DEPLOYCTL_COLOR") => color.to_string(),
            (Some(v), _) => v.clone(),
            (None, name) => loaded
                .env_file_vars
                .get(name)
                .or_else(|| loaded.config.app.env.get(name))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{version} ran with the secret {name}, which the configuration no longer sets\n  hint: set it again, or `deployctl rollback --with-current-config`"
                    )
                })?,
        };
        env.push((e.name.clone(), value));
    }
    spec.env = env;
    spec.cmd = restore.cmd.clone();
    let mut labels = restore.labels.clone();
    // This run's colour and creation; app, env and role stay ours whatever the record says.
    let this_run = [
        labels::APP,
        labels::ENV,
        labels::ROLE,
        labels::COLOR,
        labels::VERSION,
        labels::CREATED,
        labels::DEPLOY_ID,
    ];
    labels.extend(
        spec.labels
            .iter()
            .filter(|(k, _)| this_run.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    spec.labels = labels;
    Ok(spec)
}
