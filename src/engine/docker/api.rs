//! `impl Engine for DockerEngine`: every trait method as one or a few Docker API calls.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptions,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::engine::{
    BuildRequest, ContainerInfo, ContainerSpec, Engine, EngineError, EngineInfo, EngineResult,
    ExecOutput, ImageInfo, ImageTar, LineSink, RegistryAuth,
};

use super::*;

#[async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> EngineResult<EngineInfo> {
        let v = with_deadline(&self.host, self.docker.version())
            .await?
            .map_err(|e| self.err(e))?;
        Ok(EngineInfo {
            host: self.host.clone(),
            server_version: v.version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
        })
    }

    async fn image_exists(&self, reference: &str) -> EngineResult<bool> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    fn export_image(&self, reference: &str) -> ImageTar {
        self.export(reference)
    }

    async fn import_image(&self, tar: ImageTar) -> EngineResult<()> {
        self.import(tar).await
    }

    async fn build_image(&self, req: &BuildRequest, log: LineSink<'_>) -> EngineResult<String> {
        let (dir, dockerfile) = (req.context_dir.clone(), req.dockerfile.clone());
        // The classic builder runs one step per API label; appended to the final stage as one
        // LABEL line they cost one step. A `target` stage may not be the last one: API labels then.
        let label_line = (req.target.is_none() && !req.labels.is_empty())
            .then(|| label_instruction(&req.labels));
        let api_labels = if label_line.is_some() {
            BTreeMap::new()
        } else {
            req.labels.clone()
        };
        let ctx = tokio::task::spawn_blocking(move || {
            context::build_context(&dir, &dockerfile, label_line.as_deref())
        })
        .await
        .map_err(|e| EngineError::Build(format!("preparing the build context: {e}")))?
        .map_err(EngineError::Build)?;
        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&ctx.dockerfile)
            .t(&req.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&to_hash(&req.args))
            .labels(&to_hash(&api_labels));
        if let Some(target) = &req.target {
            options = options.target(target);
        }
        let options = options.build();
        let mut built = self.run_build(ctx.tar.clone(), options.clone(), log).await;
        if let Err(EngineError::Build(msg)) = &built
            && is_vanished_layer(msg)
        {
            // Another build's clean-up removed a cached layer this build was using (the classic
            // builder holds no reference to it): the second try builds that step afresh.
            log(&format!(
                "a cached layer disappeared during the build ({msg}); building again"
            ));
            built = self.run_build(ctx.tar, options, log).await;
        }
        match built? {
            Some(id) => Ok(id),
            // A daemon that does not say: the tag, read right away, is the best left.
            None => self
                .image_id(&req.tag)
                .await?
                .ok_or_else(|| EngineError::Build(format!("{} was not built", req.tag))),
        }
    }

    async fn build_image_from_tar(
        &self,
        context_tar: Vec<u8>,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&to_hash(labels))
            .build();
        self.run_build(context_tar, options, &|_| {})
            .await
            .map(|_| ())
    }

    async fn push_image(
        &self,
        source: &str,
        target: &str,
        auth: Option<&RegistryAuth>,
        log: LineSink<'_>,
    ) -> EngineResult<()> {
        // `registry:5000/team/web:tag`: the tag is after the last `:` that follows the last `/`.
        let (repo, tag) = match target.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (target, "latest"),
        };
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| self.err(e))?;
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            ..Default::default()
        });
        let docker = self.docker.clone().with_timeout(BUILD_TIMEOUT);
        let options = PushImageOptionsBuilder::new().tag(tag).build();
        let mut stream = docker.push_image(repo, Some(options), credentials);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match self.err(e) {
                EngineError::Api(m) => EngineError::Push(m),
                other => other,
            })?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Push(detail.message.unwrap_or_default()));
            }
            if let Some(status) = info.status.as_deref() {
                emit_nonblank(log, status);
            }
        }
        Ok(())
    }

    async fn list_images(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ImageInfo>> {
        let options = ListImagesOptionsBuilder::new()
            .all(false)
            .filters(&label_filters(labels))
            .build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| self.err(e))?;
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                labels: i.labels.into_iter().collect(),
                created: i.created,
            })
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        // Looked up by exact name in the list: inspecting by name would also match an id prefix,
        // and fails when a name is ambiguous.
        if !self.networks_named(name).await?.is_empty() {
            return Ok(());
        }
        let created = match self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                labels: Some(to_hash(labels)),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            // Someone else created it between our look and our create.
            Err(e) => {
                return match self.err(e) {
                    EngineError::Conflict(_) => Ok(()),
                    other => Err(other),
                };
            }
        };
        // Daemons before API 1.44 create a second network of the same name when asked (the
        // CheckDuplicate flag is gone from current clients). Two racing creators keep the oldest
        // network and drop their own duplicate, so a name keeps meaning one network.
        let same_name = self.networks_named(name).await?;
        let oldest = same_name
            .iter()
            .filter_map(|n| Some((created_key(n.created.as_deref()?), n.id.clone()?)))
            .min();
        let ours_is_duplicate =
            !created.warning.is_empty() || oldest.is_some_and(|(_, id)| id != created.id);
        if same_name.len() > 1 && ours_is_duplicate {
            match self.docker.remove_network(&created.id).await {
                Ok(()) => {}
                Err(e) => match self.err(e) {
                    EngineError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> EngineResult<()> {
        self.docker
            .remove_network(name)
            .await
            .map_err(|e| self.err(e))
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        // Creating a volume that exists returns the existing one: idempotent by design.
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: Some("local".to_string()),
                labels: Some(to_hash(labels)),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn remove_volume(&self, name: &str) -> EngineResult<()> {
        self.docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(|e| self.err(e))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(options), create_body(spec))
            .await
            .map(|r| r.id)
            .map_err(|e| self.err(e))
    }

    async fn start_container(&self, name_or_id: &str) -> EngineResult<()> {
        // 304 (already running) is a success in bollard.
        self.docker
            .start_container(name_or_id, None)
            .await
            .map_err(|e| self.err(e))
    }

    async fn stop_container(&self, name_or_id: &str, timeout: Duration) -> EngineResult<()> {
        let options = StopContainerOptionsBuilder::new()
            .t(secs_ceil(timeout))
            .build();
        // 304 (already stopped) is a success in bollard.
        self.with_timeout(timeout)
            .stop_container(name_or_id, Some(options))
            .await
            .map_err(|e| self.err(e))
    }

    async fn restart_container(&self, name_or_id: &str, timeout: Duration) -> EngineResult<()> {
        let options = RestartContainerOptionsBuilder::new()
            .t(secs_ceil(timeout))
            .build();
        self.with_timeout(timeout)
            .restart_container(name_or_id, Some(options))
            .await
            .map_err(|e| self.err(e))
    }

    async fn remove_container(&self, name_or_id: &str, force: bool) -> EngineResult<()> {
        // `v`: anonymous volumes of the image's VOLUME lines would otherwise pile up with every
        // release; named volumes are never removed by it.
        let options = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(true)
            .build();
        self.docker
            .remove_container(name_or_id, Some(options))
            .await
            .map_err(|e| self.err(e))
    }

    async fn inspect_container(&self, name_or_id: &str) -> EngineResult<Option<ContainerInfo>> {
        match self.docker.inspect_container(name_or_id, None).await {
            Ok(r) => Ok(Some(container_info(r))),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list_containers(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filters(labels))
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err(e))?;
        // The list lacks restart counts, exit codes and start times: inspect each one. A
        // container removed in between is simply no longer listed.
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            if let Some(info) = self.inspect_container(&id).await? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    async fn exec_with_stdin(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<Vec<u8>>,
        on_stdout: LineSink<'_>,
    ) -> EngineResult<ExecOutput> {
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err(e))?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        {
            if let Some(bytes) = stdin {
                // The commands that take input read it before they print anything, so writing it
                // all first cannot block on their output. Closing our side ends their stdin.
                input
                    .write_all(&bytes)
                    .await
                    .map_err(|e| EngineError::Api(format!("exec stdin in {container}: {e}")))?;
                let _ = input.flush().await;
                let _ = input.shutdown().await;
            }
            let mut lines = LineSplitter::default();
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| self.err(e))? {
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        stdout.extend_from_slice(&message);
                        lines.push(&message, |l| on_stdout(l));
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message);
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            lines.finish(|l| on_stdout(l));
        }
        // The stream can end a moment before the daemon records the exit code.
        let mut exit_code = None;
        for _ in 0..100 {
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| self.err(e))?;
            if inspect.running != Some(true) {
                exit_code = inspect.exit_code;
                if exit_code.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exit_code = exit_code.ok_or_else(|| {
            EngineError::Api(format!(
                "exec in {container} finished but the daemon reported no exit code"
            ))
        })?;
        Ok(ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn logs_tail(&self, container: &str, lines: usize) -> EngineResult<Vec<String>> {
        if lines == 0 {
            return Ok(Vec::new());
        }
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(false)
            .follow(false)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(options));
        // stdout and stderr frames interleave; each keeps its own partial line.
        let mut out = Vec::new();
        let mut out_split = LineSplitter::default();
        let mut err_split = LineSplitter::default();
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(|e| self.err(e))? {
                bollard::container::LogOutput::StdErr { message } => {
                    err_split.push(&message, |l| out.push(l.to_string()));
                }
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => {
                    out_split.push(&message, |l| out.push(l.to_string()));
                }
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        out_split.finish(|l| out.push(l.to_string()));
        err_split.finish(|l| out.push(l.to_string()));
        // The daemon already cut at `lines`, but a tail through partial frames may add one.
        let skip = out.len().saturating_sub(lines);
        Ok(out.split_off(skip))
    }

    async fn image_id(&self, reference: &str) -> EngineResult<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn network_labels(&self, name: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        Ok(self
            .networks_named(name)
            .await?
            .into_iter()
            .next()
            .map(|n| n.labels.unwrap_or_default().into_iter().collect()))
    }

    async fn volume_labels(&self, name: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.labels.into_iter().collect())),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// A build error that means a cached layer was removed while the build used it.
pub(super) fn is_vanished_layer(msg: &str) -> bool {
    [
        "failed to get digest",
        "unknown parent image ID",
        "No such image",
    ]
    .iter()
    .any(|m| msg.contains(m))
}
