//! Backend mode (`USE_BACKEND=true`): every outbound HTTP call (Spectra backend, supporter check,
//! stats backend) runs on a small pool of worker threads with its own HTTP client (ureq + rustls)
//! and a timeout, fed through a channel. Shards never block on the network: they get answers on
//! oneshot channels. A dead or slow backend ends in a clear failure, never a hang.

use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use serde_json::{Value, json};

/// Settings of backend mode (ingest spec §6).
#[derive(Debug, Clone, Default)]
pub struct BackendConfig {
    pub enabled: bool,
    pub backend_url: String,
    pub backend_token: String,
    pub supporter_check_url: String,
    pub stats_url: String,
    pub stats_token: String,
    pub timeout: Duration,
    pub stats_fetch_delay: Duration,
    pub playercam_url: String,
    pub tebex_base_url: String,
    pub tebex_store_id: String,
    pub tebex_extension_id: String,
    pub discord_client_id: String,
    pub discord_client_secret: String,
    pub discord_redirect_uri: String,
    pub discord_oauth_url: String,
    pub discord_user_url: String,
    pub spectra_client_deeplink: String,
}

/// Outcome of an access-key check.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValidity {
    Valid {
        organization_id: Option<String>,
        organization_name: Option<Value>,
        is_supporter: bool,
    },
    Invalid(&'static str),
}

/// An HTTP answer (status and body text), or a network-level failure.
pub type HttpResult = Result<(u16, String), String>;

type Job = Box<dyn FnOnce(&ureq::Agent) + Send>;

/// Handle to the worker pool; cheap to share between shards.
pub struct Backend {
    pub config: BackendConfig,
    jobs: flume::Sender<Job>,
    /// Request latencies are recorded here (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
}

const WORKERS: usize = 4;

impl Backend {
    pub fn start(config: BackendConfig, metrics: Arc<crate::metrics::Metrics>) -> Arc<Backend> {
        let (tx, rx) = flume::unbounded::<Job>();
        for i in 0..WORKERS {
            let rx = rx.clone();
            let timeout = config.timeout;
            let spawned = std::thread::Builder::new()
                .name(format!("backend-{i}"))
                .spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(timeout))
                        .http_status_as_error(false)
                        .build()
                        .into();
                    while let Ok(job) = rx.recv() {
                        job(&agent);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("backend: cannot start worker {i}: {e}");
            }
        }
        Arc::new(Backend {
            config,
            jobs: tx,
            metrics,
        })
    }

    /// Runs one HTTP request on a worker; resolves with its status and body.
    pub async fn request(
        &self,
        method: &'static str,
        url: String,
        headers: Vec<(&'static str, String)>,
        body: Option<String>,
    ) -> HttpResult {
        let (tx, rx) = oneshot::channel();
        let metrics = self.metrics.clone();
        let job: Job = Box::new(move |agent| {
            let started = std::time::Instant::now();
            let result = perform(agent, method, &url, &headers, body);
            metrics
                .backend_latency
                .observe(started.elapsed().as_secs_f64());
            let shown = redacted(&url);
            let ms = started.elapsed().as_millis();
            match &result {
                Ok((status, _)) if (200..300).contains(status) => {
                    tracing::debug!("backend: {method} {shown} -> {status} in {ms} ms")
                }
                Ok((status, _)) => {
                    tracing::warn!("backend: {method} {shown} -> {status} in {ms} ms")
                }
                Err(e) => tracing::warn!("backend: {method} {shown} failed after {ms} ms: {e}"),
            }
            let _ = tx.send(result);
        });
        if self.jobs.send(job).is_err() {
            return Err("backend workers are gone".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("backend worker dropped the request".into()))
    }

    fn backend_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Content-Type", "application/json".into()),
            ("X-User-Token", self.config.backend_token.clone()),
        ]
    }

    fn stats_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Content-Type", "application/json".into()),
            ("Authentication", self.config.stats_token.clone()),
        ]
    }

    /// Key validation against the backend, then the supporter check (ingest spec §8.1). A
    /// network failure is `Unknown Error` (QUIRK B1: the original hung the logon).
    pub async fn validate_key(&self, key: &str) -> KeyValidity {
        let url = format!("{}/system/validateAccessKey/{key}", self.config.backend_url);
        match self.request("GET", url, self.backend_headers(), None).await {
            Ok((200, body)) => {
                let org: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let id = org.get("id").map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                let is_supporter = match &id {
                    Some(id) => self.supporter(id).await,
                    None => false,
                };
                KeyValidity::Valid {
                    organization_id: id,
                    organization_name: org.get("name").cloned(),
                    is_supporter,
                }
            }
            Ok((401, _)) => KeyValidity::Invalid("Invalid Key"),
            Ok((403, _)) => KeyValidity::Invalid("Expired Key"),
            Ok(_) | Err(_) => KeyValidity::Invalid("Unknown Error"),
        }
    }

    async fn supporter(&self, org_id: &str) -> bool {
        let url = format!("{}/{org_id}", self.config.supporter_check_url);
        match self.request("GET", url, Vec::new(), None).await {
            Ok((200, body)) => serde_json::from_str::<Value>(&body)
                .ok()
                .is_some_and(|v| crate::engine::js::truthy(v.get("isSupporter"))),
            _ => false,
        }
    }

    /// `register` / `update` / `complete` of a match; the status is only logged.
    pub async fn match_call(
        &self,
        method: &'static str,
        match_id: &str,
        action: &str,
        state: Value,
    ) -> HttpResult {
        let url = format!(
            "{}/system/match/{match_id}/{action}",
            self.config.backend_url
        );
        let body = json!({ "match": state }).to_string();
        self.request(method, url, self.backend_headers(), Some(body))
            .await
    }

    /// Name overrides and player cams for a match (ingest spec §8.2b): `Some((nameOverrides,
    /// enabledPlayers))` when the answer is acceptable.
    pub async fn playercams(&self, identifier: &str, secret: &str) -> Option<(Value, Value)> {
        if self.config.playercam_url.is_empty() || identifier.is_empty() || secret.is_empty() {
            return None;
        }
        let url = format!(
            "{}/api/getNameOverridesAndPlayercams/{identifier}/{secret}",
            self.config.playercam_url
        );
        let (_, body) = self.request("GET", url, Vec::new(), None).await.ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let overrides = v
            .get("nameOverrides")
            .filter(|x| crate::engine::js::truthy(Some(x)))?;
        let enabled = v
            .get("enabledPlayers")
            .filter(|x| crate::engine::js::truthy(Some(x)))?;
        Some((overrides.clone(), enabled.clone()))
    }

    /// A stats-backend call (`POST {STATS_BACKEND_URL}{path}`).
    pub async fn stats(&self, path: &str, body: Value) -> HttpResult {
        let url = format!("{}{path}", self.config.stats_url);
        self.request("POST", url, self.stats_headers(), Some(body.to_string()))
            .await
    }
}

fn perform(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&'static str, String)],
    body: Option<String>,
) -> HttpResult {
    let response = match method {
        "GET" => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            req.call()
        }
        _ => {
            let mut req = match method {
                "PUT" => agent.put(url),
                _ => agent.post(url),
            };
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            req.send(body.unwrap_or_default())
        }
    };
    let mut response = response.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    Ok((status, text))
}

/// A backend URL as it may appear in a log line: an access key in its path is replaced.
fn redacted(url: &str) -> String {
    const KEY_PATH: &str = "/validateAccessKey/";
    match url.find(KEY_PATH) {
        Some(i) => format!("{}{KEY_PATH}<key>", &url[..i]),
        None => url.to_string(),
    }
}
