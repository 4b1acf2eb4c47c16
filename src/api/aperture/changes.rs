//! Changes to an environment: `configuration` (JSON Patch on section.config.json), `update`
//! (JSON Patch on any JSON file of the repo), `egress`, `ipRestrictions`, `outagepage` and
//! `domain/{hostName}`. Each is a commit on the environment's branch, attributed to the
//! token, checked exactly like a push of that commit (the same checks, the same lines); a
//! refused one changes nothing and answers 400 with the checks' lines, an accepted one moves
//! the branch and is deployed.
//!
//! What these change in section.config.json, and the commit each is, are the domain's
//! ([`crate::environment_config`], [`crate::edits::Actions::commit_change`]); this module is
//! their Aperture shape (paths, bodies, answers).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::applications::{resolve, summary, with_environment};
use super::{json_body, ok, strict_body, ApiError, Caller, Result};
use crate::auth::Principal;
use crate::edits::{Change, Edit};
use crate::environment_config::{self as settings, environment_mut, put_or_remove, read_config};
use crate::web::query::blocking;
use crate::web::state::AppState;

/// The most operations one JSON Patch may carry.
const MAX_PATCH_OPS: usize = 1000;

type Names = (String, String, String);

fn config_or_400(repo: &Repository, head: Oid) -> Result<Value> {
    Ok(read_config(repo, head).ok_or(settings::ConfigEditError::NoConfig)?)
}

/// Commits what `make` returns on the environment Aperture's path names (see
/// [`crate::edits::Actions::commit_change`]).
async fn commit_change(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    (a, b, env): Names,
    action: &str,
    make: impl FnOnce(&Repository, Oid, &str) -> Result<Option<Edit>> + Send + 'static,
) -> Result<Option<Change>> {
    let st = state.clone();
    let (_, id) = blocking(move || resolve(&st, &a, &b)).await?;
    state.actions().commit_change(&crate::web::author(principal, peer), &id, &env, action, make).await
}

/// Changes section.config.json with `f` (given the config, the environment's name, the repo
/// and its commit); no commit when the result is the same. Returns the config as it now is.
async fn change_config(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    names: Names,
    action: &'static str,
    f: impl FnOnce(&mut Value, &str, &Repository, Oid) -> Result<()> + Send + 'static,
) -> Result<(Value, Option<u64>)> {
    let after = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let out = after.clone();
    let change = commit_change(state, principal, peer, names, action, move |repo, head, env| {
        let message = format!("{action} on {env} through the API\n");
        settings::config_edit(repo, head, message, |config| {
            f(config, env, repo, head)?;
            *out.lock().expect("config") = config.clone();
            Ok(())
        })
    })
    .await?;
    let config = after.lock().expect("config").clone();
    Ok((config, change.map(|c| c.deployment)))
}

/// The header that names the deployment a change made (absent: the change changed nothing).
pub const DEPLOYMENT_HEADER: &str = "devpop-deployment";

/// A response to a change: `body` (or 204 when `None`), with the deployment it made.
fn changed(body: Option<Value>, deployment: Option<u64>) -> Response {
    let mut r = match body {
        Some(v) => ok(v),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if let Some(d) = deployment {
        r.headers_mut().insert(DEPLOYMENT_HEADER, d.into());
    }
    r
}

/// Applies an RFC 6902 patch (at most [`MAX_PATCH_OPS`] operations) to `doc`.
fn apply_patch(doc: &mut Value, body: &Bytes) -> Result<()> {
    let ops: Vec<Value> = json_body(body)?;
    if ops.len() > MAX_PATCH_OPS {
        return Err(ApiError::bad(format!("a patch may carry at most {MAX_PATCH_OPS} operations")));
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| ApiError::bad(format!("not an RFC 6902 JSON Patch: {e}")))?;
    json_patch::patch(doc, &patch).map_err(|e| ApiError::bad(format!("the patch does not apply: {e}")))
}

pub async fn configuration(State(state): State<AppState>, Path(names): Path<Names>) -> Result<Response> {
    Ok(ok(with_environment(&state, names, |_, _, _, repo, _, head| config_or_400(repo, head)).await?))
}

pub async fn patch_configuration(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<Names>,
    body: Bytes,
) -> Result<Response> {
    let (config, d) = change_config(&state, &principal, peer, names, "configuration.patch", move |config, _, _, _| {
        apply_patch(config, &body)
    })
    .await?;
    Ok(changed(Some(config), d))
}

/// The components of a `filepath` header: a relative path inside the repo, no `.`, `..` or
/// `.git` component.
fn file_path(headers: &HeaderMap) -> Result<Vec<String>> {
    let raw = headers
        .get("filepath")
        .ok_or_else(|| ApiError::bad("send the file to change in the filepath header"))?
        .to_str()
        .map_err(|_| ApiError::bad("the filepath header is not text"))?;
    Ok(settings::repo_path(raw)?)
}

/// JSON Patch on the JSON file the `filepath` header names; answers the file's path, the
/// commit made and its deployment (both `null` when the patch changed nothing).
pub async fn update_file(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<Names>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let path = file_path(&headers)?;
    let filepath = path.join("/");
    let shown = filepath.clone();
    let change = commit_change(&state, &principal, peer, names, "file.patch", move |repo, head, env| {
        let tree = repo.find_commit(head).and_then(|c| c.tree())?;
        let entry = tree
            .get_path(std::path::Path::new(&shown))
            .map_err(|_| ApiError::not_found(format!("the environment's commit has no file {shown}")))?;
        let blob = repo.find_blob(entry.id()).map_err(|_| ApiError::bad(format!("{shown} is a folder, not a file")))?;
        let before: Value = serde_json::from_slice(blob.content())
            .map_err(|e| ApiError::bad(format!("{shown} is not JSON ({e}); only JSON files take a JSON Patch")))?;
        let mut doc = before.clone();
        apply_patch(&mut doc, &body)?;
        if doc == before {
            return Ok(None);
        }
        let message = format!("Patch {shown} on {env} through the API\n");
        Ok(Some(Edit::one(path, settings::pretty(&doc), message)))
    })
    .await?;
    let d = change.as_ref().map(|c| c.deployment);
    let commit = change.as_ref().map(|c| c.commit.to_string());
    Ok(changed(Some(json!({ "filepath": filepath, "commit": commit, "deployment": d })), d))
}

// ---- egress ----

/// The origin fields Aperture keeps per origin; the others are egress-wide in Aperture and
/// per origin in section.config.json.
const ORIGIN_FIELDS: [&str; 5] = ["address", "http_port", "https_port", "host_header", "disable_keepalive"];
use crate::environment_config::EGRESS_FIELDS;

/// Aperture's Egress, from an environment's settings.
fn egress_of(env: &Map<String, Value>) -> Value {
    let pick = |o: &Value| -> Value {
        let mut out = Map::new();
        for f in ORIGIN_FIELDS {
            if let Some(v) = o.get(f) {
                out.insert(f.to_owned(), v.clone());
            }
        }
        Value::Object(out)
    };
    let origin = env.get("origin").cloned().unwrap_or(Value::Null);
    let mut origins = Map::new();
    origins.insert("default".into(), pick(&origin));
    if let Some(alt) = env.get("alternate_origins").and_then(Value::as_object) {
        for (name, o) in alt {
            origins.insert(name.clone(), pick(o));
        }
    }
    let mut egress = Map::new();
    for f in EGRESS_FIELDS {
        match origin.get(f) {
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(v) => {
                egress.insert(f.to_owned(), v.clone());
            }
            None => {}
        }
    }
    egress.insert("origins".into(), Value::Object(origins));
    Value::Object(egress)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressOrigin {
    address: String,
    http_port: Option<u16>,
    https_port: Option<u16>,
    host_header: Option<String>,
    disable_keepalive: Option<bool>,
    keepalive_seconds: Option<u64>,
    tls_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Egress {
    origins: BTreeMap<String, EgressOrigin>,
    remove_request_headers: Option<Vec<String>>,
    enable_sni: Option<bool>,
    verify_certificate: Option<bool>,
    proxy_acme_challenge: Option<bool>,
    upstream_response_timeout_seconds: Option<u64>,
}

/// section.config.json's `origin` and `alternate_origins` for an Egress.
fn settings_of(egress: Egress) -> Result<(Value, Map<String, Value>)> {
    let unsupported = |field: &str| {
        ApiError::bad(format!("devpop's egress has no {field} setting; leave it out (see the README's API section)"))
    };
    if egress.remove_request_headers.as_ref().is_some_and(|h| h.is_empty() || h.len() > 50) {
        return Err(ApiError::bad("remove_request_headers: name 1 to 50 headers, or leave the field out"));
    }
    if egress.upstream_response_timeout_seconds.is_some() {
        return Err(unsupported("upstream_response_timeout_seconds"));
    }
    let wide = json!({
        "remove_request_headers": egress.remove_request_headers,
        "enable_sni": egress.enable_sni,
        "verify_certificate": egress.verify_certificate,
        "proxy_acme_challenge": egress.proxy_acme_challenge,
    });
    let mut default = None;
    let mut alternates = Map::new();
    for (name, o) in egress.origins {
        if o.keepalive_seconds.is_some() {
            return Err(unsupported("keepalive_seconds"));
        }
        if o.tls_name.is_some() {
            return Err(unsupported("tls_name"));
        }
        let mut origin = Map::new();
        let fields = json!({
            "address": o.address,
            "http_port": o.http_port,
            "https_port": o.https_port,
            "host_header": o.host_header,
            "disable_keepalive": o.disable_keepalive,
        });
        for (k, v) in fields.as_object().into_iter().flatten().chain(wide.as_object().into_iter().flatten()) {
            if !v.is_null() {
                origin.insert(k.clone(), v.clone());
            }
        }
        if name == "default" {
            default = Some(Value::Object(origin));
        } else {
            alternates.insert(name, Value::Object(origin));
        }
    }
    let default = default.ok_or_else(|| ApiError::bad("origins needs a default origin"))?;
    Ok((default, alternates))
}

// ---- IP restrictions ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpRestrictions {
    ip_blacklist: Vec<String>,
}

fn restrictions_of(env: &Map<String, Value>) -> IpRestrictions {
    let list = env.get("ip_blacklist").and_then(Value::as_array);
    IpRestrictions { ip_blacklist: list.into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect() }
}

// ---- settings read and written whole: egress, IP restrictions ----

/// A part of an environment's settings that Aperture reads and writes as one resource.
pub trait Setting: Send + 'static {
    /// The audit log's name for a change of it.
    const ACTION: &'static str;
    /// Aperture's view of it, from the environment's settings in section.config.json.
    fn read(env: &Map<String, Value>) -> Value;
    /// Puts a request body (Aperture's shape) into the environment's settings.
    fn write(env: &mut Map<String, Value>, body: &Bytes) -> Result<()>;
}

/// `egress`: `origin` and `alternate_origins`.
pub struct EgressSetting;

impl Setting for EgressSetting {
    const ACTION: &'static str = "egress.set";

    fn read(env: &Map<String, Value>) -> Value {
        egress_of(env)
    }

    fn write(env: &mut Map<String, Value>, body: &Bytes) -> Result<()> {
        let (origin, alternates) = settings_of(strict_body(body)?)?;
        env.insert("origin".into(), origin);
        put_or_remove(env, "alternate_origins", Value::Object(alternates));
        Ok(())
    }
}

/// `ipRestrictions`: `ip_blacklist`.
pub struct IpRestrictionSetting;

impl Setting for IpRestrictionSetting {
    const ACTION: &'static str = "ip_restrictions.set";

    fn read(env: &Map<String, Value>) -> Value {
        serde_json::to_value(restrictions_of(env)).expect("serialises")
    }

    fn write(env: &mut Map<String, Value>, body: &Bytes) -> Result<()> {
        let body: IpRestrictions = strict_body(body)?;
        settings::set_ip_blacklist(env, &body.ip_blacklist);
        Ok(())
    }
}

pub async fn read_setting<S: Setting>(State(state): State<AppState>, Path(names): Path<Names>) -> Result<Response> {
    let v = with_environment(&state, names, |_, _, _, repo, env, head| {
        let mut config = config_or_400(repo, head)?;
        Ok(S::read(environment_mut(&mut config, env)?))
    })
    .await?;
    Ok(ok(v))
}

pub async fn write_setting<S: Setting>(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<Names>,
    body: Bytes,
) -> Result<Response> {
    let env_name = names.2.clone();
    let (mut config, d) = change_config(&state, &principal, peer, names, S::ACTION, move |config, env, _, _| {
        S::write(environment_mut(config, env)?, &body)
    })
    .await?;
    Ok(changed(Some(S::read(environment_mut(&mut config, &env_name)?)), d))
}

// ---- outage pages ----

/// Aperture's OutagePage.
#[derive(Debug, Serialize)]
struct OutagePage {
    name: String,
    engaged: bool,
}

pub async fn outage_pages(State(state): State<AppState>, Path(names): Path<Names>) -> Result<Response> {
    let pages = with_environment(&state, names, |_, _, _, repo, env, head| {
        let config = config_or_400(repo, head)?;
        let engaged = config["environments"][env][settings::OUTAGE_PAGE].as_str().map(str::to_owned);
        Ok(settings::outage_page_names(repo, head)?
            .into_iter()
            .map(|name| OutagePage { engaged: engaged.as_deref() == Some(&name), name })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(ok(pages))
}

/// Engages `pageName`: the environment's egress serves it for every request until disengaged.
pub async fn engage_outage_page(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<Names>,
    Query(mut query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response> {
    let page = query
        .remove("pageName")
        .ok_or_else(|| ApiError::bad("name the page to engage: ?pageName=<file in outage_pages/>"))?;
    let (_, d) =
        change_config(&state, &principal, peer, names, "outage_page.engage", move |config, env, repo, head| {
            let pages = settings::outage_page_names(repo, head)?;
            Ok(settings::set_outage_page(config, env, Some(page), &pages)?)
        })
        .await?;
    Ok(changed(None, d))
}

pub async fn disengage_outage_page(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<Names>,
) -> Result<Response> {
    let (_, d) = change_config(&state, &principal, peer, names, "outage_page.disengage", move |config, env, _, _| {
        Ok(settings::set_outage_page(config, env, None, &[])?)
    })
    .await?;
    Ok(changed(None, d))
}

// ---- domains ----

/// The environment's summary after a domain change.
async fn domain_change(
    state: &AppState,
    principal: &Principal,
    peer: std::net::SocketAddr,
    (a, b, env, host): (String, String, String, String),
    add: bool,
) -> Result<Response> {
    let action = if add { "domain.add" } else { "domain.remove" };
    let names = (a.clone(), b.clone(), env.clone());
    let (_, d) = change_config(state, principal, peer, names, action, move |config, env, _, _| {
        Ok(settings::change_domain(config, env, &host, add)?)
    })
    .await?;
    let s = with_environment(state, (a, b, env), |st, n, id, repo, env, head| Ok(summary(st, n, id, repo, env, head)))
        .await?;
    Ok(changed(Some(serde_json::to_value(s).expect("serialises")), d))
}

pub async fn add_domain(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response> {
    if !body.is_empty() {
        let fields: Map<String, Value> = json_body(&body)?;
        if fields.contains_key("public_certificates") || fields.contains_key("private_key") {
            return Err(ApiError::bad(
                "certificates are out of scope for devpop: TLS is terminated in front of the cluster's Ingress; send no body",
            ));
        }
        if let Some(field) = fields.keys().next() {
            return Err(ApiError::bad(format!("{field}: adding a domain takes no fields; send no body")));
        }
    }
    domain_change(&state, &principal, peer, names, true).await
}

pub async fn remove_domain(
    State(state): State<AppState>,
    Caller { principal, peer }: Caller,
    Path(names): Path<(String, String, String, String)>,
) -> Result<Response> {
    domain_change(&state, &principal, peer, names, false).await
}
