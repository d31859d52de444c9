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
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
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

fn main() {
    let config = Config::load(); // reads `.env` first, so RUST_LOG / LOG_FORMAT may come from it
    init_logging();
    if config.require_auth_key && config.auth_key_generated {
        println!(
            "AUTH_KEY was not set; generated access key for this run: {}",
            config.auth_key
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
    let bound = config.shutdown_timeout;
    let reload_check = config.tls_reload_check;
    let signals = spectra::node::signals::Signals::block();
    match spectra::node::runtime::start(config) {
        Ok(running) => {
            println!("spectra-server ready: {listening}, {shards} shard(s), {scheme}");
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
