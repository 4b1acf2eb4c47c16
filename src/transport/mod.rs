//! The git transport: git's smart HTTP protocol at
//! `/account/<account>/application/<application>/<repo>.git`.
//!
//! It checks each request (names, service, content type, size, that the repo exists) and hands
//! it to a git process ([`process`], started by [`spawn`]). This module, [`process`] and
//! [`spawn`] are the only places that start git for the network.

pub mod advertise;
pub mod process;
pub mod request_head;
pub mod spawn;

use crate::names::{NameError, RepoId};

/// The two git services devpop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }

    /// The name on the wire, e.g. `git-receive-pack`.
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }

    /// The git subcommand, e.g. `receive-pack`.
    pub fn subcommand(self) -> &'static str {
        &self.name()[4..]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    BadName(#[from] NameError),
    #[error("no repository at {}; create it with: {}", .0.url_path(), .0.create_command())]
    NoRepo(RepoId),
    #[error("no manifests have been rendered for {} yet; they appear after the first accepted push", .0.url_path())]
    NothingRendered(RepoId),
    #[error("account {account} has {limit} pushes in progress already (the limit); push again in a moment")]
    TooManyPushes { account: String, limit: usize },
    #[error("the rendered repo is read-only: devpop writes it after each accepted push; push to the application's repo instead")]
    ReadOnly,
    #[error("devpop serves git's smart HTTP protocol only (service=git-upload-pack or git-receive-pack); use git 2.x")]
    NotSmart,
    #[error("expected Content-Type {expected}, got {got:?}")]
    WrongContentType { expected: String, got: String },
    #[error("unsupported Content-Encoding {0:?}; send the request plain or gzip-encoded")]
    WrongEncoding(String),
    #[error("the request is larger than this server's limit of {limit} bytes (DEVPOP_MAX_REQUEST_BYTES)")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    BadBody(String),
    #[error("the client went away: {0}")]
    ClientGone(std::io::Error),
    #[error("cannot start git: {0}")]
    Spawn(std::io::Error),
    #[error("reading from git: {0}")]
    Pipe(std::io::Error),
    #[error("{0}")]
    Internal(String),
}

/// The two kinds of repo served: an application's environment repo, and its rendered repo
/// (read-only: the manifests devpop publishes after each accepted push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Application,
    Rendered,
}

/// Counts the pushes in progress per account.
#[derive(Debug, Default)]
pub struct PushSlots {
    limit: usize,
    in_flight: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// A push's place; given back when dropped.
pub struct PushSlot {
    account: String,
    in_flight: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl PushSlots {
    pub fn new(limit: usize) -> Self {
        PushSlots { limit: limit.max(1), in_flight: Default::default() }
    }

    /// Refuses early (at `info/refs`, whose text/plain answer git shows as `remote:` lines) when
    /// the account has no free place; the place itself is taken by the push request.
    pub fn check(&self, account: &str) -> Result<(), TransportError> {
        let map = self.in_flight.lock().expect("push slots");
        match map.get(account) {
            Some(n) if *n >= self.limit => {
                Err(TransportError::TooManyPushes { account: account.to_owned(), limit: self.limit })
            }
            _ => Ok(()),
        }
    }

    pub fn acquire(&self, account: &str) -> Result<PushSlot, TransportError> {
        let mut map = self.in_flight.lock().expect("push slots");
        let n = map.entry(account.to_owned()).or_default();
        if *n >= self.limit {
            return Err(TransportError::TooManyPushes { account: account.to_owned(), limit: self.limit });
        }
        *n += 1;
        Ok(PushSlot { account: account.to_owned(), in_flight: self.in_flight.clone() })
    }
}

impl Drop for PushSlot {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().expect("push slots");
        if let Some(n) = map.get_mut(&self.account) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_map_to_git_subcommands() {
        assert_eq!(Service::from_name("git-receive-pack").unwrap().subcommand(), "receive-pack");
        assert_eq!(Service::UploadPack.subcommand(), "upload-pack");
        assert!(Service::from_name("git-upload-archive").is_none());
    }
}
