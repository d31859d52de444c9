//! REST on port 5101: `/status`, previews, finished-game team info and `/getOrgForKey`, with the
//! original's status codes, bodies and CORS headers. State that lives on another shard (a match's
//! team info, a preview) is asked for through the mesh (`RestQuery`). Bad input gets a 400 JSON
//! error; unknown routes a JSON 404.

pub mod preview;

use std::rc::Rc;

use futures_channel::oneshot;
use serde_json::{Value, json};

use crate::ingest::auth::{KeyCheck, check_key};
use crate::shard::Shard;
use crate::shard::messages::ShardMsg;
use crate::transport::http::{Request, Response};
use crate::transport::server::preflight;

/// A question for the shard that owns a group code or preview code.
#[derive(Debug)]
pub enum RestQuery {
    TeamInfo(String),
    PreviewGet(String),
    PreviewPut(String, Value),
}

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

async fn route(shard: &Rc<Shard>, req: &Request) -> Response {
    let method = req.method.as_str();
    match (method, req.path.as_str()) {
        ("GET" | "HEAD", "/status") => Response::json(
            200,
            json!({ "status": "UP", "matchesRunning": shard.global.matches_running() }).to_string(),
        ),
        ("PUT", "/createPreview") => create_preview(shard, req).await,
        ("GET" | "HEAD", p) if p.starts_with("/preview/") => {
            let code = crate::transport::http::percent_decode(&p["/preview/".len()..]);
            if code.encode_utf16().count() != 6 || code.contains('/') {
                return json_error(400, "Invalid preview code format");
            }
            match ask(shard, &code, RestQuery::PreviewGet(code.clone())).await {
                Some(resp) => resp,
                None => json_error(500, "Internal server error"),
            }
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
            match ask(shard, &code, RestQuery::TeamInfo(code.clone())).await {
                Some(resp) => resp,
                None => json_error(500, "Internal server error"),
            }
        }
        _ => json_error(404, &format!("Cannot {} {}", req.method, req.path)),
    }
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
    if let KeyCheck::Invalid(_) = check_key(&shard.config, key.and_then(Value::as_str)) {
        let by_backend = match (shard.backend.clone(), key.and_then(Value::as_str)) {
            (Some(backend), Some(k)) => backend.validate_key(k).await,
            _ => crate::backend::KeyValidity::Invalid("Invalid Key"),
        };
        if let crate::backend::KeyValidity::Invalid(_) = by_backend {
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
    match ask(shard, &code, RestQuery::PreviewPut(code.clone(), preview)).await {
        Some(_) => Response::json(200, json!({ "previewCode": code }).to_string()),
        None => json_error(500, "Internal server error"),
    }
}

/// Sends a query to the shard owning `code` (or answers it here) and waits for the answer.
async fn ask(shard: &Rc<Shard>, code: &str, query: RestQuery) -> Option<Response> {
    let owner = shard.owner_of(code);
    if owner == shard.id {
        return Some(answer(shard, query));
    }
    let (tx, rx) = oneshot::channel();
    shard.mesh.send(owner, ShardMsg::Rest { query, reply: tx });
    rx.await.ok()
}

/// Answers a query on the owning shard.
pub fn answer(shard: &Rc<Shard>, query: RestQuery) -> Response {
    match query {
        RestQuery::TeamInfo(code) => {
            let mut reg = shard.matches.borrow_mut();
            let now = std::time::Instant::now();
            reg.finished.retain(|_, info| info.expires > now);
            match reg.finished.get(&code) {
                Some(info) => Response::json(200, info.body.to_string()),
                None => json_error(404, "Group code not found"),
            }
        }
        RestQuery::PreviewGet(code) => match shard.previews.borrow_mut().get(&code) {
            Some(p) => Response::json(200, p.to_string()),
            None => json_error(404, "Preview not found"),
        },
        RestQuery::PreviewPut(code, preview) => {
            shard.previews.borrow_mut().put(code, preview);
            Response::json(200, "{}")
        }
    }
}
