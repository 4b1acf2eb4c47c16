//! `section.config.json`: the typed model and every rule the spec states for it.
//!
//! Pure: text in, model and diagnostics out. All problems are reported at once, each with its
//! line and column, its JSON path and the fix. Unknown keys are warnings (real configs carry
//! more than devpop reads). Problems that concern one environment only are tagged with it, so a
//! push to another environment reports them as warnings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::diagnostic::Diagnostic;
use super::json::{self, Member, Node, Pos};
pub use crate::names::{is_alternate_origin_name, is_branch_name, is_host, is_module_name, is_package_ref};

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

    fn root(&mut self, root: &Node) -> Option<SectionConfig> {
        let members = self.object(root, "the top level")?;
        let members = self.members(members, "", &["proxychain", "environments"]);
        let mut proxychain = None;
        let mut environments = None;
        for m in members {
            match m.key.as_str() {
                "proxychain" => proxychain = Some(self.proxychain(&m.value)),
                "environments" => environments = Some(self.environments(&m.value)),
                _ => unreachable!("members() filters unknown keys"),
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
            for m in self.members(members, &path, &["name", "image"]) {
                let here = join(&path, &m.key);
                match m.key.as_str() {
                    "name" => name = self.string(&m.value, &here).map(|s| (s, m.value.pos)),
                    "image" => image = self.string(&m.value, &here).map(|s| (s, m.value.pos)),
                    other => unreachable!("members() returns known keys only, not {other:?}"),
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

    fn environment(&mut self, m: &Member, path: &str) -> Option<Environment> {
        if !is_branch_name(&m.key) {
            self.error(m.key_pos, format!("{path}: not a usable branch name; use letters, digits, '-', '_' or '.'"));
        }
        let members = self.object(&m.value, path)?;
        let members = self.members(
            members,
            path,
            &[
                "origin",
                "alternate_origins",
                "ip_blacklist",
                "maintain_upstream_content_encoding",
                "outage_page",
                "domains",
            ],
        );
        let mut env = Environment {
            name: m.key.clone(),
            pos: m.key_pos,
            origin: None,
            alternate_origins: Vec::new(),
            ip_blacklist: Vec::new(),
            maintain_upstream_content_encoding: false,
            outage_page: None,
            domains: Vec::new(),
        };
        let mut has_origin = false;
        for member in members {
            let here = join(path, &member.key);
            match member.key.as_str() {
                "origin" => {
                    has_origin = true;
                    env.origin = self.origin(&member.value, &here);
                }
                "alternate_origins" => env.alternate_origins = self.alternate_origins(&member.value, &here),
                "ip_blacklist" => env.ip_blacklist = self.ip_blacklist(&member.value, &here),
                "maintain_upstream_content_encoding" => {
                    env.maintain_upstream_content_encoding = self.boolean(&member.value, &here).unwrap_or(false)
                }
                "outage_page" => env.outage_page = self.outage_page(&member.value, &here),
                "domains" => env.domains = self.domains(&member.value, &here),
                other => unreachable!("members() returns known keys only, not {other:?}"),
            }
        }
        if !has_origin {
            self.error(
                m.value.pos,
                format!("{path}: has no origin; add \"origin\": {{ \"address\": \"<your origin host>\" }}"),
            );
        }
        Some(env)
    }

    fn origin(&mut self, node: &Node, path: &str) -> Option<Origin> {
        let members = self.object(node, path)?;
        let members = self.members(
            members,
            path,
            &[
                "address",
                "host_header",
                "enable_sni",
                "verify_certificate",
                "remove_request_headers",
                "disable_keepalive",
                "proxy_acme_challenge",
                "http_port",
                "https_port",
            ],
        );
        let mut origin = Origin::default();
        let mut address = None;
        for m in members {
            let here = join(path, &m.key);
            let v = &m.value;
            match m.key.as_str() {
                "address" => {
                    if let Some(a) = self.string(v, &here) {
                        if !is_host(&a) {
                            self.error(
                                v.pos,
                                format!("{here} {a:?}: use a host name or an IP address, without scheme, port or path"),
                            );
                        } else if let Some(problem) = special_origin(&a, &self.rules) {
                            self.error(v.pos, format!("{here} {a:?}: {problem}"));
                        } else {
                            address = Some(a);
                        }
                    }
                }
                "host_header" => {
                    if let Some(h) = self.string(v, &here) {
                        if is_host_header(&h) {
                            origin.host_header = Some(h);
                        } else {
                            self.error(v.pos, format!("{here} {h:?}: use a host name, optionally with :port"));
                        }
                    }
                }
                "enable_sni" => origin.enable_sni = self.boolean(v, &here),
                "verify_certificate" => origin.verify_certificate = self.boolean(v, &here),
                "disable_keepalive" => origin.disable_keepalive = self.boolean(v, &here),
                "proxy_acme_challenge" => origin.proxy_acme_challenge = self.boolean(v, &here),
                "http_port" => origin.http_port = self.port(v, &here),
                "https_port" => origin.https_port = self.port(v, &here),
                "remove_request_headers" => origin.remove_request_headers = self.header_names(v, &here),
                other => unreachable!("members() returns known keys only, not {other:?}"),
            }
        }
        match address {
            Some(a) => origin.address = a,
            None => {
                if !members_have(node, "address") {
                    self.error(node.pos, format!("{path}: missing \"address\"; add the origin's host name or IP"));
                }
                return None;
            }
        }
        Some(origin)
    }

    fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        match node.as_u64() {
            Some(p @ 1..=65535) => Some(p as u16),
            _ => {
                self.error(node.pos, format!("{path}: expected a port number from 1 to 65535"));
                None
            }
        }
    }

    fn header_names(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Some(items) =
            self.expect(node, path, "an array of header names", node.as_array().map(|_| node)).and_then(Node::as_array)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let here = format!("{path}[{i}]");
            if let Some(h) = self.string(item, &here) {
                if is_header_name(&h) {
                    out.push(h);
                } else {
                    self.error(item.pos, format!("{here} {h:?}: not an HTTP header name (letters, digits and -)"));
                }
            }
        }
        out
    }

    fn alternate_origins(&mut self, node: &Node, path: &str) -> Vec<(String, Origin)> {
        let Some(members) = self.object(node, path) else { return Vec::new() };
        let mut out: Vec<(String, Origin)> = Vec::new();
        let mut seen: Vec<(String, Pos)> = Vec::new();
        for m in self.members(members, path, &[]) {
            let here = join(path, &m.key);
            if !is_alternate_origin_name(&m.key) {
                self.error(
                    m.key_pos,
                    format!("{here}: alternate origin names use 1-50 letters, digits or '_' (the section-origin header value)"),
                );
                continue;
            }
            let lower = m.key.to_ascii_lowercase();
            if RESERVED_ORIGIN_NAMES.contains(&lower.as_str()) {
                self.error(
                    m.key_pos,
                    format!(
                        "{here}: {:?} is a keyword of nginx's map ({}) and cannot name an alternate origin; rename it, e.g. \"{}_origin\"",
                        m.key,
                        RESERVED_ORIGIN_NAMES.join(", "),
                        m.key
                    ),
                );
                continue;
            }
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == lower) {
                self.error(
                    m.key_pos,
                    format!(
                        "{here}: the same name as the alternate origin at line {} but for case; section-origin values are matched without case: rename one",
                        first.line
                    ),
                );
                continue;
            }
            seen.push((lower, m.key_pos));
            if let Some(origin) = self.origin(&m.value, &here) {
                out.push((m.key.clone(), origin));
            }
        }
        out
    }

    fn outage_page(&mut self, node: &Node, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        let plain = name.len() <= 100
            && name.ends_with(".html")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !name.starts_with('.');
        if !plain {
            self.error(
                node.pos,
                format!("{path} {name:?}: name an .html file at the top of outage_pages/, e.g. \"maintenance.html\""),
            );
            return None;
        }
        Some(name)
    }

    fn domains(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Some(items) =
            self.expect(node, path, "an array of host names", node.as_array().map(|_| node)).and_then(Node::as_array)
        else {
            return Vec::new();
        };
        if items.len() > MAX_DOMAINS {
            self.error(node.pos, format!("{path}: {} host names; at most {MAX_DOMAINS}", items.len()));
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let here = format!("{path}[{i}]");
            let Some(host) = self.string(item, &here) else { continue };
            let bare = host.strip_prefix("*.").unwrap_or(&host);
            let dns_name = bare.contains('.')
                && bare.len() <= 253
                && bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !dns_name {
                self.error(
                    item.pos,
                    format!(
                        "{here} {host:?}: use a lower-case DNS name such as \"www.example.com\" (or \"*.example.com\")"
                    ),
                );
            } else if out.contains(&host) {
                self.error(item.pos, format!("{here} {host:?}: listed twice; remove one"));
            } else {
                out.push(host);
            }
        }
        out
    }

    fn ip_blacklist(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Some(items) = self
            .expect(node, path, "an array of IPv4 addresses or CIDRs", node.as_array().map(|_| node))
            .and_then(Node::as_array)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let here = format!("{path}[{i}]");
            if let Some(s) = self.string(item, &here) {
                if is_ipv4_or_cidr(&s) {
                    out.push(s);
                } else {
                    self.error(
                        item.pos,
                        format!("{here} {s:?}: use an IPv4 address or CIDR, e.g. \"198.51.100.0/24\""),
                    );
                }
            }
        }
        out
    }
}

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

/// Names nginx's `map` block reads as its own parameters (compared without case: header values
/// are matched without case too).
pub const RESERVED_ORIGIN_NAMES: &[&str] = &["default", "hostnames", "include", "volatile"];

/// Why `address` (a valid host name or IP) cannot be an origin, if it cannot: egress must not
/// be pointed at itself, the node, the cluster or its cloud's metadata service.
pub fn special_origin(address: &str, rules: &Rules) -> Option<String> {
    let private = |what: &str| {
        (!rules.allow_private_origins).then(|| {
            format!(
                "{what}, inside the cluster's or the cloud's networks; use the origin's public host name or address (operators who want private origins start devpop with {ALLOW_PRIVATE_ORIGINS})"
            )
        })
    };
    let never = |what: &str| {
        Some(format!("{what}; egress cannot use it as an origin: use the origin's public host name or address"))
    };
    if let Ok(ip) = address.parse::<IpAddr>() {
        let v4 = |ip: Ipv4Addr| -> Option<String> {
            let [a, b, ..] = ip.octets();
            if ip.is_loopback() {
                never("is a loopback address (egress would connect to itself)")
            } else if a == 0 {
                never("is in 0.0.0.0/8 (this host)")
            } else if ip.is_link_local() {
                never("is link-local (169.254.0.0/16: the node, and the cloud's metadata service)")
            } else if ip.is_multicast() || a >= 240 {
                never("is a multicast, reserved or broadcast address")
            } else if ip.is_private() {
                private("is a private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")
            } else if a == 100 && (64..128).contains(&b) {
                private("is in 100.64.0.0/10 (shared address space: often the cluster's pods or Services)")
            } else {
                None
            }
        };
        return match ip {
            IpAddr::V4(ip) => v4(ip),
            IpAddr::V6(ip) => {
                let first = ip.segments()[0];
                if let Some(mapped) = ip.to_ipv4_mapped() {
                    v4(mapped)
                } else if ip.is_loopback() {
                    never("is the IPv6 loopback address (egress would connect to itself)")
                } else if ip == Ipv6Addr::UNSPECIFIED {
                    never("is the unspecified address")
                } else if first & 0xffc0 == 0xfe80 {
                    never("is link-local (fe80::/10)")
                } else if first & 0xff00 == 0xff00 {
                    never("is a multicast address (ff00::/8)")
                } else if first & 0xfe00 == 0xfc00 {
                    private("is a unique local address (fc00::/7)")
                } else {
                    None
                }
            }
        };
    }
    let name = address.strip_suffix('.').unwrap_or(address).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return never("is localhost (egress would connect to itself)");
    }
    if name == "kubernetes" || name.starts_with("kubernetes.default") {
        return never("is the cluster's Kubernetes API");
    }
    if name.ends_with(".internal") || name.ends_with(".local") && !name.ends_with(".cluster.local") {
        return never("is a link-local or cloud-internal name (.local, .internal: the metadata service lives there)");
    }
    if name.ends_with(".svc") || name.contains(".svc.") || name.ends_with(".cluster.local") {
        return private("is a cluster Service name");
    }
    if !name.contains('.') {
        return private("is a one-label name (the pod's DNS search path resolves it to a Service of the cluster)");
    }
    None
}

fn is_host_header(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => is_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        _ => is_host(s),
    }
}

fn is_header_name(s: &str) -> bool {
    (1..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_ipv4_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, prefix)) => {
            ip.parse::<Ipv4Addr>().is_ok() && !prefix.starts_with('+') && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
        }
        None => s.parse::<Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
  "proxychain": [
    { "name": "cache", "image": "edge-cache:6.5.0" },
    { "name": "example", "image": "example-simple:1.0.0" }
  ],
  "environments": {
    "Production": {
      "origin": {
        "address": "my-s3-bucket.s3-website.us-east-2.amazonaws.com",
        "host_header": "my-s3-bucket.s3-website.us-east-2.amazonaws.com",
        "enable_sni": false,
        "verify_certificate": false
      },
      "alternate_origins": {
        "images": { "address": "images.example.com", "host_header": "images.example.com" }
      },
      "ip_blacklist": ["203.0.113.7", "198.51.100.0/24"]
    },
    "Staging": {
      "origin": { "address": "staging.example.com", "enable_sni": true, "verify_certificate": true }
    }
  }
}"#;

    fn messages(text: &str) -> Vec<String> {
        parse(text.as_bytes()).1.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_outage_page_and_domains_are_read_and_bad_ones_refused_at_their_place() {
        let env = |extra: &str| {
            format!(
                r#"{{"proxychain": [], "environments": {{"Production": {{{extra} "origin": {{"address": "o.example.com"}}}}}}}}"#
            )
        };
        let (config, diags) = parse(
            env(r#""outage_page": "down.html", "domains": ["www.example.com", "*.shop.example.com"],"#).as_bytes(),
        );
        assert!(diags.is_empty(), "{diags:?}");
        let production = config.unwrap().environments.remove(0);
        assert_eq!(production.outage_page.as_deref(), Some("down.html"));
        assert_eq!(production.domains, ["www.example.com", "*.shop.example.com"]);
        let m = messages(&env(
            r#""outage_page": "../x.html", "domains": ["WWW.example.com", "a.example.com", "a.example.com", "nodot"],"#,
        ));
        assert!(m[0].contains("environments.Production.outage_page \"../x.html\": name an .html file"), "{m:?}");
        assert!(m.iter().any(|l| l.contains("domains[0] \"WWW.example.com\": use a lower-case DNS name")), "{m:?}");
        assert!(m.iter().any(|l| l.contains("domains[2] \"a.example.com\": listed twice")), "{m:?}");
        assert!(m.iter().any(|l| l.contains("domains[3] \"nodot\"")), "{m:?}");
    }

    #[test]
    fn sample_application_parses_clean_into_the_model() {
        let (config, diags) = parse(SAMPLE.as_bytes());
        assert!(diags.is_empty(), "{diags:?}");
        let config = config.unwrap();
        assert_eq!(config.proxychain[1].name, "example");
        assert_eq!(config.proxychain[1].image, "example-simple:1.0.0");
        assert_eq!(config.environment_names(), ["Production", "Staging"]);
        let prod = config.environment("Production").unwrap();
        assert_eq!(prod.origin.as_ref().unwrap().enable_sni, Some(false));
        assert_eq!(prod.alternate_origins[0].0, "images");
        assert_eq!(prod.ip_blacklist, ["203.0.113.7", "198.51.100.0/24"]);
    }

    #[test]
    fn bad_module_name_is_reported_at_its_value() {
        let text = SAMPLE.replace("\"example\", \"image\"", "\"ex-ample\", \"image\"");
        assert_eq!(
            messages(&text),
            [
                r#"error: section.config.json:4:15: proxychain[1].name "ex-ample": use letters and digits only (1-32 characters)"#
            ]
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = r#"{
  "proxychain": [ { "name": "a", "image": "nope" }, { "name": "a", "image": "x:1" }, 7 ],
  "environments": {
    "Production": { "origin": { "address": "http://x.com/", "http_port": 0 }, "ip_blacklist": ["1.2.3.4/33"], "colour": 1 }
  },
  "extra": true
}"#;
        let m = messages(text);
        let want = [
            "2:43: proxychain[0].image \"nope\": use module:version",
            "2:63: proxychain[1].name \"a\": already used at line 2",
            "2:86: proxychain[2]: expected an object, found a number",
            "4:44: environments.Production.origin.address \"http://x.com/\"",
            "4:74: environments.Production.origin.http_port: expected a port number",
            "4:96: environments.Production.ip_blacklist[0] \"1.2.3.4/33\"",
            "warning: section.config.json:4:111: environments.Production.colour: unknown key",
            "warning: section.config.json:6:3: extra: unknown key",
        ];
        assert_eq!(m.len(), want.len(), "{m:#?}");
        for w in want {
            assert!(m.iter().any(|line| line.contains(w)), "no {w:?} in {m:#?}");
        }
    }

    #[test]
    fn missing_origin_is_scoped_to_its_environment() {
        let text = SAMPLE.replace(
            r#""origin": { "address": "staging.example.com", "enable_sni": true, "verify_certificate": true }"#,
            "",
        );
        let (config, mut diags) = parse(text.as_bytes());
        assert_eq!(diags.len(), 1);
        assert!(diags[0].to_string().contains("environments.Staging: has no origin"), "{diags:?}");
        let mut for_prod = diags.clone();
        scope_to_branch(config.as_ref(), &mut for_prod, "Production");
        assert!(!for_prod[0].is_error(), "a Production push only warns about Staging");
        scope_to_branch(config.as_ref(), &mut diags, "Staging");
        assert!(diags[0].is_error());
    }

    #[test]
    fn pushing_an_undefined_environment_names_the_defined_ones() {
        let (config, mut diags) = parse(SAMPLE.as_bytes());
        scope_to_branch(config.as_ref(), &mut diags, "Dev");
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("branch \"Dev\" is not an environment (defined: Production, Staging)"));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let m =
            messages("{\n  \"proxychain\": [\n    { \"name\": \"cache\", \"image\": \"edge-cache:6.5.0\" },\n  ]\n");
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("error: section.config.json:4:3: invalid JSON:"), "{m:?}");
    }

    #[test]
    fn wrong_shapes_name_what_was_expected() {
        let m = messages(r#"{"proxychain": {}, "environments": []}"#);
        assert!(m[0].contains("1:16: proxychain: expected an array"), "{m:?}");
        assert!(m[1].contains("1:36: environments: expected an object, found an array"), "{m:?}");
        let m = messages("[]");
        assert_eq!(m, ["error: section.config.json:1:1: the top level: expected an object, found an array"]);
    }

    #[test]
    fn huge_proxychains_are_refused_without_per_entry_noise() {
        let entries = vec![r#"{"name":"a","image":"b:1"}"#; 10_000].join(",");
        let m = messages(&format!(r#"{{"proxychain":[{entries}],"environments":{{}}}}"#));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("has 10000 modules; at most 64"));
    }

    fn origin_messages(address: &str, rules: &Rules) -> Vec<String> {
        let text = format!(
            r#"{{"proxychain": [], "environments": {{"Production": {{"origin": {{"address": "{address}"}}}}}}}}"#
        );
        parse_with(text.as_bytes(), rules).1.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn special_origin_addresses_are_refused_at_their_position_with_the_fix() {
        let strict = Rules::default();
        for a in [
            "169.254.169.254",
            "100.64.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:169.254.169.254",
            "localhost",
            "kubernetes.default.svc.cluster.local",
            "kubernetes",
            "egress",
            "egress.section-x.svc",
            "api.team.svc.example.org",
            "db.cluster.local",
            "metadata.google.internal",
        ] {
            let m = origin_messages(a, &strict);
            assert_eq!(m.len(), 1, "{a}: {m:?}");
            assert!(
                m[0].starts_with(&format!(
                    "error: section.config.json:1:74: environments.Production.origin.address \"{a}\": "
                )),
                "{m:?}"
            );
            assert!(m[0].contains("use the origin's public host name or address"), "{m:?}");
        }
        for a in ["203.0.113.10", "2001:db8::1", "origin.example.com", "my-bucket.s3-website.us-east-2.amazonaws.com"] {
            assert!(origin_messages(a, &strict).is_empty(), "{a}");
        }
        // Operators may allow private origins; loopback, link-local and the API stay refused.
        let allow = Rules { allow_private_origins: true };
        assert!(origin_messages("10.1.2.3", &strict)[0].contains("--allow-private-origins"));
        for a in ["10.1.2.3", "100.64.0.1", "fd00::1", "api.team.svc.cluster.local", "egress"] {
            assert!(origin_messages(a, &allow).is_empty(), "{a}");
        }
        for a in ["127.0.0.1", "169.254.169.254", "localhost", "kubernetes.default.svc"] {
            assert_eq!(origin_messages(a, &allow).len(), 1, "{a}");
        }
    }

    #[test]
    fn alternate_origin_names_that_are_map_keywords_or_differ_only_in_case_are_refused() {
        let text = r#"{"proxychain": [], "environments": {"Production": {"origin": {"address": "a.example.com"},
"alternate_origins": {"default": {"address": "b.example.com"}, "include": {"address": "b.example.com"},
"Images": {"address": "b.example.com"}, "images": {"address": "b.example.com"}, "ok": {"address": "b.example.com"}}}}}"#;
        let (config, diags) = parse(text.as_bytes());
        let m: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(m.len(), 3, "{m:#?}");
        assert!(
            m[0].contains(
                "2:23: environments.Production.alternate_origins.default: \"default\" is a keyword of nginx's map"
            ),
            "{m:#?}"
        );
        assert!(
            m[1].contains("2:64: environments.Production.alternate_origins.include: \"include\" is a keyword"),
            "{m:#?}"
        );
        assert!(m[2].contains("3:41: environments.Production.alternate_origins.images: the same name as the alternate origin at line 3 but for case"), "{m:#?}");
        let config = config.unwrap();
        let names: Vec<&str> = config.environments[0].alternate_origins.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Images", "ok"]);
    }

    #[test]
    fn rules_for_names_and_addresses() {
        assert!(is_module_name("cache2") && !is_module_name("ex-ample") && !is_module_name(&"a".repeat(33)));
        assert!(is_package_ref("example-simple:1.0.0") && !is_package_ref("example-simple") && !is_package_ref(":1"));
        assert!(is_host("my-bucket.s3-website.us-east-2.amazonaws.com") && is_host("10.0.0.1") && is_host("::1"));
        assert!(!is_host("http://x") && !is_host("a..b") && !is_host("-a.com") && !is_host("a.com:80"));
        assert!(is_ipv4_or_cidr("198.51.100.0/24") && !is_ipv4_or_cidr("198.51.100.0/+24") && !is_ipv4_or_cidr("::1"));
    }
}
