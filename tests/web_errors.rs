//! One error mapping for everything the router answers, against a real server: handlers'
//! errors, axum's own rejections (Query, Path, Json), the 404 fallback, 405s, and the auth
//! middleware's 401 and 403 each answer in their path's shape: `{"error": {"code", "message"}}`
//! under `/api`, `{"message"}` on Aperture's paths, `devpop: ...` text for git clients.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn content_type(r: &HttpResponse) -> String {
    r.head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

/// The response as devpop's API error: its code and message.
fn api_error(r: &HttpResponse) -> (String, String) {
    assert_eq!(content_type(r), "application/json", "{} {}", r.head, r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("not an API error: {v}")).to_owned();
    let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {v}")).to_owned();
    assert!(!message.is_empty(), "{v}");
    (code, message)
}

/// The response as an Aperture error: its message.
fn aperture_error(r: &HttpResponse) -> String {
    assert_eq!(content_type(r), "application/json", "{} {}", r.head, r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    assert!(v.get("error").is_none(), "Aperture's shape has no error object: {v}");
    v["message"].as_str().unwrap_or_else(|| panic!("not an Aperture error: {v}")).to_owned()
}

/// The response as text for a git client.
fn text_error(r: &HttpResponse) -> String {
    assert!(content_type(r).starts_with("text/plain"), "{} {}", r.head, r.text());
    let text = r.text();
    assert!(text.starts_with("devpop: "), "{text}");
    text
}

#[test]
fn a_query_string_the_handler_cannot_read_is_a_json_400_under_api() {
    let devpop = Devpop::start();
    let r = http(&devpop.addr(), "GET", "/api/v1/tokens?limit=lots", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let (code, message) = api_error(&r);
    assert_eq!(code, "bad_request");
    assert!(message.contains("lots"), "{message}");
    let r = http(&devpop.addr(), "GET", "/api/v1/deployments?limit=lots", &[], b"");
    assert_eq!((r.status, api_error(&r).0.as_str()), (400, "invalid_query"));
}

#[test]
fn a_path_segment_that_is_not_utf8_is_a_400_in_each_paths_shape() {
    let devpop = Devpop::start();
    let r = http(&devpop.addr(), "GET", "/api/v1/deployments/%FF", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api_error(&r).0, "bad_request");
    let r = http(&devpop.addr(), "GET", "/api/v1/account/%FF", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    aperture_error(&r);
}

#[test]
fn a_body_that_is_not_json_or_not_declared_json_is_refused_as_json() {
    let devpop = Devpop::start();
    let path = "/api/v1/accounts/1/applications";
    let r = http(&devpop.addr(), "POST", path, &[("Content-Type", "application/json")], b"{");
    assert_eq!((r.status, api_error(&r).0.as_str()), (400, "invalid_body"));
    let r = http(&devpop.addr(), "POST", path, &[], b"{}");
    assert_eq!((r.status, api_error(&r).0.as_str()), (415, "unsupported_media_type"));
}

#[test]
fn unknown_paths_are_404s_in_each_paths_shape() {
    let devpop = Devpop::start();
    let r = http(&devpop.addr(), "GET", "/api/v1/nothing-here", &[], b"");
    assert_eq!(r.status, 404);
    let (code, message) = api_error(&r);
    assert_eq!(code, "not_found");
    assert!(message.contains("openapi.json"), "{message}");
    let r = http(&devpop.addr(), "GET", "/nothing-here", &[], b"");
    assert_eq!(r.status, 404);
    assert!(text_error(&r).contains("/account/<account>"), "{}", r.text());
}

#[test]
fn a_method_a_route_does_not_answer_is_a_405_that_says_which_it_does() {
    let devpop = Devpop::start();
    let r = http(&devpop.addr(), "DELETE", "/api/v1/deployments", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    let (code, message) = api_error(&r);
    assert_eq!(code, "method_not_allowed");
    assert!(message.contains("DELETE"), "{message}");
    assert!(r.head.to_ascii_lowercase().contains("\nallow: get,head"), "{}", r.head);
    let r = http(&devpop.addr(), "DELETE", "/api/v1/account", &[], b"");
    assert_eq!(r.status, 405);
    assert!(aperture_error(&r).contains("DELETE"));
    let url = devpop.create_app("acme", "shop", "shop");
    let path = url.split_once(&devpop.addr()).unwrap().1.to_owned() + "/info/refs";
    let r = http(&devpop.addr(), "DELETE", &path, &[], b"");
    assert_eq!(r.status, 405);
    text_error(&r);
}

#[test]
fn a_missing_or_foreign_token_is_refused_in_each_paths_shape() {
    let devpop = Devpop::start_with(&["--auth", "tokens"]);
    devpop.create_app("acme", "shop", "shop");
    let r = http(&devpop.addr(), "GET", "/api/v1/deployments", &[], b"");
    assert_eq!((r.status, api_error(&r).0.as_str()), (401, "unauthorized"));
    assert!(r.head.to_ascii_lowercase().contains("www-authenticate: basic"), "{}", r.head);
    let r = http(&devpop.addr(), "GET", "/api/v1/account", &[], b"");
    assert_eq!(r.status, 401);
    aperture_error(&r);
    let r = http(
        &devpop.addr(),
        "GET",
        "/account/acme/application/shop/shop.git/info/refs?service=git-upload-pack",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
    text_error(&r);

    let out = Command::new(DEVPOP)
        .args(["token", "create", "--account", "globex", "--data"])
        .arg(devpop.data.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bearer = format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim());
    let auth = [("Authorization", bearer.as_str())];
    let r = http(&devpop.addr(), "GET", "/api/v1/accounts/acme/applications", &auth, b"");
    assert_eq!((r.status, api_error(&r).0.as_str()), (403, "forbidden"));
    let r = http(&devpop.addr(), "GET", "/api/v1/account/acme", &auth, b"");
    assert_eq!(r.status, 403);
    aperture_error(&r);
    let r = http(
        &devpop.addr(),
        "GET",
        "/account/acme/application/shop/shop.git/info/refs?service=git-upload-pack",
        &auth,
        b"",
    );
    assert_eq!(r.status, 403);
    text_error(&r);
}

#[test]
fn a_token_lifetime_out_of_range_is_a_422_never_a_panic_or_an_expired_token() {
    let devpop = Devpop::start();
    let create = |expires_in: &str| {
        let body = format!(r#"{{"account": "acme", "expires_in": {expires_in}}}"#);
        http(&devpop.addr(), "POST", "/api/v1/tokens", &[("Content-Type", "application/json")], body.as_bytes())
    };
    // 2^63 seconds overflowed the timestamp (the handler panicked); u64::MAX wrapped to a
    // negative lifetime (a 201 with an already-expired token); 0 expires at once.
    for out in ["9223372036854775807", "18446744073709551615", "1000000000000", "0"] {
        let r = create(out);
        assert_eq!(r.status, 422, "expires_in {out}: {}", r.text());
        let (code, message) = api_error(&r);
        assert_eq!(code, "invalid_expiry");
        assert!(message.contains("10 years"), "{message}");
    }
    let r = create("3600");
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let expires: jiff::Timestamp = v["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > jiff::Timestamp::now(), "{v}");
    let r = http(&devpop.addr(), "GET", "/api/v1/tokens", &[], b"");
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["total"], 1, "only the valid token was made");
}
