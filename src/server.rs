//! The HTTP server, the composition root: the router (git routes, API, console, health,
//! metrics, middleware), binding (data dir, start-up chores, the shared state built whole) and
//! the accept loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::applying::deployer::Deployer;
use crate::applying::{AnyTarget, Target};
use crate::metrics::Metrics;
use crate::repos::RepoStore;
use crate::settings::Settings;
use crate::web::error::HttpError;
use crate::web::state::{AppState, Shared};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("another devpop is already serving the data dir {0} (it holds devpop.lock)")]
    Locked(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("refusing to listen on {0}, which is reachable beyond this machine, without authentication; pass --auth tokens, listen on 127.0.0.1, or pass --insecure-no-auth")]
    NotLoopback(SocketAddr),
    #[error("cannot use git: {0}")]
    Git(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Repos(#[from] crate::repos::RepoError),
    #[error(transparent)]
    Packages(#[from] crate::packages::PackageError),
    #[error(transparent)]
    Records(#[from] crate::records::RecordError),
    #[error("--target cluster: {0}")]
    Cluster(crate::applying::TargetError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::web::git::routes())
        .merge(crate::api::routes())
        .merge(crate::console::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), crate::web::enforce::enforce))
        .layer(middleware::from_fn_with_state(state.clone(), crate::web::enforce::rate_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        // Outermost: every error the router answers (handlers', middleware's, axum's own
        // rejections and 405s, the fallback) in its path's shape.
        .layer(middleware::from_fn(crate::web::error::shape_errors))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, HttpError> {
    match tokio::fs::metadata(state.settings.data_dir.join("repos")).await {
        Ok(m) if m.is_dir() => Ok("ready\n"),
        _ => Err(HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "the data dir's repos/ folder is not there")),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    if uri.path().starts_with("/api/") {
        return HttpError::not_found(format!(
            "no API resource at {}; the routes are in /api/v1/openapi.json",
            uri.path()
        ));
    }
    HttpError::new(
        StatusCode::NOT_FOUND,
        "no such page; git repos live at /account/<account>/application/<application>/<repo>.git",
    )
}

async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        state.metrics.http_error();
    }
    response
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    _lock: std::fs::File,
}

impl Server {
    /// Prepares the data dir (lock, repos' hooks, crash leftovers) and binds the listener.
    pub async fn bind(settings: Settings, listen: SocketAddr, insecure_no_auth: bool) -> Result<Self, ServeError> {
        let auth_enabled = settings.auth_tokens;
        let limits = settings.limits.clone();
        ignore_user_git_config();
        if !listen.ip().is_loopback() && !insecure_no_auth && !auth_enabled {
            return Err(ServeError::NotLoopback(listen));
        }
        let data = settings.data_dir.clone();
        crate::web::error::hide_server_path(&data);
        let data_err = |source| ServeError::DataDir { path: data.clone(), source };
        std::fs::create_dir_all(data.join("repos")).map_err(data_err)?;
        let lock = std::fs::File::create(data.join("devpop.lock")).map_err(data_err)?;
        if lock.try_lock().is_err() {
            return Err(ServeError::Locked(data));
        }
        let exe = std::env::current_exe()?;
        let repos = RepoStore::new(&settings.data_dir, &exe);
        let prepared = {
            let repos = repos.clone();
            tokio::task::spawn_blocking(move || repos.prepare_all()).await.map_err(std::io::Error::other)??
        };
        let packages = crate::packages::PackageStore::new(&settings.data_dir);
        let builtins = {
            let packages = packages.clone();
            tokio::task::spawn_blocking(move || packages.install_builtins()).await.map_err(std::io::Error::other)??
        };
        if !builtins.is_empty() {
            tracing::info!(packages = ?builtins, "installed the built-in packages");
        }
        tracing::info!(repos = prepared, data = %settings.data_dir.display(), "data dir ready");
        let swept = tokio::task::spawn_blocking(crate::sandbox::sweep_scratch_roots).await.unwrap_or(0);
        if swept > 0 {
            tracing::info!(folders = swept, "removed scratch folders a crashed devpop left");
        }
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|source| ServeError::Bind { addr: listen, source })?;
        let mut settings = settings;
        // posix_spawn does not search PATH: find git once.
        settings.git = crate::transport::process::resolve_program(&settings.git).ok_or_else(|| {
            crate::transport::TransportError::Spawn(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not on PATH; install git", settings.git.display()),
            ))
        })?;
        let bound = listener.local_addr()?;
        let base_url = settings.base_url(bound);
        // Pushes are checked in this process: passing validations are remembered, and a few
        // sandboxes per installed package wait ready for the next validate.sh.
        let checks = &mut settings.hook.checks;
        checks.memo = Some(crate::checks::MemoStore::memory());
        let pool = crate::sandbox::Pool::new(&checks.bwrap, checks.sandbox.clone(), 1);
        for (module, versions) in &packages.catalog().0 {
            for package in versions.iter().filter_map(|v| packages.get(&format!("{module}:{v}")).ok()) {
                pool.warm(&package.validate_sh());
            }
        }
        checks.pool = Some(pool);
        let advertiser = crate::transport::advertise::ReceivePackAdvertiser::probe(&settings).await?;
        // Deployments, their steps and the audit log: one SQLite database (migrated from the
        // JSON-lines logs of earlier versions on the first start).
        let db = {
            let data = settings.data_dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || crate::records::Db::open(&data))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(crate::records::RecordError::from)?,
            )
        };
        let records = Arc::new(crate::records::Records::with_db(db.clone()));
        records.set_keep_per_environment(settings.records.keep_per_environment);
        let rendered = crate::applying::RenderedRepos::new(&settings.data_dir);
        let (target, deadline) = match &settings.target {
            crate::settings::TargetSettings::RenderOnly => (
                AnyTarget::RenderOnly(crate::applying::RenderOnly { repos: rendered.clone() }),
                Duration::from_secs(300),
            ),
            crate::settings::TargetSettings::Cluster { kubeconfig, rollout_deadline } => {
                let cluster = crate::applying::kube::KubeCluster::discover(kubeconfig.as_deref())
                    .await
                    .map_err(ServeError::Cluster)?;
                (
                    AnyTarget::Cluster(cluster, crate::applying::RenderOnly { repos: rendered.clone() }),
                    *rollout_deadline,
                )
            }
        };
        tracing::info!(target = target.name(), "deploying to");
        let audit = Arc::new(crate::records::audit::AuditLog::with_db(db));
        // Built whole, then shared.
        let mut deployer = Deployer::new(
            records,
            Arc::new(target),
            repos.clone(),
            packages.clone(),
            settings.hook.checks.render.clone(),
            4,
        );
        deployer.rollout_deadline = deadline;
        let deployer = Arc::new(deployer);
        let state = AppState::new(Shared {
            rendered,
            settings,
            repos,
            metrics: Metrics::default(),
            advertiser,
            deployer,
            packages,
            base_url,
            auth_enabled,
            tokens: crate::auth::TokenStore::new(&data),
            push_slots: crate::transport::PushSlots::new(limits.pushes_per_account),
            audit: audit.clone(),
            rate: crate::auth::limits::RateLimiter::new(limits.api_rate, limits.api_burst, limits.api_rate_clients),
            sessions: crate::auth::Sessions::new(limits.session_lifetime, limits.session_idle),
        });
        Ok(Server { listener, state, _lock: lock })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn base_url(&self) -> std::io::Result<String> {
        Ok(self.state.settings.base_url(self.local_addr()?))
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let deployer = self.state.deployer.clone();
        match deployer.resume().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deployments = n, "resumed unfinished deployments"),
            Err(e) => tracing::error!(error = %e, "cannot resume deployments"),
        }
        // Every environment whose branch moved without a deployment (a push to the repo on disk,
        // a record lost with an OS crash) gets one. In the background: it looks at every repo,
        // and serving should not wait for a thousand of them.
        let reconciling = deployer.clone();
        tokio::spawn(async move {
            match reconciling.reconcile().await {
                Ok(queued) if queued.is_empty() => {}
                Ok(queued) => tracing::info!(deployments = queued.len(), "reconciled environments with their branches"),
                Err(e) => tracing::error!(error = %e, "cannot reconcile environments"),
            }
        });
        if let Some(age) = self.state.settings.records.audit_max_age {
            let audit = self.state.audit.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    every.tick().await;
                    let audit = audit.clone();
                    match tokio::task::spawn_blocking(move || audit.prune_older_than(age)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(entries = n, "audit log: removed entries past --audit-max-age"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "audit log: cannot remove old entries"),
                        Err(_) => {}
                    }
                }
            });
        }
        let limits = &self.state.settings.limits;
        let max = connection_cap(limits.max_connections, raise_open_files_limit());
        let header_timeout = limits.header_timeout;
        let app = router(self.state.clone());
        serve_connections(self.listener, app, max, header_timeout, shutdown).await;
        // An action whose client hung up runs on: its branch, deployment and audit entry stay
        // together, and its checks' scratch folders are not removed under it.
        self.state.deployer.finish_changes().await;
        crate::sandbox::remove_scratch_root();
        Ok(())
    }
}

/// Open files kept for what connections start (git processes and their pipes, repo and record
/// files) beyond the connections' own sockets.
const FILES_RESERVED: u64 = 256;

/// Raises this process's open-files soft limit to its hard limit; returns the soft limit now.
fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(current), max) = (lim.current, lim.maximum) else { return u64::MAX };
    if max.is_none_or(|max| current < max) && setrlimit(Resource::Nofile, Rlimit { current: max, maximum: max }).is_ok()
    {
        return max.unwrap_or(u64::MAX);
    }
    current
}

/// The connections served at once: the setting, lowered so that connections can never exhaust
/// the open-files limit (each takes a socket, and half of what is left beyond the reserve is
/// kept for the files and processes connections open).
fn connection_cap(setting: usize, open_files: u64) -> usize {
    let fits = (open_files.saturating_sub(FILES_RESERVED) / 2).max(16) as usize;
    if setting > fits {
        tracing::warn!(
            setting,
            open_files,
            serving = fits,
            "--max-connections lowered to fit the open-files limit (raise `ulimit -n` to serve more)"
        );
    }
    setting.clamp(1, fits)
}

/// The accept loop: every connection gets hyper's HTTP/1 with a header-read timeout, and a slot
/// of `max`; a connection beyond them is answered 503 and closed at once, so a flood of slow or
/// idle clients can neither exhaust the open files nor stop the server accepting. On `shutdown`
/// it stops accepting, lets requests in progress finish, and returns when every connection is
/// closed (like `axum::serve`'s graceful shutdown).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    max: usize,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper::body::Incoming;
    use tower::ServiceExt as _;

    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Best effort: the answer fits any socket buffer; the socket closes when dropped.
            let _ = tcp.try_write(&crate::web::error::over_capacity(max));
            tracing::debug!(%peer, max, "connection refused: too many connections");
            continue;
        };
        // Nagle's algorithm would hold back small protocol packets for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = async { stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop((slot, open));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
}

/// An accept that failed: a connection that went away before it was accepted is nothing; out
/// of open files (which the connection cap should prevent) waits a moment for some to close.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// libgit2 in this process reads repos as the git processes devpop starts do: without the
/// system's or the user's git config (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`).
/// It also spares each repo open the look-ups for those files.
#[allow(unsafe_code)] // libgit2's process-wide option: git2 marks the setter unsafe.
fn ignore_user_git_config() {
    for level in
        [git2::ConfigLevel::System, git2::ConfigLevel::XDG, git2::ConfigLevel::Global, git2::ConfigLevel::ProgramData]
    {
        // SAFETY: called before the server starts any thread that uses libgit2.
        if let Err(e) = unsafe { git2::opts::set_search_path(level, "") } {
            tracing::warn!(error = %e, ?level, "cannot make libgit2 ignore the user's git config");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_open_files_limit() {
        assert_eq!(connection_cap(1024, 1_048_576), 1024, "a high limit keeps the setting");
        assert_eq!(connection_cap(1024, 400), 72, "(400 - 256) / 2");
        assert_eq!(connection_cap(1024, 100), 16, "never below 16");
        assert_eq!(connection_cap(10, 400), 10, "a lower setting stands");
    }
}
