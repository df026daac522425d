//! The control channel: a unix socket in the state dir, one JSON line in, one JSON line out.
//! `deployctl proxy switch|status|record|releases` (run through `docker exec`) are its clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::protocol::{
    ControlRequest, ControlResponse, ProxyStatus, ReleaseRecord, SwitchRequest, SwitchResult,
};
use super::route::Router;
use super::state::{CONTROL_SOCKET, load_ledger, save_ledger, upsert};
use super::switch;

/// Largest request line accepted (a ledger record or switch request is far smaller).
const MAX_REQUEST: u64 = 1024 * 1024;
/// Answers other than a switch come at once; this only guards against a wedged server.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// A switch also spends up to the health timeout and a disk write besides its drain timeout.
const SWITCH_SLACK: Duration = Duration::from_secs(30);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CONTROL_SOCKET)
}

/// Server side of the control commands.
pub struct Controller {
    router: Arc<Router>,
    state_dir: PathBuf,
    /// Serializes switches up to their swap (see [`switch::switch`]).
    switching: Mutex<()>,
    /// In-memory ledger; the lock also serializes its file writes.
    ledger: Mutex<Vec<ReleaseRecord>>,
}

impl Controller {
    pub fn new(router: Arc<Router>, state_dir: PathBuf) -> Self {
        let ledger = load_ledger(&state_dir);
        Self {
            router,
            state_dir,
            switching: Mutex::new(()),
            ledger: Mutex::new(ledger),
        }
    }

    pub async fn handle(&self, req: ControlRequest) -> ControlResponse {
        let result = match req {
            ControlRequest::Switch(req) => {
                switch::switch(&self.router, &self.state_dir, &self.switching, req)
                    .await
                    .map(ControlResponse::Switched)
            }
            ControlRequest::Status => Ok(ControlResponse::Status(self.router.status())),
            ControlRequest::Record(record) => self
                .record(record)
                .await
                .map(|()| ControlResponse::Recorded),
            ControlRequest::Releases => Ok(ControlResponse::Releases {
                releases: self.ledger.lock().await.clone(),
            }),
            ControlRequest::HealthCheck { passed } => {
                if let Some(metrics) = self.router.metrics() {
                    metrics.health_check(passed);
                }
                Ok(ControlResponse::Counted)
            }
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "control request failed");
            ControlResponse::Error {
                message: format!("{e:#}"),
            }
        })
    }

    async fn record(&self, record: ReleaseRecord) -> anyhow::Result<()> {
        if record.id.trim().is_empty() {
            bail!("a release record needs a non-empty id");
        }
        let mut ledger = self.ledger.lock().await;
        let mut updated = ledger.clone();
        upsert(&mut updated, record);
        let dir = self.state_dir.clone();
        let to_write = updated.clone();
        tokio::task::spawn_blocking(move || save_ledger(&dir, &to_write))
            .await
            .context("ledger writer task failed")?
            .context("cannot persist the release ledger")?;
        *ledger = updated;
        Ok(())
    }

    /// Serves one control connection.
    pub async fn serve(&self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST));
        let response = match reader.read_line(&mut line).await {
            Ok(_) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(req) => self.handle(req).await,
                Err(e) => ControlResponse::Error {
                    message: format!("invalid control request: {e}"),
                },
            },
            Err(e) => ControlResponse::Error {
                message: format!("cannot read control request: {e}"),
            },
        };
        let mut bytes = match serde_json::to_vec(&response) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode control response");
                return;
            }
        };
        bytes.push(b'\n');
        if let Err(e) = write.write_all(&bytes).await {
            // The client went away (e.g. `docker exec` interrupted); the work itself is done.
            tracing::debug!(error = %e, "control client gone before the answer");
        }
        let _ = write.shutdown().await;
    }
}

async fn call(
    state_dir: &Path,
    req: &ControlRequest,
    timeout: Duration,
) -> anyhow::Result<ControlResponse> {
    let path = socket_path(state_dir);
    let exchange = async {
        let mut stream = UnixStream::connect(&path).await.with_context(|| {
            format!(
                "cannot reach the proxy control socket {} (is `deployctl proxy run` running?)",
                path.display()
            )
        })?;
        let mut bytes = serde_json::to_vec(req).context("encoding control request")?;
        bytes.push(b'\n');
        stream
            .write_all(&bytes)
            .await
            .context("sending control request")?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .context("reading control answer")?;
        serde_json::from_slice::<ControlResponse>(&answer).with_context(|| {
            format!(
                "unexpected answer from the proxy: {:?}",
                String::from_utf8_lossy(&answer)
            )
        })
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the proxy did not answer within {}s", timeout.as_secs()))??;
    match response {
        ControlResponse::Error { message } => Err(anyhow::anyhow!(message)),
        other => Ok(other),
    }
}

fn unexpected(resp: ControlResponse) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the proxy: {resp:?}")
}

/// Asks the running proxy to switch; returns once the old target is drained (or timed out).
pub async fn client_switch(state_dir: &Path, req: SwitchRequest) -> anyhow::Result<SwitchResult> {
    let timeout = Duration::from_millis(req.drain_timeout_ms)
        .saturating_add(switch::probe_limit(&req))
        .saturating_add(SWITCH_SLACK);
    match call(state_dir, &ControlRequest::Switch(req), timeout).await? {
        ControlResponse::Switched(result) => Ok(result),
        other => Err(unexpected(other)),
    }
}

pub async fn client_status(state_dir: &Path) -> anyhow::Result<ProxyStatus> {
    match call(state_dir, &ControlRequest::Status, QUICK_TIMEOUT).await? {
        ControlResponse::Status(status) => Ok(status),
        other => Err(unexpected(other)),
    }
}

/// Inserts or replaces (by id) a release in the ledger.
pub async fn client_record(state_dir: &Path, record: ReleaseRecord) -> anyhow::Result<()> {
    match call(state_dir, &ControlRequest::Record(record), QUICK_TIMEOUT).await? {
        ControlResponse::Recorded => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Counts one health check run from the proxy container in the proxy's metrics (a no-op when
/// they are off).
pub async fn client_health_check(state_dir: &Path, passed: bool) -> anyhow::Result<()> {
    match call(
        state_dir,
        &ControlRequest::HealthCheck { passed },
        QUICK_TIMEOUT,
    )
    .await?
    {
        ControlResponse::Counted => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// The release ledger, oldest first.
pub async fn client_releases(state_dir: &Path) -> anyhow::Result<Vec<ReleaseRecord>> {
    match call(state_dir, &ControlRequest::Releases, QUICK_TIMEOUT).await? {
        ControlResponse::Releases { releases } => Ok(releases),
        other => Err(unexpected(other)),
    }
}
