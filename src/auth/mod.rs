//! Access control: API tokens (stored only as SHA-256 hashes), who may do what, and the
//! middleware that enforces it on git, the API and the console.
//!
//! A token acts on its account only (an admin token on every account, and on server-wide things
//! such as packages); a read-only token can clone, fetch and read but not push or change.
//! Git takes the token as the Basic-auth password (any username; Section's convention is
//! `section-token`); the API also takes `Authorization: Bearer` and the `section-token` header;
//! the console logs in with a token and keeps a session cookie.

pub mod limits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every account (admin tokens).
pub const ALL_ACCOUNTS: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A short public id (`tok_...`), for listing and revoking.
    pub id: String,
    /// The account it acts on, or `*`.
    pub account: String,
    pub read_only: bool,
    pub created_at: Timestamp,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked: bool,
    /// SHA-256 of the token, hex. The token itself is never stored.
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("token store {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("no token {0}")]
    NotFound(String),
    #[error("{0} is the last admin token: create another admin token first (devpop token create --admin), then revoke this one")]
    LastAdmin(String),
    #[error("a token's lifetime of {0} seconds is out of range: give 1 second to 10 years ({MAX_LIFETIME_SECS} seconds), or none for no expiry")]
    Lifetime(u64),
}

/// The longest lifetime a token may be given: 10 years.
pub const MAX_LIFETIME_SECS: u64 = 10 * 366 * 86_400;

/// When a token given `lifetime_secs` from `now` expires: 1 second to 10 years, so the time
/// can neither overflow nor be already past.
pub fn expiry(now: Timestamp, lifetime_secs: u64) -> Result<Timestamp, AuthError> {
    if !(1..=MAX_LIFETIME_SECS).contains(&lifetime_secs) {
        return Err(AuthError::Lifetime(lifetime_secs));
    }
    now.checked_add(jiff::SignedDuration::from_secs(lifetime_secs as i64))
        .map_err(|_| AuthError::Lifetime(lifetime_secs))
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off (the local default): everything is allowed.
    Local,
    Token {
        id: String,
        account: String,
        read_only: bool,
    },
}

impl Principal {
    pub fn may_read(&self, account: &str) -> bool {
        match self {
            Principal::Local => true,
            Principal::Token { account: a, .. } => a == ALL_ACCOUNTS || a == account,
        }
    }

    pub fn may_write(&self, account: &str) -> bool {
        self.may_read(account) && !matches!(self, Principal::Token { read_only: true, .. })
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Local => true,
            Principal::Token { account, read_only, .. } => account == ALL_ACCOUNTS && !read_only,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Principal::Local => "local".to_owned(),
            Principal::Token { id, account, .. } => format!("{id} ({account})"),
        }
    }
}

pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The tokens of a data dir (`tokens.json`), re-read when the file changes (the CLI writes it).
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<TokenRecord>)>,
}

impl TokenStore {
    pub fn new(data_dir: &Path) -> Self {
        TokenStore { path: data_dir.join("tokens.json"), cache: Mutex::new((None, Vec::new())) }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
        move |source| AuthError::Io { path: self.path.clone(), source }
    }

    pub fn list(&self) -> Result<Vec<TokenRecord>, AuthError> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock().expect("token cache");
        if cache.0 != mtime || mtime.is_none() {
            let records = match std::fs::read(&self.path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| AuthError::Corrupt { path: self.path.clone(), message: e.to_string() })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(self.io()(e)),
            };
            *cache = (mtime, records);
        }
        Ok(cache.1.clone())
    }

    fn save(&self, records: &[TokenRecord]) -> Result<(), AuthError> {
        use std::io::Write;
        let dir = self.path.parent().expect("tokens.json has a parent");
        std::fs::create_dir_all(dir).map_err(self.io())?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(self.io())?;
        tmp.write_all(&serde_json::to_vec_pretty(records).expect("tokens serialise")).map_err(self.io())?;
        tmp.persist(&self.path).map_err(|e| self.io()(e.error))?;
        *self.cache.lock().expect("token cache") = (None, Vec::new());
        Ok(())
    }

    /// Makes a token; returns its record and the token itself (shown once, never stored).
    pub fn create(
        &self,
        account: &str,
        read_only: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<(TokenRecord, String), AuthError> {
        let token = format!("dp_{}", random_hex(32).map_err(self.io())?);
        let record = TokenRecord {
            id: format!("tok_{}", random_hex(6).map_err(self.io())?),
            account: account.to_owned(),
            read_only,
            created_at: Timestamp::now(),
            expires_at,
            revoked: false,
            hash: hash(&token),
        };
        let mut all = self.list()?;
        all.push(record.clone());
        self.save(&all)?;
        Ok((record, token))
    }

    /// Revokes a token; the last valid admin token cannot be (nobody could manage tokens or
    /// packages over the API any more).
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, AuthError> {
        let mut all = self.list()?;
        let now = Timestamp::now();
        let admin = |r: &TokenRecord| {
            r.account == ALL_ACCOUNTS && !r.read_only && !r.revoked && r.expires_at.is_none_or(|e| e > now)
        };
        let target = all.iter().find(|r| r.id == id).ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
        if admin(target) && !all.iter().any(|r| r.id != id && admin(r)) {
            return Err(AuthError::LastAdmin(id.to_owned()));
        }
        let r = all.iter_mut().find(|r| r.id == id).ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
        r.revoked = true;
        let r = r.clone();
        self.save(&all)?;
        Ok(r)
    }

    /// The principal a presented token stands for, if it is valid now.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let h = hash(token);
        let now = Timestamp::now();
        self.list()
            .ok()?
            .into_iter()
            .find(|r| r.hash == h && !r.revoked && r.expires_at.is_none_or(|e| e > now))
            .map(|r| Principal::Token { id: r.id, account: r.account, read_only: r.read_only })
    }
}

/// Console sessions: an opaque random id in an HttpOnly cookie, mapped to the token it was
/// opened with (in memory: a restart logs everyone out). A session ends `lifetime` after it was
/// opened, or when unused for `idle`, whatever its cookie says; at most [`MAX_SESSIONS`] are
/// kept (the least recently used go first).
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
    idle: Duration,
}

struct Session {
    token: String,
    opened: Instant,
    used: Instant,
}

pub const MAX_SESSIONS: usize = 10_000;

impl Default for Sessions {
    fn default() -> Self {
        let limits = crate::settings::Limits::default();
        Sessions::new(limits.session_lifetime, limits.session_idle)
    }
}

impl Sessions {
    pub fn new(lifetime: Duration, idle: Duration) -> Self {
        Sessions { by_id: Mutex::new(HashMap::new()), lifetime, idle }
    }

    /// The session's lifetime: the cookie's `Max-Age`.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.opened) < self.lifetime && now.duration_since(s.used) < self.idle
    }

    pub fn open(&self, token: &str) -> Result<String, std::io::Error> {
        let id = random_hex(32)?;
        let now = Instant::now();
        let mut all = self.by_id.lock().expect("sessions");
        if all.len() >= MAX_SESSIONS {
            all.retain(|_, s| self.live(s, now));
            if all.len() >= MAX_SESSIONS {
                let oldest = all.iter().min_by_key(|(_, s)| s.used).map(|(id, _)| id.clone());
                oldest.map(|id| all.remove(&id));
            }
        }
        all.insert(id.clone(), Session { token: token.to_owned(), opened: now, used: now });
        Ok(id)
    }

    /// The token of a live session (and the session counts as used now).
    pub fn token(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        let mut all = self.by_id.lock().expect("sessions");
        let session = all.get_mut(id)?;
        if !self.live(session, now) {
            all.remove(id);
            return None;
        }
        session.used = now;
        Some(session.token.clone())
    }

    pub fn close(&self, id: &str) {
        self.by_id.lock().expect("sessions").remove(id);
    }
}

/// The console session's cookie.
pub const SESSION_COOKIE: &str = "devpop_session";

/// A cookie's value.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(axum::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookies| {
        cookies.split(';').find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
    })
}

/// The token a request presents: Basic password, Bearer, or the `section-token` header.
pub fn presented_token(headers: &axum::http::HeaderMap) -> Option<String> {
    use base64::Engine;
    if let Some(v) = headers.get("section-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    let auth = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(b) = auth.strip_prefix("Bearer ") {
        return Some(b.trim().to_owned());
    }
    let basic = auth.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_owned())
}

/// The token in an `access_token` query parameter (Aperture's `keyInQuery` scheme).
pub fn query_token(uri: &axum::http::Uri) -> Option<String> {
    let axum::extract::Query(mut q) = axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    q.remove("access_token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lifetime_is_one_second_to_ten_years() {
        let now = Timestamp::now();
        assert_eq!(expiry(now, 60).unwrap(), now + jiff::SignedDuration::from_secs(60));
        assert!(expiry(now, MAX_LIFETIME_SECS).unwrap() > now);
        for out in [0, MAX_LIFETIME_SECS + 1, i64::MAX as u64, u64::MAX] {
            assert!(matches!(expiry(now, out), Err(AuthError::Lifetime(n)) if n == out), "{out}");
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_verify_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (rec, token) = store.create("9999", false, None).unwrap();
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!file.contains(&token), "the token itself is never stored");
        assert!(file.contains(&hash(&token)));
        assert_eq!(
            store.verify(&token),
            Some(Principal::Token { id: rec.id.clone(), account: "9999".into(), read_only: false })
        );
        assert_eq!(store.verify("dp_wrong"), None);
        store.revoke(&rec.id).unwrap();
        assert_eq!(store.verify(&token), None);
        let (_, old) = store.create("1", true, Some(Timestamp::now() - jiff::SignedDuration::from_secs(1))).unwrap();
        assert_eq!(store.verify(&old), None, "expired");
    }

    #[test]
    fn scopes() {
        let t = |account: &str, read_only| Principal::Token { id: "t".into(), account: account.into(), read_only };
        assert!(t("1", false).may_write("1") && !t("1", false).may_read("2"));
        assert!(t("1", true).may_read("1") && !t("1", true).may_write("1"));
        assert!(t("*", false).may_write("2") && t("*", false).is_admin() && !t("1", false).is_admin());
    }

    #[test]
    fn tokens_come_from_basic_bearer_or_the_section_token_header() {
        use axum::http::{HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic c2VjdGlvbi10b2tlbjpkcF9hYmM=")); // section-token:dp_abc
        assert_eq!(presented_token(&h).as_deref(), Some("dp_abc"));
        h.insert("authorization", HeaderValue::from_static("Bearer dp_xyz"));
        assert_eq!(presented_token(&h).as_deref(), Some("dp_xyz"));
        h.insert("section-token", HeaderValue::from_static("dp_hdr"));
        assert_eq!(presented_token(&h).as_deref(), Some("dp_hdr"));
        let uri = axum::http::Uri::from_static("/api/v1/user?pageName=x&access_token=dp_q%2Bz");
        assert_eq!(query_token(&uri).as_deref(), Some("dp_q+z"));
        assert_eq!(query_token(&axum::http::Uri::from_static("/api/v1/user?pageName=x")), None);
    }
}
