//! The receive-pack ref advertisement (`GET info/refs?service=git-receive-pack`), built
//! in-process.
//!
//! Every push starts with this request. git answers it by starting `git receive-pack
//! --advertise-refs`, which reads the refs and prints them with its capabilities. devpop reads
//! the refs with libgit2 instead, and takes the capabilities from the very git that will receive
//! the push: at start-up it runs that command once on a scratch repo configured like every
//! devpop repo, and keeps the capability list it printed. That saves one process per push while
//! the advertisement stays exactly what git itself would say.
//!
//! Only protocol v0 is answered here (what git uses for push); a client asking for v1 gets git.

use std::path::Path;
use std::process::Stdio;

use git2::Repository;

use super::TransportError;
use crate::settings::Settings;

#[derive(Debug, Clone)]
pub struct ReceivePackAdvertiser {
    /// e.g. `report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta
    /// push-options object-format=sha1 agent=git/2.47.3`
    capabilities: String,
}

impl ReceivePackAdvertiser {
    /// Learns the capabilities of `settings.git`'s receive-pack for a devpop repo.
    pub async fn probe(settings: &Settings) -> Result<Self, TransportError> {
        let scratch = tempfile::tempdir().map_err(TransportError::Spawn)?;
        let repo = scratch.path().join("probe.git");
        crate::repos::init_bare(&repo).map_err(|e| TransportError::Internal(format!("probe repo: {e}")))?;
        let out = super::process::git_command(settings)
            .args(["receive-pack", "--stateless-rpc", "--advertise-refs"])
            .arg(&repo)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(TransportError::Spawn)?;
        let text = String::from_utf8_lossy(&out.stdout);
        // `XXXX<zero-id> capabilities^{}\0<caps>\n0000`
        let capabilities = text
            .split_once('\0')
            .and_then(|(_, rest)| rest.split_once('\n'))
            .map(|(caps, _)| caps.to_owned())
            .filter(|_| out.status.success())
            .ok_or_else(|| {
                TransportError::Internal(format!(
                    "unexpected answer from `git receive-pack --advertise-refs`: {text:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            })?;
        Ok(ReceivePackAdvertiser { capabilities })
    }

    /// The advertisement for `repo`, as pkt-lines ending in a flush (blocking: libgit2).
    pub fn advertise(&self, repo: &Path) -> Result<Vec<u8>, git2::Error> {
        let repo = Repository::open_bare(repo)?;
        let mut refs = Vec::new();
        for r in repo.references()? {
            let r = r?;
            let Ok(name) = r.name() else { continue };
            let name = name.to_owned();
            // Symbolic refs are advertised with the object they resolve to, as git does.
            if let Some(oid) = r.resolve().ok().and_then(|r| r.target()) {
                refs.push((name, oid));
            }
        }
        refs.sort();
        let mut out = Vec::with_capacity(64 + refs.len() * 64);
        let zero = git2::Oid::ZERO_SHA1;
        let first =
            refs.first().map_or((zero.to_string(), "capabilities^{}".to_owned()), |(n, o)| (o.to_string(), n.clone()));
        pkt_line(&mut out, &format!("{} {}\0{}\n", first.0, first.1, self.capabilities));
        for (name, oid) in refs.iter().skip(1) {
            pkt_line(&mut out, &format!("{oid} {name}\n"));
        }
        out.extend_from_slice(b"0000");
        Ok(out)
    }
}

/// Appends one pkt-line (4 hex digits of length, then the payload).
pub fn pkt_line(out: &mut Vec<u8>, payload: &str) {
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn git_says(repo: &Path) -> Vec<u8> {
        let settings = Settings::new(std::env::temp_dir());
        super::super::process::git_command(&settings)
            .args(["receive-pack", "--stateless-rpc", "--advertise-refs"])
            .arg(repo)
            .output()
            .await
            .unwrap()
            .stdout
    }

    #[tokio::test]
    async fn matches_git_byte_for_byte_for_empty_and_busy_repos() {
        let settings = Settings::new(std::env::temp_dir());
        let adv = ReceivePackAdvertiser::probe(&settings).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.git");
        let repo = crate::repos::init_bare(&path).unwrap();
        assert_eq!(adv.advertise(&path).unwrap(), git_says(&path).await, "empty repo");

        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.find_tree(repo.treebuilder(None).unwrap().write().unwrap()).unwrap();
        let c1 = repo.commit(Some("refs/heads/Production"), &sig, &sig, "1", &tree, &[]).unwrap();
        let c1 = repo.find_commit(c1).unwrap();
        repo.commit(Some("refs/heads/Staging"), &sig, &sig, "2", &tree, &[&c1]).unwrap();
        repo.tag("v1", c1.as_object(), &sig, "annotated", false).unwrap();
        repo.reference("refs/heads/A-first", c1.id(), false, "x").unwrap();
        assert_eq!(
            String::from_utf8(adv.advertise(&path).unwrap()).unwrap(),
            String::from_utf8(git_says(&path).await).unwrap(),
            "branches and an annotated tag"
        );
    }
}
