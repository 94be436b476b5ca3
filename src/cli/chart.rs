//! `mothership chart`: what the manifest will do, without doing it.

use super::{load, Global, EXIT_OK};
use crate::manifest::graph;
use crate::manifest::{Manifest, Role};

pub fn chart(g: &Global) -> i32 {
    match load(g) {
        Ok(m) => {
            print!("{}", render(&m));
            EXIT_OK
        }
        Err(code) => code,
    }
}

pub fn render(m: &Manifest) -> String {
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line("binds:".into());
    if m.binds.is_empty() {
        line("  (none)".into());
    }
    for b in &m.binds {
        let from = || {
            b.proxy_protocol_from
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pp = match b.proxy_protocol {
            crate::manifest::ProxyProtocol::Off => String::new(),
            crate::manifest::ProxyProtocol::Auto => format!(" (PROXY protocol from {})", from()),
            crate::manifest::ProxyProtocol::Required => {
                format!(" (PROXY protocol required, from {})", from())
            }
        };
        line(format!("  {:<12} {}{pp}", b.name, b.addr));
    }
    if let Some(p) = m.metrics_port {
        line(format!(
            "  {:<12} tcp://127.0.0.1:{p} (/metrics, /health)",
            "metrics"
        ));
    }
    line("routes (in match order):".into());
    let mut n = 0;
    for p in &m.programs {
        for r in &p.routes {
            n += 1;
            let mut extra = String::new();
            if let Some(sp) = &r.strip_prefix {
                extra.push_str(&format!(" strip_prefix={sp}"));
            }
            if let Some(u) = &r.ua_filter {
                extra.push_str(&format!(" ua_filter={}", u.describe()));
            }
            let target = match (&p.role, &p.bind) {
                (Role::Bay { .. }, _) => "bay (WebSocket)".to_string(),
                (_, Some(b)) => b.to_string(),
                (_, None) => "(no bind: answers 503)".to_string(),
            };
            line(format!(
                "  {n:>3}. {}:{} -> {} [{}]{extra}",
                r.bind,
                r.pattern.as_str(),
                p.name,
                target
            ));
        }
    }
    if n == 0 {
        line("  (none)".into());
    }
    if !m.static_dirs.is_empty() {
        line("static dirs:".into());
        for d in &m.static_dirs {
            let b = d.bind.as_deref().unwrap_or("all binds");
            line(format!("  {} -> {} ({b})", d.prefix, d.path.display()));
        }
    }
    if !m.prelaunch.is_empty() {
        line("prelaunch (in order, each level in parallel):".into());
        for (i, level) in graph::levels(&graph::deps(&m.prelaunch)).iter().enumerate() {
            let names: Vec<&str> = level
                .iter()
                .map(|&j| m.prelaunch[j].name.as_str())
                .collect();
            line(format!("  {}. {}", i + 1, names.join(", ")));
        }
    }
    line("launch order (each level in parallel; landing goes in reverse):".into());
    if m.programs.is_empty() {
        line("  (nothing to launch)".into());
    }
    for (i, level) in graph::levels(&graph::deps(&m.programs)).iter().enumerate() {
        let names: Vec<String> = level
            .iter()
            .map(|&j| {
                let p = &m.programs[j];
                format!(
                    "{} ({}{})",
                    p.name,
                    p.kind(),
                    if p.critical { "" } else { ", non-critical" }
                )
            })
            .collect();
        line(format!("  {}. {}", i + 1, names.join(", ")));
    }
    s
}
