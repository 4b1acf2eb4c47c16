//! An origin: the environment's and its alternate ones, and what an origin address may be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

impl Checker {
    pub(super) fn origin(&mut self, node: &Node, path: &str) -> Option<Origin> {
        let members = self.object(node, path)?;
        let mut origin = Origin::default();
        let mut address = None;
        for (key, m) in self.keyed(members, path) {
            let here = join(path, &m.key);
            let v = &m.value;
            match key {
                OriginKey::Address => {
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
                OriginKey::HostHeader => {
                    if let Some(h) = self.string(v, &here) {
                        if is_host_header(&h) {
                            origin.host_header = Some(h);
                        } else {
                            self.error(v.pos, format!("{here} {h:?}: use a host name, optionally with :port"));
                        }
                    }
                }
                OriginKey::EnableSni => origin.enable_sni = self.boolean(v, &here),
                OriginKey::VerifyCertificate => origin.verify_certificate = self.boolean(v, &here),
                OriginKey::DisableKeepalive => origin.disable_keepalive = self.boolean(v, &here),
                OriginKey::ProxyAcmeChallenge => origin.proxy_acme_challenge = self.boolean(v, &here),
                OriginKey::HttpPort => origin.http_port = self.port(v, &here),
                OriginKey::HttpsPort => origin.https_port = self.port(v, &here),
                OriginKey::RemoveRequestHeaders => origin.remove_request_headers = self.header_names(v, &here),
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

    pub(super) fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        match node.as_u64() {
            Some(p @ 1..=65535) => Some(p as u16),
            _ => {
                self.error(node.pos, format!("{path}: expected a port number from 1 to 65535"));
                None
            }
        }
    }

    pub(super) fn header_names(&mut self, node: &Node, path: &str) -> Vec<String> {
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

    pub(super) fn alternate_origins(&mut self, node: &Node, path: &str) -> Vec<(String, Origin)> {
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

pub(super) fn is_host_header(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => is_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        _ => is_host(s),
    }
}

pub(super) fn is_header_name(s: &str) -> bool {
    (1..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
