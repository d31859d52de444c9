//! Entry point: load the configuration, start the shards, say where we listen, and shut down
//! gracefully on SIGTERM/SIGINT.

use spectra::config::{Config, TlsMode};
use spectra::node::signals::{Signal, Signals};

/// Logs go to stderr: `RUST_LOG` filters them (default `info`), `LOG_FORMAT=json` makes each line
/// one JSON object (`timestamp`, `level`, `target`, `message`) for log shippers. Keys and group
/// secrets are never logged.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = json_mode();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!json && std::io::stderr().is_terminal());
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Reloads the TLS pair on SIGHUP and when its files change (checked every `reload_check`);
/// returns the name of the signal that asked for shutdown.
fn serve_until_shutdown(
    running: &spectra::node::runtime::Running,
    signals: &Signals,
    reload_check: Option<std::time::Duration>,
) -> &'static str {
    let limit = running.tls.as_ref().and(reload_check);
    loop {
        let why = match signals.wait(limit) {
            Signal::Shutdown(name) => return name,
            Signal::Reload => "SIGHUP",
            Signal::Timeout => match &running.tls {
                Some(store) if store.files_changed() => "the files changed",
                _ => continue,
            },
        };
        match &running.tls {
            None => tracing::info!("{why}: nothing to reload (plain HTTP)"),
            Some(store) => match store.reload() {
                Ok(()) => tracing::info!(
                    "tls: reloaded {} ({why}); new connections use it, open ones keep theirs",
                    store.cert_path().display()
                ),
                Err(e) => tracing::error!(
                    "tls: reload ({why}) refused, the previous certificate stays in use: {e}"
                ),
            },
        }
    }
}

/// `LOG_FORMAT=json`: every line the process writes is one JSON object.
fn json_mode() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"))
}

/// A line on stdout for the operator: plain text, or in JSON mode one object with the same
/// `message` and the event's fields.
fn say(event: &str, message: &str, fields: serde_json::Value) {
    if json_mode() {
        let mut line = serde_json::json!({
            "timestamp": spectra::util::now_rfc3339(),
            "level": "INFO",
            "target": "spectra_server",
            "event": event,
            "message": message,
        });
        if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        println!("{line}");
    } else {
        println!("{message}");
    }
}

/// The start-up checks (`node::preflight`): a fatal one ends the process with 78 and one
/// paragraph naming the cause and the fix (plain on stderr, or one JSON line in JSON mode).
fn preflight(config: &Config) {
    use spectra::node::preflight::{EXIT_CONFIG, Finding};
    for finding in spectra::node::preflight::run(config) {
        match finding {
            Finding::Warning { check, message } => {
                tracing::warn!(check, "start-up check: {message}")
            }
            Finding::Fatal { check, message } => {
                if json_mode() {
                    tracing::error!(check, exit_code = EXIT_CONFIG, "cannot start: {message}");
                } else {
                    eprintln!("spectra-server: cannot start: {message}");
                }
                std::process::exit(EXIT_CONFIG);
            }
        }
    }
}

fn main() {
    let config = Config::load(); // reads `.env` first, so RUST_LOG / LOG_FORMAT may come from it
    if config.health_check {
        std::process::exit(spectra::node::health::check(&config));
    }
    init_logging();
    preflight(&config);
    if config.require_auth_key && config.auth_key_generated {
        say(
            "generated_key",
            &format!(
                "AUTH_KEY was not set; generated access key for this run: {}",
                config.auth_key
            ),
            serde_json::json!({ "key": config.auth_key }),
        );
    }
    let scheme = match &config.tls {
        TlsMode::Plain => {
            "plain HTTP/WS (set SERVER_KEY/SERVER_CERT or INSECURE=false for TLS)".to_string()
        }
        TlsMode::Tls { cert, .. } => format!("TLS with {}", cert.display()),
    };
    let bind = config.bind;
    let listening = match config.single_port {
        Some(port) => format!("ingest, rest and broadcast on one port {bind}:{port}"),
        None => format!(
            "ingest {bind}:{}, rest {bind}:{}, broadcast {bind}:{}",
            config.ingest_port, config.rest_port, config.broadcast_port
        ),
    };
    let shards = config.shards;
    let ready = serde_json::json!({
        "bind": config.bind.to_string(),
        "ports": match config.single_port {
            Some(port) => serde_json::json!({ "all": port }),
            None => serde_json::json!({
                "ingest": config.ingest_port,
                "rest": config.rest_port,
                "broadcast": config.broadcast_port,
            }),
        },
        "shards": shards,
        "tls": !matches!(config.tls, TlsMode::Plain),
    });
    let bound = config.shutdown_timeout;
    let reload_check = config.tls_reload_check;
    let signals = spectra::node::signals::Signals::block();
    match spectra::node::runtime::start(config) {
        Ok(running) => {
            say(
                "ready",
                &format!("spectra-server ready: {listening}, {shards} shard(s), {scheme}"),
                ready.clone(),
            );
            let signal = serve_until_shutdown(&running, &signals, reload_check);
            tracing::info!(
                "spectra-server: {signal}: shutting down (at most {} ms)",
                bound.as_millis()
            );
            if running.shutdown(bound) {
                tracing::info!("spectra-server: stopped cleanly");
                std::process::exit(0);
            }
            tracing::error!(
                "spectra-server: shutdown took longer than {} ms; stopping anyway",
                bound.as_millis()
            );
            std::process::exit(1);
        }
        Err(e) => {
            tracing::error!("spectra-server: {e}");
            std::process::exit(1);
        }
    }
}
