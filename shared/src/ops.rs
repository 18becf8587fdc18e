//! The operational endpoints every role serves on `NEXUS_LISTEN`: `/healthz` (liveness),
//! `/readyz` (readiness: the database, Redis where the role uses it, not shutting down) and
//! `/metrics` (Prometheus text).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::{config::HttpLimits, coord::Coordination, store::Store, telemetry};

/// What readiness depends on.
#[derive(Clone, Debug)]
pub struct Health {
    store: Store,
    coordination: Option<Coordination>,
    shutting_down: Arc<AtomicBool>,
}

impl Health {
    /// Readiness of a role using `store` and, when given, `coordination` (only Redis can be
    /// unreachable).
    #[must_use]
    pub fn new(store: Store, coordination: Option<Coordination>) -> Self {
        Self {
            store,
            coordination,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process as shutting down: `/readyz` answers 503 from now on, so load
    /// balancers stop sending traffic before the listener closes.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// How long a listener keeps accepting connections after shutdown begins, so that probes see
/// `/readyz` fail before the port closes.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`: `/readyz` turns
/// unready at once, the listener closes after [`SHUTDOWN_DRAIN`], requests in flight may finish
/// until `limits.shutdown_deadline`, and whatever is still open then is closed.
///
/// Every connection is served by hyper with a timer, so a client that does not complete a
/// request's headers within `limits.header_timeout` (or keeps a connection idle that long) is
/// disconnected; a request not handled within `limits.request_timeout` is answered 408 and its
/// connection closed; at most `limits.max_connections` connections are open at once — past that
/// the listener stops accepting until one closes.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    health: Health,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let signal = async move {
        shutdown.await;
        health.begin_shutdown();
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    tracing::info!(address = %listener.local_addr()?, "listening");
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        request_deadline,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut signal => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            deadline_secs = limits.shutdown_deadline.as_secs(),
            "connections still open at the shutdown deadline are closed"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// Answers 408 (and closes the connection) when the request is not handled within `timeout`:
/// a body that trickles in, or a handler stuck on something, cannot hold a connection longer.
/// A body its handler answered without reading is drained within that time
/// ([`crate::linger`]), so an early refusal reaches a client that is still sending.
async fn request_deadline(
    State(timeout): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let request = request.map(|body| crate::linger::lingering(body, deadline));
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let body = json!({
                "error": format!("the request was not complete within {} s", timeout.as_secs()),
                "code": "request_timeout",
            });
            let mut response = (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// How long a role waits for its work in flight after a shutdown signal before exiting anyway
/// (below Kubernetes' default 30 s grace period).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

/// The router of the three operational endpoints.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 when the database (and Redis, where used) answer and the process is not
/// shutting down; 503 with the error body otherwise.
pub async fn readyz(State(health): State<Health>) -> Response {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let shutting_down = health.is_shutting_down();
    let database = matches!(
        tokio::time::timeout(TIMEOUT, health.store.ping()).await,
        Ok(true)
    );
    let redis = match &health.coordination {
        Some(shared @ Coordination::Redis(_)) => Some(shared.ping(TIMEOUT).await),
        _ => None,
    };
    if !shutting_down && database && redis != Some(false) {
        return (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response();
    }
    let reason = if shutting_down {
        "the process is shutting down"
    } else if !database {
        "the database is unreachable"
    } else {
        "Redis is unreachable"
    };
    let body = json!({
        "error": format!("not ready: {reason}"),
        "code": "not_ready",
        "details": { "database": database, "redis": redis, "shuttingDown": shutting_down },
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`: the process's metrics in the Prometheus text format.
pub async fn metrics() -> Response {
    let handle = telemetry::metrics();
    handle.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// A role process's listener serving only the operational endpoints (the scheduler and the
/// worker: they have no API of their own).
#[derive(Debug)]
pub struct OpsServer {
    listener: tokio::net::TcpListener,
    health: Health,
    limits: HttpLimits,
}

impl OpsServer {
    /// Binds `listen` (port 0 picks a free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(
        listen: std::net::SocketAddr,
        health: Health,
        limits: HttpLimits,
    ) -> std::io::Result<Self> {
        telemetry::metrics();
        Ok(Self {
            listener: tokio::net::TcpListener::bind(listen).await?,
            health,
            limits,
        })
    }

    /// The bound port.
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn port(&self) -> std::io::Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// The readiness state.
    #[must_use]
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves until `shutdown` resolves (see [`serve`]).
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = router(self.health.clone());
        serve(self.listener, router, self.health, self.limits, shutdown).await
    }
}

impl OpsServer {
    /// Runs a role's background work beside the operational endpoints until `shutdown`
    /// resolves: `/readyz` turns unready first, then the role is told to stop (through the
    /// `watch` it was given) and awaited — so work in flight finishes — and the listener closes
    /// last.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_role<F>(
        self,
        role: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> F,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let health = self.health();
        let work = tokio::spawn(role(stopped));
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let listener = tokio::spawn(self.run_until_stopped(async move { drop(closed.await) }));
        shutdown.await;
        health.begin_shutdown();
        let _ = stop.send(true);
        match tokio::time::timeout(SHUTDOWN_DEADLINE, work).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the role's work ended abnormally"),
            Err(_) => tracing::warn!(
                deadline_secs = SHUTDOWN_DEADLINE.as_secs(),
                "work in flight did not finish before the shutdown deadline; its leases will expire"
            ),
        }
        let _ = close.send(());
        listener.await.map_err(std::io::Error::other)?
    }
}
