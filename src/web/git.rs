//! The git routes: git's smart HTTP protocol at
//! `/account/<account>/application/<application>/<repo>.git` (and the read-only rendered repos
//! at `/rendered/...`). Each request is checked (names, service, content type, size, that the
//! repo exists) and handed to a git process (`transport::process`); a push's checks are served
//! over the hook channel by [`InServer`](super::push_server::InServer).

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde::Deserialize;

use super::error::HttpError;
use super::state::AppState;
use crate::auth::Principal;
use crate::names::RepoId;
use crate::transport::{advertise, process, RepoKind, Service, TransportError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/account/{account}/application/{application}/{repo}/info/refs",
            get(|s, p, q, h| info_refs(s, p, q, h, RepoKind::Application)),
        )
        .route("/account/{account}/application/{application}/{repo}/git-upload-pack", post(upload_pack))
        .route("/account/{account}/application/{application}/{repo}/git-receive-pack", post(receive_pack))
        .route(
            "/rendered/account/{account}/application/{application}/{repo}/info/refs",
            get(|s, p, q, h| info_refs(s, p, q, h, RepoKind::Rendered)),
        )
        .route(
            "/rendered/account/{account}/application/{application}/{repo}/git-upload-pack",
            post(upload_pack_rendered),
        )
        .route(
            "/rendered/account/{account}/application/{application}/{repo}/git-receive-pack",
            post(|| async { HttpError::from(TransportError::ReadOnly) }),
        )
}

#[derive(Deserialize)]
struct InfoRefsQuery {
    service: Option<String>,
}

type RepoPath = Path<(String, String, String)>;

async fn repo_path(
    state: &AppState,
    kind: RepoKind,
    (account, application, repo): (String, String, String),
) -> Result<std::path::PathBuf, TransportError> {
    let id = RepoId::new(&account, &application, &repo)?;
    let path = match kind {
        RepoKind::Application => state.repos.path(&id),
        RepoKind::Rendered => state.rendered.path(&id),
    };
    match tokio::fs::metadata(path.join("HEAD")).await {
        Ok(m) if m.is_file() => Ok(path),
        _ if kind == RepoKind::Rendered => Err(TransportError::NothingRendered(id)),
        _ => Err(TransportError::NoRepo(id)),
    }
}

/// The `Git-Protocol` header, passed to git as `GIT_PROTOCOL` when it is well-formed.
fn protocol(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("git-protocol")?.to_str().ok()?;
    let ok = value.len() <= 256 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"=:.,-_".contains(&b));
    ok.then(|| value.to_owned())
}

fn no_cache(mut response: Response, content_type: String) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("ASCII content type"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, max-age=0, must-revalidate"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn info_refs(
    State(state): State<AppState>,
    Path(segments): RepoPath,
    Query(query): Query<InfoRefsQuery>,
    headers: HeaderMap,
    kind: RepoKind,
) -> Result<Response, HttpError> {
    let service = query.service.as_deref().and_then(Service::from_name).ok_or(TransportError::NotSmart)?;
    if kind == RepoKind::Rendered && service == Service::ReceivePack {
        return Err(TransportError::ReadOnly.into());
    }
    if service == Service::ReceivePack {
        state.push_slots.check(&segments.0)?;
    }
    let repo = repo_path(&state, kind, segments).await?;
    let protocol = protocol(&headers);
    let v2 =
        service == Service::UploadPack && protocol.as_deref().is_some_and(|p| p.split(':').any(|kv| kv == "version=2"));
    state.metrics.git_request(service);
    let v1 = protocol.as_deref().is_some_and(|p| p.split(':').any(|kv| kv == "version=1"));
    let body = if service == Service::ReceivePack && !v1 {
        // git answers a push's v2 request in v0 too; devpop does it without starting git.
        let advertiser = state.advertiser.clone();
        let refs = tokio::task::spawn_blocking(move || advertiser.advertise(&repo))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "advertising refs: the task failed");
                TransportError::Internal("advertising refs: a task of the server's failed".into())
            })?
            .map_err(|e| TransportError::Internal(format!("reading refs: {e}")))?;
        Body::from(refs)
    } else {
        let inv = process::Invocation {
            settings: &state.settings,
            service,
            repo: &repo,
            protocol,
            hook_channel: None,
            config: Vec::new(),
        };
        inv.advertise().await?
    };
    // Protocol v0/v1 clients expect a service announcement before the advertisement; v2 does not.
    let body = if v2 {
        body
    } else {
        let mut pkt = Vec::new();
        advertise::pkt_line(&mut pkt, &format!("# service={}\n", service.name()));
        pkt.extend_from_slice(b"0000");
        let head = futures_util::stream::once(async move { Ok::<_, axum::Error>(bytes::Bytes::from(pkt)) });
        Body::from_stream(futures_util::StreamExt::chain(head, body.into_data_stream()))
    };
    Ok(no_cache(body.into_response(), format!("application/x-{}-advertisement", service.name())))
}

async fn upload_pack(
    state: State<AppState>,
    path: RepoPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    rpc(state, path, headers, body, Service::UploadPack, RepoKind::Application, None).await
}

async fn upload_pack_rendered(
    state: State<AppState>,
    path: RepoPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    rpc(state, path, headers, body, Service::UploadPack, RepoKind::Rendered, None).await
}

async fn receive_pack(
    state: State<AppState>,
    path: RepoPath,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    // Who pushed, for the deployment record.
    let who = match &principal {
        Principal::Local => "anonymous".to_owned(),
        Principal::Token { id, .. } => id.clone(),
    };
    let pusher = format!("{who}@{}", peer.ip());
    rpc(state, path, headers, body, Service::ReceivePack, RepoKind::Application, Some(pusher)).await
}

async fn rpc(
    State(state): State<AppState>,
    Path(segments): RepoPath,
    headers: HeaderMap,
    body: Body,
    service: Service,
    kind: RepoKind,
    pusher: Option<String>,
) -> Result<Response, HttpError> {
    let expected = format!("application/x-{}-request", service.name());
    let got = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if got != expected {
        return Err(TransportError::WrongContentType { expected, got: got.to_owned() }.into());
    }
    let gzip = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => return Err(TransportError::WrongEncoding(other.to_owned()).into()),
    };
    let limit = state.settings.limits.max_request_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(TransportError::TooLarge { limit }.into());
    }
    let id = RepoId::new(&segments.0, &segments.1, &segments.2).ok();
    let repo = repo_path(&state, kind, segments).await?;
    let mut hook_channel = None;
    let mut on_exit: Option<process::OnExit> = None;
    let mut config = Vec::new();
    // A push's head says what it asks before git starts: a dry run gets git's proc-receive
    // step, which answers its refs without moving them (hook::proc_receive).
    let (body, dry_run) = if service == Service::ReceivePack {
        // The head comes first in the body; a client that does not send it in time is cut off.
        let head = process::RequestBody::read_head(body, gzip, limit);
        let body = tokio::time::timeout(state.settings.limits.git_timeout, head).await.map_err(|_| {
            TransportError::ClientGone(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the push's head did not arrive",
            ))
        })??;
        let dry_run = body.head.as_ref().is_some_and(|h| h.has_option("dry-run"));
        (body, dry_run)
    } else {
        (process::RequestBody::new(body, gzip), false)
    };
    if dry_run {
        config.push("receive.procReceiveRefs=refs/".to_owned());
    }
    if let (Service::ReceivePack, Some(id)) = (service, id) {
        // Bounded pushes in flight per account: one tenant cannot take every git process.
        let slot = state.push_slots.acquire(&id.account)?;
        // The push is checked in this process, over the hook channel; its deployments are
        // reserved by the checks and become real when git is done.
        let push = state.next_push_id();
        state.deployer.push_started(&push);
        let (ours, gits) = crate::hook::channel::pair().map_err(TransportError::Spawn)?;
        hook_channel = Some(gits);
        let context = crate::hook::channel::Context {
            id,
            repo_path: repo.clone(),
            packages: state.packages.clone(),
            settings: state.settings.hook.clone(),
            dry_run_answered: dry_run,
            server: Box::new(super::push_server::InServer {
                deployer: state.deployer.clone(),
                base_url: state.base_url.clone(),
                pusher: pusher.unwrap_or_else(|| "unknown".to_owned()),
                push: push.clone(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        tokio::spawn(crate::hook::channel::serve(ours, context));
        let deployer = state.deployer.clone();
        let busy = state.settings.hook.checks.pool.as_ref().map(crate::sandbox::Pool::busy);
        let started = std::time::Instant::now();
        on_exit = Some(Box::new(move |ok: bool| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            Box::pin(async move {
                drop((slot, busy));
                let git_ms = started.elapsed().as_secs_f64() * 1e3;
                deployer.push_finished(&push, ok).await;
                tracing::debug!(push, ok, git_ms, ms = started.elapsed().as_secs_f64() * 1e3, "push finished");
            })
        }));
    }
    state.metrics.git_request(service);
    let inv = process::Invocation {
        settings: &state.settings,
        service,
        repo: &repo,
        protocol: protocol(&headers),
        hook_channel,
        config,
    };
    let body = inv.rpc(body, on_exit).await?;
    Ok(no_cache(body.into_response(), format!("application/x-{}-result", service.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_well_formed_protocol_headers_reach_git() {
        let mut h = HeaderMap::new();
        h.insert("git-protocol", HeaderValue::from_static("version=2"));
        assert_eq!(protocol(&h).as_deref(), Some("version=2"));
        h.insert("git-protocol", HeaderValue::from_static("version=2;rm -rf"));
        assert_eq!(protocol(&h), None);
    }
}
