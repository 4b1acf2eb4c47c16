//! Module packages: installing a module's source folder into the data dir's package store,
//! listing what is installed, and the built-in packages shipped in `templates/packages/`.
//!
//! Store layout: `<data>/packages/<module>/<version>/` holding `.section-proxy.yaml`,
//! `validate.sh`, `prepare.sh`, `proxy/` and `proxy_config/`, copied as regular files only.
//! Installed packages are immutable: a new version is a new package.

pub mod descriptor;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use descriptor::Descriptor;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{dir}: not a module package:\n  {}", problems.join("\n  "))]
    Invalid { dir: PathBuf, problems: Vec<String> },
    #[error("package {0} is already installed; packages are immutable, so publish a new version")]
    Exists(String),
    #[error("package {0} is not installed")]
    NotInstalled(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackageError + '_ {
    move |source| PackageError::Io { path: path.to_owned(), source }
}

/// The installed packages of a data dir.
#[derive(Debug, Clone)]
pub struct PackageStore {
    root: PathBuf,
}

/// An installed package: where it is and what it says.
#[derive(Debug, Clone)]
pub struct Installed {
    pub dir: PathBuf,
    pub descriptor: Descriptor,
}

impl Installed {
    pub fn validate_sh(&self) -> PathBuf {
        self.dir.join("validate.sh")
    }
}

/// Which packages are installed: module -> versions. What validation needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog(pub BTreeMap<String, Vec<String>>);

impl Catalog {
    pub fn contains(&self, package: &str) -> bool {
        package.split_once(':').is_some_and(|(m, v)| self.0.get(m).is_some_and(|vs| vs.iter().any(|x| x == v)))
    }

    pub fn versions(&self, module: &str) -> &[String] {
        self.0.get(module).map_or(&[], Vec::as_slice)
    }

    pub fn all(&self) -> Vec<String> {
        self.0.iter().flat_map(|(m, vs)| vs.iter().map(move |v| format!("{m}:{v}"))).collect()
    }
}

/// The most files, bytes and folder depth of a package's starter config folder.
pub const STARTER_MAX_FILES: usize = 200;
pub const STARTER_MAX_BYTES: u64 = 4 << 20;
pub const STARTER_MAX_DEPTH: usize = 8;

/// A starter folder ([`PackageStore::starter_files`]) as a `.tar.gz`: its files at the top, in
/// path order, each a regular file (mode 0644, no owner, no time), folders implied (Aperture's
/// proxy template "initial state").
pub fn starter_archive(files: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, &content[..])?;
    }
    tar.into_inner()?.finish()
}

/// Built-in packages: (package dir name, [(relative path, content, executable)]).
type Builtin = (&'static str, &'static [(&'static str, &'static str, bool)]);

const BUILTINS: &[Builtin] = &[
    (
        "example-simple",
        &[
            (".section-proxy.yaml", include_str!("../../templates/packages/example-simple/.section-proxy.yaml"), false),
            ("validate.sh", include_str!("../../templates/packages/example-simple/validate.sh"), true),
            ("prepare.sh", include_str!("../../templates/packages/example-simple/prepare.sh"), true),
            ("proxy/nginx.conf", include_str!("../../templates/packages/example-simple/proxy/nginx.conf"), false),
            (
                "proxy_config/server.conf",
                include_str!("../../templates/packages/example-simple/proxy_config/server.conf"),
                false,
            ),
        ],
    ),
    (
        "edge-cache",
        &[
            (".section-proxy.yaml", include_str!("../../templates/packages/edge-cache/.section-proxy.yaml"), false),
            ("validate.sh", include_str!("../../templates/packages/edge-cache/validate.sh"), true),
            ("prepare.sh", include_str!("../../templates/packages/edge-cache/prepare.sh"), true),
            ("proxy/varnish.params", include_str!("../../templates/packages/edge-cache/proxy/varnish.params"), false),
            (
                "proxy_config/default.vcl",
                include_str!("../../templates/packages/edge-cache/proxy_config/default.vcl"),
                false,
            ),
        ],
    ),
];

impl PackageStore {
    pub fn new(data_dir: &Path) -> Self {
        PackageStore { root: data_dir.join("packages") }
    }

    /// The data dir the store belongs to.
    pub fn data_dir(&self) -> PathBuf {
        self.root.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    fn dir(&self, module: &str, version: &str) -> PathBuf {
        self.root.join(module).join(version)
    }

    /// What is installed (reads directory names only: cheap enough for every push).
    pub fn catalog(&self) -> Catalog {
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let mut catalog = BTreeMap::new();
        for module in names(&self.root) {
            let versions = names(&self.root.join(&module));
            if !versions.is_empty() {
                catalog.insert(module, versions);
            }
        }
        Catalog(catalog)
    }

    /// Loads an installed package by `module:version`.
    pub fn get(&self, package: &str) -> Result<Installed, PackageError> {
        let (module, version) = package.split_once(':').ok_or_else(|| PackageError::NotInstalled(package.into()))?;
        if !crate::names::is_package_ref(package) {
            return Err(PackageError::NotInstalled(package.into()));
        }
        let dir = self.dir(module, version);
        let path = dir.join(descriptor::FILE);
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => PackageError::NotInstalled(package.into()),
            _ => PackageError::Io { path: path.clone(), source: e },
        })?;
        let descriptor =
            descriptor::parse(&text).map_err(|problems| PackageError::Invalid { dir: dir.clone(), problems })?;
        Ok(Installed { dir, descriptor })
    }

    /// A package's default config folder (`proxy_config/`), what a new module of it starts
    /// with: (path inside the folder, content), regular files only, in path order. Bounded
    /// ([`STARTER_MAX_FILES`] files, [`STARTER_MAX_BYTES`] bytes, [`STARTER_MAX_DEPTH`] folders
    /// deep), walked without recursion.
    pub fn starter_files(&self, package: &str) -> Result<Vec<(String, Vec<u8>)>, PackageError> {
        let root = self.get(package)?.dir.join("proxy_config");
        let too_big = |what: &str| PackageError::Invalid {
            dir: PathBuf::from(format!("{package} proxy_config/")),
            problems: vec![format!("{what}: start the module's folder with git instead")],
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut stack = vec![(root.clone(), String::new(), 0usize)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PackageError::Io { path: dir, source: e }),
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                let path = entry.path();
                let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
                let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                if meta.is_dir() {
                    if depth + 1 >= STARTER_MAX_DEPTH {
                        return Err(too_big("more than 8 folders deep"));
                    }
                    stack.push((path, rel, depth + 1));
                } else if meta.is_file() {
                    bytes += meta.len();
                    if out.len() >= STARTER_MAX_FILES || bytes > STARTER_MAX_BYTES {
                        return Err(too_big("more than 200 files or 4 MiB"));
                    }
                    out.push((rel, fs::read(&path).map_err(io_err(&path))?));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Installs a module source folder (Section's `create-module-assets.sh` step).
    pub fn add(&self, source: &Path) -> Result<Installed, PackageError> {
        let descriptor = check_source(source)?;
        let (module, version) = (descriptor.module().to_owned(), descriptor.version().to_owned());
        let target = self.dir(&module, &version);
        if target.exists() {
            return Err(PackageError::Exists(descriptor.metadata.name.clone()));
        }
        let parent = target.parent().expect("package dir has a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let scratch = tempfile::Builder::new().prefix(".installing-").tempdir_in(parent).map_err(io_err(parent))?;
        let staged = scratch.path().join("pkg");
        for part in [descriptor::FILE, "validate.sh", "prepare.sh", "proxy", "proxy_config"] {
            copy_regular(&source.join(part), &staged.join(part))?;
        }
        fs::rename(&staged, &target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => {
                PackageError::Exists(descriptor.metadata.name.clone())
            }
            _ => PackageError::Io { path: target.clone(), source: e },
        })?;
        Ok(Installed { dir: target, descriptor })
    }

    /// Installs the built-in packages that are not installed yet; returns their names.
    pub fn install_builtins(&self) -> Result<Vec<String>, PackageError> {
        let mut installed = Vec::new();
        for (name, files) in BUILTINS {
            let d = descriptor::parse(files[0].1).expect("built-in package descriptors are valid");
            if self.dir(d.module(), d.version()).exists() {
                continue;
            }
            let src = tempfile::tempdir().map_err(io_err(&self.root))?;
            for (rel, content, exec) in *files {
                let path = src.path().join(rel);
                fs::create_dir_all(path.parent().expect("has parent")).map_err(io_err(&path))?;
                fs::write(&path, content).map_err(io_err(&path))?;
                set_mode(&path, if *exec { 0o755 } else { 0o644 })?;
            }
            match self.add(src.path()) {
                Ok(p) => installed.push(p.descriptor.metadata.name),
                Err(PackageError::Exists(_)) => {} // installed concurrently
                Err(e) => return Err(e),
            }
            tracing::debug!(package = name, "built-in package installed");
        }
        Ok(installed)
    }
}

/// Checks a module source folder: the descriptor and the required files.
fn check_source(source: &Path) -> Result<Descriptor, PackageError> {
    let invalid = |problems: Vec<String>| PackageError::Invalid { dir: source.to_owned(), problems };
    let mut problems = Vec::new();
    for (part, want_dir) in [
        (descriptor::FILE, false),
        ("validate.sh", false),
        ("prepare.sh", false),
        ("proxy", true),
        ("proxy_config", true),
    ] {
        match fs::symlink_metadata(source.join(part)) {
            Err(_) => problems.push(format!("{part}: missing (a package has .section-proxy.yaml, validate.sh, prepare.sh, proxy/ and proxy_config/)")),
            Ok(m) if m.file_type().is_symlink() => problems.push(format!("{part}: is a symlink; packages hold regular files only")),
            Ok(m) if want_dir && !m.is_dir() => problems.push(format!("{part}: must be a folder")),
            Ok(m) if !want_dir && !m.is_file() => problems.push(format!("{part}: must be a regular file")),
            Ok(m) => {
                use std::os::unix::fs::PermissionsExt;
                if part.ends_with(".sh") && m.permissions().mode() & 0o111 == 0 {
                    problems.push(format!("{part}: must be executable (chmod +x {part})"));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let text = fs::read_to_string(source.join(descriptor::FILE)).map_err(io_err(source))?;
    descriptor::parse(&text).map_err(invalid)
}

/// Copies a file or a tree, regular files and folders only; a symlink is refused.
fn copy_regular(from: &Path, to: &Path) -> Result<(), PackageError> {
    let meta = fs::symlink_metadata(from).map_err(io_err(from))?;
    if meta.file_type().is_symlink() {
        return Err(PackageError::Invalid {
            dir: from.to_owned(),
            problems: vec!["is a symlink; packages hold regular files only".into()],
        });
    }
    if meta.is_dir() {
        fs::create_dir_all(to).map_err(io_err(to))?;
        let mut entries: Vec<_> = fs::read_dir(from).map_err(io_err(from))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            copy_regular(&e.path(), &to.join(e.file_name()))?;
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(to.parent().expect("has parent")).map_err(io_err(to))?;
        fs::copy(from, to).map_err(io_err(from))?;
        set_mode(to, if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 })?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PackageError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packages_proxy_config_is_archived_as_its_starter_folder() {
        let data = tempfile::tempdir().unwrap();
        let store = PackageStore::new(data.path());
        store.install_builtins().unwrap();
        let name = store.catalog().all().into_iter().find(|n| n.starts_with("edge-cache:")).unwrap();
        let gz = starter_archive(&store.starter_files(&name).unwrap()).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut files = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            files.push((entry.path().unwrap().display().to_string(), text));
        }
        let vcl = include_str!("../../templates/packages/edge-cache/proxy_config/default.vcl");
        assert_eq!(files, [("default.vcl".to_owned(), vcl.to_owned())]);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/packages").join(name)
    }

    #[test]
    fn add_installs_a_fixture_and_refuses_a_second_time() {
        let data = tempfile::tempdir().unwrap();
        let store = PackageStore::new(data.path());
        let p = store.add(&fixture("example-simple")).unwrap();
        assert_eq!(p.descriptor.metadata.name, "example-simple:1.0.0");
        assert!(p.dir.join("proxy_config/server.conf").is_file());
        assert!(store.get("example-simple:1.0.0").is_ok());
        assert!(matches!(store.add(&fixture("example-simple")), Err(PackageError::Exists(_))));
        assert_eq!(store.catalog().all(), ["example-simple:1.0.0"]);
        assert!(store.catalog().contains("example-simple:1.0.0") && !store.catalog().contains("example-simple:9"));
    }

    #[test]
    fn sources_with_missing_parts_or_symlinks_are_refused() {
        let src = tempfile::tempdir().unwrap();
        copy_regular(&fixture("edge-cache"), src.path()).unwrap();
        fs::remove_file(src.path().join("prepare.sh")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("proxy/passwd")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let err = PackageStore::new(data.path()).add(src.path()).unwrap_err().to_string();
        assert!(err.contains("prepare.sh: missing"), "{err}");
        fs::write(src.path().join("prepare.sh"), "#!/bin/sh\n").unwrap();
        set_mode(&src.path().join("prepare.sh"), 0o755).unwrap();
        let err = PackageStore::new(data.path()).add(src.path()).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(PackageStore::new(data.path()).catalog().0.is_empty(), "nothing half-installed");
    }

    #[test]
    fn builtins_install_once() {
        let data = tempfile::tempdir().unwrap();
        let store = PackageStore::new(data.path());
        assert_eq!(store.install_builtins().unwrap(), ["example-simple:1.0.0", "edge-cache:6.5.0"]);
        assert!(store.install_builtins().unwrap().is_empty());
        assert!(store.get("edge-cache:6.5.0").unwrap().validate_sh().is_file());
    }
}
