//! Packages: the installed ones, and installing one from an uploaded module-source archive.

use std::io::Read;
use std::path::{Component, Path};

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;

use super::{blocking, page, Page, PageQuery};
use crate::packages::{PackageError, PackageStore};
use crate::web::error::HttpError;
use crate::web::query::{package, Package};
use crate::web::state::AppState;

/// The largest module-source archive accepted (compressed, and unpacked).
pub const MAX_ARCHIVE: usize = 16 << 20;
const MAX_ENTRIES: usize = 2_000;

pub async fn list(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Result<Json<Page<Package>>, HttpError> {
    let store = PackageStore::new(&state.settings.data_dir);
    let all = blocking(move || Ok(store.catalog().all().iter().filter_map(|n| package(&store, n)).collect())).await?;
    Ok(Json(page(all, &q)))
}

/// Installs a package from a `.tar.gz` of its module source folder (the files at the top, or
/// in one top-level folder), like `devpop package add`.
pub async fn install(
    State(state): State<AppState>,
    Extension(principal): Extension<crate::auth::Principal>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Package>), HttpError> {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !matches!(ct, "application/gzip" | "application/x-gzip" | "application/x-tar+gzip" | "application/octet-stream")
    {
        return Err(HttpError::api(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the module source as a .tar.gz (Content-Type: application/gzip)",
        ));
    }
    let body = read_archive(&headers, body).await?;
    let store = PackageStore::new(&state.settings.data_dir);
    let pkg = blocking(move || {
        let dir = tempfile::tempdir().map_err(HttpError::from)?;
        unpack(&body, dir.path()).map_err(|m| HttpError::bad_request("invalid_archive", m))?;
        let root = source_root(dir.path());
        let installed = store.add(&root).map_err(|e| install_error(e, &root))?;
        package(&store, &installed.descriptor.metadata.name)
            .ok_or_else(|| HttpError::internal("installed package unreadable"))
    })
    .await?;
    super::audit_action(&state, &principal, peer, "package.install", crate::auth::ALL_ACCOUNTS, &pkg.name, &pkg.image)
        .await;
    Ok((StatusCode::CREATED, Json(pkg)))
}

fn too_large() -> HttpError {
    HttpError::api(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "the archive is over 16 MiB ({MAX_ARCHIVE} bytes); a module source is small: leave build output and \
             dependencies out of it"
        ),
    )
}

/// The uploaded archive, up to [`MAX_ARCHIVE`] bytes: refused by its `Content-Length` before
/// anything is read, or as soon as the body runs over.
async fn read_archive(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, HttpError> {
    use futures_util::StreamExt;
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ARCHIVE as u64) {
        return Err(too_large());
    }
    let mut archive = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| HttpError::bad_request("invalid_body", format!("the upload broke off: {e}")))?;
        if archive.len() + chunk.len() > MAX_ARCHIVE {
            return Err(too_large());
        }
        archive.extend_from_slice(&chunk);
    }
    Ok(archive)
}

/// A failed install, told in the archive's own terms: the server's scratch folder (a
/// `/tmp/.tmpXXXX`) and the data dir are never named.
fn install_error(e: PackageError, root: &Path) -> HttpError {
    match e {
        PackageError::Exists(_) => HttpError::conflict(e.to_string()),
        PackageError::Invalid { problems, .. } => HttpError::unprocessable(
            "invalid_package",
            format!("the archive is not a module package:\n  {}", problems.join("\n  ")),
        ),
        PackageError::Io { ref path, ref source } => match path.strip_prefix(root) {
            Ok(rel) => HttpError::unprocessable("invalid_package", format!("{}: {source}", rel.display())),
            Err(_) => {
                tracing::error!(error = %e, "installing a package");
                HttpError::internal(format!("installing the package: {source}"))
            }
        },
        e => {
            tracing::error!(error = %e, "installing a package");
            HttpError::internal("installing the package failed; see the server log")
        }
    }
}

/// The folder holding `.section-proxy.yaml`: the top, or its only folder.
fn source_root(dir: &Path) -> std::path::PathBuf {
    if dir.join(crate::packages::descriptor::FILE).exists() {
        return dir.to_owned();
    }
    let entries: Vec<_> = std::fs::read_dir(dir).map(|d| d.flatten().collect()).unwrap_or_default();
    match entries.as_slice() {
        [only] if only.path().is_dir() => only.path(),
        _ => dir.to_owned(),
    }
}

/// Unpacks a hostile .tar.gz: regular files and folders only, relative paths without `..`,
/// bounded in entries and unpacked size; links and devices are refused.
fn unpack(archive: &[u8], into: &Path) -> Result<(), String> {
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz.take(MAX_ARCHIVE as u64 * 4));
    let mut total = 0u64;
    for (n, entry) in tar.entries().map_err(|e| format!("not a tar.gz: {e}"))?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let mut entry = entry.map_err(|e| format!("not a tar.gz: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!("{}: paths must stay inside the archive", path.display()));
        }
        let kind = entry.header().entry_type();
        let target = into.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        } else if kind.is_file() {
            total += entry.size();
            if total > MAX_ARCHIVE as u64 {
                return Err(format!("unpacks to more than {MAX_ARCHIVE} bytes"));
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let mut content = Vec::new();
            entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
            std::fs::write(&target, content).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            let exec = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(exec)).map_err(|e| e.to_string())?;
        } else {
            return Err(format!(
                "{}: only regular files and folders are allowed (no links or devices)",
                path.display()
            ));
        }
    }
    Ok(())
}
