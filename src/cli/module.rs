//! `devpop module init`: starts a module in an environment repo's working tree, the way the
//! console's "Add a module" does: the package's starter folder (its default `proxy_config/`)
//! written to `<dir>/<name>/`, and `{"name", "image"}` appended to section.config.json's
//! proxychain. The folder is never left empty (git keeps no empty folder, and the server would
//! say the module's folder is missing). The package comes from a server (`--server`: Aperture's
//! `proxytemplate/initialstate`) or from a data dir's installed packages.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::args::At;
use super::client::{seg, Where};
use devpop::packages::{PackageStore, STARTER_MAX_BYTES, STARTER_MAX_FILES};
use devpop::validation::config::{is_module_name, is_package_ref, FILE};

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Start a module: the package's starter folder, and its proxychain entry.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// The package, as module:version (e.g. example-simple:1.0.0; `devpop package list`).
    pub package: String,
    /// The module's name in the proxychain, and its folder (letters and digits).
    pub name: String,
    /// The environment repo's working tree.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub at: At,
}

pub fn run(command: ModuleCommand) -> Result<ExitCode> {
    match command {
        ModuleCommand::Init(args) => init(args),
    }
}

/// The files of a starter archive (`.tar.gz`), checked: regular files only, relative paths
/// without `..`, at most as many and as large as a package's starter folder may be.
pub fn unpack_starter(gz: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let (mut files, mut bytes) = (Vec::new(), 0u64);
    for entry in archive.entries().context("reading the starter archive")? {
        let entry = entry.context("reading the starter archive")?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().context("a name in the starter archive")?.into_owned();
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("the starter archive names {}: not a path inside the module's folder", path.display());
        }
        bytes += entry.header().size().unwrap_or(u64::MAX);
        if files.len() >= STARTER_MAX_FILES || bytes > STARTER_MAX_BYTES {
            bail!("the starter archive holds more than {STARTER_MAX_FILES} files or {STARTER_MAX_BYTES} bytes");
        }
        let mut content = Vec::new();
        entry.take(STARTER_MAX_BYTES).read_to_end(&mut content)?;
        files.push((path.to_string_lossy().into_owned(), content));
    }
    Ok(files)
}

fn init(args: InitArgs) -> Result<ExitCode> {
    if !is_package_ref(&args.package) {
        bail!("{:?}: name the package as module:version, e.g. example-simple:1.0.0", args.package);
    }
    if !is_module_name(&args.name) {
        bail!("{:?}: a module's name is 1 to 32 letters and digits (it names its folder too)", args.name);
    }
    let config_path = args.dir.join(FILE);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("{}: run this in an environment repo (or pass --dir)", config_path.display()))?;
    let mut config: Value = serde_json::from_str(&text).with_context(|| format!("{FILE} is not valid JSON"))?;
    let chain = config["proxychain"]
        .as_array_mut()
        .with_context(|| format!("{FILE}: has no \"proxychain\" list to add the module to"))?;
    if chain.iter().any(|m| m["name"] == args.name.as_str()) {
        bail!("{FILE}: the proxychain already has a module named {}", args.name);
    }
    let folder = args.dir.join(&args.name);
    if folder.exists() {
        bail!("{}: already exists; pick another name, or remove it first", folder.display());
    }
    let files = match args.at.where_to()? {
        Where::Server(c) => unpack_starter(
            &c.bytes(&format!("/api/v1/proxytemplate/initialstate?proxyTemplateName={}", seg(&args.package)))?,
        )?,
        Where::Data(data) => PackageStore::new(&data).starter_files(&args.package)?,
    };
    if files.is_empty() {
        bail!("{} has no starter files (its proxy_config/ is empty): start {}/ by hand", args.package, args.name);
    }
    for (path, content) in &files {
        let target = folder.join(Path::new(path));
        std::fs::create_dir_all(target.parent().unwrap_or(&folder))?;
        std::fs::write(&target, content).with_context(|| format!("writing {}", target.display()))?;
    }
    chain.push(json!({ "name": args.name, "image": args.package }));
    let mut out = serde_json::to_string_pretty(&config)?;
    out.push('\n');
    std::fs::write(&config_path, out)?;
    out!(
        "Module {} ({}) started: {} file(s) in {}/, and added last in the proxychain.",
        args.name,
        args.package,
        files.len(),
        args.name
    );
    out!("Commit both and push: git add {FILE} {}/ && git commit -m 'Add {}' && git push", args.name, args.name);
    Ok(ExitCode::SUCCESS)
}
