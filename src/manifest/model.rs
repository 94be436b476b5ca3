//! The validated manifest: typed values only, every reference checked. Built by
//! [`super::load`]; nothing here can hold an invalid value.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::bind::BindAddr;
pub use super::health::{Health, HealthProbe, Ready};
use super::ids::{BindId, ProgramId, RouteId};

#[derive(Debug)]
pub struct Manifest {
    /// The manifest file, as given.
    pub path: PathBuf,
    /// Its folder: relative paths resolve against it, and children run there by default.
    pub dir: PathBuf,
    pub binds: Vec<Bind>,
    pub metrics_port: Option<u16>,
    pub env: Vec<(String, String)>,
    /// The variables of `mothership.env_file`, applied before `env`.
    pub env_file: Vec<(String, String)>,
    pub static_dirs: Vec<StaticDir>,
    pub compression: bool,
    pub cors_cache: CorsCache,
    pub uplinks: Vec<Uplink>,
    pub prelaunch: Vec<Program>,
    pub flagship: Flagship,
    pub rate_limiting: RateLimiting,
    pub http: HttpSettings,
    /// Ships and bays, in manifest declaration order.
    pub programs: Vec<Program>,
    pub modules: Vec<Module>,
    /// Who hears of the fleet's events (`on_event`, `webhook`).
    pub events: EventHooks,
    /// How the programs' log files are kept (`log_dir` and company).
    pub log_files: LogFiles,
    /// A group whose members may use the control socket (`control_group`).
    pub control_group: Option<ControlGroup>,
}

/// `control_group` and `control_group_access` of `[mothership]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlGroup {
    pub name: String,
    /// Members may also start, stop, restart, signal and reopen (`"full"`), not only
    /// look (`"read"`: status, logs, subscribe, version).
    pub full: bool,
}

/// `log_dir`, `log_max_size`, `log_keep` and `log_compress` of `[mothership]`.
#[derive(Debug, Clone)]
pub struct LogFiles {
    /// Each program's lines go to `NAME.log` in it (unless its own `log_file` says).
    pub dir: Option<PathBuf>,
    /// A file is rotated before it grows past this.
    pub max_size: u64,
    /// Rotated files kept (`NAME.log.1` the newest).
    pub keep: u32,
    /// Rotated files are compressed with gzip (`NAME.log.1.gz`).
    pub compress: bool,
}

impl Default for LogFiles {
    fn default() -> LogFiles {
        LogFiles {
            dir: None,
            max_size: 1 << 20,
            keep: 10,
            compress: false,
        }
    }
}

/// `on_event`, `on_event_timeout`, `webhook` and `webhook_secret` of `[mothership]`.
#[derive(Debug, Clone, Default)]
pub struct EventHooks {
    /// A command (no shell) run for each event, with the event in `MS_EVENT_*`; empty:
    /// none.
    pub command: Vec<String>,
    /// How long one run may take before its process group is killed.
    pub timeout: Duration,
    pub webhook: Option<Webhook>,
}

/// Where each event is posted, as JSON.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// The URL without any password, safe to print.
    pub masked: String,
    /// Signs each body: HMAC-SHA256 in `X-Mothership-Signature-256`.
    pub secret: Option<String>,
}

impl Manifest {
    /// Length of the longest program name (prelaunch jobs included), for aligned output.
    pub fn name_width(&self) -> usize {
        self.prelaunch
            .iter()
            .chain(&self.programs)
            .map(|p| p.name.len())
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct Bind {
    pub name: String,
    pub addr: BindAddr,
    pub proxy_protocol: ProxyProtocol,
    /// Peers whose PROXY header is honoured (a header from any other peer is refused).
    pub proxy_protocol_from: Vec<Cidr>,
}

/// `proxy_protocol` of a bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    /// `true`: a header is read when one comes (upstream's auto-detection).
    Auto,
    /// `"required"`: a connection without a header is refused.
    Required,
}

/// The peers trusted to send a PROXY header when `proxy_protocol_from` is not given:
/// loopback and the private ranges (RFC 1918, RFC 6598 shared space, RFC 4193 unique
/// local), where the load balancers that speak it sit. A public peer reaching the port
/// directly cannot forge its address. Set the key to trust others (a cloud balancer that
/// keeps public client addresses needs `["0.0.0.0/0", "::/0"]`).
pub const DEFAULT_PROXY_FROM: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network (CIDR)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let bits = |n: u32, len: u32| {
            if n == 0 {
                0u128
            } else {
                (!0u128) << (len - n)
            }
        };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = bits(u32::from(self.prefix), 32) as u32;
                u32::from(net) & m == u32::from(ip) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = bits(u32::from(self.prefix), 128);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Ship { group: String },
    Bay { bay_type: String },
    Prelaunch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// A ship, bay or prelaunch job: something mothership runs.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    /// The file its lines are written to (its `log_file`, or in `log_dir`), if any.
    pub log_file: Option<PathBuf>,
    pub role: Role,
    /// Program and arguments (a `command` with spaces and no `args` is split shell-style).
    pub argv: Vec<String>,
    /// Its group's `env`, then its `env_file`, then its own `env`. `mothership.env_file`
    /// and `mothership.env` are not included; they are applied at spawn time, before this.
    pub env: Vec<(String, String)>,
    /// Bays only: sent to the bay when it docks.
    pub config: Vec<(String, String)>,
    /// Bays only: the WebSocket subprotocols it speaks, in order of preference (empty:
    /// the first one a client offers is selected).
    pub subprotocols: Vec<String>,
    /// Bays only (`websocket = "app"`): WebSocket handshakes go to the bay as HTTP
    /// exchanges (version 3), which it takes over with a Tunnel reply.
    pub websocket_app: bool,
    pub cwd: PathBuf,
    pub bind: Option<BindAddr>,
    /// `healthcheck` and its policy (ships).
    pub health: Option<Health>,
    /// When it counts as ready.
    pub ready: Ready,
    /// Not ready by then after a start: a failed start, handled like a crash.
    pub ready_timeout: Duration,
    /// Requests the edge sends to this ship at once; more wait in line (`maxconn`).
    pub maxconn: Option<u32>,
    /// `ready = "notify"` programs: a `WATCHDOG=1` is due this often while it runs, or
    /// it is restarted (passed to it as `WATCHDOG_USEC`).
    pub watchdog: Option<Duration>,
    pub depends_on: Vec<String>,
    /// `depends_on` resolved: the ids of the programs of its own set (prelaunch jobs
    /// among themselves, the others among themselves) it waits for. Set by
    /// `Manifest::resolve_ids` whenever the set changes (parse, tag filter).
    pub deps: Vec<ProgramId>,
    pub routes: Vec<Route>,
    pub critical: bool,
    pub oneshot: bool,
    pub tags: Vec<String>,
    pub stop_signal: i32,
    pub grace_period: Duration,
    pub restart: Restart,
    /// A critical program fails for good after `crash_limit` crashes within `crash_window`.
    pub crash_limit: u32,
    pub crash_window: Duration,
    /// Restart gracefully when the process group's resident memory goes above this.
    pub max_memory: Option<u64>,
}

impl Program {
    pub fn kind(&self) -> &'static str {
        match (&self.role, self.oneshot) {
            (Role::Prelaunch, _) => "prelaunch job",
            (Role::Bay { .. }, _) => "bay",
            (Role::Ship { .. }, true) => "job",
            (Role::Ship { .. }, false) => "ship",
        }
    }

    pub fn group(&self) -> &str {
        match &self.role {
            Role::Ship { group } => group,
            Role::Bay { bay_type } => bay_type,
            Role::Prelaunch => "prelaunch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub bind: String,
    /// `bind` resolved (`BindId::NONE` when no bind has that name, which the manifest's
    /// checks refuse).
    pub bind_id: BindId,
    /// Its number in declaration order over every program's routes.
    pub id: RouteId,
    pub pattern: Regex,
    pub strip_prefix: Option<String>,
    pub ua_filter: Option<UaFilter>,
}

#[derive(Debug, Clone)]
pub enum UaFilter {
    Browser,
    Chromium,
    Firefox,
    Safari,
    Llm,
    Bot,
    Custom(Regex),
}

impl UaFilter {
    pub fn describe(&self) -> String {
        match self {
            UaFilter::Browser => "browser".into(),
            UaFilter::Chromium => "chromium".into(),
            UaFilter::Firefox => "firefox".into(),
            UaFilter::Safari => "safari".into(),
            UaFilter::Llm => "llm".into(),
            UaFilter::Bot => "bot".into(),
            UaFilter::Custom(r) => format!("~{}", r.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StaticDir {
    pub path: PathBuf,
    pub prefix: String,
    pub bind: Option<String>,
    /// `bind` resolved (`BindId::NONE` when no bind has that name, which the manifest's
    /// checks refuse); `None`: every bind.
    pub bind_id: Option<BindId>,
    /// Serve files and folders whose name starts with a dot.
    pub dotfiles: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorsCache {
    pub enabled: bool,
    pub default_ttl: Duration,
    pub max_entries: usize,
}

impl Default for CorsCache {
    fn default() -> Self {
        CorsCache {
            enabled: true,
            default_ttl: Duration::from_secs(3600),
            max_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimiting {
    pub global_rps: Option<f64>,
    pub per_ip_rpm: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Uplink {
    pub name: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, for HTTP checks.
    pub path: String,
    /// The URL with any password replaced by `***`, safe to print.
    pub masked: String,
    /// The URL has user info (`user:password@`), which no check sends.
    pub userinfo: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Election {
    Static(StaticFlagship),
    Postgres { url: String },
}

#[derive(Debug, Clone)]
pub enum StaticFlagship {
    /// The expanded value of the `"$VAR"` string: truthy means flagship.
    Value(String),
    /// Run `command`; its trimmed output equal to `equals` means flagship.
    Command {
        command: Vec<String>,
        equals: String,
    },
}

#[derive(Debug, Clone)]
pub struct Flagship {
    pub enabled: bool,
    pub election: Election,
    pub app: Option<String>,
    pub prelaunch_timeout: Duration,
    pub election_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub wasm: PathBuf,
    pub routes: Vec<Regex>,
    pub phase: Phase,
    pub config: Vec<(String, String)>,
    pub tags: Vec<String>,
    /// Fuel given to each call (about one unit per instruction).
    pub fuel: u64,
    /// Bytes the module's memory may grow to.
    pub memory: u64,
}

/// Fuel per module call unless `fuel` says otherwise (upstream's figure).
pub const DEFAULT_FUEL: u64 = 1_000_000;
/// A module's memory cap unless `memory` says otherwise: 256 pages, as upstream.
pub const DEFAULT_WASM_MEMORY: u64 = 16 << 20;
/// One WebAssembly page.
pub const WASM_PAGE: u64 = 64 << 10;

/// Timeouts and limits of the HTTP edge (`[mothership.http]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Total time to receive a request head, from its first byte (408 after).
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keepalive_timeout: Duration,
    /// Time to connect to a backend (504 after).
    pub connect_timeout: Duration,
    /// Time for a backend to start its response once the request went out (504 after).
    pub response_timeout: Duration,
    /// Longest pause in a body transfer, either way.
    pub body_timeout: Duration,
    /// Longest silence on an upgraded (WebSocket) tunnel.
    pub tunnel_timeout: Duration,
    /// Idle upstream connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// How long a request waits for its ship while it starts or restarts (0: it does
    /// not wait; 503 at once).
    pub hold_timeout: Duration,
    /// Requests waiting for one ship at once; past it, 503.
    pub hold_queue: usize,
    /// Failures of a backend within `breaker_window` that open its breaker (0: off).
    pub breaker_failures: u32,
    pub breaker_window: Duration,
    /// How long an open breaker refuses before a trial request.
    pub breaker_cooldown: Duration,
    /// Statuses from a backend that count as failures for its breaker.
    pub breaker_statuses: Vec<u16>,
    pub max_head_size: usize,
    pub max_headers: usize,
    /// Largest request body (413 above).
    pub max_body_size: u64,
    /// Client connections at once; past it, accepting pauses.
    pub max_connections: usize,
    /// Write one line per request to stderr.
    pub access_log: bool,
    /// Add `X-Request-Start: t=<microseconds>` to requests sent to ships.
    pub request_start_header: bool,
    /// WebSocket clients of bays: the largest message (larger: closed with 1009).
    pub websocket_max_message: usize,
    /// A client silent this long is pinged; silent as long again, it is closed.
    pub websocket_ping_interval: Duration,
    /// Bytes waiting to be written to one client; past it the client is too slow and
    /// is closed with 1008 (the bay is told).
    pub websocket_send_queue: usize,
    /// Clients of a bay that went down wait this long for it to dock again, then are
    /// closed with 1012.
    pub websocket_resume_timeout: Duration,
    /// The largest docking frame payload accepted from a bay.
    pub docking_max_frame: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            tunnel_timeout: Duration::from_secs(3600),
            pool_idle_timeout: Duration::from_secs(30),
            hold_timeout: Duration::from_secs(10),
            hold_queue: 1024,
            breaker_failures: 5,
            breaker_window: Duration::from_secs(10),
            breaker_cooldown: Duration::from_secs(5),
            breaker_statuses: Vec::new(),
            max_head_size: 16 << 10,
            max_headers: 100,
            max_body_size: 1 << 30,
            max_connections: 10_000,
            access_log: false,
            request_start_header: false,
            websocket_max_message: 1 << 20,
            websocket_ping_interval: Duration::from_secs(30),
            websocket_send_queue: 1 << 20,
            websocket_resume_timeout: Duration::from_secs(30),
            docking_max_frame: crate::proto::dock::DEFAULT_MAX_PAYLOAD,
        }
    }
}
