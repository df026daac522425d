//! `deployctl proxy run`: the public HTTP listener plus the control socket, and the metrics
//! listener when `proxy.metrics` is on.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::conn::{self, Activity, Finishing, Limits, OpenConnections, Slot, Watched};
use super::control::{Controller, socket_path};
use super::forward;
use super::metrics::{self, Metrics, MetricsOptions};
use super::route::{Route, Router};
use super::state::load_state;
use super::upstream;

/// After SIGTERM, in-flight requests get this long (under Docker's default 10 s stop timeout).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Connections over `max_connections` being answered 503 at once; beyond, they are just closed.
const MAX_SHEDDING: usize = 256;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Idle and header read timeouts, and the bound on open client connections.
    pub limits: Limits,
    /// Serve Prometheus metrics on a listener of their own (`proxy.metrics`); None: off.
    pub metrics: Option<MetricsOptions>,
}

/// A bound proxy, not yet serving. Split from [`run`] so callers (tests) can learn the port.
pub struct Server {
    listener: TcpListener,
    control: UnixListener,
    socket: PathBuf,
    router: Arc<Router>,
    controller: Arc<Controller>,
    limits: Limits,
    metrics: Option<TcpListener>,
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
        let registry = opts
            .metrics
            .as_ref()
            .map(|m| Arc::new(Metrics::new(&m.app, &m.env)));
        let router = Arc::new(Router::new(initial, switched_at, registry));

        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let metrics = match &opts.metrics {
            Some(m) => Some(
                TcpListener::bind(m.listen)
                    .await
                    .with_context(|| format!("cannot serve metrics on {}", m.listen))?,
            ),
            None => None,
        };
        let socket = socket_path(&opts.state_dir);
        let control = bind_control(&socket).await?;
        let controller = Arc::new(Controller::new(Arc::clone(&router), opts.state_dir));
        Ok(Self {
            listener,
            control,
            socket,
            router,
            controller,
            limits: opts.limits,
            metrics,
        })
    }

    /// Where metrics are served, when they are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the listen address")
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open requests
    /// [`SHUTDOWN_GRACE`] to finish.
    ///
    /// Client connections are served by [`worker_count`] worker threads, each running its own
    /// single-threaded runtime; this task only accepts and hands connections out in turn. A
    /// connection, its requests and the upstream connections they use then stay on one thread:
    /// no work stealing, no cross-thread wake-ups, and uncontended per-thread upstream pools.
    /// On a loaded 2-core machine this roughly halves the proxy's CPU time per request compared
    /// with serving everything on the shared multi-threaded runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            control,
            socket,
            router,
            controller,
            limits,
            metrics,
        } = self;
        tracing::info!(
            listen = %listener.local_addr()?,
            control = %socket.display(),
            idle_timeout = ?limits.idle_timeout,
            header_read_timeout = ?limits.header_read_timeout,
            max_connections = limits.max_connections,
            metrics = ?metrics.as_ref().and_then(|l| l.local_addr().ok()),
            "proxy listening"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let scrapes = metrics.map(|listener| {
            tokio::spawn(metrics::serve(
                listener,
                Arc::clone(&router),
                stop_rx.clone(),
            ))
        });
        let mut workers = Vec::new();
        for index in 0..worker_count() {
            workers.push(Worker::spawn(
                index,
                Arc::clone(&router),
                stop_rx.clone(),
                limits,
            )?);
        }
        let mut control_tasks = JoinSet::new();
        let open = OpenConnections::default();
        let mut shedding = JoinSet::new();
        let mut last_shed_warning: Option<std::time::Instant> = None;
        let mut next = 0;
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Small responses must not wait for an ACK (Nagle) before going out.
                        let _ = stream.set_nodelay(true);
                        let Some(slot) = open.try_open(limits.max_connections) else {
                            // Over the bound: a clear 503, not an exhausted fd table.
                            if last_shed_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                                last_shed_warning = Some(std::time::Instant::now());
                                tracing::warn!(max_connections = limits.max_connections, "too many open connections; answering new ones 503");
                            }
                            if shedding.len() < MAX_SHEDDING {
                                shedding.spawn(conn::shed(stream));
                            }
                            continue;
                        };
                        match stream.into_std() {
                            Ok(stream) => {
                                let worker = &workers[next % workers.len()];
                                next = next.wrapping_add(1);
                                if worker.connections.send((stream, peer, slot)).is_err() {
                                    tracing::warn!(worker = worker.index, "proxy worker is gone; connection dropped");
                                }
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "cannot hand the connection to a worker"),
                        }
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
                        control_tasks.spawn(async move { controller.serve(stream).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished control connections so the set stays small.
                Some(_) = control_tasks.join_next(), if !control_tasks.is_empty() => {}
                Some(_) = shedding.join_next(), if !shedding.is_empty() => {}
            }
        }
        shedding.shutdown().await;

        tracing::info!(in_flight = router.status().in_flight, "shutting down");
        drop(listener);
        drop(control);
        let _ = std::fs::remove_file(&socket);
        let _ = stop_tx.send(true);
        if let Some(scrapes) = scrapes {
            let _ = scrapes.await;
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while control_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            control_tasks.shutdown().await;
        }
        // Each worker gives its connections the grace period itself, then ends.
        for worker in workers {
            let _ = worker.finished.await;
        }
        Ok(())
    }
}

/// Worker threads: `DEPLOYCTL_PROXY_WORKERS` if set (e.g. to match a container's CPU limit),
/// else the CPUs this process may use.
fn worker_count() -> usize {
    std::env::var("DEPLOYCTL_PROXY_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(64)
}

/// One worker thread with its own current-thread runtime.
struct Worker {
    index: usize,
    connections: mpsc::UnboundedSender<Handed>,
    /// Completes when the worker's connections are closed and its thread is about to exit.
    finished: oneshot::Receiver<()>,
}

/// A client connection handed to a worker, with its slot among the open connections.
type Handed = (std::net::TcpStream, SocketAddr, Slot);

impl Worker {
    fn spawn(
        index: usize,
        router: Arc<Router>,
        stop: watch::Receiver<bool>,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a proxy worker runtime")?;
        let (connections, incoming) = mpsc::unbounded_channel();
        let (done, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("proxy-worker-{index}"))
            .spawn(move || {
                upstream::set_worker_slot(index);
                runtime.block_on(work(incoming, router, stop, limits));
                // Dropping the runtime ends what is left (idle upstream connection drivers).
                drop(runtime);
                let _ = done.send(());
            })
            .context("starting a proxy worker thread")?;
        Ok(Self {
            index,
            connections,
            finished,
        })
    }
}

/// A worker's loop: serves the connections handed to it until the proxy stops.
async fn work(
    mut incoming: mpsc::UnboundedReceiver<Handed>,
    router: Arc<Router>,
    stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let mut http = http1::Builder::new();
    // hyper's header read timeout would also run while a keep-alive connection is idle;
    // both limits are kept per connection instead (see `conn`).
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    let mut tasks = JoinSet::new();
    let mut stopping = stop.clone();
    // Closes this thread's upstream connections once they have been idle too long, also when
    // no request comes to do it on checkout.
    let mut reap = tokio::time::interval(Duration::from_secs(1));
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            handed = incoming.recv() => match handed {
                Some((stream, peer, slot)) => match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let stream = Watched::new(stream, Activity::new(), slot);
                        tasks.spawn(serve_connection(&http, stream, peer, Arc::clone(&router), stop.clone(), limits));
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "cannot register a client connection"),
                },
                None => break,
            },
            _ = reap.tick() => {
                if let Some(route) = router.live_route() {
                    route.upstream.evict_idle();
                }
            }
            // Reap finished connections so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

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
}

/// Serves one client connection until it ends, the proxy stops, or it outstays its limits:
/// idle for `idle_timeout`, or `header_read_timeout` into an incomplete request head.
fn serve_connection(
    http: &http1::Builder,
    stream: Watched<TcpStream>,
    peer: SocketAddr,
    router: Arc<Router>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) -> impl Future<Output = ()> + Send + 'static {
    let client = Arc::new(forward::Client::new(peer));
    let activity = Arc::clone(stream.activity());
    let requests = Arc::clone(&activity);
    let service = service_fn(move |req| {
        // The request counts as in progress until hyper drops its response body.
        let guard = requests.request();
        let answer = forward::handle(Arc::clone(&router), req, Arc::clone(&client));
        async move {
            answer
                .await
                .map(|resp| resp.map(|body| Finishing::new(body, guard)))
        }
    });
    let conn = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    async move {
        tokio::pin!(conn);
        let stopped = async {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stopped);
        // The watchdog's timer is armed at `armed`: moved earlier as soon as a limit comes
        // closer (a request head starts), otherwise re-checked when it fires.
        let mut armed = match activity.check(&limits) {
            Ok(ms) => ms,
            Err(_) => return,
        };
        let timer = tokio::time::sleep_until(activity.instant(armed).into());
        tokio::pin!(timer);
        loop {
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Ended(res));
                }
                if stopped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Stopping);
                }
                if let Some((deadline, _)) = activity.deadline_ms(&limits)
                    && deadline < armed
                {
                    armed = deadline;
                    timer.as_mut().reset(activity.instant(armed).into());
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Check);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Ended(res) => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                    return;
                }
                Event::Stopping => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                    return;
                }
                Event::Check => match activity.check(&limits) {
                    Ok(next) => {
                        armed = next;
                        timer.as_mut().reset(activity.instant(armed).into());
                    }
                    Err(why) => {
                        // Nothing is in progress: dropping the connection just closes it.
                        tracing::debug!(%peer, ?why, "closing client connection");
                        return;
                    }
                },
            }
        }
    }
}

/// What woke a connection's task.
enum Event {
    Ended(Result<(), hyper::Error>),
    Stopping,
    Check,
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
