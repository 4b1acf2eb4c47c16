//! The CLI as a client of a devpop server (`--server URL`, `DEVPOP_SERVER`): its REST API, with
//! a token from `--token`, `DEVPOP_TOKEN`, or git's credential helper (`git credential fill` for
//! the server's URL, asked once the server wants a token).
//!
//! Each request is bounded in time and in the size of the answer; errors say what the server
//! answered (its JSON error's message), never a Rust dump.

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::args::ClientArgs;

/// Longest one request may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read.
const MAX_ANSWER: usize = 64 << 20;
/// The longest line of a followed answer.
const MAX_LINE: usize = 1 << 20;
/// The most a list is paged through (pages of 500).
const MAX_PAGES: usize = 1000;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Client {
    base: String,
    token: RefCell<Option<String>>,
    /// git's credential helper was asked already (it is asked at most once).
    asked_helper: RefCell<bool>,
    /// The token came from --token or DEVPOP_TOKEN.
    given_token: bool,
    runtime: tokio::runtime::Runtime,
    http: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

/// Where a command works: a server, or a data dir on this machine.
pub enum Where {
    Server(Box<Client>),
    Data(PathBuf),
}

/// A path segment, percent-encoded (names are checked by the server too).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `environments/{env}` of an application, as an API path.
pub fn environment_path(account: &str, application: &str, env: &str) -> String {
    format!("/api/v1/accounts/{}/applications/{}/environments/{}", seg(account), seg(application), seg(env))
}

impl Client {
    /// The client of `--server`, or `None` when none is given.
    pub fn new(args: &ClientArgs) -> Result<Option<Client>> {
        let Some(server) = args.server.as_deref().map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
        let base = server.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = base
            .parse()
            .with_context(|| format!("--server {server:?} is not a URL; e.g. https://devpop.example.com"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            bail!("--server {server:?}: give an http:// or https:// URL, e.g. https://devpop.example.com");
        }
        let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(tls) => tls,
            Err(e) if uri.scheme_str() == Some("https") => {
                bail!(
                    "cannot check {base}'s certificate: this machine's CA certificates: {e} (install ca-certificates)"
                )
            }
            // An http:// server needs no CA certificates (a machine may have none).
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let https = tls.https_or_http().enable_http1().build();
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let token = args.token.clone().filter(|t| !t.is_empty());
        let given_token = token.is_some();
        Ok(Some(Client {
            base,
            token: RefCell::new(token),
            asked_helper: RefCell::new(false),
            given_token,
            runtime,
            http,
        }))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A JSON request; the answer's JSON (`null` for an empty answer). A non-2xx answer is an
    /// error with the server's message.
    pub fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.call(method, path, body)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.json(Method::GET, path, None)
    }

    /// Every item of a paged list (`{"items", "total"}`), following `?offset=`.
    pub fn all(&self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        for _ in 0..MAX_PAGES {
            let page = self.get(&format!("{path}{sep}limit=500&offset={}", items.len()))?;
            let got = page["items"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            let n = got.len();
            items.extend(got);
            if n == 0 || items.len() >= total {
                break;
            }
        }
        Ok(items)
    }

    /// A GET whose answer is bytes (an archive): the bytes, or the server's error.
    pub fn bytes(&self, path: &str) -> Result<Bytes> {
        let (status, answer) = self.send(&Method::GET, path, None)?;
        let (status, answer) = if status == StatusCode::UNAUTHORIZED && self.credential_from_helper() {
            self.send(&Method::GET, path, None)?
        } else {
            (status, answer)
        };
        if status.is_success() {
            return Ok(answer);
        }
        let value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        Err(self.failure(status, &Method::GET, path, &value, &answer))
    }

    /// A request with a body of `content_type`.
    pub fn call(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Value> {
        let (status, answer) = self.send(&method, path, body.as_ref())?;
        let (status, answer) = if status == StatusCode::UNAUTHORIZED && self.credential_from_helper() {
            self.send(&method, path, body.as_ref())?
        } else {
            (status, answer)
        };
        let value: Value =
            if answer.is_empty() { Value::Null } else { serde_json::from_slice(&answer).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(value);
        }
        Err(self.failure(status, &method, path, &value, &answer))
    }

    /// What an error answer means, in a sentence: the server's message, and what to do about a
    /// missing or refused token.
    fn failure(&self, status: StatusCode, method: &Method, path: &str, value: &Value, answer: &[u8]) -> anyhow::Error {
        let message = value["error"]["message"]
            .as_str()
            .or_else(|| value["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer[..answer.len().min(500)]).trim().to_owned());
        if status == StatusCode::UNAUTHORIZED && self.given_token {
            return anyhow::anyhow!("{} refused the token given (--token or DEVPOP_TOKEN): {message}", self.base);
        }
        if status == StatusCode::UNAUTHORIZED {
            return anyhow::anyhow!(
                "{} wants an API token: pass --token, set DEVPOP_TOKEN, or store it in git's credential helper for {} (the server said: {message})",
                self.base,
                self.base
            );
        }
        anyhow::anyhow!("{} answered {} to {method} {path}: {message}", self.base, status.as_u16())
    }

    /// A GET whose answer is read as it comes, a line at a time (`each` gets every line without
    /// its newline), for as long as the server sends: a followed log. Only the wait for the
    /// answer's head is bounded in time; each line is bounded in size.
    pub fn follow_lines(&self, path: &str, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut response = self.head_of(&url, path).await?;
            // No token yet and the server wants one: git's credential helper, once.
            if response.status() == StatusCode::UNAUTHORIZED && self.credential_from_helper() {
                response = self.head_of(&url, path).await?;
            }
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let answer = Limited::new(body, MAX_ANSWER).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                return Err(self.failure(status, &Method::GET, path, &value, &answer));
            }
            let mut pending: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| anyhow::anyhow!("reading the answer of {}: {e}", self.base))?;
                let Some(data) = frame.data_ref() else { continue };
                pending.extend_from_slice(data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    each(&line[..line.len() - 1])?;
                }
                anyhow::ensure!(pending.len() <= MAX_LINE, "{} sent a line over {MAX_LINE} bytes", self.base);
            }
            if !pending.is_empty() {
                each(&pending)?;
            }
            Ok(())
        })
    }

    /// Sends a GET of `url` and waits (bounded) for the answer's head.
    async fn head_of(&self, url: &str, path: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut request = Request::builder().method(Method::GET).uri(url).header("accept", "application/x-ndjson");
        if let Some(token) = self.token.borrow().as_deref() {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::new())).with_context(|| format!("{url} is not a usable URL"))?;
        tokio::time::timeout(TIMEOUT, self.http.request(request))
            .await
            .with_context(|| format!("{} did not answer GET {path} within {}s", self.base, TIMEOUT.as_secs()))?
            .with_context(|| format!("cannot reach {}", self.base))
    }

    fn send(&self, method: &Method, path: &str, body: Option<&(&str, Vec<u8>)>) -> Result<(StatusCode, Bytes)> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method.clone()).uri(&url).header("accept", "application/json");
        if let Some(token) = self.token.borrow().as_deref() {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let content = match body {
            Some((ct, bytes)) => {
                request = request.header(CONTENT_TYPE, *ct);
                Bytes::from(bytes.clone())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(content)).with_context(|| format!("{url} is not a usable URL"))?;
        self.runtime.block_on(async {
            let exchange = async {
                let response =
                    self.http.request(request).await.with_context(|| format!("cannot reach {}", self.base))?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the answer of {}: {e}", self.base))?
                    .to_bytes();
                Ok::<_, anyhow::Error>((status, body))
            };
            tokio::time::timeout(TIMEOUT, exchange).await.with_context(|| {
                format!("{} did not answer {method} {path} within {}s", self.base, TIMEOUT.as_secs())
            })?
        })
    }

    /// Asks git's credential helper for the server's password (the token), once, when no
    /// token was given; whether one was found.
    fn credential_from_helper(&self) -> bool {
        if self.token.borrow().is_some() || self.asked_helper.replace(true) {
            return false;
        }
        let token = git_credential(&self.base);
        let found = token.is_some();
        *self.token.borrow_mut() = token;
        found
    }
}

/// `git credential fill` for `url`: the password a helper has for it, if any. Never prompts.
pub fn git_credential(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri.authority()?.as_str().rsplit('@').next()?.to_owned();
    let input = format!("protocol={}\nhost={host}\n\n", uri.scheme_str()?);
    let mut child = Command::new("git")
        .args(["credential", "fill"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("password=").map(str::to_owned))
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(seg("Production"), "Production");
        assert_eq!(seg("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(environment_path("1", "app", "x/y"), "/api/v1/accounts/1/applications/app/environments/x%2Fy");
    }
}
