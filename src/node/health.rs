//! `spectra-server --health-check`: the probe a container runtime runs inside the container
//! (Docker's `HEALTHCHECK`; the image has no curl). It asks the server running on this host for
//! `/status` on the REST port (or the single port), over TLS when the server is configured for
//! TLS, and answers with the exit code: 0 when the server says UP, 1 otherwise (with the reason on
//! stderr). It starts nothing and writes nothing; it must not touch the shards.

use crate::config::{Config, TlsMode};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long the whole probe may take (a container runtime's own timeout is usually longer).
const TIMEOUT: Duration = Duration::from_secs(3);

/// The address the probe asks: the configured one, or loopback when the server binds to every
/// address.
fn target(config: &Config) -> SocketAddr {
    let ip = match config.bind {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, config.single_port.unwrap_or(config.rest_port))
}

/// Runs the probe; returns the process's exit code.
pub fn check(config: &Config) -> i32 {
    let tls = !matches!(config.tls, TlsMode::Plain);
    let url = format!(
        "{}://{}/status",
        if tls { "https" } else { "http" },
        target(config)
    );
    // The server's own certificate may be self-signed or name another host: the probe checks
    // that this process answers, not who it is.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(tls)
                .build(),
        )
        .build()
        .into();
    match agent.get(&url).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let up = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(|s| s == "UP"))
                .unwrap_or(false);
            if status == 200 && up {
                0
            } else {
                eprintln!("spectra-server: health check: {url} answered {status}, not UP");
                1
            }
        }
        Err(e) => {
            eprintln!("spectra-server: health check: {url}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["spectra-server"];
        all.extend_from_slice(args);
        Config::from_args(crate::config::Args::parse_from(all))
    }

    #[test]
    fn asks_loopback_when_bound_to_every_address_and_the_single_port_when_set() {
        assert_eq!(
            target(&config(&["--rest-port", "7101"])).to_string(),
            "127.0.0.1:7101"
        );
        assert_eq!(
            target(&config(&["--bind", "::", "--port", "8080"])).to_string(),
            "[::1]:8080"
        );
        assert_eq!(
            target(&config(&["--bind", "10.1.2.3"])).to_string(),
            "10.1.2.3:5101"
        );
    }
}
