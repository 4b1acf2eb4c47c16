//! One environment: its keys, outage page, domains and IP block list.

use std::net::Ipv4Addr;

use super::*;

impl Checker {
    pub(super) fn environment(&mut self, m: &Member, path: &str) -> Option<Environment> {
        if !is_branch_name(&m.key) {
            self.error(m.key_pos, format!("{path}: not a usable branch name; use letters, digits, '-', '_' or '.'"));
        }
        let members = self.object(&m.value, path)?;
        let members = self.keyed(members, path);
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
        for (key, member) in members {
            let here = join(path, &member.key);
            match key {
                EnvironmentKey::Origin => {
                    has_origin = true;
                    env.origin = self.origin(&member.value, &here);
                }
                EnvironmentKey::AlternateOrigins => {
                    env.alternate_origins = self.alternate_origins(&member.value, &here)
                }
                EnvironmentKey::IpBlacklist => env.ip_blacklist = self.ip_blacklist(&member.value, &here),
                EnvironmentKey::MaintainUpstreamContentEncoding => {
                    env.maintain_upstream_content_encoding = self.boolean(&member.value, &here).unwrap_or(false)
                }
                EnvironmentKey::OutagePage => env.outage_page = self.outage_page(&member.value, &here),
                EnvironmentKey::Domains => env.domains = self.domains(&member.value, &here),
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

    pub(super) fn outage_page(&mut self, node: &Node, path: &str) -> Option<String> {
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

    pub(super) fn domains(&mut self, node: &Node, path: &str) -> Vec<String> {
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

    pub(super) fn ip_blacklist(&mut self, node: &Node, path: &str) -> Vec<String> {
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

pub(super) fn is_ipv4_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, prefix)) => {
            ip.parse::<Ipv4Addr>().is_ok() && !prefix.starts_with('+') && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
        }
        None => s.parse::<Ipv4Addr>().is_ok(),
    }
}
