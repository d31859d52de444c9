//! REST on port 5101: `/status` now; previews, team info and backend routes join here. Every
//! response carries the original's CORS header; unknown routes get a JSON 404.

use std::rc::Rc;

use serde_json::json;

use crate::shard::Shard;
use crate::transport::http::{Request, Response};
use crate::transport::server::preflight;

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Response {
    if req.method == "OPTIONS" {
        return preflight(req);
    }
    let resp = match (req.method.as_str(), req.path.as_str()) {
        ("GET" | "HEAD", "/status") => Response::json(
            200,
            json!({ "status": "UP", "matchesRunning": shard.global.matches_running() }).to_string(),
        ),
        _ => Response::json(
            404,
            json!({ "error": format!("Cannot {} {}", req.method, req.path) }).to_string(),
        ),
    };
    resp.with_header("Access-Control-Allow-Origin", "*")
}
