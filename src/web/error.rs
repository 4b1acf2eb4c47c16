//! The one place where errors become HTTP responses.
//!
//! Every handler returns `Result<_, HttpError>`; each module's error converts into it here, with
//! its status. Bodies are `text/plain`: git shows a text/plain error body to the user as
//! `remote:` lines, so a failed clone or push says why instead of a bare status code.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::transport::TransportError;

/// Is `path` on Aperture's surface (errors there are `{"message"}`)?
pub fn is_aperture_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/") else { return false };
    let first = rest.split('/').next().unwrap_or("");
    matches!(first, "account" | "user" | "stack" | "proxytemplate" | "help" | "origin")
}

/// How errors look at a path: Aperture's `{"message"}` on its paths, devpop's
/// `{"error": {"code", "message"}}` elsewhere under `/api/`, text (git's `remote:` lines, the
/// console, health) everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Aperture,
    Api,
    Text,
}

impl Shape {
    pub fn of(path: &str) -> Shape {
        if is_aperture_path(path) {
            Shape::Aperture
        } else if path.starts_with("/api/") {
            Shape::Api
        } else {
            Shape::Text
        }
    }
}

/// The answer to an error at `path`, in that path's [`Shape`].
pub fn at_path(path: &str, status: StatusCode, message: impl Into<String>) -> Response {
    match Shape::of(path) {
        Shape::Aperture => aperture_response(status, message, None),
        Shape::Api => HttpError::api(status, code_of(status), message).into_response(),
        Shape::Text => HttpError::new(status, message).into_response(),
    }
}

/// An error in Aperture's shape (`{"message": ...}`, Aperture's ErrorModel): the auth
/// middleware's 401 and 403 on Aperture's paths, and Aperture's own handlers.
pub fn aperture_response(status: StatusCode, message: impl Into<String>, diagnostics: Option<Vec<String>>) -> Response {
    let message = scrub(&message.into());
    let mut body = serde_json::json!({ "message": message });
    if let Some(lines) = diagnostics {
        body["diagnostics"] = lines.into();
    }
    (status, axum::Json(body)).into_response()
}

#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    /// A stable machine-readable code (API responses), e.g. `not_found`.
    pub code: &'static str,
    pub message: String,
    /// API errors are JSON (`{"error": {"code", "message"}}`); git's are text/plain.
    pub json: bool,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError { status, code: code_of(status), message: message.into(), json: false }
    }

    /// An error of the REST API.
    pub fn api(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into(), json: true }
    }
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}

/// Folders of this server (the data dir) that answers never name: a message that holds one
/// says the path inside it instead.
static SERVER_ROOTS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Registers a folder whose absolute path answers must not show (`Server::bind`: the data dir).
pub fn hide_server_path(root: &std::path::Path) {
    let root = root.to_string_lossy().trim_end_matches('/').to_owned();
    let mut roots = SERVER_ROOTS.write().expect("server roots");
    if !root.is_empty() && !roots.contains(&root) {
        roots.push(root);
    }
}

/// A message as a client may see it: the data dir's prefix, scratch folders (`/tmp/.tmpXXXX/`,
/// the sandboxes' `/dev/shm/devpop-<uid>-<pid>/<run>/`) and the paths in them reduced to what
/// is inside, so an error names the file, never where the server keeps it.
pub fn scrub(message: &str) -> String {
    let mut out = message.to_owned();
    for root in SERVER_ROOTS.read().expect("server roots").iter() {
        out = out.replace(&format!("{root}/"), "").replace(root.as_str(), "the data dir");
    }
    let tmp = std::env::temp_dir().to_string_lossy().trim_end_matches('/').to_owned();
    for (prefix, components) in [(format!("{tmp}/.tmp"), 1), ("/dev/shm/devpop-".to_owned(), 2)] {
        while let Some(at) = out.find(&prefix) {
            let mut end = at + prefix.len();
            for _ in 0..components {
                end = out[end..].find('/').map_or(out.len(), |slash| end + slash + 1);
            }
            out.replace_range(at..end, "");
        }
    }
    out
}

impl IntoResponse for HttpError {
    fn into_response(mut self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        self.message = scrub(&self.message);
        if self.json {
            let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
            return (self.status, axum::Json(body)).into_response();
        }
        let body = format!("devpop: {}\n", self.message);
        (self.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }
}

/// The whole answer to a connection beyond `--max-connections`, written before it is closed
/// (the server reads nothing from it, so it is raw bytes, not a response of the router).
pub fn over_capacity(max: usize) -> Vec<u8> {
    let body = format!("devpop: too many connections (over {max}); retry in a moment\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl From<crate::auth::AuthError> for HttpError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as E;
        match &e {
            E::NotFound(_) => HttpError::api(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            E::LastAdmin(_) => HttpError::api(StatusCode::CONFLICT, "last_admin", e.to_string()),
            // The token store's path is the server's business.
            E::Io { source, .. } => {
                tracing::error!(error = %e, "token store");
                HttpError::api(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the token store: {source}"))
            }
            E::Corrupt { .. } => {
                tracing::error!(error = %e, "token store");
                HttpError::api(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the token store is unreadable")
            }
        }
    }
}

impl From<crate::applying::deployer::DeployError> for HttpError {
    fn from(e: crate::applying::deployer::DeployError) -> Self {
        use crate::applying::deployer::DeployError as E;
        match &e {
            E::BadName(_) => HttpError::api(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()),
            E::Record(crate::records::RecordError::NotFound(_)) => {
                HttpError::api(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            _ => HttpError::api(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<TransportError> for HttpError {
    fn from(e: TransportError) -> Self {
        use TransportError as E;
        let status = match &e {
            E::BadName(_) | E::BadBody(_) | E::ClientGone(_) => StatusCode::BAD_REQUEST,
            E::NoRepo(_) | E::NothingRendered(_) => StatusCode::NOT_FOUND,
            E::NotSmart | E::ReadOnly => StatusCode::FORBIDDEN,
            E::WrongContentType { .. } | E::WrongEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::TooManyPushes { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::Spawn(_) | E::Pipe(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError::new(status, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RepoId;

    #[test]
    fn missing_repo_is_a_404_that_names_the_create_command() {
        let id = RepoId::new("1", "2", "site").unwrap();
        let e = HttpError::from(TransportError::NoRepo(id));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.message.contains("devpop app create 1 2 site"), "{}", e.message);
    }

    #[test]
    fn answers_name_no_server_folder() {
        hide_server_path(std::path::Path::new("/var/lib/devpop-test-data/"));
        let tmp = std::env::temp_dir().to_string_lossy().trim_end_matches('/').to_owned();
        for (said, seen) in [
            (
                "deployment log /var/lib/devpop-test-data/deployments.jsonl: denied",
                "deployment log deployments.jsonl: denied",
            ),
            ("cannot lock /var/lib/devpop-test-data", "cannot lock the data dir"),
            (&format!("{tmp}/.tmpA1b2C3/pkg/validate.sh: missing"), "pkg/validate.sh: missing"),
            ("/dev/shm/devpop-0-31585/.tmpXyZ/config/a.json: bad", "config/a.json: bad"),
            ("nothing to hide", "nothing to hide"),
        ] {
            assert_eq!(scrub(said), seen);
        }
        let r = HttpError::api(StatusCode::INTERNAL_SERVER_ERROR, "internal", "/var/lib/devpop-test-data/x: no");
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(r.into_response().into_body(), 1 << 16));
        let body = String::from_utf8(body.unwrap().unwrap().to_vec()).unwrap();
        assert!(body.contains("\"x: no\"") && !body.contains("/var/lib"), "{body}");
    }

    #[test]
    fn oversized_and_mistyped_requests_get_their_own_statuses() {
        assert_eq!(HttpError::from(TransportError::TooLarge { limit: 1 }).status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = TransportError::WrongContentType { expected: "a".into(), got: "b".into() };
        assert_eq!(HttpError::from(e).status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
