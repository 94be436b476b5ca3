//! Counters kept by the edge and the Prometheus text rendering of `GET /metrics`.
//!
//! Families follow COMPAT.md section 7 (same names and labels) plus what operators need:
//! per-route requests by status class, a duration histogram, bytes both ways, upstream
//! errors by kind, connections, rate-limit refusals, CORS cache use, and per program
//! state, uptime, CPU and memory of its whole process group.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use crate::fleet::health::{CheckFailure, CHECK_BUCKETS};
use crate::fleet::resources::Usage;
use crate::fleet::view::{FleetView, FLEET_STATES, STATES};
use crate::manifest::ids::{ProgramId, RouteId};
use crate::payload::{ModStats, DURATION_BUCKETS};

/// Upper bounds (seconds) of the request duration histogram.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long requests waited, as a histogram over [`BUCKETS`].
#[derive(Debug, Clone, Default)]
pub struct Waits {
    pub hist: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Waits {
    pub fn observe(&mut self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.hist[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection could not be made (refused, unreachable).
    Connect,
    /// Connect or response head timeout.
    Timeout,
    /// Closed before or during the response.
    Closed,
    /// Not a valid HTTP response (head or chunked framing).
    Invalid,
}

impl UpstreamError {
    const ALL: [UpstreamError; 4] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Closed,
        UpstreamError::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Closed => "closed",
            UpstreamError::Invalid => "invalid",
        }
    }
}

/// Per route (and one more for requests answered without a route).
#[derive(Debug, Clone, Default)]
pub struct RouteStats {
    pub label: String,
    /// The program it routes to (empty for the no-route entry).
    pub ship: String,
    /// Requests by status class 1xx..5xx.
    pub by_class: [u64; 5],
    pub hist: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl RouteStats {
    pub fn observe(&mut self, status: u16, secs: f64, bytes_in: u64, bytes_out: u64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class] += 1;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.hist[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Indexed by route id (static mounts follow the routes); the last entry counts
    /// requests without a route or mount (404, malformed requests, 408).
    pub routes: Vec<RouteStats>,
    /// By program index, then by [`UpstreamError`] kind.
    pub upstream_errors: Vec<[u64; 4]>,
    pub connections_total: u64,
    /// Refusals by the global and the per-client limit.
    pub rate_limited: [u64; 2],
    pub cors_hits: u64,
    pub cors_misses: u64,
}

impl Stats {
    /// `routes`: label and target program of each route, by route id. Labels are made
    /// unique (a repeated one gets ` #2`, ` #3`...), so no two series collide.
    pub fn new(routes: Vec<(String, String)>, programs: usize) -> Stats {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut r: Vec<RouteStats> = routes
            .into_iter()
            .map(|(label, ship)| {
                let n = seen.entry(label.clone()).or_insert(0);
                *n += 1;
                let label = if *n == 1 {
                    label
                } else {
                    format!("{label} #{n}")
                };
                RouteStats {
                    label,
                    ship,
                    ..RouteStats::default()
                }
            })
            .collect();
        r.push(RouteStats {
            label: "none".to_string(),
            ..RouteStats::default()
        });
        Stats {
            routes: r,
            upstream_errors: vec![[0; 4]; programs],
            ..Stats::default()
        }
    }

    /// The entry of a route of the manifest.
    pub fn row_of(&self, route: RouteId) -> usize {
        route.index()
    }

    /// The entry for requests without a route.
    pub fn unrouted(&self) -> usize {
        self.routes.len() - 1
    }

    pub fn upstream_error(&mut self, program: ProgramId, kind: UpstreamError) {
        if let Some(e) = self.upstream_errors.get_mut(program.index()) {
            e[kind as usize] += 1;
        }
    }
}

/// Live figures the edge passes in at render time.
pub struct Gauges {
    pub open_connections: usize,
    pub idle_upstreams: usize,
    pub rate_limit_clients: usize,
    pub cors_entries: usize,
    pub cors_bytes: usize,
    pub compression_encoders: usize,
    /// By program: its circuit breaker's state (`closed`, `open`, `half-open`) and its
    /// transitions so far to each of those.
    pub breakers: Vec<(&'static str, [u64; 3])>,
    /// By program: requests in flight to it, requests in line for a slot (`maxconn`),
    /// and how long those that left the line waited.
    pub lines: Vec<(u32, usize, Waits)>,
    /// The bays: name, docked now, clients now, and their counts.
    pub bays: Vec<BayRow>,
    /// The WASM modules with their counts.
    pub modules: Vec<crate::payload::ModRow>,
    /// Lines of the programs' output that could not be written to their log files.
    pub log_lines_lost: u64,
}

/// A bay for the metrics: name, docked now, clients now, counts.
pub type BayRow = (String, bool, usize, BayCounts);

/// What a bay's docking link and clients have done (see `proxy::bays`).
#[derive(Default, Clone, Copy, Debug)]
pub struct BayCounts {
    pub docked: u64,
    pub faults: u64,
    pub to_bay: u64,
    pub from_bay: u64,
    /// Frames for a conn_id the edge does not know (gone, or never there).
    pub unknown: u64,
    pub slow_clients: u64,
    pub resumed: u64,
    pub expired: u64,
}

/// The states of a circuit breaker, in the order of `Gauges::breakers`' counts.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half-open"];

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The series of one histogram `name` with `labels`: cumulative buckets over `bounds`,
/// then `+Inf`, the sum and the count.
fn histogram(
    o: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    hist: &[u64],
    count: u64,
    sum: f64,
) {
    let mut acc = 0;
    for (le, n) in bounds.iter().zip(hist) {
        acc += n;
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {acc}");
    }
    let _ = writeln!(
        o,
        "{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {count}",
        num(sum)
    );
}

/// Formats a float the way Prometheus reads it.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v > 0.0 {
        "+Inf".to_string()
    } else {
        "-Inf".to_string()
    }
}

/// The whole `/metrics` body.
pub fn render(
    stats: &Stats,
    fleet: &FleetView,
    usage: &HashMap<i32, Usage>,
    g: &Gauges,
    now: Instant,
) -> String {
    let mut o = String::with_capacity(4096);
    let ships: Vec<(String, &crate::fleet::view::ShipView)> = fleet
        .ships
        .iter()
        .map(|s| {
            (
                format!(
                    "ship=\"{}\",group=\"{}\"",
                    escape(&s.name),
                    escape(&s.group)
                ),
                s,
            )
        })
        .collect();
    let per_ship = |o: &mut String,
                    name: &str,
                    kind: &str,
                    help: &str,
                    f: &dyn Fn(&crate::fleet::view::ShipView) -> Option<f64>| {
        family(o, name, kind, help);
        for (labels, s) in &ships {
            if let Some(v) = f(s) {
                let _ = writeln!(o, "{name}{{{labels}}} {}", num(v));
            }
        }
    };
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    let use_of = |s: &crate::fleet::view::ShipView| s.pgid.and_then(|p| usage.get(&p));

    per_ship(
        &mut o,
        "mothership_ship_status",
        "gauge",
        "1 while the program is running, else 0.",
        &|s| Some(b(s.state == "running")),
    );
    family(
        &mut o,
        "mothership_ship_state",
        "gauge",
        "1 for the state the program is in (waiting, starting, running, stopping, backoff, done, failed, stopped).",
    );
    for (labels, s) in &ships {
        for st in STATES {
            let _ = writeln!(
                o,
                "mothership_ship_state{{{labels},state=\"{st}\"}} {}",
                b(s.state == st)
            );
        }
    }
    per_ship(
        &mut o,
        "mothership_ship_healthy",
        "gauge",
        "1 while the program is up and ready and, if it has a health check, that check's last verdict is healthy; else 0.",
        &|s| Some(b(s.healthy)),
    );
    let checked: Vec<_> = ships.iter().filter(|(_, s)| s.has_check).collect();
    if !checked.is_empty() {
        family(
            &mut o,
            "mothership_health_check_duration_seconds",
            "histogram",
            "Time a health check took, passed or failed, by ship.",
        );
        for (labels, s) in &checked {
            let c = &s.checks;
            let name = "mothership_health_check_duration_seconds";
            histogram(
                &mut o,
                name,
                labels,
                &CHECK_BUCKETS,
                &c.hist,
                c.count,
                c.sum,
            );
        }
        family(
            &mut o,
            "mothership_health_check_failures_total",
            "counter",
            "Failed health checks by ship and reason (connect, timeout, status).",
        );
        for (labels, s) in &checked {
            for f in CheckFailure::ALL {
                let _ = writeln!(
                    o,
                    "mothership_health_check_failures_total{{{labels},reason=\"{}\"}} {}",
                    f.label(),
                    s.checks.failures[f as usize]
                );
            }
        }
    }
    per_ship(
        &mut o,
        "mothership_ship_restarts_total",
        "counter",
        "Restarts of the program since mothership started.",
        &|s| Some(s.restarts as f64),
    );
    per_ship(
        &mut o,
        "mothership_ship_uptime_seconds",
        "gauge",
        "Seconds since the program last came up (0 while it is not up).",
        &|s| {
            Some(
                s.up_since
                    .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()),
            )
        },
    );
    per_ship(
        &mut o,
        "mothership_ship_cpu_seconds_total",
        "counter",
        "User and system CPU time of the processes now in the program's process group.",
        &|s| use_of(s).map(|u| u.cpu_seconds),
    );
    per_ship(
        &mut o,
        "mothership_ship_memory_rss_bytes",
        "gauge",
        "Resident memory of the program's process group.",
        &|s| Some(use_of(s).map_or(0.0, |u| u.rss_bytes as f64)),
    );
    per_ship(
        &mut o,
        "mothership_ship_memory_virtual_bytes",
        "gauge",
        "Virtual memory of the program's process group.",
        &|s| Some(use_of(s).map_or(0.0, |u| u.virtual_bytes as f64)),
    );
    per_ship(
        &mut o,
        "mothership_ship_processes",
        "gauge",
        "Processes in the program's process group.",
        &|s| Some(use_of(s).map_or(0.0, |u| u.processes as f64)),
    );
    family(
        &mut o,
        "mothership_fleet_ships_total",
        "counter",
        "Ships and bays in the manifest.",
    );
    let _ = writeln!(o, "mothership_fleet_ships_total {}", fleet.ships.len());
    family(
        &mut o,
        "mothership_fleet_state",
        "gauge",
        "1 for the fleet's lifecycle state (mayday: running while a critical program is unhealthy or crash-looping).",
    );
    for st in FLEET_STATES {
        let _ = writeln!(
            o,
            "mothership_fleet_state{{state=\"{st}\"}} {}",
            b(fleet.state == st)
        );
    }

    family(
        &mut o,
        "mothership_requests_total",
        "counter",
        "Requests answered, by route, target program and status class.",
    );
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    for r in &stats.routes {
        for (i, class) in CLASSES.iter().enumerate() {
            let _ = writeln!(
                o,
                "mothership_requests_total{{route=\"{}\",ship=\"{}\",code=\"{class}\"}} {}",
                escape(&r.label),
                escape(&r.ship),
                r.by_class[i]
            );
        }
    }
    family(
        &mut o,
        "mothership_request_duration_seconds",
        "histogram",
        "Time from the request head to the end of the response, by route.",
    );
    for r in &stats.routes {
        let l = format!("route=\"{}\"", escape(&r.label));
        let name = "mothership_request_duration_seconds";
        histogram(&mut o, name, &l, &BUCKETS, &r.hist, r.count, r.sum);
    }
    let per_route = |o: &mut String, name: &str, help: &str, v: &dyn Fn(&RouteStats) -> u64| {
        family(o, name, "counter", help);
        for r in &stats.routes {
            let _ = writeln!(o, "{name}{{route=\"{}\"}} {}", escape(&r.label), v(r));
        }
    };
    per_route(
        &mut o,
        "mothership_request_body_bytes_total",
        "Request body bytes received from clients, by route.",
        &|r| r.bytes_in,
    );
    per_route(
        &mut o,
        "mothership_response_body_bytes_total",
        "Response body bytes sent to clients, by route.",
        &|r| r.bytes_out,
    );
    family(
        &mut o,
        "mothership_upstream_errors_total",
        "counter",
        "Failed exchanges with a backend, by program and kind (connect, timeout, closed, invalid).",
    );
    for (p, errs) in stats.upstream_errors.iter().enumerate() {
        let Some(s) = fleet.ships.get(p) else {
            continue;
        };
        for k in UpstreamError::ALL {
            let _ = writeln!(
                o,
                "mothership_upstream_errors_total{{ship=\"{}\",kind=\"{}\"}} {}",
                escape(&s.name),
                k.label(),
                errs[k as usize]
            );
        }
    }
    family(
        &mut o,
        "mothership_breaker_state",
        "gauge",
        "1 for the state each backend's circuit breaker is in (closed, open, half-open).",
    );
    for (p, (state, _)) in g.breakers.iter().enumerate() {
        let Some(s) = fleet.ships.get(p) else {
            continue;
        };
        for st in BREAKER_STATES {
            let _ = writeln!(
                o,
                "mothership_breaker_state{{ship=\"{}\",state=\"{st}\"}} {}",
                escape(&s.name),
                b(*state == st)
            );
        }
    }
    family(
        &mut o,
        "mothership_breaker_transitions_total",
        "counter",
        "Moves of each backend's circuit breaker, by the state it went to.",
    );
    for (p, (_, moves)) in g.breakers.iter().enumerate() {
        let Some(s) = fleet.ships.get(p) else {
            continue;
        };
        for (i, st) in BREAKER_STATES.iter().enumerate() {
            let _ = writeln!(
                o,
                "mothership_breaker_transitions_total{{ship=\"{}\",to=\"{st}\"}} {}",
                escape(&s.name),
                moves[i]
            );
        }
    }
    let per_program =
        |o: &mut String, name: &str, kind: &str, help: &str, v: &dyn Fn(usize) -> f64| {
            family(o, name, kind, help);
            for (p, s) in fleet.ships.iter().enumerate().take(g.lines.len()) {
                let _ = writeln!(o, "{name}{{ship=\"{}\"}} {}", escape(&s.name), num(v(p)));
            }
        };
    per_program(
        &mut o,
        "mothership_backend_active_requests",
        "gauge",
        "Requests in flight to each ship now.",
        &|p| f64::from(g.lines[p].0),
    );
    per_program(
        &mut o,
        "mothership_backend_queue_length",
        "gauge",
        "Requests waiting in line for a free slot of a ship with maxconn.",
        &|p| g.lines[p].1 as f64,
    );
    family(
        &mut o,
        "mothership_backend_queue_wait_seconds",
        "histogram",
        "Time requests waited in line for a free slot (maxconn), by ship.",
    );
    for (p, s) in fleet.ships.iter().enumerate().take(g.lines.len()) {
        let w = &g.lines[p].2;
        let l = format!("ship=\"{}\"", escape(&s.name));
        let name = "mothership_backend_queue_wait_seconds";
        histogram(&mut o, name, &l, &BUCKETS, &w.hist, w.count, w.sum);
    }
    let per_bay = |o: &mut String,
                   name: &str,
                   kind: &str,
                   help: &str,
                   rows: &dyn Fn(&BayRow) -> Vec<(&str, f64)>| {
        family(o, name, kind, help);
        for bay in &g.bays {
            for (extra, v) in rows(bay) {
                let _ = writeln!(o, "{name}{{bay=\"{}\"{extra}}} {}", escape(&bay.0), num(v));
            }
        }
    };
    per_bay(
        &mut o,
        "mothership_bay_docked",
        "gauge",
        "1 while the bay is docked and takes clients.",
        &|x| vec![("", b(x.1))],
    );
    per_bay(
        &mut o,
        "mothership_bay_clients",
        "gauge",
        "WebSocket clients of the bay now (those waiting for it to dock again included).",
        &|b| vec![("", b.2 as f64)],
    );
    per_bay(
        &mut o,
        "mothership_bay_docks_total",
        "counter",
        "Times the bay docked and was moored.",
        &|b| vec![("", b.3.docked as f64)],
    );
    per_bay(
        &mut o,
        "mothership_bay_link_faults_total",
        "counter",
        "Docking links lost to a protocol error or closed by the bay (each restarts it).",
        &|b| vec![("", b.3.faults as f64)],
    );
    per_bay(
        &mut o,
        "mothership_bay_messages_total",
        "counter",
        "WebSocket messages through the bay, by direction.",
        &|b| {
            vec![
                (",direction=\"to_bay\"", b.3.to_bay as f64),
                (",direction=\"from_bay\"", b.3.from_bay as f64),
            ]
        },
    );
    per_bay(
        &mut o,
        "mothership_bay_unknown_conn_frames_total",
        "counter",
        "Frames from the bay for a client that is not (or no longer) connected; ignored.",
        &|b| vec![("", b.3.unknown as f64)],
    );
    per_bay(
        &mut o,
        "mothership_bay_clients_resumed_total",
        "counter",
        "Clients boarded again after the bay restarted.",
        &|b| vec![("", b.3.resumed as f64)],
    );
    per_bay(
        &mut o,
        "mothership_bay_clients_closed_total",
        "counter",
        "Clients closed by mothership: too slow to read (1008), or their bay did not dock again in time (1012).",
        &|b| {
            vec![
                (",reason=\"slow\"", b.3.slow_clients as f64),
                (",reason=\"resume_timeout\"", b.3.expired as f64),
            ]
        },
    );
    let per_module = |o: &mut String, name: &str, help: &str, v: &dyn Fn(&ModStats) -> u64| {
        family(o, name, "counter", help);
        for m in &g.modules {
            let _ = writeln!(
                o,
                "{name}{{module=\"{}\"}} {}",
                escape(&m.name),
                v(&m.stats)
            );
        }
    };
    per_module(
        &mut o,
        "mothership_module_calls_total",
        "Calls of each WASM module.",
        &|s| s.calls,
    );
    per_module(
        &mut o,
        "mothership_module_blocks_total",
        "Requests or responses a WASM module answered itself (blocked).",
        &|s| s.blocks,
    );
    per_module(
        &mut o,
        "mothership_module_errors_total",
        "Calls of a WASM module that failed (trap, fuel, a malformed action): each answered 503.",
        &|s| s.errors,
    );
    per_module(
        &mut o,
        "mothership_module_resets_total",
        "Times a WASM module was instantiated again after failing calls in a row.",
        &|s| s.resets,
    );
    family(
        &mut o,
        "mothership_module_duration_seconds",
        "histogram",
        "Time spent in each call of a WASM module.",
    );
    for m in &g.modules {
        let l = format!("module=\"{}\"", escape(&m.name));
        let name = "mothership_module_duration_seconds";
        let s = &m.stats;
        histogram(&mut o, name, &l, &DURATION_BUCKETS, &s.hist, s.calls, s.sum);
    }
    let gauge = |o: &mut String, name: &str, kind: &str, help: &str, v: f64| {
        family(o, name, kind, help);
        let _ = writeln!(o, "{name} {}", num(v));
    };
    gauge(
        &mut o,
        "mothership_log_file_lines_lost_total",
        "counter",
        "Lines of the programs' output that could not be written to their log files (a full disk, say); they stay in memory for `mothership logs`.",
        g.log_lines_lost as f64,
    );
    gauge(
        &mut o,
        "mothership_connections_open",
        "gauge",
        "Client connections open now.",
        g.open_connections as f64,
    );
    gauge(
        &mut o,
        "mothership_connections_total",
        "counter",
        "Client connections accepted.",
        stats.connections_total as f64,
    );
    gauge(
        &mut o,
        "mothership_upstream_idle_connections",
        "gauge",
        "Keep-alive connections to backends waiting in the pool.",
        g.idle_upstreams as f64,
    );
    family(
        &mut o,
        "mothership_rate_limited_total",
        "counter",
        "Requests refused with 429, by the limit that refused them (global, client).",
    );
    for (i, scope) in ["global", "client"].iter().enumerate() {
        let _ = writeln!(
            o,
            "mothership_rate_limited_total{{scope=\"{scope}\"}} {}",
            stats.rate_limited[i]
        );
    }
    gauge(
        &mut o,
        "mothership_rate_limit_clients",
        "gauge",
        "Clients tracked by the per-client rate limit.",
        g.rate_limit_clients as f64,
    );
    gauge(
        &mut o,
        "mothership_cors_cache_hits_total",
        "counter",
        "CORS preflight requests answered from the cache.",
        stats.cors_hits as f64,
    );
    gauge(
        &mut o,
        "mothership_cors_cache_misses_total",
        "counter",
        "Cacheable CORS preflight requests sent to the backend.",
        stats.cors_misses as f64,
    );
    gauge(
        &mut o,
        "mothership_cors_cache_entries",
        "gauge",
        "Preflight answers in the CORS cache.",
        g.cors_entries as f64,
    );
    gauge(
        &mut o,
        "mothership_cors_cache_bytes",
        "gauge",
        "Bytes held by the CORS cache (keys, headers, bodies).",
        g.cors_bytes as f64,
    );
    gauge(
        &mut o,
        "mothership_compression_encoders",
        "gauge",
        "Compression encoders alive now (at most 128; above, responses go uncompressed).",
        g.compression_encoders as f64,
    );
    gauge(
        &mut o,
        "mothership_uptime_seconds",
        "gauge",
        "Seconds since mothership started.",
        now.saturating_duration_since(fleet.started).as_secs_f64(),
    );
    family(
        &mut o,
        "mothership_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        o,
        "mothership_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_route_labels_are_made_unique() {
        let s = Stats::new(
            vec![
                ("http:/".into(), "a".into()),
                ("http:/".into(), "b".into()),
                ("http:/".into(), "c".into()),
            ],
            3,
        );
        let labels: Vec<&str> = s.routes.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["http:/", "http:/ #2", "http:/ #3", "none"]);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("http:/api/.*"), "http:/api/.*");
    }

    #[test]
    fn observe_fills_classes_and_buckets() {
        let mut r = RouteStats::default();
        r.observe(204, 0.003, 10, 0);
        r.observe(503, 20.0, 0, 5);
        assert_eq!(r.by_class, [0, 1, 0, 0, 1]);
        assert_eq!(r.hist[1], 1);
        assert_eq!(r.hist.iter().sum::<u64>(), 1, "20 s is only in +Inf");
        assert_eq!((r.count, r.bytes_in, r.bytes_out), (2, 10, 5));
    }

    #[test]
    fn render_has_every_family_once_and_escaped_labels() {
        let t0 = Instant::now();
        let mut s = Stats::new(vec![("http:/\"x\"".into(), "web".into())], 1);
        s.routes[0].observe(200, 0.01, 0, 3);
        s.upstream_error(ProgramId::at(0), UpstreamError::Timeout);
        let fleet = FleetView {
            backends: vec![None],
            ships: vec![crate::fleet::view::ShipView {
                name: "web".into(),
                group: "g\\1".into(),
                tags: Vec::new(),
                deps: Vec::new(),
                kind: "ship",
                state: "running",
                healthy: true,
                has_check: true,
                health: crate::fleet::health::Status::Healthy,
                checks: {
                    let mut c = crate::fleet::health::CheckStats::default();
                    c.observe(std::time::Duration::from_millis(3), None);
                    c.observe(
                        std::time::Duration::from_secs(2),
                        Some(CheckFailure::Timeout),
                    );
                    c
                },
                restarts: 2,
                pgid: Some(7),
                up_since: Some(t0),
                last_exit: None,
            }],
            started: t0,
            state: "mayday",
        };
        let mut usage = HashMap::new();
        usage.insert(
            7,
            Usage {
                rss_bytes: 4096,
                virtual_bytes: 8192,
                cpu_seconds: 0.5,
                processes: 2,
            },
        );
        let g = Gauges {
            open_connections: 3,
            idle_upstreams: 1,
            rate_limit_clients: 0,
            cors_entries: 0,
            cors_bytes: 0,
            compression_encoders: 0,
            breakers: vec![("open", [0, 1, 0])],
            lines: vec![(2, 1, Waits::default())],
            bays: vec![(
                "chat".into(),
                true,
                3,
                BayCounts {
                    to_bay: 5,
                    slow_clients: 1,
                    ..BayCounts::default()
                },
            )],
            modules: vec![crate::payload::ModRow {
                name: "guard".into(),
                phase: crate::manifest::Phase::Request,
                stats: {
                    let mut m = ModStats {
                        calls: 2,
                        blocks: 1,
                        ..ModStats::default()
                    };
                    m.observe(0.00003);
                    m.observe(0.2);
                    m
                },
            }],
            log_lines_lost: 7,
        };
        let text = render(&s, &fleet, &usage, &g, t0);
        assert!(text.contains("mothership_log_file_lines_lost_total 7\n"));
        assert!(text.contains("mothership_module_calls_total{module=\"guard\"} 2\n"));
        assert!(text.contains("mothership_module_blocks_total{module=\"guard\"} 1\n"));
        assert!(text.contains(
            "mothership_module_duration_seconds_bucket{module=\"guard\",le=\"0.00005\"} 1\n"
        ));
        assert!(text.contains(
            "mothership_module_duration_seconds_bucket{module=\"guard\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("mothership_ship_status{ship=\"web\",group=\"g\\\\1\"} 1\n"));
        assert!(
            text.contains("mothership_ship_memory_rss_bytes{ship=\"web\",group=\"g\\\\1\"} 4096\n")
        );
        assert!(text.contains(
            "mothership_requests_total{route=\"http:/\\\"x\\\"\",ship=\"web\",code=\"2xx\"} 1\n"
        ));
        assert!(text.contains("mothership_fleet_state{state=\"mayday\"} 1\n"));
        assert!(text.contains("mothership_backend_active_requests{ship=\"web\"} 2\n"));
        assert!(text.contains("mothership_backend_queue_length{ship=\"web\"} 1\n"));
        assert!(text.contains("mothership_fleet_state{state=\"running\"} 0\n"));
        assert!(text.contains("mothership_breaker_state{ship=\"web\",state=\"open\"} 1\n"));
        assert!(text.contains("mothership_breaker_transitions_total{ship=\"web\",to=\"open\"} 1\n"));
        assert!(
            text.contains("mothership_upstream_errors_total{ship=\"web\",kind=\"timeout\"} 1\n")
        );
        assert!(text.contains("le=\"+Inf\"} 1\n"));
        assert!(text.contains(
            "mothership_health_check_duration_seconds_bucket{ship=\"web\",group=\"g\\\\1\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "mothership_health_check_duration_seconds_count{ship=\"web\",group=\"g\\\\1\"} 2\n"
        ));
        assert!(text.contains(
            "mothership_health_check_failures_total{ship=\"web\",group=\"g\\\\1\",reason=\"timeout\"} 1\n"
        ));
        assert!(text.contains("mothership_bay_docked{bay=\"chat\"} 1\n"));
        assert!(text.contains("mothership_bay_clients{bay=\"chat\"} 3\n"));
        assert!(
            text.contains("mothership_bay_messages_total{bay=\"chat\",direction=\"to_bay\"} 5\n")
        );
        assert!(
            text.contains("mothership_bay_clients_closed_total{bay=\"chat\",reason=\"slow\"} 1\n")
        );
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(l.to_string()), "family twice: {l}");
        }
    }
}
