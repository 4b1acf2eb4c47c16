//! The config parser's unit tests.

use super::environment::is_ipv4_or_cidr;
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
    let (config, diags) =
        parse(env(r#""outage_page": "down.html", "domains": ["www.example.com", "*.shop.example.com"],"#).as_bytes());
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
    let m = messages("{\n  \"proxychain\": [\n    { \"name\": \"cache\", \"image\": \"edge-cache:6.5.0\" },\n  ]\n");
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
    let text =
        format!(r#"{{"proxychain": [], "environments": {{"Production": {{"origin": {{"address": "{address}"}}}}}}}}"#);
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

#[test]
fn an_unknown_key_warning_lists_every_key_as_the_spec_spells_it() {
    let text = r#"{ "proxychain": [], "environments": { "Production": {
        "origin": { "address": "example.com", "colour": 1 }, "colour": 2 } }, "colour": 3 }"#;
    let m = messages(text).join("\n");
    for known in [
        "(known: proxychain, environments)",
        "(known: origin, alternate_origins, ip_blacklist, maintain_upstream_content_encoding, outage_page, domains)",
        "(known: address, host_header, enable_sni, verify_certificate, remove_request_headers, disable_keepalive, proxy_acme_challenge, http_port, https_port)",
    ] {
        assert!(m.contains(known), "no {known:?} in {m}");
    }
}
