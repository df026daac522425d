//! `deployctl proxy run`: the public HTTP listener plus the control socket.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::control::{Controller, socket_path};
use super::forward;
use super::route::{Route, Router};
use super::state::load_state;

/// After SIGTERM, in-flight requests get this long (under Docker's default 10 s stop timeout).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Slow or idle clients are cut after this without a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
}

/// A bound proxy, not yet serving. Split from [`run`] so callers (tests) can learn the port.
pub struct Server {
    listener: TcpListener,
    control: UnixListener,
    socket: PathBuf,
    router: Arc<Router>,
    controller: Arc<Controller>,
}

impl Server {
    /// Restores the live target from the state dir and binds both listeners.
    pub async fn bind(opts: RunOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.state_dir)
            .with_context(|| format!("creating state dir {}", opts.state_dir.display()))?;

        let state = load_state(&opts.state_dir);
        let initial = match state.live {
            Some(target) => match Route::new(target) {
                Ok(route) => {
                    tracing::info!(
                        container = %route.target.container,
                        addr = %route.target.addr,
                        version = %route.target.version,
                        "restored live target"
                    );
                    Some(route)
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "saved live target is invalid; starting with none");
                    None
                }
            },
            None => None,
        };
        let switched_at = initial.as_ref().and(state.switched_at);
        let router = Arc::new(Router::new(initial, switched_at));

        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let socket = socket_path(&opts.state_dir);
        let control = bind_control(&socket).await?;
        let controller = Arc::new(Controller::new(Arc::clone(&router), opts.state_dir));
        Ok(Self {
            listener,
            control,
            socket,
            router,
            controller,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the listen address")
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open requests
    /// [`SHUTDOWN_GRACE`] to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            control,
            socket,
            router,
            controller,
        } = self;
        tracing::info!(listen = %listener.local_addr()?, control = %socket.display(), "proxy listening");

        let mut http = http1::Builder::new();
        http.keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let router = Arc::clone(&router);
                        let service = service_fn(move |req| forward::handle(Arc::clone(&router), req, peer));
                        let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
                        let mut stop = stop_rx.clone();
                        tasks.spawn(async move {
                            tokio::pin!(conn);
                            tokio::select! {
                                res = conn.as_mut() => {
                                    if let Err(e) = res {
                                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                                    }
                                }
                                () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                                    // Finish the request in progress, then close.
                                    conn.as_mut().graceful_shutdown();
                                    let _ = conn.await;
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                accepted = control.accept() => match accepted {
                    Ok((stream, _)) => {
                        let controller = Arc::clone(&controller);
                        tasks.spawn(async move { controller.serve(stream).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connections so the set stays small.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }

        tracing::info!(in_flight = router.status().in_flight, "shutting down");
        drop(listener);
        drop(control);
        let _ = std::fs::remove_file(&socket);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = tasks.len(),
                "shutdown grace over; closing remaining connections"
            );
            tasks.shutdown().await;
        }
        Ok(())
    }
}

/// Binds the control socket, replacing a stale one but refusing to steal a live proxy's.
async fn bind_control(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "another deployctl proxy is already running on {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    // Only the owner (the user `docker exec` runs as) may switch traffic.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting control socket {}", path.display()))?;
    Ok(listener)
}

/// Runs the proxy until SIGTERM or SIGINT. It is PID 1 in its container, so it must handle
/// SIGTERM itself or `docker stop` would wait and kill it.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let server = Server::bind(opts).await?;
    server
        .serve(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        })
        .await
}
