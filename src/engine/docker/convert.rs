//! Conversions between our types and the Docker API's: the container create body, inspect
//! results, label filters, durations, created timestamps, and splitting streamed output into lines.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig, HostConfig,
    Mount, MountType, NetworkingConfig, PortBinding, RestartPolicy as BollardRestartPolicy,
    RestartPolicyNameEnum,
};

use crate::engine::{ContainerInfo, ContainerSpec, ContainerState, RestartPolicy};

/// Splits a byte stream into lines; a line may arrive across several chunks.
#[derive(Default)]
pub(super) struct LineSplitter {
    pub(super) pending: Vec<u8>,
}

impl LineSplitter {
    pub(super) fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            emit(text.strip_suffix('\r').unwrap_or(&text));
        }
    }

    pub(super) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            let text = String::from_utf8_lossy(&line);
            emit(text.strip_suffix('\r').unwrap_or(&text));
        }
    }
}

pub(super) fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    filters
}

pub(super) fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Whole seconds, rounded up so a sub-second grace period is not turned into none.
pub(super) fn secs_ceil(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &spec.ports {
        let key = format!("{}/tcp", p.container_port);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }

    let restart = match spec.restart_policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
    };

    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            typ: Some(MountType::VOLUME),
            source: Some(m.volume.clone()),
            target: Some(m.target.clone()),
            ..Default::default()
        })
        .collect();

    let healthcheck = spec.healthcheck.as_ref().map(|h| {
        // Accept the argv with or without Docker's leading form word.
        let test = match h.test.first().map(String::as_str) {
            Some("CMD" | "CMD-SHELL" | "NONE") => h.test.clone(),
            _ => std::iter::once("CMD".to_string())
                .chain(h.test.iter().cloned())
                .collect(),
        };
        HealthConfig {
            test: Some(test),
            interval: Some(nanos(h.interval)),
            timeout: Some(nanos(h.timeout)),
            retries: Some(i64::from(h.retries)),
            ..Default::default()
        }
    });

    let networking_config = spec.network.as_ref().map(|net| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            net.clone(),
            EndpointSettings {
                aliases: (!spec.network_aliases.is_empty()).then(|| spec.network_aliases.clone()),
                ..Default::default()
            },
        )])),
    });

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        labels: Some(to_hash(&spec.labels)),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: spec.cmd.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_timeout: spec.stop_timeout.map(|d| i64::from(secs_ceil(d))),
        host_config: Some(HostConfig {
            // Attach to the named network only, not also to the default bridge.
            network_mode: spec.network.clone(),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: Some(BollardRestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
}

pub(super) fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let started_at = state
        .started_at
        .filter(|s| !s.is_empty() && !s.starts_with("0001-01-01"));
    let networks = r
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
        .collect();
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.or(r.image).unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: ContainerState {
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            restart_count: r.restart_count.unwrap_or(0),
            started_at,
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
        },
        networks,
        created: r.created.unwrap_or_default(),
    }
}

/// RFC 3339 timestamps with a fraction of any length, made comparable as strings.
pub(super) fn created_key(created: &str) -> String {
    match created.split_once('.') {
        Some((secs, rest)) => {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("{secs}.{digits:0<9}")
        }
        None => created.trim_end_matches('Z').to_string(),
    }
}
