//! The one place where errors become HTTP responses.
//!
//! Every handler returns `Result<_, HttpError>`; each module's error converts into it here, with
//! its status. Bodies are `text/plain`: git shows a text/plain error body to the user as
//! `remote:` lines, so a failed clone or push says why instead of a bare status code.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::transport::TransportError;

#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError { status, message: message.into() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        let body = format!("devpop: {}\n", self.message);
        (self.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
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
    fn oversized_and_mistyped_requests_get_their_own_statuses() {
        assert_eq!(HttpError::from(TransportError::TooLarge { limit: 1 }).status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = TransportError::WrongContentType { expected: "a".into(), got: "b".into() };
        assert_eq!(HttpError::from(e).status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
