//! Applying: where rendered environments go.
//!
//! The embedded default target is **render-only**: after an accepted push, the environment's
//! manifests are committed to the application's *rendered repo*
//! (`<data>/rendered/<account>/<application>/<repo>.git`, served read-only over HTTP at
//! `/rendered/account/<account>/application/<application>/<repo>.git`), one folder per
//! environment with a `kustomization.yaml`, so a GitOps engine (Argo CD, Flux) can sync a
//! cluster from it, and anyone can read exactly what devpop would apply.

use std::fs;
use std::path::{Path, PathBuf};

use git2::{Repository, Signature};

use crate::names::RepoId;
use crate::rendering::{self, Rendered};

pub const BRANCH: &str = "main";
/// Packs a rendered repo may collect before they are consolidated.
const MAX_PACKS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("rendered repo {path}: {source}")]
    Git { path: PathBuf, source: git2::Error },
    #[error("rendered repo {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl ApplyError {
    /// git's or the file system's reason without the server path (for users; the log has the path).
    pub fn reason(&self) -> String {
        let (path, reason) = match self {
            ApplyError::Git { path, source } => (path, source.message().to_owned()),
            ApplyError::Io { path, source } => (path, source.to_string()),
        };
        let path = path.display().to_string();
        reason.replace(&format!("{path}/"), "").replace(&path, "the rendered repo")
    }
}

/// The rendered repos of a data dir.
#[derive(Debug, Clone)]
pub struct RenderedRepos {
    root: PathBuf,
    yaml: std::sync::Arc<YamlCache>,
}

/// The YAML of rendered objects, by the SHA-1 of their JSON: most objects of a push are the
/// same as in the previous one, and YAML serialisation costs several times the render (JSON
/// is ten times cheaper).
#[derive(Debug, Default)]
struct YamlCache(std::sync::Mutex<std::collections::HashMap<[u8; 20], String>>);

/// Objects whose YAML is kept; the cache starts over beyond this.
const YAML_CACHE_MAX: usize = 4096;

impl YamlCache {
    fn get(&self, o: &rendering::Object) -> String {
        use sha1::Digest;
        let Ok(json) = serde_json::to_vec(o) else { return rendering::object_yaml(o) };
        let key: [u8; 20] = sha1::Sha1::digest(&json).into();
        if let Some(yaml) = self.0.lock().expect("yaml cache lock").get(&key) {
            return yaml.clone();
        }
        let yaml = rendering::object_yaml(o);
        let mut cache = self.0.lock().expect("yaml cache lock");
        if cache.len() >= YAML_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, yaml.clone());
        yaml
    }
}

/// One environment's folder: a file per object (`NN-kind-name.yaml`, in apply order) and a
/// `kustomization.yaml` listing them.
///
/// Every rendered object carries the commit label (which changes with every push); the files
/// store each object without it, and the kustomization's `labels` puts it back on every object
/// (metadata only: not on selectors or pod templates, as rendered). `kubectl apply -k` then
/// applies exactly the rendered objects, and an object a push does not change stays byte for
/// byte the same file (nothing new to store, a diff that shows what really changed).
pub fn environment_files(rendered: &Rendered) -> Vec<(String, String)> {
    environment_files_with(rendered, rendering::object_yaml)
}

/// `o` as its file stores it: without the commit label.
fn stored(o: &rendering::Object) -> rendering::Object {
    let mut o = o.clone();
    if let Some(labels) = o.metadata_mut().labels.as_mut() {
        labels.remove(rendering::LABEL_COMMIT);
    }
    o
}

fn environment_files_with(
    rendered: &Rendered,
    mut yaml: impl FnMut(&rendering::Object) -> String,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut resources = Vec::new();
    for (i, o) in rendered.objects.iter().enumerate() {
        let name = format!("{:02}-{}.yaml", i + 1, rendering::object_stem(o));
        files.push((name.clone(), yaml(&stored(o))));
        resources.push(name);
    }
    let mut k = String::from("# Rendered by devpop; apply with `kubectl apply -k .` or sync with a GitOps engine.\n");
    k.push_str("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n");
    if let Some(commit) = rendered.objects.iter().find_map(|o| o.commit_label()) {
        // The label every rendered object carries, kept here once (see above).
        k.push_str(&format!(
            "labels:\n  - pairs:\n      {}: \"{commit}\"\n    includeSelectors: false\n",
            rendering::LABEL_COMMIT
        ));
    }
    k.push_str("resources:\n");
    for r in &resources {
        k.push_str(&format!("  - {r}\n"));
    }
    files.push(("kustomization.yaml".to_owned(), k));
    files
}

const README: &str = "# Rendered manifests\n\n\
Written by devpop after every accepted push: one folder per environment (branch) of the\n\
application, each a kustomization of the environment's namespace. Do not edit: the next push\n\
replaces the folder. Apply a folder with `kubectl apply -k`: its kustomization puts the label\n\
`devpop.section.io/commit` (the commit rendered from) on every object.\n\n\
## The next-hop wiring\n\n\
Inside each module's pods, `next-hop` resolves to the ClusterIP of the next hop's Service\n\
(the next module, or `egress`): the pod's first init container, `next-hop`, runs the script of\n\
ConfigMap `devpop-next-hop`, which resolves the Service's name and writes the pod's hosts file\n\
into an emptyDir that every container mounts at `/etc/hosts`. The folders need nothing else:\n\
sync them with Argo CD or Flux (server-side apply: some ConfigMaps are large) or apply them\n\
with `kubectl apply --server-side -k`.\n";

/// A pack file, and where each object is in it.
struct Pack {
    bytes: Vec<u8>,
    /// Object id, offset of its entry, CRC-32 of its entry (header and data): what the index
    /// lists.
    entries: Vec<(git2::Oid, u64, u32)>,
}

/// `objects` (read from `odb`) as a pack file, each object whole: no delta search. A publish
/// adds a handful of small objects, for which libgit2's packbuilder (a delta window of 10) costs
/// more CPU than the bytes it saves; the repo is repacked properly when packs pile up.
fn pack(odb: &git2::Odb, objects: &[git2::Oid]) -> Result<Pack, git2::Error> {
    use sha1::Digest;
    use std::io::Write;
    let mut pack = Vec::with_capacity(16 * 1024);
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&u32::try_from(objects.len()).unwrap_or(u32::MAX).to_be_bytes());
    let mut entries = Vec::with_capacity(objects.len());
    // One compressor for all objects: setting one up costs more than compressing a small object.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    for id in objects {
        let start = pack.len();
        let object = odb.read(*id)?;
        let kind: u8 = match object.kind() {
            git2::ObjectType::Commit => 1,
            git2::ObjectType::Tree => 2,
            git2::ObjectType::Blob => 3,
            git2::ObjectType::Tag => 4,
            other => return Err(git2::Error::from_str(&format!("cannot pack a {other} object"))),
        };
        let data = object.data();
        // The entry header: type and size, seven bits of size per further byte.
        let mut size = data.len();
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let compressed =
            z.write_all(data).and_then(|_| z.reset(Vec::new())).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        pack.extend_from_slice(&compressed);
        let mut crc = flate2::Crc::new();
        crc.update(&pack[start..]);
        entries.push((*id, start as u64, crc.sum()));
    }
    let sum = sha1::Sha1::digest(&pack);
    pack.extend_from_slice(&sum);
    Ok(Pack { bytes: pack, entries })
}

impl Pack {
    /// The pack's trailer: the SHA-1 of everything before it, which also names the pack.
    fn checksum(&self) -> &[u8] {
        &self.bytes[self.bytes.len() - 20..]
    }

    /// The pack index (version 2) git and libgit2 read to find objects in the pack: a fan-out
    /// table by first byte, the sorted ids, their CRC-32s and offsets, the pack's checksum and
    /// its own.
    fn index(&self) -> Vec<u8> {
        use sha1::Digest;
        let mut entries = self.entries.clone();
        entries.sort_by_key(|(id, _, _)| *id);
        let mut idx = Vec::with_capacity(8 + 256 * 4 + entries.len() * 28 + 40);
        idx.extend_from_slice(&[0xff, b't', b'O', b'c']);
        idx.extend_from_slice(&2u32.to_be_bytes());
        let mut fanout = [0u32; 256];
        for (id, _, _) in &entries {
            fanout[usize::from(id.as_bytes()[0])] += 1;
        }
        let mut total = 0;
        for n in fanout {
            total += n;
            idx.extend_from_slice(&total.to_be_bytes());
        }
        for (id, _, _) in &entries {
            idx.extend_from_slice(id.as_bytes());
        }
        for (_, _, crc) in &entries {
            idx.extend_from_slice(&crc.to_be_bytes());
        }
        // Offsets past 2 GiB would need the 64-bit table; a publish is kilobytes.
        for (_, offset, _) in &entries {
            idx.extend_from_slice(&(*offset as u32).to_be_bytes());
        }
        idx.extend_from_slice(self.checksum());
        let sum = sha1::Sha1::digest(&idx);
        idx.extend_from_slice(&sum);
        idx
    }

    /// Writes `pack-<checksum>.pack` and then its `.idx` into `dir` (each to a temporary name
    /// first, read-only like git's): git and libgit2 see a pack once its index is there.
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let name: String = self.checksum().iter().map(|b| format!("{b:02x}")).collect();
        let index = self.index();
        for (ext, content) in [("pack", &self.bytes), ("idx", &index)] {
            let mut tmp = tempfile::Builder::new().prefix("tmp_pack_").tempfile_in(dir)?;
            tmp.write_all(content)?;
            tmp.as_file().set_permissions(fs::Permissions::from_mode(0o444))?;
            tmp.persist(dir.join(format!("pack-{name}.{ext}"))).map_err(|e| e.error)?;
        }
        Ok(())
    }
}

impl RenderedRepos {
    pub fn new(data_dir: &Path) -> Self {
        RenderedRepos { root: data_dir.join("rendered"), yaml: Default::default() }
    }

    pub fn path(&self, id: &RepoId) -> PathBuf {
        self.root.join(&id.account).join(&id.application).join(format!("{}.git", id.repo))
    }

    fn open(&self, id: &RepoId) -> Result<(Repository, fs::File), ApplyError> {
        let path = self.path(id);
        let io = |source| ApplyError::Io { path: path.clone(), source };
        fs::create_dir_all(&path).map_err(io)?;
        // One writer at a time (pushes to two environments may finish together).
        let lock = fs::File::create(path.with_extension("git.lock")).map_err(io)?;
        lock.lock().map_err(io)?;
        let git = |source| ApplyError::Git { path: path.clone(), source };
        let repo = match Repository::open_bare(&path) {
            Ok(r) => r,
            Err(_) => {
                let mut opts = git2::RepositoryInitOptions::new();
                opts.bare(true).external_template(false).initial_head(BRANCH);
                Repository::init_opts(&path, &opts).map_err(git)?
            }
        };
        Ok((repo, lock))
    }

    /// Creates an application's rendered repo (empty), so that its first deployment only adds
    /// to it: initialising a repo is most of a first publish's cost.
    pub fn prepare(&self, id: &RepoId) -> Result<(), ApplyError> {
        self.open(id).map(drop)
    }

    /// The objects published for an environment, by [`rendering::object_stem`] -> YAML; `None`
    /// when the environment has never been published.
    pub fn environment_objects(
        &self,
        id: &RepoId,
        environment: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ApplyError> {
        let path = self.path(id);
        let Ok(repo) = Repository::open_bare(&path) else { return Ok(None) };
        let git = |source| ApplyError::Git { path: path.clone(), source };
        let Ok(head) = repo.find_reference(&format!("refs/heads/{BRANCH}")) else { return Ok(None) };
        let tree = head.peel_to_tree().map_err(git)?;
        let Some(entry) = tree.get_name(environment) else { return Ok(None) };
        let folder = repo.find_tree(entry.id()).map_err(git)?;
        let mut out = std::collections::BTreeMap::new();
        for e in folder.iter() {
            let Ok(name) = e.name() else { continue };
            let Some(stem) = name.strip_suffix(".yaml").and_then(|n| n.split_once('-')).map(|(_, s)| s) else {
                continue;
            };
            if name == "kustomization.yaml" {
                continue;
            }
            let blob = repo.find_blob(e.id()).map_err(git)?;
            out.insert(stem.to_owned(), String::from_utf8_lossy(blob.content()).into_owned());
        }
        Ok(Some(out))
    }

    /// Replaces the environment's folder with `rendered` (or removes it, for `None`) in a new
    /// commit on `main`. Returns the new commit, or `None` when nothing changed.
    pub fn publish(
        &self,
        id: &RepoId,
        environment: &str,
        source_commit: &str,
        rendered: Option<&Rendered>,
    ) -> Result<Option<git2::Oid>, ApplyError> {
        let (repo, _lock) = self.open(id)?;
        let path = self.path(id);
        let git = |source| ApplyError::Git { path: path.clone(), source };
        // New objects go to memory first and then to disk as one pack: one file per object
        // (loose objects) costs far more than the render.
        let odb = repo.odb().map_err(git)?;
        let mempack = odb.add_new_mempack_backend(1000).map_err(git)?;
        let head = repo.find_reference(&format!("refs/heads/{BRANCH}")).ok().and_then(|r| r.peel_to_commit().ok());
        let base_tree = head.as_ref().map(|c| c.tree()).transpose().map_err(git)?;
        let mut root = repo.treebuilder(base_tree.as_ref()).map_err(git)?;
        // The objects this publish adds: packed below, without a delta search (see `pack`).
        let mut added = Vec::new();
        let mut blob = |content: &[u8]| -> Result<git2::Oid, git2::Error> {
            let id = git2::Oid::hash_object(git2::ObjectType::Blob, content)?;
            if !odb.exists(id) {
                repo.blob(content)?;
                added.push(id);
            }
            Ok(id)
        };
        let mut added_trees = Vec::new();
        let readme = blob(README.as_bytes()).map_err(git)?;
        root.insert("README.md", readme, 0o100644).map_err(git)?;
        match rendered {
            Some(rendered) => {
                let mut folder = repo.treebuilder(None).map_err(git)?;
                for (name, content) in environment_files_with(rendered, |o| self.yaml.get(o)) {
                    let blob = blob(content.as_bytes()).map_err(git)?;
                    folder.insert(&name, blob, 0o100644).map_err(git)?;
                }
                let folder = folder.write().map_err(git)?;
                added_trees.push(folder);
                root.insert(environment, folder, 0o040000).map_err(git)?;
            }
            None => {
                if root.get(environment).map_err(git)?.is_some() {
                    root.remove(environment).map_err(git)?;
                }
            }
        }
        let tree_id = root.write().map_err(git)?;
        if base_tree.as_ref().is_some_and(|t| t.id() == tree_id) {
            return Ok(None);
        }
        let tree = repo.find_tree(tree_id).map_err(git)?;
        let sig = Signature::now("devpop", "devpop@localhost").map_err(git)?;
        let message = match rendered {
            Some(r) => format!("{environment}: render of {source_commit}\n\nNamespace {}.\n", r.namespace),
            None => format!("{environment}: removed (branch deleted)\n"),
        };
        let parents: Vec<&git2::Commit> = head.iter().collect();
        let commit = repo.commit(None, &sig, &sig, &message, &tree, &parents).map_err(git)?;
        added.extend(added_trees);
        added.extend([tree_id, commit]);
        // Written as a pack with its index, by hand: libgit2's pack writer would parse the pack
        // again (inflating and hashing every object) to build the index this already knows.
        pack(&odb, &added)
            .map_err(git)?
            .write(&path.join("objects/pack"))
            .map_err(|source| ApplyError::Io { path: path.clone(), source })?;
        // The branch moves while the new objects are still in memory too (libgit2 checks that
        // the commit exists); only then are they dropped from memory.
        let parent = head.as_ref().map(|c| c.id());
        match parent {
            Some(p) => repo.reference_matching(&format!("refs/heads/{BRANCH}"), commit, true, p, &message),
            None => repo.reference(&format!("refs/heads/{BRANCH}"), commit, false, &message),
        }
        .map_err(git)?;
        mempack.reset().map_err(git)?;
        // One pack per publish: consolidate them once they pile up (off the push path: this
        // runs in the deployer).
        let packs = std::fs::read_dir(path.join("objects/pack"))
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".pack")).count())
            .unwrap_or(0);
        if packs > MAX_PACKS {
            let _ = std::process::Command::new("git")
                .arg("-C")
                .arg(&path)
                .args(["gc", "--quiet"])
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        Ok(Some(commit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use rendering::Object;

    fn rendered(data: &str) -> Rendered {
        let meta = |name: &str, ns: Option<&str>| ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            labels: Some([(rendering::LABEL_COMMIT.to_owned(), data.to_owned())].into()),
            ..Default::default()
        };
        let ns = Namespace { metadata: meta("ns", None), ..Default::default() };
        let cm = ConfigMap {
            metadata: meta("c", Some("ns")),
            data: Some([("k".to_owned(), data.to_owned())].into()),
            ..Default::default()
        };
        Rendered {
            namespace: "ns".into(),
            objects: vec![Object::Namespace(Box::new(ns)), Object::ConfigMap(Box::new(cm))],
        }
    }

    #[test]
    fn a_rendered_repo_that_cannot_be_written_fails_the_step_naming_it_without_a_server_path() {
        use crate::applying::{RenderOnly, Subject, Target, TargetError};
        let dir = tempfile::tempdir().unwrap();
        let repos = RenderedRepos::new(dir.path());
        let id = RepoId::new("1", "a", "r").unwrap();
        fs::create_dir_all(repos.path(&id).parent().unwrap()).unwrap();
        fs::write(repos.path(&id), "not a repo").unwrap();
        let subject = Subject {
            account: "1".into(),
            application: "a".into(),
            repo: "r".into(),
            environment: "Production".into(),
            commit: "c0ffee".into(),
            deployment: 1,
        };
        let target = RenderOnly { repos };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = runtime.block_on(target.apply(&subject, &rendered("one"))).unwrap_err();
        assert!(matches!(&err, TargetError::RenderedRepo { repo, .. } if repo == "1/a/r"), "{err:?}");
        let told = err.to_string();
        assert!(told.starts_with("rendered repo of 1/a/r: "), "{told}");
        assert!(!told.contains(&dir.path().display().to_string()), "a server path: {told}");
    }

    #[test]
    fn a_git_reason_names_files_inside_the_rendered_repo_by_their_place_in_it_never_the_server_path() {
        let path = PathBuf::from("/srv/devpop-data/rendered/1/a/r.git");
        let source = git2::Error::from_str(&format!(
            "failed to lock file '{0}/refs/heads/main.lock' for writing; {0} is busy",
            path.display()
        ));
        let told = ApplyError::Git { path, source }.reason();
        assert_eq!(told, "failed to lock file 'refs/heads/main.lock' for writing; the rendered repo is busy");
    }

    #[test]
    fn each_publish_stores_every_objects_yaml_in_packs_git_reads() {
        let dir = tempfile::tempdir().unwrap();
        let repos = RenderedRepos::new(dir.path());
        let id = RepoId::new("1", "a", "r").unwrap();
        repos.prepare(&id).unwrap();
        // The third publish renders what the first did: its YAML comes from the cache.
        for data in ["one", "two", "one"] {
            let r = rendered(data);
            assert!(repos.publish(&id, "Production", "c0ffee", Some(&r)).unwrap().is_some());
            let published = repos.environment_objects(&id, "Production").unwrap().unwrap();
            for o in &r.objects {
                let yaml = &published[&rendering::object_stem(o)];
                assert_eq!(yaml, &rendering::object_yaml(&stored(o)));
                assert!(!yaml.contains(rendering::LABEL_COMMIT), "kept in the kustomization: {yaml}");
            }
        }
        assert_eq!(repos.publish(&id, "Production", "c0ffee", Some(&rendered("one"))).unwrap(), None, "no change");
        let fsck = std::process::Command::new("git")
            .arg("-C")
            .arg(repos.path(&id))
            .args(["fsck", "--strict", "--no-dangling"])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
        // Each pack and its index, as devpop wrote them, are what git itself would make of them.
        let mut verified = 0;
        for entry in fs::read_dir(repos.path(&id).join("objects/pack")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "idx") {
                let verify = std::process::Command::new("git").arg("verify-pack").arg(&path).output().unwrap();
                assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
                verified += 1;
            }
        }
        assert_eq!(verified, 3, "one pack per publish that changed something");
    }
}
