//! Uplink checks (`[[mothership.uplinks]]`): is each dependency of this server reachable?
//!
//! All checks run at once from one `mio` loop with non-blocking connects, trying every
//! address a name resolves to, in order. Names are resolved on short-lived threads (the
//! system resolver blocks), which report back through a channel and a `mio::Waker`, so
//! TERM and INT are handled at once even while a resolver hangs. The same check is made
//! once: TCP-style uplinks (databases, `tcp://`, `https://`) by host and port, HTTP uplinks
//! by host, port and path.
//!
//! What passes: for `postgres`, `mysql`, `redis`, `memgraph`/`neo4j`/`bolt`, `tcp` and
//! `https`, a TCP connection (for `https` this build does not speak TLS: the report says
//! so); for `http`, a `GET` of the URL's path answered with a 2xx status (redirects are not
//! followed).

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::signal::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::health::probe::{Check as ProbeCheck, Probe, Progress, Target};
use crate::manifest::Uplink;

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);

/// The outcome of one uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: String,
    /// The URL with its password masked.
    pub masked: String,
    /// What passed (`Ok`, with a note) or what failed.
    pub result: Result<String, String>,
    pub took: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Tcp,
    /// TCP only: TLS is not spoken by this build.
    Tls,
    Http(String),
}

enum State {
    Resolving,
    /// Probing `addrs[next - 1]` (connecting, then for HTTP asking it).
    Probing {
        addrs: Vec<SocketAddr>,
        next: usize,
        probe: Probe,
        /// This address's share of the time to connect: past it, the next address is
        /// tried (an address that drops packets must not use up the whole timeout).
        until: Instant,
    },
    Done(Result<String, String>),
}

struct Check {
    host: String,
    port: u16,
    kind: Kind,
    deadline: Instant,
    timeout: Duration,
    started: Instant,
    took: Option<Duration>,
    state: State,
}

impl Check {
    /// What the probe of one address checks.
    fn probe_check(&self) -> ProbeCheck {
        match &self.kind {
            Kind::Tcp | Kind::Tls => ProbeCheck::Connect,
            Kind::Http(path) => {
                let host = if self.host.contains(':') {
                    format!("[{}]", self.host)
                } else {
                    self.host.clone()
                };
                let host = if self.port == 80 {
                    host
                } else {
                    format!("{host}:{}", self.port)
                };
                ProbeCheck::Get {
                    host,
                    path: path.clone(),
                    agent: format!("mothership-preflight/{}", env!("CARGO_PKG_VERSION")),
                }
            }
        }
    }
}

/// Runs every check; `None` if a signal (TERM, INT, QUIT) interrupted them.
pub fn check_all(uplinks: &[Uplink]) -> io::Result<Option<Vec<Report>>> {
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel::<(usize, io::Result<Vec<SocketAddr>>)>();
    let now = Instant::now();

    // One check per distinct target; each uplink points at its check.
    let mut checks: Vec<Check> = Vec::new();
    let mut index: HashMap<(String, u16, Kind), usize> = HashMap::new();
    let mut of_uplink = Vec::with_capacity(uplinks.len());
    for u in uplinks {
        let kind = match u.scheme.as_str() {
            "http" => Kind::Http(u.path.clone()),
            "https" => Kind::Tls,
            _ => Kind::Tcp,
        };
        let key = (u.host.to_ascii_lowercase(), u.port, kind.clone());
        let i = *index.entry(key).or_insert_with(|| {
            checks.push(Check {
                host: u.host.clone(),
                port: u.port,
                kind,
                deadline: now,
                timeout: Duration::ZERO,
                started: now,
                took: None,
                state: State::Resolving,
            });
            checks.len() - 1
        });
        // Shared checks get the longest timeout asked for.
        let c = &mut checks[i];
        c.timeout = c.timeout.max(u.timeout);
        c.deadline = crate::reactor::deadline::after(now, c.timeout);
        of_uplink.push(i);
    }
    for (i, c) in checks.iter().enumerate() {
        let (host, port) = (c.host.clone(), c.port);
        let (tx2, waker2) = (tx.clone(), Arc::clone(&waker));
        let spawned = std::thread::Builder::new()
            .name("uplink-resolve".into())
            .spawn(move || {
                let r = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>());
                let _ = tx2.send((i, r));
                let _ = waker2.wake();
            });
        if let Err(e) = spawned {
            let _ = tx.send((i, Err(e)));
            let _ = waker.wake();
        }
    }
    drop(tx);

    let mut events = Events::with_capacity(64);
    loop {
        let now = Instant::now();
        for (i, c) in checks.iter_mut().enumerate() {
            let moved_on = match &mut c.state {
                State::Probing {
                    addrs,
                    next,
                    probe,
                    until,
                    ..
                } if *until <= now
                    && !probe.connected_yet()
                    && *next < addrs.len()
                    && c.deadline > now =>
                {
                    probe.deregister(poll.registry());
                    let a = addrs[*next - 1];
                    let (addrs, next) = (std::mem::take(addrs), *next);
                    Some((addrs, next, a))
                }
                _ => None,
            };
            if let Some((addrs, next, a)) = moved_on {
                let why = format!("{a}: no answer in its share of the timeout");
                connect_from(c, i, addrs, next, Some(why), poll.registry());
            }
            if !matches!(c.state, State::Done(_)) && c.deadline <= now {
                let what = match &c.state {
                    State::Resolving => "resolving the name",
                    State::Probing { probe, .. } if !probe.connected_yet() => "connecting",
                    _ => "waiting for the answer",
                };
                finish(
                    c,
                    Err(format!("timed out after {:?} {what}", c.timeout)),
                    poll.registry(),
                );
            }
        }
        if checks.iter().all(|c| matches!(c.state, State::Done(_))) {
            break;
        }
        let next = checks
            .iter()
            .filter_map(|c| match &c.state {
                State::Done(_) => None,
                State::Probing { until, probe, .. } if !probe.connected_yet() => {
                    Some(c.deadline.min(*until))
                }
                _ => Some(c.deadline),
            })
            .min();
        let timeout = next.map(|d| d.saturating_duration_since(now));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    if signals.pending().next().is_some() {
                        drop(signals);
                        crate::reactor::default_stop_signals();
                        return Ok(None);
                    }
                }
                WAKER => {
                    while let Ok((i, r)) = rx.try_recv() {
                        if let Some(c) = checks.get_mut(i) {
                            if matches!(c.state, State::Resolving) {
                                resolved(c, i, r, poll.registry());
                            }
                        }
                    }
                }
                Token(t) => {
                    let i = t - 2;
                    if let Some(c) = checks.get_mut(i) {
                        drive(c, i, poll.registry());
                    }
                }
            }
        }
    }
    drop(signals);
    crate::reactor::default_stop_signals();
    Ok(Some(
        uplinks
            .iter()
            .zip(of_uplink)
            .map(|(u, i)| {
                let c = &checks[i];
                Report {
                    name: u.name.clone(),
                    masked: u.masked.clone(),
                    result: match &c.state {
                        State::Done(r) => r.clone(),
                        _ => Err("not checked".into()),
                    },
                    took: c.took.unwrap_or_default(),
                }
            })
            .collect(),
    ))
}

fn finish(c: &mut Check, r: Result<String, String>, registry: &mio::Registry) {
    if let State::Probing { probe, .. } = &mut c.state {
        probe.deregister(registry);
    }
    c.took = Some(c.started.elapsed());
    c.state = State::Done(r);
}

fn resolved(c: &mut Check, i: usize, r: io::Result<Vec<SocketAddr>>, registry: &mio::Registry) {
    match r {
        Ok(addrs) if !addrs.is_empty() => connect_from(c, i, addrs, 0, None, registry),
        Ok(_) => finish(c, Err(format!("{} has no address", c.host)), registry),
        Err(e) => finish(c, Err(format!("cannot resolve {}: {e}", c.host)), registry),
    }
}

/// Starts a connect to `addrs[next]`, or the following ones if that fails at once.
fn connect_from(
    c: &mut Check,
    i: usize,
    addrs: Vec<SocketAddr>,
    mut next: usize,
    mut last_error: Option<String>,
    registry: &mio::Registry,
) {
    // Each address gets an equal share of what is left (at least 250 ms).
    let left = c.deadline.saturating_duration_since(Instant::now());
    let share =
        (left / (addrs.len().saturating_sub(next).max(1)) as u32).max(Duration::from_millis(250));
    while let Some(&a) = addrs.get(next) {
        next += 1;
        match Probe::start(&Target::Tcp(a), c.probe_check()) {
            Ok(mut probe) => {
                if let Err(e) = probe.register(registry, Token(i + 2)) {
                    last_error = Some(format!("{a}: {e}"));
                    continue;
                }
                c.state = State::Probing {
                    addrs,
                    next,
                    probe,
                    until: Instant::now() + share,
                };
                return;
            }
            Err(e) => last_error = Some(format!("{a}: {e}")),
        }
    }
    let why = last_error.unwrap_or_else(|| "no address to connect to".into());
    finish(c, Err(format!("cannot connect: {why}")), registry);
}

fn drive(c: &mut Check, i: usize, registry: &mio::Registry) {
    let State::Probing {
        addrs, next, probe, ..
    } = &mut c.state
    else {
        return;
    };
    match probe.drive() {
        Progress::Pending => {}
        Progress::Unreachable(e) => {
            probe.deregister(registry);
            // This address failed; its error replaces the earlier ones.
            let a = addrs
                .get(*next - 1)
                .map_or(String::new(), |a| a.to_string());
            let (addrs, next) = (std::mem::take(addrs), *next);
            connect_from(c, i, addrs, next, Some(format!("{a}: {e}")), registry);
        }
        Progress::Passed(note) => {
            let note = match c.kind {
                Kind::Tls => "TCP connect only: this build does not check TLS".into(),
                _ => note,
            };
            finish(c, Ok(note), registry);
        }
        Progress::Failed(why) => finish(c, Err(why), registry),
    }
}

/// One line per uplink, aligned: name, masked URL, `ok` or the error, time taken.
pub fn format_reports(reports: &[Report]) -> Vec<String> {
    let wn = reports.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let wu = reports.iter().map(|r| r.masked.len()).max().unwrap_or(0);
    reports
        .iter()
        .map(|r| {
            let verdict = match &r.result {
                Ok(note) if note.is_empty() => "ok".to_string(),
                Ok(note) => format!("ok ({note})"),
                Err(e) => format!("error: {e}"),
            };
            format!(
                "{:<wn$}  {:<wu$}  {verdict}  {} ms",
                r.name,
                r.masked,
                r.took.as_millis()
            )
        })
        .collect()
}
