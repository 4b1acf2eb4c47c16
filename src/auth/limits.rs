//! Rate limits on the REST API: a token bucket per client (its token, or its address without
//! one). Past the limit: 429 with `Retry-After`, not a dropped connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http_error::HttpError;
use crate::server::AppState;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimiter { per_second: per_second.max(0.01), burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `client`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn take(&self, client: &str) -> Result<(), f64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() > 100_000 {
            buckets.clear(); // bounded memory under a flood of distinct clients
        }
        let (tokens, last) = buckets.entry(client.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / self.per_second)
        }
    }
}

pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let client = crate::auth::presented_token(req.headers())
        .map(|t| crate::auth::hash(&t))
        .or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()))
        .unwrap_or_default();
    match state.rate.take(&client) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let message = format!("too many API requests; retry in {:.1}s", wait);
            let mut r = if crate::api::aperture::is_aperture_path(req.uri().path()) {
                crate::api::aperture::error_response(StatusCode::TOO_MANY_REQUESTS, message)
            } else {
                HttpError::api(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response()
            };
            let secs = wait.ceil().max(1.0) as u64;
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&secs.to_string()).expect("digits"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let r = RateLimiter::new(1.0, 3.0);
        assert!(r.take("a").is_ok() && r.take("a").is_ok() && r.take("a").is_ok());
        let wait = r.take("a").unwrap_err();
        assert!(wait > 0.5 && wait <= 1.0, "{wait}");
        assert!(r.take("b").is_ok(), "clients have their own buckets");
    }
}
