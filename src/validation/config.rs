//! `section.config.json`: the typed model and every rule the spec states for it.
//!
//! Pure: text in, model and diagnostics out. All problems are reported at once, each with its
//! line and column, its JSON path and the fix. Unknown keys are warnings (real configs carry
//! more than devpop reads). Problems that concern one environment only are tagged with it, so a
//! push to another environment reports them as warnings.

use super::diagnostic::Diagnostic;
use super::json::{self, Member, Node, Pos};

mod environment;
mod origin;

pub use crate::names::{is_alternate_origin_name, is_branch_name, is_host, is_module_name, is_package_ref};
pub use origin::{special_origin, RESERVED_ORIGIN_NAMES};

pub const FILE: &str = "section.config.json";
/// A config larger than this is refused before it is parsed.
pub const MAX_BYTES: usize = 1 << 20;
/// More modules than this in one chain is refused: each is a Deployment in the namespace.
pub const MAX_PROXYCHAIN: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct SectionConfig {
    pub proxychain: Vec<ProxyEntry>,
    /// In document order.
    pub environments: Vec<Environment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyEntry {
    pub name: String,
    pub name_pos: Pos,
    /// `module:version`, naming an installed package.
    pub image: String,
    pub image_pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub pos: Pos,
    /// `None` when missing or invalid (already reported).
    pub origin: Option<Origin>,
    pub alternate_origins: Vec<(String, Origin)>,
    pub ip_blacklist: Vec<String>,
    pub maintain_upstream_content_encoding: bool,
    /// The engaged outage page (a file of `outage_pages/`): egress answers every request with
    /// it (503) until it is disengaged. Set by Aperture's `outagepage` operations.
    pub outage_page: Option<String>,
    /// More host names the environment's Ingress serves, besides `<namespace>.<domain>`.
    pub domains: Vec<String>,
}

/// Host names one environment may add.
pub const MAX_DOMAINS: usize = 100;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    pub address: String,
    pub host_header: Option<String>,
    pub enable_sni: Option<bool>,
    pub verify_certificate: Option<bool>,
    pub remove_request_headers: Vec<String>,
    pub disable_keepalive: Option<bool>,
    pub proxy_acme_challenge: Option<bool>,
    pub http_port: Option<u16>,
    pub https_port: Option<u16>,
}

impl SectionConfig {
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn environment_names(&self) -> Vec<&str> {
        self.environments.iter().map(|e| e.name.as_str()).collect()
    }
}

/// Operator choices that change what the rules accept (server settings, passed in as data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Accept origins in private address ranges (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7) and cluster Service names (`*.svc`, `*.svc.<domain>`, `*.cluster.local`,
    /// one-label names). Loopback, link-local, multicast and the like, `localhost` and the
    /// Kubernetes API (`kubernetes.default...`) stay refused.
    pub allow_private_origins: bool,
}

/// The setting that allows private origins, as diagnostics name it.
pub const ALLOW_PRIVATE_ORIGINS: &str = "--allow-private-origins (DEVPOP_ALLOW_PRIVATE_ORIGINS=true)";

/// Parses and checks the file with the default [`Rules`].
pub fn parse(text: &[u8]) -> (Option<SectionConfig>, Vec<Diagnostic>) {
    parse_with(text, &Rules::default())
}

/// Parses and checks the file. The model is `None` only when the text is not JSON or its top
/// level is unusable; otherwise it holds what could be read, beside the diagnostics.
pub fn parse_with(text: &[u8], rules: &Rules) -> (Option<SectionConfig>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if text.len() > MAX_BYTES {
        diags.push(Diagnostic::error(FILE, None, too_large(text.len() as u64)));
        return (None, diags);
    }
    let text = match std::str::from_utf8(text) {
        Ok(t) => t,
        Err(e) => {
            let pos = position_of_byte(text, e.valid_up_to());
            diags.push(Diagnostic::error(FILE, Some(pos), "is not valid UTF-8: save the file as UTF-8"));
            return (None, diags);
        }
    };
    let root = match json::parse(text) {
        Ok(root) => root,
        Err(e) => {
            diags.push(Diagnostic::error(FILE, Some(e.pos), format!("invalid JSON: {}", e.message)));
            return (None, diags);
        }
    };
    let mut c = Checker { diags, env: None, rules: *rules };
    let config = c.root(&root);
    (config, c.diags)
}

pub fn too_large(size: u64) -> String {
    format!("is {size} bytes; the limit is {MAX_BYTES} bytes: keep it to the proxychain and environments")
}

/// Turns the problems of environments other than `branch` into warnings, and adds the rule that
/// the pushed branch must be one of `environments`.
pub fn scope_to_branch(config: Option<&SectionConfig>, diags: &mut Vec<Diagnostic>, branch: &str) {
    for d in diags.iter_mut() {
        if let Some(env) = &d.environment {
            if env != branch && d.is_error() {
                d.severity = super::diagnostic::Severity::Warning;
                d.message.push_str(&format!(" (a push to {env} will be rejected until this is fixed)"));
            }
        }
    }
    if let Some(config) = config {
        if config.environment(branch).is_none() {
            let defined = config.environment_names();
            let list = if defined.is_empty() { "none".to_owned() } else { defined.join(", ") };
            diags.push(Diagnostic::error(
                FILE,
                None,
                format!(
                    "environments: branch {branch:?} is not an environment (defined: {list}); add \"{branch}\" to environments or push to one of those branches"
                ),
            ));
        }
    }
}

fn position_of_byte(text: &[u8], at: usize) -> Pos {
    let before = &text[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() as u32 + 1;
    Pos { line, col }
}

struct Checker {
    diags: Vec<Diagnostic>,
    /// The environment whose subtree is being checked.
    env: Option<String>,
    rules: Rules,
}

impl Checker {
    fn push(&mut self, d: Diagnostic) {
        let d = match &self.env {
            Some(env) => d.in_environment(env),
            None => d,
        };
        self.diags.push(d);
    }

    fn error(&mut self, pos: Pos, message: String) {
        self.push(Diagnostic::error(FILE, Some(pos), message));
    }

    fn warning(&mut self, pos: Pos, message: String) {
        self.push(Diagnostic::warning(FILE, Some(pos), message));
    }

    fn expect<'n>(&mut self, node: &'n Node, path: &str, want: &str, ok: Option<&'n Node>) -> Option<&'n Node> {
        if ok.is_none() {
            self.error(node.pos, format!("{path}: expected {want}, found {}", node.kind()));
        }
        ok
    }

    fn object<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Member]> {
        self.expect(node, path, "an object", node.as_object().map(|_| node))?.as_object()
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        self.expect(node, path, "a string", node.as_str().map(|_| node))?.as_str().map(str::to_owned)
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        self.expect(node, path, "true or false", node.as_bool().map(|_| node))?.as_bool()
    }

    /// Reports duplicate and unknown keys; returns the members to read.
    fn members<'n>(&mut self, members: &'n [Member], path: &str, known: &[&str]) -> Vec<&'n Member> {
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for m in members {
            let here = join(path, &m.key);
            if seen.contains(&m.key.as_str()) {
                self.error(m.key_pos, format!("{here}: duplicate key; keep one"));
                continue;
            }
            seen.push(&m.key);
            if !known.is_empty() && !known.contains(&m.key.as_str()) {
                self.warning(
                    m.key_pos,
                    format!("{here}: unknown key, ignored by devpop (known: {})", known.join(", ")),
                );
                continue;
            }
            out.push(m);
        }
        out
    }

    /// [`Checker::members`] of an object whose keys are `K`: each member with its key's variant.
    fn keyed<'n, K: Keys>(&mut self, members: &'n [Member], path: &str) -> Vec<(K, &'n Member)> {
        let names: Vec<&str> = K::all().iter().map(|(name, _)| name.as_str()).collect();
        self.members(members, path, &names)
            .into_iter()
            .filter_map(|m| K::all().iter().find(|(name, _)| *name == m.key).map(|(_, key)| (*key, m)))
            .collect()
    }

    fn root(&mut self, root: &Node) -> Option<SectionConfig> {
        let members = self.object(root, "the top level")?;
        let mut proxychain = None;
        let mut environments = None;
        for (key, m) in self.keyed(members, "") {
            match key {
                RootKey::Proxychain => proxychain = Some(self.proxychain(&m.value)),
                RootKey::Environments => environments = Some(self.environments(&m.value)),
            }
        }
        if proxychain.is_none() {
            self.error(root.pos, "proxychain: missing; add \"proxychain\": [] (the ordered list of modules)".into());
        }
        if environments.is_none() {
            self.error(
                root.pos,
                "environments: missing; add \"environments\": { \"Production\": { \"origin\": { \"address\": \"...\" } } }".into(),
            );
        }
        Some(SectionConfig {
            proxychain: proxychain.unwrap_or_default(),
            environments: environments.unwrap_or_default(),
        })
    }

    fn proxychain(&mut self, node: &Node) -> Vec<ProxyEntry> {
        let Some(items) = self
            .expect(node, "proxychain", "an array of {\"name\", \"image\"}", node.as_array().map(|_| node))
            .and_then(Node::as_array)
        else {
            return Vec::new();
        };
        if items.len() > MAX_PROXYCHAIN {
            self.error(
                node.pos,
                format!("proxychain: has {} modules; at most {MAX_PROXYCHAIN} are allowed", items.len()),
            );
            return Vec::new();
        }
        let mut out: Vec<ProxyEntry> = Vec::new();
        let mut names: Vec<(String, Pos)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("proxychain[{i}]");
            let Some(members) = self.object(item, &path) else { continue };
            let mut name = None;
            let mut image = None;
            for (key, m) in self.keyed(members, &path) {
                let here = join(&path, &m.key);
                match key {
                    ModuleKey::Name => name = self.string(&m.value, &here).map(|s| (s, m.value.pos)),
                    ModuleKey::Image => image = self.string(&m.value, &here).map(|s| (s, m.value.pos)),
                }
            }
            let (Some((name, name_pos)), Some((image, image_pos))) = (name.clone(), image.clone()) else {
                let missing: Vec<&str> = [("name", name.is_none()), ("image", image.is_none())]
                    .iter()
                    .filter(|(_, m)| *m)
                    .map(|(k, _)| *k)
                    .collect();
                self.error(
                    item.pos,
                    format!("{path}: missing {}; each module needs a \"name\" and an \"image\"", missing.join(" and ")),
                );
                continue;
            };
            let mut ok = true;
            if !is_module_name(&name) {
                self.error(name_pos, format!("{path}.name {name:?}: use letters and digits only (1-32 characters)"));
                ok = false;
            } else if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                self.error(
                    name_pos,
                    format!(
                        "{path}.name {name:?}: already used at line {}; module names must be unique in the chain",
                        first.line
                    ),
                );
                ok = false;
            }
            names.push((name.clone(), name_pos));
            if !is_package_ref(&image) {
                self.error(
                    image_pos,
                    format!("{path}.image {image:?}: use module:version, e.g. \"example-simple:1.0.0\""),
                );
                ok = false;
            }
            if ok {
                out.push(ProxyEntry { name, name_pos, image, image_pos });
            }
        }
        out
    }

    fn environments(&mut self, node: &Node) -> Vec<Environment> {
        let Some(members) = self.object(node, "environments") else { return Vec::new() };
        let mut out = Vec::new();
        for m in self.members(members, "environments", &[]) {
            let path = join("environments", &m.key);
            self.env = Some(m.key.clone());
            if let Some(env) = self.environment(m, &path) {
                out.push(env);
            }
            self.env = None;
        }
        out
    }
}

/// The keys one object of the config may have, each a variant named as its key is written
/// (`HostHeader` is `host_header`: one list, no second spelling to keep in step). The parser of
/// that object matches every variant with no catch-all arm, so a key added here without its
/// parsing does not compile, and a key parsed without being listed here cannot be reached.
trait Keys: Copy + 'static {
    /// Each key as written in the file, with its variant (in the order unknown-key warnings list them).
    fn all() -> &'static [(String, Self)];
}

/// `HostHeader` as written in a config: `host_header`.
fn snake_case(variant: &str) -> String {
    let mut out = String::with_capacity(variant.len() + 4);
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

macro_rules! keys {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum $name { $($variant),* }
        impl Keys for $name {
            fn all() -> &'static [(String, Self)] {
                static ALL: std::sync::LazyLock<Vec<(String, $name)>> = std::sync::LazyLock::new(|| {
                    vec![$((snake_case(stringify!($variant)), $name::$variant)),*]
                });
                &ALL
            }
        }
    };
}

keys!(
    /// The top level.
    RootKey { Proxychain, Environments }
);
keys!(
    /// One entry of `proxychain`.
    ModuleKey { Name, Image }
);
keys!(
    /// One environment.
    EnvironmentKey { Origin, AlternateOrigins, IpBlacklist, MaintainUpstreamContentEncoding, OutagePage, Domains }
);
keys!(
    /// An origin (the environment's, or an alternate one).
    OriginKey {
        Address,
        HostHeader,
        EnableSni,
        VerifyCertificate,
        RemoveRequestHeaders,
        DisableKeepalive,
        ProxyAcmeChallenge,
        HttpPort,
        HttpsPort,
    }
);

fn members_have(node: &Node, key: &str) -> bool {
    node.as_object().is_some_and(|ms| ms.iter().any(|m| m.key == key))
}

fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

#[cfg(test)]
mod tests;
