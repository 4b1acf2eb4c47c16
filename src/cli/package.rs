//! `devpop package`: install and list module packages, on a server (admin token) or in a data dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::Method;

use super::args::At;
use super::client::Where;
use devpop::packages::PackageStore;

#[derive(Subcommand)]
pub enum PackageCommand {
    /// Install a module package from its source folder (.section-proxy.yaml, validate.sh, prepare.sh, proxy/, proxy_config/).
    Add {
        /// The module's source folder.
        source: PathBuf,
        #[command(flatten)]
        at: At,
    },
    /// List installed packages.
    List {
        #[command(flatten)]
        at: At,
    },
}

/// The module source folder as the `.tar.gz` the API installs from (symlinks kept as links,
/// never followed: the server refuses them as `package add` does).
fn archive(source: &Path) -> Result<Vec<u8>> {
    anyhow::ensure!(source.is_dir(), "{} is not a folder: give the module's source folder", source.display());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all("package", source).with_context(|| format!("packing {}", source.display()))?;
    Ok(tar.into_inner()?.finish()?)
}

pub fn run(command: PackageCommand) -> Result<ExitCode> {
    match command {
        PackageCommand::Add { source, at } => {
            let (name, image) = match at.where_to()? {
                Where::Server(c) => {
                    let p = c.call(Method::POST, "/api/v1/packages", Some(("application/gzip", archive(&source)?)))?;
                    let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
                    (s("name"), s("image"))
                }
                Where::Data(data) => {
                    let p = PackageStore::new(&data).add(&source)?;
                    let (name, image) = (p.descriptor.metadata.name, p.descriptor.metadata.image);
                    super::audit(&data)?.record(
                        "cli",
                        None,
                        "package.install",
                        devpop::auth::ALL_ACCOUNTS,
                        &name,
                        &image,
                    );
                    (name, image)
                }
            };
            out!("Installed {name} (image {image}).");
            Ok(ExitCode::SUCCESS)
        }
        PackageCommand::List { at } => {
            match at.where_to()? {
                Where::Server(c) => {
                    for p in c.all("/api/v1/packages")? {
                        out!("{}\t{}", p["name"].as_str().unwrap_or_default(), p["image"].as_str().unwrap_or_default());
                    }
                }
                Where::Data(data) => {
                    let store = PackageStore::new(&data);
                    for name in store.catalog().all() {
                        let image = store
                            .get(&name)
                            .map(|p| p.descriptor.metadata.image)
                            .unwrap_or_else(|e| format!("(unreadable: {e})"));
                        out!("{name}\t{image}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
