//! Planning a rollback: which release it goes to, and the steps that bring it back (as it ran,
//! from its recorded spec, or from the current configuration).

use super::*;

/// Which release a rollback goes to.
pub fn rollback_target<'a>(
    observed: &'a Observed,
    to: Option<&str>,
) -> Result<&'a ReleaseRecord, String> {
    let live_version = observed.live.as_ref().map(|t| t.version.as_str());
    let named = |r: &&ReleaseRecord| to.is_some_and(|v| r.version == v || r.version.starts_with(v));
    // The newest record of that version that served (good or live, else rolled back): a failed
    // attempt's record does not say how it ran.
    let served = [
        &[Outcome::Good, Outcome::Live][..],
        &[Outcome::RolledBack],
        &[Outcome::Failed, Outcome::InProgress],
    ];
    match to {
        Some(v) => served
            .iter()
            .find_map(|outcomes| {
                observed
                    .releases
                    .iter()
                    .rev()
                    .find(|r| named(r) && outcomes.contains(&r.outcome))
            })
            .ok_or_else(|| {
                format!("no release {v} in the ledger; `deployctl releases` lists them")
            }),
        None => observed.last_good(live_version).ok_or_else(|| {
            "no earlier good release to roll back to; `deployctl releases` lists them".to_string()
        }),
    }
}

/// A rollback re-creates the release from the spec recorded in the ledger (as it ran), unless
/// `current_config`; only the very container that ran it is reused, and only without `current_config`.
pub fn plan_rollback(
    loaded: &Loaded,
    to: Option<&str>,
    observed: &Observed,
    built_proxy_image: &str,
    current_config: bool,
) -> Result<Plan, String> {
    let config = &loaded.config;
    let names = Names::new(&config.app.name, &loaded.env);
    let target = rollback_target(observed, to)?;
    if observed
        .live
        .as_ref()
        .is_some_and(|l| l.version == target.version)
    {
        return Err(format!("{} is already live", target.version));
    }
    if !observed.images.contains(&target.version)
        && !observed
            .containers
            .iter()
            .any(|c| c.version == target.version)
    {
        return Err(format!(
            "the image of {} is gone (pruned?); deploy that version again instead",
            target.version
        ));
    }
    let color = Color::next(observed.live.as_ref().map(|t| t.color));
    let container = names.container(color);
    let image = names.image(&target.version);
    let mut steps = vec![Step::AcquireLock {
        lock: names.lock(),
        wait: crate::config::Duration::from_secs(0),
        stale_after: config.deploy.lock_stale_after,
    }];
    // The release's own container, if it is in the idle colour, is reused: no new create. Only the
    // very container the ledger recorded: a leftover of a failed attempt may differ from it.
    let restore = target.spec.as_deref().cloned().filter(|_| !current_config);
    let reusable = observed.container(&container).is_some_and(|c| {
        c.version == target.version
            && restore
                .as_ref()
                .is_some_and(|s| s.container_id.as_deref() == Some(c.id.as_str()))
    });
    if reusable {
        let mut swap = swap_steps(
            loaded,
            observed,
            &names,
            &image,
            &target.version,
            color,
            built_proxy_image,
        );
        swap.retain(|s| !matches!(s, Step::RemoveContainer { .. }));
        for s in &mut swap {
            if let Step::StartRelease { env, reuse, .. } = s {
                // Reused as created: its environment is the one it had.
                env.clear();
                *reuse = true;
            }
        }
        steps.extend(swap);
    } else {
        steps.extend(swap_steps(
            loaded,
            observed,
            &names,
            &image,
            &target.version,
            color,
            built_proxy_image,
        ));
    }
    steps.extend(go_live_steps(observed, &target.version));
    steps.push(Step::ReleaseLock { lock: names.lock() });
    steps.extend(hook_steps(
        config,
        Hook::OnRollback,
        &config.hooks.on_rollback,
    ));
    steps.extend(notify_steps(config, NotifyEvent::Rollback));
    let mut on_failure = vec![
        Step::StopFailed {
            container: container.clone(),
            version: target.version.clone(),
        },
        Step::RecordFailure {
            version: target.version.clone(),
            rolled_back_to: None,
        },
        Step::ReleaseLock { lock: names.lock() },
    ];
    on_failure.extend(hook_steps(
        config,
        Hook::OnFailure,
        &config.hooks.on_failure,
    ));
    on_failure.extend(notify_steps(config, NotifyEvent::Failure));
    Ok(Plan {
        kind: RunKind::Rollback,
        app: config.app.name.clone(),
        env: loaded.env.clone(),
        version: target.version.clone(),
        image,
        color,
        health_url: health_url(config, &container),
        container,
        previous: live_ref(observed),
        url: public_url(config),
        live_state: live_state(observed),
        steps,
        on_failure,
        tests_skipped: false,
        image_id: target
            .spec
            .as_ref()
            .map(|s| s.image_id.clone())
            .or_else(|| observed.image_ids.get(&target.version).cloned()),
        restore,
        hosts: super::fleet_hosts(config),
    })
}
