//! The nginx configs of devpop's own hops (private-ingress, egress, static-server): the
//! templates, the one filter every value passes on its way into a config, and the values the
//! templates get.
//!
//! **One filter.** The templates are rendered with a minijinja formatter ([`format_value`])
//! instead of minijinja's default: every `{{ value }}` goes through it, there is no `safe`
//! bypass, and it lets through only integers and strings. A string comes out as one nginx
//! argument: double-quoted, with `\` and `"` escaped; a string that holds a `$` (nginx would
//! expand a variable: there is no escape for it) or a control character (a line break ends a
//! comment or a directive) stops the render. Values were restricted by validation before they
//! get here; the filter is what makes a missed rule harmless.
//!
//! **No pushed file name reaches a config.** The outage page is mounted at a fixed name
//! (`outage_pages/outage.html`) and custom error pages only as `custom_errors/NNN.html` for
//! the codes nginx can answer; the templates refer to those fixed names only.

use std::net::IpAddr;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};

use crate::validation::config::{Environment, Origin};

/// The size of the writable emptyDir each of devpop's nginx pods mounts at `/tmp`.
pub const TMP_SIZE: &str = "64Mi";
/// The largest request body private-ingress and egress pass on (streamed, never stored).
pub const MAX_BODY_SIZE: &str = "1024m";
/// The fixed name the outage page is mounted at in static-server.
pub const OUTAGE_PAGE: &str = "outage_pages/outage.html";

/// The nginx config templates, compiled once, with the one filter as their formatter.
pub(super) fn templates() -> &'static minijinja::Environment<'static> {
    static TEMPLATES: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_formatter(format_value);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in [
            ("private-ingress", include_str!("../../templates/nginx/private-ingress.conf.j2")),
            ("egress", include_str!("../../templates/nginx/egress.conf.j2")),
            ("static-server", include_str!("../../templates/nginx/static-server.conf.j2")),
        ] {
            env.add_template(name, source).expect("templates/nginx are valid templates");
        }
        env
    })
}

/// The one filter (see the module docs): how every template value is written into a config.
fn format_value(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::Number => match value.as_i64() {
            Some(n) => n.to_string(),
            None => return Err(Error::new(ErrorKind::InvalidOperation, format!("{value} is not an integer"))),
        },
        ValueKind::String => quote(value.as_str().unwrap_or_default())
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?,
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("a {kind} cannot go into an nginx config (only strings and integers)"),
            ))
        }
    };
    out.write_str(&text).map_err(Error::from)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuoteError {
    #[error("{0:?} holds a '$', which nginx would expand as a variable")]
    Dollar(String),
    #[error("{0:?} holds a control character")]
    Control(String),
}

/// `s` as one double-quoted nginx argument, or why it cannot be one.
pub fn quote(s: &str) -> Result<String, QuoteError> {
    if s.contains('$') {
        return Err(QuoteError::Dollar(s.to_owned()));
    }
    if s.chars().any(char::is_control) {
        return Err(QuoteError::Control(s.to_owned()));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// `host:port`, with an IPv6 address in brackets (`[2001:db8::1]:443`).
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// What egress's template knows of one origin. `index` 0 is the environment's origin.
fn origin_view(index: usize, name: &str, o: &Origin) -> Value {
    let host = o.host_header.clone().unwrap_or_else(|| host_port_for_header(&o.address));
    // The TLS name (SNI and the name the certificate must hold): the host, without a port.
    let tls_name = match o.host_header.as_deref() {
        Some(h) => strip_port(h).to_owned(),
        None => o.address.clone(),
    };
    minijinja::context! {
        index => index,
        name => name,
        host => host,
        tls_name => tls_name,
        http_server => host_port(&o.address, o.http_port.unwrap_or(80)),
        https_server => host_port(&o.address, o.https_port.unwrap_or(443)),
        sni => o.enable_sni.unwrap_or(true),
        verify => o.verify_certificate.unwrap_or(true),
        keepalive => !o.disable_keepalive.unwrap_or(false),
        remove_headers => o.remove_request_headers,
    }
}

/// The Host header for an origin given by address only (an IPv6 address in brackets).
fn host_port_for_header(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_owned(),
    }
}

fn strip_port(host_header: &str) -> &str {
    match host_header.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_header,
    }
}

/// The status codes with a page in `custom_errors/` (`NNN.html`, 300-599 but 499).
pub fn custom_error_codes<'a>(names: impl Iterator<Item = &'a String>) -> Vec<u16> {
    names
        .filter_map(|k| k.strip_suffix(".html"))
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|code| code.parse::<u16>().ok())
        .filter(|c| (300..600).contains(c) && *c != 499)
        .collect()
}

/// The page of `outage_pages/` that is served during an outage: the first `*.html` at its top.
pub fn outage_page<'a>(names: impl Iterator<Item = &'a String>, engaged: Option<&str>) -> Option<&'a String> {
    let mut names = names.into_iter();
    match engaged {
        Some(page) => names.find(|k| k.as_str() == page),
        None => names.find(|k| k.ends_with(".html") && !k.contains('/')),
    }
}

/// The values of egress's template.
pub(super) fn egress_context(
    namespace: &str,
    env: &Environment,
    origin: &Origin,
    custom_errors: &[u16],
    has_outage_page: bool,
    static_server: &str,
) -> Value {
    // An engaged outage page answers every request (503), over a custom 503 page.
    let engaged = env.outage_page.is_some() && has_outage_page;
    let custom_errors: Vec<u16> = custom_errors.iter().copied().filter(|c| !(engaged && *c == 503)).collect();
    let custom_errors = custom_errors.as_slice();
    let mut origins = vec![origin_view(0, "origin", origin)];
    let mut alternates = Vec::new();
    for (i, (name, o)) in env.alternate_origins.iter().enumerate() {
        origins.push(origin_view(i + 1, name, o));
        // The map's source is "$http_section_origin:", so no key is one of map's keywords.
        alternates.push(minijinja::context! { key => format!("{name}:"), index => i + 1 });
    }
    // The outage page covers the gateway errors that have no custom page of their own.
    let outage_codes: Vec<u16> = if has_outage_page {
        [502, 503, 504].into_iter().filter(|c| !custom_errors.contains(c)).collect()
    } else {
        Vec::new()
    };
    minijinja::context! {
        namespace => namespace,
        tmp_size => TMP_SIZE,
        max_body_size => MAX_BODY_SIZE,
        origins => origins,
        alternates => alternates,
        ip_blacklist => env.ip_blacklist,
        maintain_encoding => env.maintain_upstream_content_encoding,
        custom_errors => custom_errors,
        outage_codes => outage_codes,
        outage_engaged => engaged,
        static_server => static_server,
    }
}

pub(super) fn private_ingress_context(namespace: &str, first_hop: &str) -> Value {
    minijinja::context! {
        namespace => namespace,
        tmp_size => TMP_SIZE,
        max_body_size => MAX_BODY_SIZE,
        first_hop => first_hop,
    }
}

pub(super) fn static_server_context(namespace: &str) -> Value {
    minijinja::context! { namespace => namespace, tmp_size => TMP_SIZE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_quotes_and_backslashes_and_refuses_dollars_and_line_breaks() {
        assert_eq!(quote("a.example.com").unwrap(), r#""a.example.com""#);
        assert_eq!(quote(r#"a"b\c; } {"#).unwrap(), r#""a\"b\\c; } {""#);
        assert!(matches!(quote("$host"), Err(QuoteError::Dollar(_))));
        assert!(matches!(quote("a\nlocation"), Err(QuoteError::Control(_))));
        assert!(matches!(quote("a\rb"), Err(QuoteError::Control(_))));
    }

    #[test]
    fn every_template_value_goes_through_the_filter_with_no_safe_bypass() {
        let mut env = minijinja::Environment::new();
        env.set_formatter(format_value);
        let render = |src: &str, v: &str| env.render_str(src, minijinja::context! { v => v });
        assert_eq!(render("x {{ v }};", "a b").unwrap(), r#"x "a b";"#);
        assert_eq!(render("x {{ v|safe }};", "a\"").unwrap(), r#"x "a\"";"#);
        assert!(render("x {{ v }};", "a$b").is_err());
        assert!(env.render_str("{{ true }}", ()).is_err(), "booleans must be spelled on/off by the template");
        assert_eq!(env.render_str("{{ 8080 }}", ()).unwrap(), "8080");
    }

    #[test]
    fn ipv6_origins_are_bracketed() {
        assert_eq!(host_port("2001:db8::1", 443), "[2001:db8::1]:443");
        assert_eq!(host_port("192.0.2.1", 80), "192.0.2.1:80");
        assert_eq!(host_port("origin.example.com", 8443), "origin.example.com:8443");
        assert_eq!(host_port_for_header("2001:db8::1"), "[2001:db8::1]");
        assert_eq!(strip_port("a.example.com:8443"), "a.example.com");
    }
}
