//! Entry point: load the configuration, start the shards, say where we listen, and shut down
//! gracefully on SIGTERM/SIGINT.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

use spectra::config::{Config, TlsMode};

fn main() {
    let config = Config::load();
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
            eprintln!(
                "spectra-server: {signal}: shutting down (at most {} ms)",
                bound.as_millis()
            );
            if running.shutdown(bound) {
                eprintln!("spectra-server: stopped cleanly");
                std::process::exit(0);
            }
            eprintln!(
                "spectra-server: shutdown took longer than {} ms; stopping anyway",
                bound.as_millis()
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("spectra-server: {e}");
            std::process::exit(1);
        }
    }
}
