//! The status page of the metrics listener: `GET /status`, a small server-rendered HTML
//! page (one table of the fleet, one of the WASM modules, refreshed by a meta refresh; no
//! script, no external asset), and `GET /status.json`, the same data as JSON. Pure: the
//! edge passes the fleet view, the resource sample and the module counts.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use crate::fleet::resources::Usage;
use crate::fleet::view::FleetView;
use crate::payload::ModRow;
use crate::proto::json;

/// What the status shows besides the fleet view, shared by the edge with the control
/// socket and the dashboard: the routes (fixed at start) and the modules' counts (the
/// edge refreshes them at the end of a turn, at most once a second).
#[derive(Debug, Default)]
pub struct Extras {
    /// (what matches, the program it goes to)
    pub routes: Vec<(String, String)>,
    pub modules: Vec<ModRow>,
}

/// [`Extras`] as shared on the loop's one thread.
pub type SharedExtras = std::rc::Rc<std::cell::RefCell<Extras>>;

/// Seconds between two refreshes of the page.
const REFRESH: u32 = 2;

/// One program's row.
struct Row<'a> {
    name: &'a str,
    group: &'a str,
    kind: &'a str,
    state: &'a str,
    pid: Option<i32>,
    uptime: Option<f64>,
    restarts: u64,
    health: &'a str,
    ready: bool,
    rss: Option<u64>,
    cpu: Option<f64>,
    last_exit: Option<&'a str>,
    routes: Vec<&'a str>,
}

fn rows<'a>(
    fleet: &'a FleetView,
    usage: &HashMap<i32, Usage>,
    routes: &'a [(String, String)],
    now: Instant,
) -> Vec<Row<'a>> {
    fleet
        .ships
        .iter()
        .map(|s| {
            let u = s.pgid.and_then(|g| usage.get(&g));
            Row {
                name: &s.name,
                group: &s.group,
                kind: s.kind,
                state: s.state,
                pid: s.pgid,
                uptime: s
                    .up_since
                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                restarts: s.restarts,
                health: if s.has_check { s.health.name() } else { "-" },
                ready: s.up_since.is_some(),
                rss: u.map(|u| u.rss_bytes),
                cpu: u.map(|u| u.cpu_seconds),
                last_exit: s.last_exit.as_deref(),
                routes: routes
                    .iter()
                    .filter(|(_, p)| *p == s.name)
                    .map(|(l, _)| l.as_str())
                    .collect(),
            }
        })
        .collect()
}

fn html_escape(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `1h02m`, `3m05s`, `12s`.
fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.0} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The HTML page. `routes`: (route label, program name).
pub fn html(
    fleet: &FleetView,
    usage: &HashMap<i32, Usage>,
    routes: &[(String, String)],
    modules: &[ModRow],
    now: Instant,
) -> String {
    let rows = rows(fleet, usage, routes, now);
    let mut o = String::with_capacity(2048 + rows.len() * 256);
    let up = duration(now.saturating_duration_since(fleet.started).as_secs_f64());
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH}\">\
<title>mothership: {}</title>\
<style>body{{font:14px system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
th,td{{padding:.25em .8em;border-bottom:1px solid #ccc;text-align:left}}\
td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
.running{{color:#070}}.failed,.backoff,.unhealthy{{color:#b00}}</style></head><body>\n",
        fleet.state
    );
    let _ = write!(
        o,
        "<h1>mothership {}</h1>\n<p>fleet <strong id=\"fleet-state\">{}</strong>, up {up}, {} program(s)</p>\n",
        env!("CARGO_PKG_VERSION"),
        fleet.state,
        rows.len()
    );
    o.push_str("<table id=\"programs\"><thead><tr><th>name</th><th>group</th><th>kind</th><th>state</th><th>pid</th><th>uptime</th><th>restarts</th><th>health</th><th>RSS</th><th>CPU</th><th>last exit</th><th>routes</th></tr></thead><tbody>\n");
    for r in &rows {
        o.push_str("<tr><td>");
        html_escape(&mut o, r.name);
        o.push_str("</td><td>");
        html_escape(&mut o, r.group);
        let _ = write!(
            o,
            "</td><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>",
            r.kind,
            r.state,
            r.state,
            r.pid.map_or("-".into(), |p| p.to_string()),
            r.uptime.map_or("-".into(), duration),
            r.restarts,
            r.health,
            r.health,
            r.rss.map_or("-".into(), bytes),
            r.cpu.map_or("-".into(), |c| format!("{c:.2}s")),
        );
        html_escape(&mut o, r.last_exit.unwrap_or("-"));
        o.push_str("</td><td>");
        html_escape(&mut o, &r.routes.join(" "));
        o.push_str("</td></tr>\n");
    }
    o.push_str("</tbody></table>\n");
    if !modules.is_empty() {
        o.push_str("<h2>WASM modules</h2>\n<table id=\"modules\"><thead><tr><th>name</th><th>phase</th><th>calls</th><th>blocks</th><th>errors</th><th>resets</th></tr></thead><tbody>\n");
        for m in modules {
            o.push_str("<tr><td>");
            html_escape(&mut o, &m.name);
            let s = &m.stats;
            let _ = writeln!(
                o,
                "</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                phase(m),
                s.calls,
                s.blocks,
                s.errors,
                s.resets
            );
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("</body></html>\n");
    o
}

fn phase(m: &ModRow) -> &'static str {
    match m.phase {
        crate::manifest::Phase::Request => "request",
        crate::manifest::Phase::Response => "response",
    }
}

fn opt<T: std::fmt::Display>(o: &mut String, v: Option<T>) {
    match v {
        Some(v) => {
            let _ = write!(o, "{v}");
        }
        None => o.push_str("null"),
    }
}

/// [`json`] with the routes and modules `extras` holds (none without an edge).
pub fn json_with(
    fleet: &FleetView,
    usage: &HashMap<i32, Usage>,
    extras: Option<&Extras>,
    now: Instant,
) -> String {
    let (routes, modules) = extras.map_or((&[][..], &[][..]), |e| (&e.routes[..], &e.modules[..]));
    json(fleet, usage, routes, modules, now)
}

/// The same as JSON: `{"state","uptime_seconds","programs":[...],"modules":[...]}`.
pub fn json(
    fleet: &FleetView,
    usage: &HashMap<i32, Usage>,
    routes: &[(String, String)],
    modules: &[ModRow],
    now: Instant,
) -> String {
    let rows = rows(fleet, usage, routes, now);
    let mut o = String::with_capacity(256 + rows.len() * 256);
    o.push_str("{\"state\":");
    json::write_str(&mut o, fleet.state);
    let _ = write!(
        o,
        ",\"uptime_seconds\":{:.3},\"programs\":[",
        now.saturating_duration_since(fleet.started).as_secs_f64()
    );
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json::write_str(&mut o, r.name);
        o.push_str(",\"group\":");
        json::write_str(&mut o, r.group);
        o.push_str(",\"kind\":");
        json::write_str(&mut o, r.kind);
        o.push_str(",\"state\":");
        json::write_str(&mut o, r.state);
        o.push_str(",\"pid\":");
        opt(&mut o, r.pid);
        o.push_str(",\"uptime_seconds\":");
        opt(&mut o, r.uptime.map(|u| format!("{u:.3}")));
        let _ = write!(o, ",\"restarts\":{},\"ready\":{}", r.restarts, r.ready);
        o.push_str(",\"health\":");
        json::write_str(&mut o, r.health);
        o.push_str(",\"rss_bytes\":");
        opt(&mut o, r.rss);
        o.push_str(",\"cpu_seconds\":");
        opt(&mut o, r.cpu.map(|c| format!("{c:.3}")));
        o.push_str(",\"last_exit\":");
        match r.last_exit {
            Some(e) => json::write_str(&mut o, e),
            None => o.push_str("null"),
        }
        o.push_str(",\"routes\":[");
        for (j, l) in r.routes.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            json::write_str(&mut o, l);
        }
        o.push_str("]}");
    }
    o.push_str("],\"modules\":[");
    for (i, m) in modules.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json::write_str(&mut o, &m.name);
        let s = &m.stats;
        let _ = write!(
            o,
            ",\"phase\":\"{}\",\"calls\":{},\"blocks\":{},\"errors\":{},\"resets\":{}}}",
            phase(m),
            s.calls,
            s.blocks,
            s.errors,
            s.resets
        );
    }
    o.push_str("]}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::view::ShipView;

    fn fleet(t0: Instant) -> FleetView {
        let a = ShipView {
            name: "web<1>".into(),
            group: "g&h".into(),
            tags: Vec::new(),
            deps: Vec::new(),
            kind: "ship",
            state: "running",
            healthy: true,
            has_check: true,
            health: crate::fleet::health::Status::Healthy,
            checks: Default::default(),
            restarts: 2,
            pgid: Some(4242),
            up_since: Some(t0),
            last_exit: None,
        };
        let mut b = a.clone();
        b.name = "worker".into();
        b.state = "backoff";
        b.pgid = None;
        b.up_since = None;
        b.has_check = false;
        b.last_exit = Some("exit code 3".into());
        FleetView {
            backends: vec![None, None],
            ships: vec![a, b],
            started: t0,
            state: "running",
        }
    }

    #[test]
    fn the_page_and_the_json_show_the_same_fleet() {
        let t0 = Instant::now();
        let now = t0 + std::time::Duration::from_secs(125);
        let f = fleet(t0);
        let mut usage = HashMap::new();
        usage.insert(
            4242,
            Usage {
                rss_bytes: 3 << 20,
                virtual_bytes: 0,
                cpu_seconds: 1.5,
                processes: 1,
            },
        );
        let routes = vec![("http:/".to_string(), "web<1>".to_string())];
        let page = html(&f, &usage, &routes, &[], now);
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(page.contains("<td>web&lt;1&gt;</td><td>g&amp;h</td><td>ship</td><td class=\"running\">running</td><td class=\"n\">4242</td><td class=\"n\">2m05s</td><td class=\"n\">2</td><td class=\"healthy\">healthy</td><td class=\"n\">3.0 MiB</td><td class=\"n\">1.50s</td><td>-</td><td>http:/</td>"), "{page}");
        assert!(page.contains("<td>worker</td>") && page.contains("<td class=\"n\">-</td>"));
        assert!(!page.contains("<script"));
        let j = json(&f, &usage, &routes, &[], now);
        let v = json::parse(j.as_bytes()).unwrap_or_else(|e| panic!("{e}: {j}"));
        assert_eq!(
            v.get("state").and_then(json::Value::as_str),
            Some("running")
        );
        let Some(json::Value::Array(ps)) = v.get("programs") else {
            panic!("{j}")
        };
        assert_eq!(
            ps[0].get("name").and_then(json::Value::as_str),
            Some("web<1>")
        );
        assert_eq!(ps[0].get("pid").and_then(json::Value::as_u64), Some(4242));
        assert_eq!(ps[0].get("restarts").and_then(json::Value::as_u64), Some(2));
        assert_eq!(ps[1].get("pid"), Some(&json::Value::Null));
        assert_eq!(
            ps[1].get("state").and_then(json::Value::as_str),
            Some("backoff")
        );
        assert_eq!(
            ps[1].get("last_exit").and_then(json::Value::as_str),
            Some("exit code 3")
        );
    }
}
