//! The HTTP server: shared state, the router (git transport, health, metrics) and start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;

use crate::applying::deployer::Deployer;
use crate::applying::{AnyTarget, Target};
use crate::http_error::HttpError;
use crate::metrics::Metrics;
use crate::repos::RepoStore;
use crate::settings::Settings;
use std::time::Duration;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub settings: Settings,
    pub repos: RepoStore,
    pub rendered: crate::applying::RenderedRepos,
    pub metrics: Metrics,
    pub advertiser: crate::transport::advertise::ReceivePackAdvertiser,
    pub deployer: Arc<Deployer<AnyTarget>>,
    pub packages: crate::packages::PackageStore,
    pub base_url: String,
    pushes: std::sync::atomic::AtomicU64,
    /// Requests need a token (`--auth tokens`); off in local mode.
    pub auth_enabled: bool,
    pub tokens: crate::auth::TokenStore,
    pub push_slots: crate::transport::PushSlots,
    pub audit: Arc<crate::records::audit::AuditLog>,
    pub rate: crate::auth::limits::RateLimiter,
    pub sessions: crate::auth::Sessions,
}

impl Shared {
    /// A name for one push, unique while this server runs.
    pub fn next_push_id(&self) -> String {
        format!("push-{}", self.pushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

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
        .merge(crate::transport::routes())
        .merge(crate::api::routes())
        .merge(crate::console::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::enforce::enforce))
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::limits::rate_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
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

async fn not_found() -> HttpError {
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
        let records = {
            let data = settings.data_dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || crate::records::Records::open(&data))
                    .await
                    .map_err(std::io::Error::other)??,
            )
        };
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
        let audit = Arc::new(crate::records::audit::AuditLog::new(&settings.data_dir));
        let mut deployer = Deployer::new(
            records,
            Arc::new(target),
            repos.clone(),
            packages.clone(),
            settings.hook.checks.render.clone(),
            4,
        );
        let d = Arc::get_mut(&mut deployer).expect("not shared yet");
        d.rollout_deadline = deadline;
        d.audit = Some(audit.clone());
        let state = AppState(Arc::new(Shared {
            rendered,
            settings,
            repos,
            metrics: Metrics::default(),
            advertiser,
            deployer,
            packages,
            base_url,
            pushes: Default::default(),
            auth_enabled,
            tokens: crate::auth::TokenStore::new(&data),
            push_slots: crate::transport::PushSlots::new(limits.pushes_per_account),
            audit: audit.clone(),
            rate: crate::auth::limits::RateLimiter::new(limits.api_rate, limits.api_burst),
            sessions: Default::default(),
        }));
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
        // Nagle's algorithm would hold back small protocol packets for up to 40 ms.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let deployer = self.state.deployer.clone();
        match deployer.resume().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deployments = n, "resumed unfinished deployments"),
            Err(e) => tracing::error!(error = %e, "cannot resume deployments"),
        }
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        crate::sandbox::remove_scratch_root();
        Ok(served?)
    }
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
