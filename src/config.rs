//! Server configuration: command-line flags, environment variables and an optional `.env` file.
//!
//! Owns the names and defaults of every setting. The original Spectra Server's environment names
//! (`INSECURE`, `SERVER_KEY`, `SERVER_CERT`, `REQUIRE_AUTH_KEY`, `AUTH_KEY`, ...) keep their meaning;
//! flags override the environment, the environment overrides `.env`. Must not start anything.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command-line flags and environment variables (see `--help`).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "spectra-server",
    version,
    about = "Spectra broadcast server: observer ingest (5100), overlay/spectator broadcast (5200), REST (5101)",
    after_help = "Logging (environment only):\n  \
        RUST_LOG    which lines are logged, a tracing filter such as `info` or `spectra=debug,info` [env: RUST_LOG=] [default: info]\n  \
        LOG_FORMAT  `json`: every line on stdout and stderr is one JSON object; anything else: plain text [env: LOG_FORMAT=]"
)]
pub struct Args {
    /// Number of shards (one executor thread per shard); default: number of online cores.
    #[arg(long, env = "SHARDS")]
    pub shards: Option<usize>,

    /// Address every listener binds to.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Ingest port (observer and auxiliary clients, Socket.IO).
    #[arg(long, env = "INGEST_PORT", default_value_t = 5100)]
    pub ingest_port: u16,

    /// REST port (status, previews, team info).
    #[arg(long, env = "REST_PORT", default_value_t = 5101)]
    pub rest_port: u16,

    /// Broadcast port (overlays over Socket.IO, spectators over WebSocket).
    #[arg(long, env = "BROADCAST_PORT", default_value_t = 5200)]
    pub broadcast_port: u16,

    /// Single-port mode: ingest, overlays, spectators and REST all on this one port (instead of
    /// INGEST_PORT, REST_PORT and BROADCAST_PORT), e.g. behind one reverse proxy or tunnel.
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// "true": plain HTTP/WS on every port. Unset with no SERVER_KEY/SERVER_CERT: plain as well.
    /// Anything else: TLS with SERVER_KEY/SERVER_CERT (a self-signed pair is generated when the
    /// files do not exist).
    #[arg(long, env = "INSECURE")]
    pub insecure: Option<String>,

    /// PEM private key file for TLS.
    #[arg(long, env = "SERVER_KEY")]
    pub server_key: Option<PathBuf>,

    /// PEM certificate chain file for TLS.
    #[arg(long, env = "SERVER_CERT")]
    pub server_cert: Option<PathBuf>,

    /// Seconds between checks whether SERVER_KEY/SERVER_CERT changed on disk (then they are
    /// reloaded, as on SIGHUP); 0: only on SIGHUP.
    #[arg(long, env = "TLS_RELOAD_CHECK_SECONDS", default_value_t = 60)]
    pub tls_reload_check_seconds: u64,

    /// Seconds each session-ticket key issues tickets (keys live in memory only and rotate on
    /// the clock: a ticket is accepted in its key's period and the next, one to two periods);
    /// a client that comes back with a ticket skips the full handshake. 0: no tickets.
    #[arg(long, env = "TLS_TICKET_SECONDS", default_value_t = 21_600, value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub tls_ticket_seconds: u64,

    /// Kernel TLS: `auto` hands each TLS 1.3 connection's records to the kernel after its
    /// handshake where the kernel has the `tls` module (sends are then plain `send`s); `off`
    /// keeps them in user space.
    #[arg(long, env = "KERNEL_TLS", default_value = "auto", value_parser = ["auto", "off"])]
    pub kernel_tls: String,

    /// TLS sessions remembered by id for clients that do not use tickets (a bounded cache, the
    /// oldest forgotten first); 0: none.
    #[arg(long, env = "TLS_SESSION_CACHE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub tls_session_cache: u64,

    /// "false": every access key is accepted. Anything else: keys are checked.
    #[arg(long, env = "REQUIRE_AUTH_KEY")]
    pub require_auth_key: Option<String>,

    /// The static access key; generated and printed at start-up when unset.
    #[arg(long, env = "AUTH_KEY")]
    pub auth_key: Option<String>,

    /// Engine.IO ping interval in milliseconds.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// Engine.IO ping timeout in milliseconds.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,

    /// Milliseconds a connection may stay without joining a Socket.IO namespace.
    #[arg(long, env = "CONNECT_TIMEOUT_MS", default_value_t = 45_000)]
    pub connect_timeout_ms: u64,

    /// Socket.IO connection state recovery: milliseconds a dropped observer, aux client or
    /// overlay socket is held for its client to come back to (0 = off).
    #[arg(long, env = "RECOVERY_WINDOW_MS", default_value_t = 120_000)]
    pub recovery_window_ms: u64,

    /// Most sockets held for recovery per shard (beyond it the oldest is let go).
    #[arg(long, env = "RECOVERY_MAX_HELD", default_value_t = 10_000)]
    pub recovery_max_held: usize,

    /// Spectators allowed per room (0 = unlimited).
    #[arg(long, env = "MAX_SPECTATORS_PER_ROOM", default_value_t = 0)]
    pub max_spectators_per_room: usize,

    /// Entries of `current_spectators` lists (the earliest joined).
    #[arg(long, env = "SPECTATOR_LIST_LIMIT", default_value_t = 100)]
    pub spectator_list_limit: usize,

    /// Up to this many spectators in a room, the others are told of each join and leave.
    #[arg(long, env = "SPECTATOR_PRESENCE_LIMIT", default_value_t = 100)]
    pub spectator_presence_limit: usize,

    /// "false" refuses every spectator (SPECTATOR_NOT_ALLOWED).
    #[arg(long, env = "ALLOW_SPECTATORS", default_value = "true")]
    pub allow_spectators: String,

    /// Largest spectator message in bytes (larger: MESSAGE_TOO_LARGE and close 1009).
    #[arg(long, env = "SPECTATOR_MAX_MESSAGE", default_value_t = 65_536)]
    pub spectator_max_message: usize,

    /// Anti-ghosting: what native spectators and the HTTP match API get of a match is released
    /// this many milliseconds after the overlays got it (0 = live; at most 10 minutes).
    #[arg(long, env = "SPECTATOR_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub spectator_delay_ms: u64,

    /// With a spectator delay: the key public codes are derived with (HMAC-SHA256 of the group
    /// code). Unset: kept in `REPLAY_DIR/public-code.key` (made on first use), or new at every
    /// start when replay logs are off. Give every node of a cluster the same key.
    #[arg(long, env = "PUBLIC_CODE_KEY", hide_env_values = true)]
    pub public_code_key: Option<String>,

    /// Milliseconds between the comment lines an idle HTTP event stream gets (keeps proxies
    /// from closing it).
    #[arg(long, env = "STREAM_HEARTBEAT_MS", default_value_t = 15_000)]
    pub stream_heartbeat_ms: u64,

    /// The game name spectators must ask for.
    #[arg(long, env = "GAME_NAME", default_value = "valorant")]
    pub game_name: String,

    /// "true": keys, matches and stats go through the Spectra backend.
    #[arg(long, env = "USE_BACKEND")]
    pub use_backend: Option<String>,

    /// Base URL of the Spectra backend.
    #[arg(long, env = "BACKEND_URL", default_value = "")]
    pub backend_url: String,

    /// Sent as `X-User-Token` to the backend.
    #[arg(long, env = "BACKEND_TOKEN", default_value = "")]
    pub backend_token: String,

    /// Base URL of the supporter check (`GET {url}/{orgId}`).
    #[arg(long, env = "SUPPORTER_CHECK_URL", default_value = "")]
    pub supporter_check_url: String,

    /// Base URL of the stats backend.
    #[arg(long, env = "STATS_BACKEND_URL", default_value = "")]
    pub stats_backend_url: String,

    /// Sent as `Authentication` to the stats backend.
    #[arg(long, env = "STATS_BACKEND_TOKEN", default_value = "")]
    pub stats_backend_token: String,

    /// Base URL of the playercam / name-override service.
    #[arg(long, env = "PLAYERCAM_URL", default_value = "")]
    pub playercam_url: String,

    /// Tebex API base URL (support packages).
    #[arg(long, env = "TEBEX_BASE_URL", default_value = "")]
    pub tebex_base_url: String,

    /// Tebex store id.
    #[arg(long, env = "TEBEX_STORE_ID", default_value = "")]
    pub tebex_store_id: String,

    /// Tebex extension id.
    #[arg(long, env = "TEBEX_EXTENSION_ID", default_value = "")]
    pub tebex_extension_id: String,

    /// Discord OAuth client id.
    #[arg(long, env = "DISCORD_CLIENT_ID", default_value = "")]
    pub discord_client_id: String,

    /// Discord OAuth client secret.
    #[arg(long, env = "DISCORD_CLIENT_SECRET", default_value = "")]
    pub discord_client_secret: String,

    /// Discord OAuth redirect URI.
    #[arg(long, env = "DISCORD_REDIRECT_URI", default_value = "")]
    pub discord_redirect_uri: String,

    /// Discord token endpoint.
    #[arg(long, env = "DISCORD_OAUTH_URL", default_value = "")]
    pub discord_oauth_url: String,

    /// Discord user endpoint.
    #[arg(long, env = "DISCORD_USER_URL", default_value = "")]
    pub discord_user_url: String,

    /// Deep link the OAuth success page opens.
    #[arg(long, env = "SPECTRA_CLIENT_DEEPLINK", default_value = "")]
    pub spectra_client_deeplink: String,

    /// Milliseconds any backend request may take before it counts as failed.
    #[arg(long, env = "BACKEND_TIMEOUT_MS", default_value_t = 5000)]
    pub backend_timeout_ms: u64,

    /// Milliseconds after a game end before the stats backend is asked to fetch stats.
    #[arg(long, env = "STATS_FETCH_DELAY_MS", default_value_t = 15_000)]
    pub stats_fetch_delay_ms: u64,

    /// Shortest time between two broadcasts of one match (ms); also the period of the tick that
    /// advances timers. A change is published at once (after 2 ms) when the last broadcast is
    /// at least this old, else when it becomes this old.
    #[arg(long, env = "BROADCAST_INTERVAL_MS", default_value_t = 100)]
    pub broadcast_interval_ms: u64,

    /// Seconds a match may go without a new event before it is removed.
    #[arg(long, env = "MATCH_IDLE_SECONDS", default_value_t = 1800)]
    pub match_idle_seconds: u64,

    /// Directory of the replay logs (`Match_<code>_<ms>.replay`, created if missing); `off`
    /// turns replay logs and crash recovery off.
    #[arg(long, env = "REPLAY_DIR", default_value = "replays")]
    pub replay_dir: PathBuf,

    /// Milliseconds SIGTERM/SIGINT may take: final snapshots, close frames, replay logs written.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 5000)]
    pub shutdown_timeout_ms: u64,

    /// Open connections the server accepts in all (beyond: 503 and close).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Open connections one address may hold (beyond: 503 and close).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Engine.IO sessions on the long-polling transport, in all (beyond: handshake 503).
    #[arg(long, env = "MAX_POLLING_SESSIONS", default_value_t = 10_000)]
    pub max_polling_sessions: usize,

    /// Engine.IO sessions on the long-polling transport from one client address (beyond:
    /// handshake 503). Real clients poll only until they upgrade to a WebSocket.
    #[arg(long, env = "MAX_POLLING_SESSIONS_PER_IP", default_value_t = 100)]
    pub max_polling_sessions_per_ip: usize,

    /// Live matches created with one access key (beyond: the observer logon is refused). In
    /// single-key mode (`AUTH_KEY`) this bounds the whole server.
    #[arg(long, env = "MAX_MATCHES_PER_KEY", default_value_t = 200)]
    pub max_matches_per_key: usize,

    /// Live matches created from one client address (beyond: the observer logon is refused).
    #[arg(long, env = "MAX_MATCHES_PER_IP", default_value_t = 20)]
    pub max_matches_per_ip: usize,

    /// Failed logons (wrong access key or group secret) one address may make per minute; further
    /// logons are refused until the minute is over.
    #[arg(long, env = "LOGON_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub logon_failures_per_minute: u32,

    /// "true": the per-address limits apply to loopback addresses too (off by default: behind a
    /// reverse proxy on the same host every client comes from 127.0.0.1).
    #[arg(long, env = "LIMIT_LOOPBACK", default_value = "false")]
    pub limit_loopback: String,

    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` header names the client address for
    /// every per-address limit: addresses and CIDR networks, comma-separated.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = crate::transport::forwarded::TrustedProxies::parse)]
    pub trusted_proxies: crate::transport::forwarded::TrustedProxies,

    /// Token for the operator endpoints (`/`, `/status/live`, `/metrics`): sent as
    /// `Authorization: Bearer <token>` or `?token=<token>`. Unset: only direct loopback clients.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// Cluster mode: the NATS server(s) the nodes share (e.g. `nats://127.0.0.1:4222`, may
    /// carry user:password@). Unset: a single node.
    #[arg(long, env = "CLUSTER_NATS_URL")]
    pub cluster_nats_url: Option<String>,

    /// A NATS credentials file for cluster mode (optional).
    #[arg(long, env = "CLUSTER_NATS_CREDS")]
    pub cluster_nats_creds: Option<PathBuf>,

    /// This node's id in the cluster (default: the host name and a random suffix).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Prefix of the cluster's NATS subjects and buckets (several clusters on one NATS).
    #[arg(long, env = "CLUSTER_PREFIX", default_value = "spectra")]
    pub cluster_prefix: String,

    /// Copies NATS JetStream keeps of the cluster's buckets and event log when it creates them
    /// (1–5; 3 on a three-server NATS cluster survives the loss of one server).
    #[arg(long, env = "CLUSTER_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub cluster_replicas: u8,

    /// "false": do not rebuild live matches from the replay logs at start-up.
    #[arg(long, env = "RECOVER_MATCHES", default_value = "true")]
    pub recover_matches: String,

    /// permessage-deflate level of the broadcast frames (1–9), compressed once per state for
    /// every recipient: 1 costs about 2.6 times less CPU per state than 3 and sends about a
    /// third more bytes (BENCHMARKS.md, B4). Many small matches: 1; a few big rooms: 3.
    #[arg(long, env = "DEFLATE_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub deflate_level: u32,

    /// Do not serve: ask the server running on this host for `/status` (on REST_PORT, or PORT,
    /// over TLS when TLS is configured) and exit 0 when it answers UP, 1 otherwise, within 3 s.
    /// For container health checks; reads the same settings as the server.
    #[arg(long)]
    pub health_check: bool,
}

/// How the listeners speak: plain or TLS with the given files.
#[derive(Debug, Clone)]
pub enum TlsMode {
    Plain,
    Tls { key: PathBuf, cert: PathBuf },
}

/// Resolved configuration handed to every shard.
#[derive(Debug, Clone)]
pub struct Config {
    pub shards: usize,
    pub bind: IpAddr,
    pub ingest_port: u16,
    pub rest_port: u16,
    pub broadcast_port: u16,
    /// Single-port mode: everything on this port (the three ports above are not used).
    pub single_port: Option<u16>,
    pub tls: TlsMode,
    /// How often the TLS files are checked for a change; `None`: only SIGHUP reloads them.
    pub tls_reload_check: Option<Duration>,
    /// Session tickets and the session cache.
    pub tls_resumption: crate::transport::tls::Resumption,
    /// Hand TLS 1.3 records to the kernel where it can take them (`KERNEL_TLS=auto`).
    pub kernel_tls: bool,
    pub require_auth_key: bool,
    pub auth_key: String,
    /// True when `auth_key` was generated at start-up (it is printed once).
    pub auth_key_generated: bool,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_payload: usize,
    /// Connection state recovery window; `None`: off.
    pub recovery_window: Option<Duration>,
    pub recovery_max_held: usize,
    pub match_idle: Duration,
    pub tick: Duration,
    /// Replay log directory; `None` when logs are off.
    pub replay_dir: Option<PathBuf>,
    /// Rebuild live matches from their logs at start-up.
    pub recover_matches: bool,
    /// `--health-check`: probe the running server instead of starting one.
    pub health_check: bool,
    /// The permessage-deflate level of broadcast frames.
    pub deflate_level: u32,
    /// The bound of a graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Connection, polling and logon limits.
    pub limits: crate::limits::LimitConfig,
    pub max_spectators_per_room: usize,
    pub spectator_list_limit: usize,
    pub spectator_presence_limit: usize,
    pub allow_spectators: bool,
    pub spectator_max_message: usize,
    /// See `Args::spectator_delay_ms`.
    pub spectator_delay: Duration,
    /// With a spectator delay, the key of the public codes (`crate::code::public_code`).
    pub public_code_key: Option<String>,
    pub stream_heartbeat: Duration,
    pub game_name: String,
    pub backend: crate::backend::BackendConfig,
    pub trusted_proxies: crate::transport::forwarded::TrustedProxies,
    /// Cluster mode (`None`: a single node).
    pub cluster: Option<ClusterConfig>,
    /// Token of the operator endpoints; `None`: loopback only.
    pub admin_token: Option<String>,
}

impl Config {
    /// Builds the configuration from `.env`, the environment and the command line.
    pub fn load() -> Config {
        // `.env` never overrides variables that are already set.
        let _ = dotenvy::dotenv();
        Config::from_args(Args::parse())
    }

    pub fn from_args(args: Args) -> Config {
        let replay_dir = (!args.replay_dir.as_os_str().is_empty()
            && args.replay_dir.as_os_str() != "off")
            .then(|| args.replay_dir.clone());
        let shards = args
            .shards
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let tls = match (
            args.insecure.as_deref(),
            &args.server_key,
            &args.server_cert,
        ) {
            (Some("true"), _, _) => TlsMode::Plain,
            (None, None, None) => TlsMode::Plain,
            (_, key, cert) => TlsMode::Tls {
                key: key
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("keys/server.key")),
                cert: cert
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("keys/server.crt")),
            },
        };
        let require_auth_key = args.require_auth_key.as_deref() != Some("false");
        let (auth_key, auth_key_generated) = match args.auth_key.filter(|k| !k.is_empty()) {
            Some(k) => (k, false),
            None => (generate_key(), true),
        };
        Config {
            shards,
            bind: args.bind,
            ingest_port: args.ingest_port,
            rest_port: args.rest_port,
            broadcast_port: args.broadcast_port,
            single_port: args.port,
            tls,
            tls_reload_check: (args.tls_reload_check_seconds > 0)
                .then(|| Duration::from_secs(args.tls_reload_check_seconds)),
            tls_resumption: crate::transport::tls::Resumption {
                ticket_period: (args.tls_ticket_seconds > 0)
                    .then(|| Duration::from_secs(args.tls_ticket_seconds)),
                cache_entries: args.tls_session_cache as usize,
            },
            kernel_tls: args.kernel_tls == "auto",
            require_auth_key,
            auth_key,
            auth_key_generated,
            ping_interval: Duration::from_millis(args.ping_interval_ms.max(10)),
            ping_timeout: Duration::from_millis(args.ping_timeout_ms.max(10)),
            connect_timeout: Duration::from_millis(args.connect_timeout_ms.max(10)),
            max_payload: 1_000_000,
            recovery_window: (args.recovery_window_ms > 0)
                .then(|| Duration::from_millis(args.recovery_window_ms)),
            recovery_max_held: args.recovery_max_held.max(1),
            match_idle: Duration::from_secs(args.match_idle_seconds.max(1)),
            tick: Duration::from_millis(args.broadcast_interval_ms.clamp(5, 10_000)),
            replay_dir: replay_dir.clone(),
            recover_matches: args.recover_matches != "false",
            health_check: args.health_check,
            deflate_level: args.deflate_level,
            shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms.max(1)),
            limits: crate::limits::LimitConfig {
                max_connections: args.max_connections.max(1),
                max_connections_per_ip: args.max_connections_per_ip.max(1),
                max_polling_sessions: args.max_polling_sessions,
                max_polling_sessions_per_ip: args.max_polling_sessions_per_ip.max(1),
                max_matches_per_key: args.max_matches_per_key.max(1),
                max_matches_per_ip: args.max_matches_per_ip.max(1),
                logon_failures: args.logon_failures_per_minute.max(1),
                logon_window: Duration::from_secs(60),
                limit_loopback: args.limit_loopback == "true",
            },
            max_spectators_per_room: args.max_spectators_per_room,
            spectator_list_limit: args.spectator_list_limit,
            spectator_presence_limit: args.spectator_presence_limit,
            allow_spectators: args.allow_spectators != "false",
            spectator_max_message: args.spectator_max_message.max(1024),
            public_code_key: (args.spectator_delay_ms > 0)
                .then(|| public_code_key(args.public_code_key.as_deref(), replay_dir.as_deref())),
            spectator_delay: Duration::from_millis(args.spectator_delay_ms),
            stream_heartbeat: Duration::from_millis(args.stream_heartbeat_ms.max(100)),
            game_name: args.game_name,
            trusted_proxies: args.trusted_proxies,
            admin_token: args.admin_token.filter(|t| !t.is_empty()),
            cluster: args
                .cluster_nats_url
                .filter(|u| !u.is_empty())
                .map(|url| ClusterConfig {
                    url,
                    creds: args.cluster_nats_creds,
                    // One NATS subject token: letters, digits, `-`, `_`.
                    node_id: args
                        .node_id
                        .map(|n| {
                            n.chars()
                                .take(64)
                                .map(|c| {
                                    if c.is_ascii_alphanumeric() || c == '_' {
                                        c
                                    } else {
                                        '-'
                                    }
                                })
                                .collect::<String>()
                        })
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(default_node_id),
                    prefix: args.cluster_prefix,
                    replicas: usize::from(args.cluster_replicas),
                }),
            backend: crate::backend::BackendConfig {
                enabled: args.use_backend.as_deref() == Some("true"),
                backend_url: args.backend_url,
                backend_token: args.backend_token,
                supporter_check_url: args.supporter_check_url,
                stats_url: args.stats_backend_url,
                stats_token: args.stats_backend_token,
                timeout: Duration::from_millis(args.backend_timeout_ms.max(1)),
                stats_fetch_delay: Duration::from_millis(args.stats_fetch_delay_ms),
                playercam_url: args.playercam_url,
                tebex_base_url: args.tebex_base_url,
                tebex_store_id: args.tebex_store_id,
                tebex_extension_id: args.tebex_extension_id,
                discord_client_id: args.discord_client_id,
                discord_client_secret: args.discord_client_secret,
                discord_redirect_uri: args.discord_redirect_uri,
                discord_oauth_url: args.discord_oauth_url,
                discord_user_url: args.discord_user_url,
                spectra_client_deeplink: args.spectra_client_deeplink,
            },
        }
    }
}

/// The public-code key: given, else kept beside the replay logs (stable across restarts), else
/// new for this run.
fn public_code_key(given: Option<&str>, replay_dir: Option<&std::path::Path>) -> String {
    if let Some(key) = given.filter(|k| !k.is_empty()) {
        return key.to_string();
    }
    let fresh = || crate::random::random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 40);
    let Some(dir) = replay_dir else {
        return fresh();
    };
    let path = dir.join("public-code.key");
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return text.trim().to_string();
    }
    let key = fresh();
    // Only the server's user reads it. (Not kept: the node warns at start, see `node::runtime`.)
    let _ = std::fs::create_dir_all(dir).and_then(|()| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(key.as_bytes())
    });
    key
}

/// A random 24-character access key from an unambiguous alphabet.
fn generate_key() -> String {
    crate::random::random_string(
        b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789",
        24,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        let mut v = vec!["spectra-server"];
        v.extend_from_slice(list);
        Args::parse_from(v)
    }

    #[test]
    fn insecure_true_is_plain_and_unset_without_files_is_plain() {
        assert!(matches!(
            Config::from_args(args(&["--insecure", "true"])).tls,
            TlsMode::Plain
        ));
        let c = Config::from_args(args(&["--server-key", "k.pem", "--server-cert", "c.pem"]));
        assert!(matches!(c.tls, TlsMode::Tls { .. }));
        let c = Config::from_args(args(&["--insecure", "false"]));
        assert!(matches!(c.tls, TlsMode::Tls { .. }));
    }

    #[test]
    fn auth_key_generated_when_missing() {
        let c = Config::from_args(args(&["--auth-key", "abc"]));
        assert_eq!(c.auth_key, "abc");
        assert!(!c.auth_key_generated);
        let c = Config::from_args(args(&[]));
        assert_eq!(c.auth_key.len(), 24);
        assert!(c.auth_key_generated);
        assert!(c.require_auth_key);
        let c = Config::from_args(args(&["--require-auth-key", "false"]));
        assert!(!c.require_auth_key);
    }
}

/// Cluster mode: where NATS is and who this node is (`../shared/spec/cluster.md` §4).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    pub creds: Option<PathBuf>,
    pub node_id: String,
    pub prefix: String,
    /// JetStream replicas of the buckets and the event stream this node creates.
    pub replicas: usize,
}

/// The host name and a random suffix: unique across restarts of the same host.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let suffix = crate::random::random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 6);
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}
