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

#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    /// A stable machine-readable code (API responses), e.g. `not_found`.
    pub code: &'static str,
    pub message: String,
    /// The checks' lines when a change was refused (Aperture's `diagnostics`).
    pub diagnostics: Option<Vec<String>>,
}

impl HttpError {
    /// An error whose code follows from its status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError { status, code: code_of(status), message: message.into(), diagnostics: None }
    }

    /// An error with its own code (the API's `error.code`).
    pub fn api(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into(), diagnostics: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        HttpError::api(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        HttpError::api(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        HttpError::api(StatusCode::CONFLICT, "exists", message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        HttpError::api(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A failure of the server's own (logged whole; the client is told what failed).
    pub fn internal(message: impl Into<String>) -> Self {
        HttpError::api(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn with_diagnostics(mut self, lines: Vec<String>) -> Self {
        self.diagnostics = Some(lines);
        self
    }

    /// The body and its content type in `shape`.
    fn body(&self, shape: Shape) -> (&'static str, String) {
        let mut json = match shape {
            Shape::Text => {
                let mut text = format!("devpop: {}\n", self.message);
                for line in self.diagnostics.iter().flatten() {
                    text.push_str(line);
                    text.push('\n');
                }
                return ("text/plain; charset=utf-8", text);
            }
            Shape::Aperture => serde_json::json!({ "message": self.message }),
            Shape::Api => serde_json::json!({ "error": { "code": self.code, "message": self.message } }),
        };
        if let Some(lines) = &self.diagnostics {
            match shape {
                Shape::Api => json["error"]["diagnostics"] = lines.clone().into(),
                _ => json["diagnostics"] = lines.clone().into(),
            }
        }
        ("application/json", json.to_string())
    }

    /// The response in `shape`.
    fn shaped(&self, shape: Shape, mut parts: axum::http::response::Parts) -> Response {
        let (content_type, body) = self.body(shape);
        parts.headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static(content_type));
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.extensions.insert(Shaped);
        Response::from_parts(parts, axum::body::Body::from(body))
    }
}

/// Marks a response whose error body is already in its path's shape.
#[derive(Debug, Clone, Copy)]
struct Shaped;

/// The largest error body of axum's own (a rejection's text) read to reshape it.
const MAX_REJECTION_BYTES: usize = 16 * 1024;

/// The middleware that makes everything the router answers with an error status speak its
/// path's [`Shape`]: the errors of handlers and middleware (an [`HttpError`] in the response),
/// and axum's own answers (the Query/Path/Json rejections' text, the 405 of a route without
/// the method), which it turns into an [`HttpError`] first. Other bodies (the console's HTML
/// pages) pass unchanged.
pub async fn shape_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.extensions().get::<Shaped>().is_some() {
        return response;
    }
    let shape = Shape::of(&path);
    if let Some(error) = response.extensions().get::<HttpError>().cloned() {
        let (parts, _) = response.into_parts();
        return error.shaped(shape, parts);
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(content_type.is_empty() || content_type.starts_with("text/plain")) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text =
        axum::body::to_bytes(body, MAX_REJECTION_BYTES).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let message = match text {
        Ok(text) if !text.is_empty() => text,
        // axum adds the Allow header after the middleware, on the way out.
        _ if status == StatusCode::METHOD_NOT_ALLOWED => {
            format!("{method} is not allowed at {path}; the Allow header lists the methods it answers")
        }
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    tracing::debug!(%status, %path, "{message}");
    HttpError::new(status, message).shaped(shape, parts)
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
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
    /// The error as text (git's `remote:` lines), carrying itself for [`shape_errors`], which
    /// puts it in its path's shape.
    fn into_response(mut self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::NOT_IMPLEMENTED {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        self.message = scrub(&self.message);
        if let Some(lines) = &mut self.diagnostics {
            lines.iter_mut().for_each(|line| *line = scrub(line));
        }
        let (content_type, body) = self.body(Shape::Text);
        let mut response = (self.status, [(header::CONTENT_TYPE, content_type)], body).into_response();
        response.extensions_mut().insert(self);
        response
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
            E::Lifetime(_) => HttpError::unprocessable("invalid_expiry", e.to_string()),
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
        deploy_error(&e)
    }
}

fn deploy_error(e: &crate::applying::deployer::DeployError) -> HttpError {
    use crate::applying::deployer::DeployError as E;
    match e {
        E::BadName(_) => HttpError::api(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()),
        E::Record(crate::records::RecordError::NotFound(_)) => {
            HttpError::api(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        E::Task(t) => task_failed(t),
        _ => HttpError::api(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
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

impl From<crate::names::NameError> for HttpError {
    fn from(e: crate::names::NameError) -> Self {
        HttpError::bad_request("invalid_name", e.to_string())
    }
}

impl From<crate::repos::RepoError> for HttpError {
    fn from(e: crate::repos::RepoError) -> Self {
        use crate::repos::RepoError as E;
        match &e {
            E::Exists(_) | E::ApplicationHasRepo { .. } => HttpError::conflict(e.to_string()),
            E::BadOrigin(_) => HttpError::bad_request("invalid_origin", e.to_string()),
            _ => HttpError::internal(e.to_string()),
        }
    }
}

impl From<crate::records::RecordError> for HttpError {
    fn from(e: crate::records::RecordError) -> Self {
        match &e {
            crate::records::RecordError::NotFound(_) => HttpError::not_found(e.to_string()),
            _ => HttpError::internal(e.to_string()),
        }
    }
}

/// libgit2 failing on a repo of the server's: the server's fault, never the client's.
impl From<git2::Error> for HttpError {
    fn from(e: git2::Error) -> Self {
        HttpError::internal(format!("git: {}", e.message()))
    }
}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        HttpError::internal(e.to_string())
    }
}

/// A blocking task that panicked or was cancelled: logged whole, answered without the panic's
/// text (a Rust message is no answer for a client).
impl From<tokio::task::JoinError> for HttpError {
    fn from(e: tokio::task::JoinError) -> Self {
        task_failed(&e)
    }
}

fn task_failed(e: &tokio::task::JoinError) -> HttpError {
    tracing::error!(error = %e, "a task of the server's failed");
    HttpError::internal("a task of the server's failed; the server's log has the details")
}

impl From<crate::source::SourceError> for HttpError {
    fn from(e: crate::source::SourceError) -> Self {
        HttpError::internal(e.to_string())
    }
}

impl From<crate::records::DbError> for HttpError {
    fn from(e: crate::records::DbError) -> Self {
        HttpError::internal(format!("the records database: {e}"))
    }
}

impl From<crate::applying::rendered_repo::ApplyError> for HttpError {
    fn from(e: crate::applying::rendered_repo::ApplyError) -> Self {
        HttpError::internal(e.to_string())
    }
}

impl From<crate::lifecycle::LifecycleError> for HttpError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as E;
        let e = match e {
            E::Edit(edit) => return HttpError::from(edit),
            e => e,
        };
        match &e {
            E::BadName(_) => HttpError::bad_request("invalid_name", e.to_string()),
            E::DefaultEnvironment(_) => HttpError::api(StatusCode::CONFLICT, "default_environment", e.to_string()),
            E::Refused(lines) => HttpError::unprocessable("refused", e.to_string()).with_diagnostics(lines.clone()),
            E::Deploy(d) => deploy_error(d),
            E::Task(t) => task_failed(t),
            E::Edit(_) => HttpError::internal(e.to_string()),
            E::NoDeployment(_) | E::NoEnvironment { .. } => HttpError::not_found(e.to_string()),
            E::OtherEnvironment { .. } | E::NotADeploy(_) | E::NotReady { .. } | E::CommitGone(_) => {
                HttpError::unprocessable("invalid_target", e.to_string())
            }
            E::NothingToRestore(_) => HttpError::api(StatusCode::CONFLICT, "nothing_to_restore", e.to_string()),
            E::Records(_) | E::Repo { .. } => HttpError::internal(e.to_string()),
        }
    }
}

impl From<crate::applying::logs::LogsError> for HttpError {
    fn from(e: crate::applying::logs::LogsError) -> Self {
        use crate::applying::logs::LogsError as E;
        match &e {
            E::NotHere(_) => HttpError::api(StatusCode::NOT_FOUND, "no_logs_here", e.to_string()),
            E::BadQuery(_) => HttpError::bad_request("invalid_query", e.to_string()),
            E::Unavailable(_) => HttpError::api(StatusCode::BAD_GATEWAY, "cluster_unavailable", e.to_string()),
        }
    }
}

/// Any failure of the server's own, for `map_err` where no typed conversion fits.
pub fn internal(e: impl std::fmt::Display) -> HttpError {
    HttpError::internal(e.to_string())
}

impl From<crate::edits::EditError> for HttpError {
    fn from(e: crate::edits::EditError) -> Self {
        use crate::edits::EditError as E;
        match &e {
            E::Exists(_) => HttpError::conflict(e.to_string()),
            E::Moved(_) => HttpError::api(StatusCode::CONFLICT, "moved", e.to_string()),
            E::NoEnvironment { .. } => HttpError::not_found(e.to_string()),
            E::Config { .. } => HttpError::unprocessable("invalid_config", e.to_string()),
            E::BadName(_) => HttpError::bad_request("invalid_name", e.to_string()),
            // A change refused by a push's checks: 400 with their lines (Aperture's answer).
            E::Refused(lines) => HttpError::bad_request("refused", e.to_string()).with_diagnostics(lines.clone()),
            E::Deploy(d) => deploy_error(d),
            E::Task(t) => task_failed(t),
            E::Git(_) | E::Check(_) => HttpError::internal(e.to_string()),
        }
    }
}

impl From<crate::environment_config::ConfigEditError> for HttpError {
    fn from(e: crate::environment_config::ConfigEditError) -> Self {
        use crate::environment_config::ConfigEditError as E;
        match &e {
            E::NoOutagePage { .. } | E::NotServed { .. } => HttpError::not_found(e.to_string()),
            E::Git(_) => HttpError::internal(e.to_string()),
            E::NoConfig | E::NoEnvironment(_) | E::BadPath(_) | E::BadHost(_) | E::AlternateLine(_) => {
                HttpError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
        }
    }
}

impl From<crate::packages::PackageError> for HttpError {
    fn from(e: crate::packages::PackageError) -> Self {
        use crate::packages::PackageError as E;
        match &e {
            E::NotInstalled(_) => HttpError::not_found(e.to_string()),
            E::Exists(_) => HttpError::conflict(e.to_string()),
            E::Invalid { .. } => HttpError::unprocessable("invalid_package", e.to_string()),
            E::Io { .. } => HttpError::internal(e.to_string()),
        }
    }
}

impl From<crate::checks::CheckError> for HttpError {
    fn from(e: crate::checks::CheckError) -> Self {
        HttpError::internal(e.to_string())
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
        let response = r.into_response();
        let (_, shaped) = response.extensions().get::<HttpError>().unwrap().body(Shape::Api);
        assert!(shaped.contains("\"x: no\"") && !shaped.contains("/var/lib"), "{shaped}");
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(response.into_body(), 1 << 16));
        let body = String::from_utf8(body.unwrap().unwrap().to_vec()).unwrap();
        assert_eq!(body, "devpop: x: no\n");
    }

    #[test]
    fn oversized_and_mistyped_requests_get_their_own_statuses() {
        assert_eq!(HttpError::from(TransportError::TooLarge { limit: 1 }).status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = TransportError::WrongContentType { expected: "a".into(), got: "b".into() };
        assert_eq!(HttpError::from(e).status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
