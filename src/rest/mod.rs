//! REST on port 5101: `/status`, previews, finished-game team info and `/getOrgForKey`, with the
//! original's status codes, bodies and CORS headers. State that lives on another shard (a match's
//! team info, a preview) is asked for through the mesh (`RestQuery`). Bad input gets a 400 JSON
//! error; unknown routes a JSON 404.

pub mod preview;
pub mod status;

use std::rc::Rc;

use serde_json::{Value, json};

use crate::cluster::Shared;
use crate::ingest::auth::{KeyCheck, check_key};
use crate::shard::Shard;
use crate::shard::messages::{ReplyBody, RestAnswer, RestQuery, ShardMsg};
use crate::transport::http::{Request, Response};
use crate::transport::server::preflight;

fn json_error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "error": message }).to_string())
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Response {
    if req.method == "OPTIONS" {
        return preflight(req);
    }
    let resp = route(shard, req).await;
    resp.with_header("Access-Control-Allow-Origin", "*")
}

/// Whether a request may see the operator endpoints (every live group code, per-shard figures):
/// with `ADMIN_TOKEN` set, when it carries the token (`Authorization: Bearer …` or `?token=…`);
/// without, when it comes straight from loopback (no proxy header: a reverse proxy on the same
/// host would make every visitor local).
fn operator(shard: &Shard, req: &Request) -> bool {
    match &shard.config.admin_token {
        Some(token) => {
            let bearer = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .map(String::from);
            bearer
                .or_else(|| req.query_param("token"))
                .is_some_and(|t| crate::util::constant_time_eq(t.as_bytes(), token.as_bytes()))
        }
        None => {
            req.peer.is_some_and(|ip| ip.is_loopback())
                && req.header("x-forwarded-for").is_none()
                && req.header("forwarded").is_none()
        }
    }
}

fn operator_refused(shard: &Shard) -> Response {
    let msg = if shard.config.admin_token.is_some() {
        "Operator endpoint: send the ADMIN_TOKEN as 'Authorization: Bearer <token>' or ?token=<token>."
    } else {
        "Operator endpoint: only local clients may see it; set ADMIN_TOKEN to open it to others."
    };
    Response::json(401, json!({ "error": msg }).to_string())
        .with_header("WWW-Authenticate", "Bearer")
}

async fn route(shard: &Rc<Shard>, req: &Request) -> Response {
    let method = req.method.as_str();
    let path = req.path.as_str();
    if matches!(path, "/" | "/metrics" | "/status/live") && !operator(shard, req) {
        return operator_refused(shard);
    }
    match (method, path) {
        ("GET" | "HEAD", "/status") => Response::json(
            200,
            json!({ "status": "UP", "matchesRunning": crate::cluster::matches_running(shard)
                .unwrap_or_else(|| shard.global.matches_running()) })
            .to_string(),
        ),
        ("PUT", "/createPreview") => create_preview(shard, req).await,
        ("GET" | "HEAD", "/metrics") => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(&shard.global.metrics, shard.backend.is_some()),
        ),
        ("GET" | "HEAD", "/") => Response::new(200, "text/html; charset=utf-8", status::PAGE)
            .with_header("Cache-Control", "no-store"),
        ("GET" | "HEAD", "/status/live") => status::live(shard).await,
        ("GET" | "HEAD", "/matches") => list_matches(shard, req).await,
        ("GET" | "HEAD", p) if p.starts_with("/matches/") => {
            match_snapshot(shard, req, &p["/matches/".len()..]).await
        }
        ("GET" | "HEAD", p) if p.starts_with("/preview/") => {
            let code = crate::transport::http::percent_decode(&p["/preview/".len()..]);
            if code.encode_utf16().count() != 6 || code.contains('/') {
                return json_error(400, "Invalid preview code format");
            }
            let resp = ask(shard, &code, RestQuery::PreviewGet(code.clone())).await;
            or_shared(shard, resp, Shared::Previews, &code).await
        }
        ("GET" | "HEAD", "/getOrgForKey") => {
            let keys = req.query_all("key");
            if keys.len() != 1 {
                return json_error(400, "Key is required");
            }
            let unauthorized =
                || Response::new(401, "text/html; charset=utf-8", "401 Unauthorized");
            // Without the backend no key belongs to an organisation.
            let Some(backend) = shard.backend.clone() else {
                return unauthorized();
            };
            match backend.validate_key(&keys[0]).await {
                crate::backend::KeyValidity::Valid {
                    organization_id,
                    organization_name,
                    is_supporter,
                } => Response::json(
                    200,
                    json!({"id": organization_id, "name": organization_name, "isSupporter": is_supporter}).to_string(),
                ),
                // QUIRK B2: the original crashed when the backend was down.
                crate::backend::KeyValidity::Invalid("Unknown Error") => {
                    json_error(502, "The key could not be checked: the backend did not answer")
                }
                crate::backend::KeyValidity::Invalid(_) => unauthorized(),
            }
        }
        ("GET" | "HEAD", "/getTeamInfoForCode") => {
            let codes = req.query_all("groupCode");
            if codes.len() != 1 {
                return json_error(400, "Group code is required");
            }
            let code = codes[0].clone();
            if !crate::code::valid_group_code(&code) {
                return json_error(400, crate::code::INVALID_GROUP_CODE);
            }
            let resp = ask(shard, &code, RestQuery::TeamInfo(code.clone())).await;
            or_shared(shard, resp, Shared::TeamInfo, &code).await
        }
        ("GET", "/getSupportPackages") if shard.backend.is_some() => support_packages(shard).await,
        ("GET", "/client/oauth-callback") if shard.backend.is_some() => {
            oauth_callback(shard, req).await
        }
        _ => json_error(404, &format!("Cannot {} {}", req.method, req.path)),
    }
}

/// `GET /getSupportPackages` (backend mode): Tebex packages with checkout links, cached for 10
/// minutes on this shard.
async fn support_packages(shard: &Rc<Shard>) -> Response {
    let Some(backend) = shard.backend.clone() else {
        return json_error(404, "Cannot GET /getSupportPackages");
    };
    let cached = shard
        .global
        .support_cache
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .filter(|(_, at)| at.elapsed() < preview::PREVIEW_TTL);
    if let Some((list, _)) = cached {
        return Response::json(200, list.to_string());
    }
    let c = &backend.config;
    let url = format!(
        "{}/packages/{}?extensionId={}",
        c.tebex_base_url, c.tebex_store_id, c.tebex_extension_id
    );
    match backend.request("GET", url, Vec::new(), None).await {
        Ok((status, body)) if (200..300).contains(&status) => {
            let Ok(Value::Array(mut list)) = serde_json::from_str::<Value>(&body) else {
                return json_error(
                    500,
                    "Internal server error, the package list is not a JSON array",
                );
            };
            for item in &mut list {
                if let Value::Object(m) = item {
                    let id = crate::engine::js::text(m.get("id"));
                    let checkout = format!(
                        "{}/checkout/{}/{id}?extensionId={}",
                        c.tebex_base_url, c.tebex_store_id, c.tebex_extension_id
                    );
                    m.insert("checkoutUrl".into(), Value::String(checkout));
                }
            }
            let list = Value::Array(list);
            if list.as_array().is_some_and(|a| !a.is_empty())
                && let Ok(mut cache) = shard.global.support_cache.lock()
            {
                *cache = Some((list.clone(), std::time::Instant::now()));
            }
            Response::json(200, list.to_string())
        }
        Ok(_) => json_error(502, "Failed to fetch packages"),
        Err(e) => json_error(500, &format!("Internal server error, {e}")),
    }
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `GET /client/oauth-callback?code=…` (backend mode): Discord code exchange, then a page that
/// opens the observer client through its deep link.
async fn oauth_callback(shard: &Rc<Shard>, req: &Request) -> Response {
    let Some(backend) = shard.backend.clone() else {
        return json_error(404, "Cannot GET /client/oauth-callback");
    };
    let c = &backend.config;
    let code = req.query_param("code").unwrap_or_default();
    let form = form_encode(&[
        ("client_id", &c.discord_client_id),
        ("client_secret", &c.discord_client_secret),
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &c.discord_redirect_uri),
    ]);
    let internal = || json_error(500, "Internal server error");
    let headers = vec![(
        "Content-Type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    let Ok((_, token_body)) = backend
        .request("POST", c.discord_oauth_url.clone(), headers, Some(form))
        .await
    else {
        return internal();
    };
    let Ok(token) = serde_json::from_str::<Value>(&token_body) else {
        return internal();
    };
    let auth = format!(
        "{} {}",
        crate::engine::js::text(token.get("token_type")),
        crate::engine::js::text(token.get("access_token"))
    );
    let Ok((status, user_body)) = backend
        .request(
            "GET",
            c.discord_user_url.clone(),
            vec![("Authorization", auth)],
            None,
        )
        .await
    else {
        return internal();
    };
    if status != 200 {
        return json_error(status, "Failed to fetch user data");
    }
    let Ok(user) = serde_json::from_str::<Value>(&user_body) else {
        return internal();
    };
    let t = |k: &str| crate::engine::js::text(user.get(k));
    let display = match user.get("global_name") {
        Some(Value::String(g)) if !g.is_empty() => g.clone(),
        _ => t("username"),
    };
    let link = format!(
        "{}?userId={}&username={}&avatar={}",
        c.spectra_client_deeplink,
        t("id"),
        t("username"),
        t("avatar")
    );
    let page = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Discord OAuth Success</title></head><body>\
<h1>Discord Login Successful</h1><p>Welcome, {name}!</p>\
<a href=\"{href}\"><button>Open Spectra Client</button></a>\
<script>setTimeout(function () {{ window.location.href = {js}; }}, 2000);</script></body></html>",
        name = html_escape(&display),
        href = html_escape(&link),
        js = Value::String(link.clone())
            .to_string()
            .replace('<', "\\u003c"),
    );
    Response::new(200, "text/html; charset=utf-8", page)
}

async fn create_preview(shard: &Rc<Shard>, req: &Request) -> Response {
    let is_json = req
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Response::json(
            400,
            json!({"error": "Invalid preview data", "details": "the body must be JSON (Content-Type: application/json)"}).to_string(),
        );
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return Response::json(
                400,
                json!({"error": "Invalid preview data", "details": format!("malformed JSON: {e}")})
                    .to_string(),
            );
        }
    };
    let Some(obj) = body.as_object() else {
        return Response::json(
            400,
            json!({"error": "Invalid preview data", "details": "the body must be a JSON object"})
                .to_string(),
        );
    };
    let key = obj.get("key");
    if !crate::engine::js::truthy(key) {
        return json_error(400, "Missing or invalid key in preview data");
    }
    let limits = &shard.global.limits;
    let key_id = crate::limits::key_id(key.and_then(Value::as_str));
    if let Some(wait) = limits.logon_blocked(req.peer, key_id) {
        crate::metrics::bump(|s| &s.logons_throttled);
        return json_error(
            429,
            &format!("Too many failed key checks from your address; try again in {wait} s"),
        )
        .with_header("Retry-After", wait.to_string());
    }
    if let KeyCheck::Invalid(_) = check_key(&shard.config, key.and_then(Value::as_str)) {
        let by_backend = match (shard.backend.clone(), key.and_then(Value::as_str)) {
            (Some(backend), Some(k)) => backend.validate_key(k).await,
            _ => crate::backend::KeyValidity::Invalid("Invalid Key"),
        };
        if let crate::backend::KeyValidity::Invalid(_) = by_backend {
            limits.logon_failed(req.peer, key_id);
            return json_error(403, "Invalid or expired key");
        }
    }
    let preview = match preview::build(obj) {
        Ok(p) => p,
        Err(details) => {
            return Response::json(
                400,
                json!({"error": "Invalid preview data", "details": details}).to_string(),
            );
        }
    };
    let code = preview::preview_code(obj.get("previewCode"));
    if let Some(cluster) = crate::cluster::of(shard) {
        cluster.put(Shared::Previews, &code, preview.to_string());
    }
    match ask(shard, &code, RestQuery::PreviewPut(code.clone(), preview)).await {
        Some(_) => Response::json(200, json!({ "previewCode": code }).to_string()),
        None => json_error(500, "Internal server error"),
    }
}

/// A local answer, or — when it is a 404 and the node is in a cluster — what another node
/// stored under `key`.
async fn or_shared(
    shard: &Rc<Shard>,
    local: Option<Response>,
    shared: Shared,
    key: &str,
) -> Response {
    let Some(resp) = local else {
        return json_error(500, "Internal server error");
    };
    if resp.status != 404 {
        return resp;
    }
    let Some(cluster) = crate::cluster::of(shard) else {
        return resp;
    };
    match cluster.get(shared, key).await {
        Some(body) => Response::json(200, body),
        None => resp,
    }
}

/// Sends a query to the shard owning `code` (or answers it here) and waits for the answer.
async fn ask(shard: &Rc<Shard>, code: &str, query: RestQuery) -> Option<Response> {
    ask_shard(shard, shard.owner_of(code), query).await
}

/// Sends a query to shard `target` (or answers it here) and waits for the answer.
pub(crate) async fn ask_shard(
    shard: &Rc<Shard>,
    target: usize,
    query: RestQuery,
) -> Option<Response> {
    let answer = ask_answer(shard, target, query).await?;
    Some(Response::json(answer.status, answer.body))
}

async fn ask_answer(shard: &Rc<Shard>, target: usize, query: RestQuery) -> Option<RestAnswer> {
    if target == shard.id {
        return Some(answer(shard, query));
    }
    let (from, rx) = shard.request();
    shard.mesh.send(target, ShardMsg::Rest { query, from });
    match rx.await {
        Ok(ReplyBody::Rest(answer)) => Some(answer),
        _ => None,
    }
}

/// `GET /matches/{code}`: the state viewers see now (delayed like theirs), with its seq as the
/// entity tag (`If-None-Match` → 304).
async fn match_snapshot(shard: &Rc<Shard>, req: &Request, raw_code: &str) -> Response {
    let code = crate::transport::http::percent_decode(raw_code)
        .trim()
        .to_uppercase();
    if !crate::code::valid_group_code(&code) {
        return json_error(400, crate::code::INVALID_GROUP_CODE);
    }
    // With a spectator delay the public knows a match by its public code only: the group code
    // is answered like an unknown code; the public code is looked up where it is kept.
    let code = if shard.config.public_code_key.is_some() {
        if !crate::code::is_public_form(&code) {
            return json_error(404, crate::code::NO_LIVE_MATCH);
        }
        match ask_answer(shard, shard.owner_of(&code), RestQuery::Public(code)).await {
            Some(found) if found.status == 200 => found.body,
            Some(_) => return json_error(404, crate::code::NO_LIVE_MATCH),
            None => return json_error(500, "Internal server error"),
        }
    } else {
        code
    };
    let Some(answer) = ask_answer(shard, shard.owner_of(&code), RestQuery::Snapshot(code)).await
    else {
        return json_error(500, "Internal server error");
    };
    let Some(seq) = answer.etag else {
        return Response::json(answer.status, answer.body);
    };
    let etag = format!("\"{seq}\"");
    let fresh = req.header("if-none-match").is_some_and(|h| {
        h.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*")
    });
    let resp = if fresh {
        Response::new(304, "application/json; charset=utf-8", "")
    } else {
        Response::json(answer.status, answer.body)
    };
    resp.with_header("ETag", etag)
        .with_header("Cache-Control", "no-cache")
}

/// `GET /matches` (with `ADMIN_TOKEN` set, for its bearer): every live match with its score,
/// phase and viewers (overlays on every shard, spectators, HTTP streams).
async fn list_matches(shard: &Rc<Shard>, req: &Request) -> Response {
    if shard.config.admin_token.is_none() {
        return json_error(404, &format!("Cannot {} {}", req.method, req.path));
    }
    if !operator(shard, req) {
        return operator_refused(shard);
    }
    let mut matches: Vec<Value> = Vec::new();
    let mut overlays: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for target in 0..shard.shards() {
        let Some(a) = ask_answer(shard, target, RestQuery::Matches).await else {
            return json_error(500, "Internal server error");
        };
        let Ok(part) = serde_json::from_str::<Value>(&a.body) else {
            continue;
        };
        if let Some(list) = part.get("matches").and_then(Value::as_array) {
            matches.extend(list.iter().cloned());
        }
        if let Some(map) = part.get("overlays").and_then(Value::as_object) {
            for (code, n) in map {
                *overlays.entry(code.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    for m in &mut matches {
        let code = m
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let o = overlays.get(&code).copied().unwrap_or(0);
        let s = m.get("spectators").and_then(Value::as_u64).unwrap_or(0);
        let st = m.get("streams").and_then(Value::as_u64).unwrap_or(0);
        if let Value::Object(obj) = m {
            obj.insert("overlays".into(), json!(o));
            obj.insert("viewers".into(), json!(o + s + st));
        }
    }
    matches.sort_by(|a, b| a["code"].as_str().cmp(&b["code"].as_str()));
    Response::json(200, json!({ "matches": matches }).to_string())
        .with_header("Cache-Control", "no-store")
}

/// Answers a query on the owning shard.
pub fn answer(shard: &Rc<Shard>, query: RestQuery) -> RestAnswer {
    match query {
        RestQuery::TeamInfo(code) => {
            let reg_cell = crate::registry::matches(shard);
            let mut reg = reg_cell.borrow_mut();
            let now = std::time::Instant::now();
            reg.finished.retain(|_, info| info.expires > now);
            match reg.finished.get(&code) {
                Some(info) => RestAnswer::ok(info.body.to_string()),
                None => RestAnswer::error(404, "Group code not found"),
            }
        }
        RestQuery::PreviewGet(code) => match preview::of(shard).borrow_mut().get(&code) {
            Some(p) => RestAnswer::ok(p.to_string()),
            None => RestAnswer::error(404, "Preview not found"),
        },
        RestQuery::PreviewPut(code, preview) => {
            preview::of(shard).borrow_mut().put(code, preview);
            RestAnswer::ok("{}".into())
        }
        RestQuery::Live => RestAnswer::ok(status::shard_part(shard).to_string()),
        RestQuery::Snapshot(code) => crate::registry::viewer_snapshot(shard, &code),
        RestQuery::Public(code) => match crate::registry::public_group(shard, &code) {
            Some(group) => RestAnswer::ok(group),
            None => RestAnswer::error(404, crate::code::NO_LIVE_MATCH),
        },
        RestQuery::Matches => {
            let overlays: serde_json::Map<String, Value> = crate::fanout::subscribers::of(shard)
                .borrow()
                .overlay_counts()
                .into_iter()
                .map(|(code, n)| (code, json!(n)))
                .collect();
            let matches = crate::registry::live_list(shard);
            RestAnswer::ok(json!({ "matches": matches, "overlays": overlays }).to_string())
        }
    }
}
