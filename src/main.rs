//! Entry point: load the configuration, start the shards, say where we listen, and shut down
//! gracefully on SIGTERM/SIGINT.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

use spectra::config::{Config, TlsMode};

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
    let (bind, ingest, rest, broadcast, shards) = (
        config.bind,
        config.ingest_port,
        config.rest_port,
        config.broadcast_port,
        config.shards,
    );
    let bound = config.shutdown_timeout;
    let signals = spectra::shard::signals::ShutdownSignals::block();
    match spectra::shard::runtime::start(config) {
        Ok(running) => {
            println!(
                "spectra-server ready: ingest {bind}:{ingest}, rest {bind}:{rest}, broadcast {bind}:{broadcast}, {shards} shard(s), {scheme}"
            );
            let signal = signals.wait();
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
