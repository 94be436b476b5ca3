//! The manifest: reading `ship-manifest.toml` into typed, validated structures, with every
//! problem reported at once as `file:line:col: message`. Reads the file (and the
//! `env_file`s it names); the environment is given by the caller. Does no other IO.

pub mod bind;
pub mod diag;
pub mod dotenv;
mod expand;
pub mod graph;
pub mod health;
pub mod ids;
pub mod model;
mod reader;
pub mod units;
pub mod uplink;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use toml::de::{DeTable, DeValue};

pub use bind::BindAddr;
pub use diag::{Diags, Severity};
pub use expand::{expand, expand_braced};
use ids::{BindId, ProgramId, RouteId};
pub use model::*;
use reader::{sorted_entries, type_name, Located, Table, Value};

/// Default manifest file name, looked up in the working directory.
pub const DEFAULT_FILE: &str = "ship-manifest.toml";

/// The result of loading a manifest: the manifest when it is valid, and the diagnostics
/// (warnings, and errors when it is not) with the text needed to render them.
pub struct Loaded {
    pub manifest: Option<Manifest>,
    pub diags: Diags,
    pub path: PathBuf,
    pub text: String,
}

impl Loaded {
    pub fn render_diags(&self) -> String {
        self.diags.render(&self.path, &self.text)
    }
}

impl Manifest {
    /// Applies `--only` and `--except` to ships, bays and modules. A kept program that depends on
    /// a filtered-out one loses that dependency. Returns what to tell the user (warnings
    /// first, then which programs were left out).
    pub fn filter_tags(&mut self, only: &[String], except: &[String]) -> Vec<String> {
        let clean = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let (only, except) = (clean(only), clean(except));
        let mut notes = Vec::new();
        if only.is_empty() && except.is_empty() {
            return notes;
        }
        let keep = |tags: &[String]| {
            if tags.iter().any(|t| except.contains(t)) {
                return false;
            }
            only.is_empty() || tags.iter().any(|t| only.contains(t))
        };
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.programs)
            .into_iter()
            .partition(|p| keep(&p.tags));
        let dropped: Vec<String> = dropped.into_iter().map(|p| p.name).collect();
        for p in &kept {
            for d in &p.depends_on {
                if dropped.iter().any(|x| x.eq_ignore_ascii_case(d)) {
                    notes.push(format!("warning: {} depends on {}, which the tag filter leaves out; not waiting for it", p.name, d));
                }
            }
        }
        self.programs = kept
            .into_iter()
            .map(|mut p| {
                p.depends_on
                    .retain(|d| !dropped.iter().any(|x| x.eq_ignore_ascii_case(d)));
                p
            })
            .collect();
        if !dropped.is_empty() {
            notes.push(format!("tag filter leaves out: {}", dropped.join(", ")));
        }
        // Modules with tags are filtered by them as programs are; one without tags guards
        // every request and is always kept (`--only` never drops a guard silently).
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.modules)
            .into_iter()
            .partition(|m| m.tags.is_empty() || keep(&m.tags));
        self.modules = kept;
        if !dropped.is_empty() {
            let names: Vec<String> = dropped.into_iter().map(|m| m.name).collect();
            notes.push(format!(
                "tag filter leaves out module(s): {}",
                names.join(", ")
            ));
        }
        self.resolve_ids();
        notes
    }

    /// Resolves the names inside the manifest to ids, once for each shape of it (parse,
    /// tag filter): every program's `depends_on` to ids within its set (see
    /// [`graph::edges`]), the binds of routes and static folders to [`BindId`]s, and
    /// every route gets its [`RouteId`] (declaration order over the programs).
    pub fn resolve_ids(&mut self) {
        for set in [&mut self.prelaunch, &mut self.programs] {
            let edges = graph::edges(set);
            for (p, deps) in set.iter_mut().zip(edges) {
                p.deps = deps.into_iter().map(ProgramId::at).collect();
            }
        }
        let binds = &self.binds;
        let bind_id = |name: &str| {
            binds
                .iter()
                .position(|b| b.name == name)
                .map_or(BindId::NONE, BindId::at)
        };
        let routes = self.programs.iter_mut().flat_map(|p| p.routes.iter_mut());
        for (i, r) in routes.enumerate() {
            r.id = RouteId::at(i);
            r.bind_id = bind_id(&r.bind);
        }
        for s in &mut self.static_dirs {
            s.bind_id = s.bind.as_deref().map(bind_id);
        }
    }
}

/// Reads and validates the manifest at `path`, expanding variables with `env` (the
/// process environment, for `mothership` itself).
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read manifest {}: {}", path.display(), e))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    Ok(parse(path, &dir, text, env))
}

/// Parses manifest text. `dir` is the folder relative paths resolve against.
pub fn parse(
    path: &Path,
    dir: &Path,
    text: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    let mut diags = Diags::default();
    let manifest = {
        let (doc, errors) = DeTable::parse_recoverable(&text);
        if errors.is_empty() {
            let mut p = Parser {
                d: &mut diags,
                dir,
                env,
                metrics_span: 0..0,
                fleet_env: Vec::new(),
                log_tuning: None,
            };
            let mut m = p.manifest(doc.get_ref(), doc.span(), path);
            m.resolve_ids();
            if diags.has_errors() {
                None
            } else {
                Some(m)
            }
        } else {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                diags.error(span, format!("TOML syntax: {}", e.message().trim()));
            }
            None
        }
    };
    Loaded {
        manifest,
        diags,
        path: path.to_path_buf(),
        text,
    }
}

/// Defaults and merged values from `[base.ship]`, `[base.bay]` or `[base.module]`.
#[derive(Default, Clone)]
struct Base {
    env: Vec<(String, String)>,
    config: Vec<(String, String)>,
    critical: Option<bool>,
    tags: Vec<String>,
    stop_signal: Option<i32>,
    grace_period: Option<Duration>,
    restart: Option<Restart>,
    crash_limit: Option<u32>,
    crash_window: Option<Duration>,
    max_memory: Option<u64>,
    cwd: Option<PathBuf>,
    phase: Option<Phase>,
    health: HealthKeys,
}

/// The health and readiness keys of a ship or of `[base.ship]`, as written (and
/// `maxconn`, the edge's limit for it).
#[derive(Default, Clone)]
struct HealthKeys {
    healthcheck: Option<Located<String>>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    fails: Option<u32>,
    passes: Option<u32>,
    grace: Option<Duration>,
    /// `Some(None)`: `"never"`.
    unhealthy_restart: Option<Option<Duration>>,
    ready: Option<Located<String>>,
    ready_timeout: Option<Duration>,
    watchdog: Option<Located<Duration>>,
    maxconn: Option<u32>,
}

impl HealthKeys {
    /// A ship's own keys over its base's.
    fn over(self, base: &HealthKeys) -> HealthKeys {
        let b = base.clone();
        HealthKeys {
            healthcheck: self.healthcheck.or(b.healthcheck),
            interval: self.interval.or(b.interval),
            timeout: self.timeout.or(b.timeout),
            fails: self.fails.or(b.fails),
            passes: self.passes.or(b.passes),
            grace: self.grace.or(b.grace),
            unhealthy_restart: self.unhealthy_restart.or(b.unhealthy_restart),
            ready: self.ready.or(b.ready),
            ready_timeout: self.ready_timeout.or(b.ready_timeout),
            watchdog: self.watchdog.or(b.watchdog),
            maxconn: self.maxconn.or(b.maxconn),
        }
    }
}

/// A program before cross-checks, with the spans of what later checks point at.
struct Draft {
    program: Program,
    name_span: Range<usize>,
    deps: Vec<Located<String>>,
    route_binds: Vec<Located<String>>,
    order: usize,
}

struct Parser<'a> {
    d: &'a mut Diags,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    metrics_span: Range<usize>,
    /// `mothership.env_file` then `mothership.env`, for expanding program arguments.
    fleet_env: Vec<(String, String)>,
    /// The first of `log_max_size`, `log_keep`, `log_compress` given: refused when no
    /// program has a log file.
    log_tuning: Option<(&'static str, Range<usize>)>,
}

const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_CRASH_LIMIT: u32 = 5;
const DEFAULT_CRASH_WINDOW: Duration = Duration::from_secs(60);

impl Parser<'_> {
    fn manifest(&mut self, root: &DeTable<'_>, span: Range<usize>, path: &Path) -> Manifest {
        let mut top = Table::new(root, span, "");
        let mut m = Manifest {
            path: path.to_path_buf(),
            dir: self.dir.to_path_buf(),
            binds: Vec::new(),
            metrics_port: None,
            env: Vec::new(),
            env_file: Vec::new(),
            static_dirs: Vec::new(),
            compression: false,
            cors_cache: CorsCache::default(),
            uplinks: Vec::new(),
            prelaunch: Vec::new(),
            flagship: Flagship {
                enabled: false,
                election: Election::Static(StaticFlagship::Value(String::new())),
                app: None,
                prelaunch_timeout: Duration::from_secs(300),
                election_timeout: Duration::from_secs(30),
            },
            rate_limiting: RateLimiting::default(),
            http: HttpSettings::default(),
            programs: Vec::new(),
            modules: Vec::new(),
            events: EventHooks {
                timeout: Duration::from_secs(10),
                ..EventHooks::default()
            },
            log_files: LogFiles::default(),
            control_group: None,
        };

        let (mut ship_base, mut bay_base, mut module_base) =
            (Base::default(), Base::default(), Base::default());
        if let Some(mut base) = top.table(self.d, "base") {
            if let Some(t) = base.table(self.d, "ship") {
                ship_base = self.base(t, false);
            }
            if let Some(t) = base.table(self.d, "bay") {
                bay_base = self.base(t, true);
            }
            if let Some(mut t) = base.table(self.d, "module") {
                module_base.config = self.expanded_map(&mut t, "config");
                module_base.tags = t
                    .string_list(self.d, "tags")
                    .into_iter()
                    .map(|s| s.value)
                    .collect();
                module_base.phase = self.phase(&mut t);
                t.finish(self.d);
            }
            base.finish(self.d);
        }

        let mut prelaunch_drafts = Vec::new();
        let mut static_binds = Vec::new();
        if let Some(mut ms) = top.table(self.d, "mothership") {
            self.binds(&mut ms, &mut m);
            m.metrics_port = self.metrics_port(&mut ms);
            self.metrics_span = ms.get("metrics_port").map(|v| v.span()).unwrap_or(0..0);
            m.env_file = self.env_file(&mut ms);
            m.env = self.expanded_map(&mut ms, "env");
            self.fleet_env = m.env_file.clone();
            merge(&mut self.fleet_env, m.env.clone());
            m.compression = ms.bool(self.d, "compression").unwrap_or(false);
            self.cors_cache(&mut ms, &mut m);
            self.static_dirs(&mut ms, &mut m, &mut static_binds);
            self.uplinks(&mut ms, &mut m);
            for (i, (t, span)) in self
                .array_of_tables(&mut ms, "prelaunch")
                .into_iter()
                .enumerate()
            {
                let t = Table::new(t, span, format!("mothership.prelaunch[{i}]"));
                if let Some(dr) = self.program(t, Role::Prelaunch, &Base::default(), i) {
                    prelaunch_drafts.push(dr);
                }
            }
            self.flagship(&mut ms, &mut m);
            self.event_hooks(&mut ms, &mut m);
            self.log_files(&mut ms, &mut m);
            self.control_group(&mut ms, &mut m);
            self.rate_limiting(&mut ms, &mut m);
            self.http(&mut ms, &mut m);
            ms.finish(self.d);
        }

        let mut drafts = Vec::new();
        for (section, is_bay) in [("fleet", false), ("bays", true)] {
            let Some(mut groups) = top.table(self.d, section) else {
                continue;
            };
            for (gname, gval) in sorted_entries(groups_table(&groups)) {
                let group = gname.get_ref().to_string();
                let items: Vec<(&DeTable<'_>, Range<usize>)> = match gval.get_ref() {
                    DeValue::Array(a) => a
                        .iter()
                        .filter_map(|v| match v.get_ref() {
                            DeValue::Table(t) => Some((t, v.span())),
                            other => {
                                self.d.error(
                                    v.span(),
                                    format!(
                                        "`{section}.{group}` entries must be tables, found {}",
                                        type_name(other)
                                    ),
                                );
                                None
                            }
                        })
                        .collect(),
                    DeValue::Table(t) => vec![(t, gval.span())],
                    other => {
                        self.d.error(
                            gval.span(),
                            format!(
                                "`{section}.{group}` must be an array of tables (`[[{section}.{group}]]`), found {}",
                                type_name(other)
                            ),
                        );
                        continue;
                    }
                };
                for (i, (t, span)) in items.into_iter().enumerate() {
                    let order = span.start;
                    let t = Table::new(t, span, format!("{section}.{group}[{i}]"));
                    let (role, base) = if is_bay {
                        (
                            Role::Bay {
                                bay_type: group.clone(),
                            },
                            &bay_base,
                        )
                    } else {
                        (
                            Role::Ship {
                                group: group.clone(),
                            },
                            &ship_base,
                        )
                    };
                    if let Some(dr) = self.program(t, role, base, order) {
                        drafts.push(dr);
                    }
                }
            }
            mark_all_asked(&mut groups);
            groups.finish(self.d);
        }
        drafts.sort_by_key(|d| d.order);

        for (i, (t, span)) in self
            .array_of_tables(&mut top, "modules")
            .into_iter()
            .enumerate()
        {
            let t = Table::new(t, span.clone(), format!("modules[{i}]"));
            if let Some(module) = self.module(t, &module_base) {
                // Names label the module's metrics and log lines: one each.
                if m.modules
                    .iter()
                    .any(|x| x.name.eq_ignore_ascii_case(&module.name))
                {
                    self.d
                        .error(span, format!("a second module named {:?}", module.name));
                }
                m.modules.push(module);
            }
        }
        top.finish(self.d);

        self.check_programs(&drafts, &prelaunch_drafts, &m, &static_binds);
        m.programs = drafts.into_iter().map(|d| d.program).collect();
        m.prelaunch = prelaunch_drafts.into_iter().map(|d| d.program).collect();
        // Programs without a `log_file` of their own write to `log_dir`, if there is one;
        // no two programs share a file.
        let mut files: HashMap<PathBuf, String> = HashMap::new();
        for p in m.prelaunch.iter_mut().chain(m.programs.iter_mut()) {
            if p.log_file.is_none() {
                p.log_file = m
                    .log_files
                    .dir
                    .as_ref()
                    .map(|d| d.join(format!("{}.log", p.name)));
            }
            if let Some(f) = &p.log_file {
                if let Some(other) = files.insert(f.clone(), p.name.clone()) {
                    self.d.error(
                        0..0,
                        format!(
                            "programs `{other}` and `{}` would write to the same log file {}",
                            p.name,
                            f.display()
                        ),
                    );
                }
            }
        }
        let no_files = files.is_empty() && m.log_files.dir.is_none();
        if let (true, Some((key, span))) = (no_files, self.log_tuning.take()) {
            self.d.error(
                span,
                format!("`{key}` without a log file to act on: set `log_dir`, or a program's `log_file`"),
            );
        }
        m
    }

    fn expanded(&mut self, s: &Located<String>) -> String {
        match expand(&s.value, self.env) {
            Ok((v, unset)) => {
                for name in unset {
                    self.d.warning(
                        s.span.clone(),
                        format!("environment variable `{name}` is not set; it expands to an empty string"),
                    );
                }
                v
            }
            Err(e) => {
                self.d.error(s.span.clone(), e);
                String::new()
            }
        }
    }

    /// A bind string after `$VAR` expansion (`"127.0.0.1:${PORT:-8080}"`); an invalid one is
    /// reported at the original's location with the value it expanded to.
    fn bind_addr(&mut self, s: &Located<String>) -> Option<BindAddr> {
        let expanded = self.expanded(s);
        match BindAddr::parse(&expanded, self.dir) {
            Ok(a) => Some(a),
            Err(e) if expanded != s.value => {
                self.d.error(
                    s.span.clone(),
                    format!("{e} (`{}` expanded to `{expanded}`)", s.value),
                );
                None
            }
            Err(e) => {
                self.d.error(s.span.clone(), e);
                None
            }
        }
    }

    /// `env_file`: a path or a list of paths (relative to the manifest's folder, `$VAR`
    /// expanded) of dotenv files, read now; later files win. A file that cannot be read or
    /// parsed is an error at the key's value. Values are never put in a message.
    fn env_file(&mut self, t: &mut Table<'_, '_>) -> Vec<(String, String)> {
        let Some(v) = t.get("env_file") else {
            return Vec::new();
        };
        let paths: Vec<Located<String>> = match v.get_ref() {
            DeValue::String(s) => vec![Located::new(s.to_string(), v.span())],
            DeValue::Array(_) => t.string_list(self.d, "env_file"),
            other => {
                self.d.error(
                    v.span(),
                    format!(
                        "`{}` must be a path or an array of paths, found {}",
                        t.child_path("env_file"),
                        type_name(other)
                    ),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for p in paths {
            let expanded = self.expanded(&p);
            let path = self.path(&expanded);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.d.error(
                        p.span.clone(),
                        format!("cannot read env_file {}: {e}", path.display()),
                    );
                    continue;
                }
            };
            match dotenv::parse(&text, self.env) {
                Ok((vars, unset)) => {
                    for line in unset {
                        self.d.warning(
                            p.span.clone(),
                            format!("{}:{line}: a variable in this value is not set; it expands to an empty string", path.display()),
                        );
                    }
                    for (k, val) in vars {
                        match out.iter_mut().find(|(n, _)| *n == k) {
                            Some(slot) => slot.1 = val,
                            None => out.push((k, val)),
                        }
                    }
                }
                Err(e) => self.d.error(
                    p.span.clone(),
                    format!("{}:{}: {}", path.display(), e.line, e.why),
                ),
            }
        }
        out
    }

    /// `metrics_port`: an integer, or a string expanded like a bind (`"${METRICS_PORT}"`).
    fn metrics_port(&mut self, ms: &mut Table<'_, '_>) -> Option<u16> {
        let v = ms.get("metrics_port")?;
        match v.get_ref() {
            DeValue::String(s) => {
                let raw = Located::new(s.to_string(), v.span());
                let expanded = self.expanded(&raw);
                match expanded.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => {
                        self.d.error(
                            v.span(),
                            format!("`mothership.metrics_port` must be a port from 1 to 65535, found `{expanded}` (from `{s}`)"),
                        );
                        None
                    }
                }
            }
            _ => ms.int(self.d, "metrics_port", 1, 65535).map(|n| n as u16),
        }
    }

    fn expanded_map(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Vec<(String, String)> {
        let raw = t.string_map(self.d, key);
        raw.into_iter()
            .map(|(k, v)| {
                let val = self.expanded(&v);
                (k.value, val)
            })
            .collect()
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn array_of_tables<'t, 'i>(
        &mut self,
        t: &mut Table<'t, 'i>,
        key: &'static str,
    ) -> Vec<(&'t DeTable<'i>, Range<usize>)> {
        let path = t.child_path(key);
        let Some(v) = t.get(key) else {
            return Vec::new();
        };
        match v.get_ref() {
            DeValue::Array(a) => a
                .iter()
                .filter_map(|item| match item.get_ref() {
                    DeValue::Table(tt) => Some((tt, item.span())),
                    other => {
                        self.d.error(
                            item.span(),
                            format!(
                                "`{path}` entries must be tables, found {}",
                                type_name(other)
                            ),
                        );
                        None
                    }
                })
                .collect(),
            DeValue::Table(tt) => vec![(tt, v.span())],
            other => {
                self.d.error(
                    v.span(),
                    format!(
                        "`{path}` must be an array of tables, found {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn base(&mut self, mut t: Table<'_, '_>, bay: bool) -> Base {
        let mut b = Base {
            env: self.expanded_map(&mut t, "env"),
            critical: t.bool(self.d, "critical"),
            tags: t
                .string_list(self.d, "tags")
                .into_iter()
                .map(|s| s.value)
                .collect(),
            ..Base::default()
        };
        if bay {
            b.config = self.expanded_map(&mut t, "config");
        } else {
            b.health = self.health_keys(&mut t);
        }
        self.process_keys(&mut t, &mut b);
        t.finish(self.d);
        b
    }

    /// `healthcheck`, the `health_*` keys, `unhealthy_restart`, `ready` and
    /// `ready_timeout` (ships and `[base.ship]`).
    fn health_keys(&mut self, t: &mut Table<'_, '_>) -> HealthKeys {
        let mut h = HealthKeys {
            healthcheck: t.string(self.d, "healthcheck"),
            interval: t.duration(self.d, "health_interval"),
            timeout: t.duration(self.d, "health_timeout"),
            fails: t.int(self.d, "health_fails", 1, 1000).map(|n| n as u32),
            passes: t.int(self.d, "health_passes", 1, 1000).map(|n| n as u32),
            grace: t.duration(self.d, "health_grace"),
            ready: t.string(self.d, "ready"),
            ready_timeout: t.duration(self.d, "ready_timeout"),
            watchdog: t.key_span("watchdog").and_then(|span| {
                let d = t.duration(self.d, "watchdog")?;
                Some(Located::new(d, span))
            }),
            maxconn: t.int(self.d, "maxconn", 1, 1_000_000).map(|n| n as u32),
            ..HealthKeys::default()
        };
        for (key, min) in [
            ("health_interval", h.interval),
            ("health_timeout", h.timeout),
            ("ready_timeout", h.ready_timeout),
            ("watchdog", h.watchdog.as_ref().map(|w| w.value)),
        ] {
            if min.is_some_and(|d| d < Duration::from_millis(10)) {
                if let Some(span) = t.key_span(key) {
                    self.d.error(span, format!("`{key}` must be at least 10ms"));
                }
            }
        }
        if let Some(v) = t.get("unhealthy_restart") {
            h.unhealthy_restart = match v.get_ref() {
                DeValue::String(s) if s.trim() == "never" => Some(None),
                DeValue::String(s) => match units::parse_duration(s) {
                    Ok(d) => Some(Some(d)),
                    Err(e) => {
                        self.d
                            .error(v.span(), format!("`unhealthy_restart`: {e} (or \"never\")"));
                        None
                    }
                },
                _ => {
                    self.d.error(
                        v.span(),
                        "`unhealthy_restart` must be a duration such as \"1m\" or \"never\"",
                    );
                    None
                }
            };
        }
        h
    }

    /// The ship's health check (its `${NAME}`s already expanded) and readiness from its
    /// keys and its base's; `bind` is the ship's.
    fn health(
        &mut self,
        keys: HealthKeys,
        bind: Option<&BindAddr>,
        oneshot: bool,
    ) -> (Option<Health>, Ready, Duration, Option<Duration>) {
        let health = keys.healthcheck.as_ref().and_then(|hc| {
            match health::parse_probe(&hc.value, bind, self.dir) {
                Ok(probe) => Some(Health {
                    probe,
                    interval: keys.interval.unwrap_or(health::DEFAULT_INTERVAL),
                    timeout: keys.timeout.unwrap_or(health::DEFAULT_TIMEOUT),
                    fails: keys.fails.unwrap_or(health::DEFAULT_FAILS),
                    passes: keys.passes.unwrap_or(health::DEFAULT_PASSES),
                    grace: keys.grace.unwrap_or(Duration::ZERO),
                    unhealthy_restart: keys
                        .unhealthy_restart
                        .unwrap_or(Some(health::DEFAULT_UNHEALTHY_RESTART)),
                }),
                Err(e) => {
                    self.d.error(hc.span.clone(), e);
                    None
                }
            }
        });
        if health.is_some() && oneshot {
            if let Some(hc) = &keys.healthcheck {
                self.d.error(
                    hc.span.clone(),
                    "a one-shot job has no health check: it runs to its end",
                );
            }
        }
        let default = if oneshot {
            Ready::Exit
        } else if health.is_some() {
            Ready::Healthcheck
        } else if bind.is_some() {
            Ready::Bind
        } else {
            Ready::Delay(health::SETTLE)
        };
        let ready = match &keys.ready {
            None => default,
            Some(r) => match health::parse_ready(&r.value) {
                Err(e) => {
                    self.d.error(r.span.clone(), e);
                    default
                }
                Ok(ready) => {
                    let refusal = match &ready {
                        Ready::Bind if bind.is_none() => {
                            Some("`ready = \"bind\"` needs the ship's `bind`".to_string())
                        }
                        Ready::Healthcheck if health.is_none() => Some(
                            "`ready = \"healthcheck\"` needs a `healthcheck`".to_string(),
                        ),
                        Ready::Exit if !oneshot => Some(
                            "`ready = \"exit\"` is for one-shot jobs (`oneshot = true`)"
                                .to_string(),
                        ),
                        r if oneshot && !matches!(r, Ready::Exit) => Some(
                            "a one-shot job is ready when it exits: leave `ready` out".to_string(),
                        ),
                        Ready::Notify if cfg!(not(target_os = "linux")) => Some(
                            "`ready = \"notify\"` needs Linux (the sender of a notification is checked by its credentials)"
                                .to_string(),
                        ),
                        _ => None,
                    };
                    match refusal {
                        Some(why) => {
                            self.d.error(r.span.clone(), why);
                            default
                        }
                        None => ready,
                    }
                }
            },
        };
        let timeout = keys.ready_timeout.unwrap_or(health::DEFAULT_READY_TIMEOUT);
        let watchdog = keys.watchdog.and_then(|w| {
            if matches!(ready, Ready::Notify) {
                Some(w.value)
            } else {
                self.d.error(
                    w.span,
                    "`watchdog` needs `ready = \"notify\"` (the program sends WATCHDOG=1 there)",
                );
                None
            }
        });
        (health, ready, timeout, watchdog)
    }

    /// Keys about how a process is run and stopped, shared by programs and base templates.
    fn process_keys(&mut self, t: &mut Table<'_, '_>, b: &mut Base) {
        if let Some(s) = t.string(self.d, "stop_signal") {
            match units::parse_signal(&s.value) {
                Ok(sig) => b.stop_signal = Some(sig),
                Err(e) => self.d.error(s.span, e),
            }
        }
        if let Some(g) = t.duration(self.d, "grace_period") {
            b.grace_period = Some(g);
        }
        if let Some(s) = t.string(self.d, "restart") {
            b.restart = match s.value.as_str() {
                "always" => Some(Restart::Always),
                "on-failure" | "on_failure" => Some(Restart::OnFailure),
                "never" => Some(Restart::Never),
                _ => {
                    self.d.error(
                        s.span,
                        format!(
                            "`restart` must be \"always\", \"on-failure\" or \"never\", found {:?}",
                            s.value
                        ),
                    );
                    None
                }
            };
        }
        if let Some(n) = t.int(self.d, "crash_limit", 1, 1_000_000) {
            b.crash_limit = Some(n as u32);
        }
        if let Some(w) = t.duration(self.d, "crash_window") {
            b.crash_window = Some(w);
        }
        if let Some(n) = t.size(self.d, "max_memory", 1 << 20, u64::MAX) {
            b.max_memory = Some(n);
        }
        if let Some(c) = t.string(self.d, "cwd") {
            let expanded = self.expanded(&c);
            let p = self.path(&expanded);
            b.cwd = Some(p);
        }
    }

    fn program(
        &mut self,
        mut t: Table<'_, '_>,
        role: Role,
        base: &Base,
        order: usize,
    ) -> Option<Draft> {
        let is_bay = matches!(role, Role::Bay { .. });
        let is_prelaunch = role == Role::Prelaunch;
        let name = t.required_string(self.d, "name");
        let command = t.required_string(self.d, "command");
        let args_present = t.key_span("args").is_some();
        let args: Vec<String> = t
            .string_list(self.d, "args")
            .into_iter()
            .map(|s| s.value)
            .collect();
        let env_file = self.env_file(&mut t);
        let own_env = self.expanded_map(&mut t, "env");
        let deps = t.string_list(self.d, "depends_on");
        let log_file = t.string(self.d, "log_file").and_then(|f| {
            let v = self.expanded(&f);
            if v.ends_with('/') || Path::new(&v).file_name().is_none() {
                self.d.error(
                    f.span,
                    "`log_file` needs a file name, such as \"log/web.log\"",
                );
                return None;
            }
            Some((self.path(&v), f.span))
        });
        let mut own = Base::default();
        let (mut bind, mut health_keys, mut routes, mut route_binds) =
            (None, HealthKeys::default(), Vec::new(), Vec::new());
        let (mut config, mut critical, mut oneshot, mut tags) =
            (Vec::new(), None, is_prelaunch, Vec::new());
        let (mut subprotocols, mut bay_ready_timeout, mut restart_span) = (Vec::new(), None, None);
        let mut websocket_app = false;
        if !is_prelaunch {
            if !is_bay {
                if let Some(b) = t.string(self.d, "bind") {
                    if let Some(a) = self.bind_addr(&b) {
                        bind = Some(a);
                    }
                }
                health_keys = self.health_keys(&mut t);
                oneshot = t.bool(self.d, "oneshot").unwrap_or(false);
            } else {
                config = self.expanded_map(&mut t, "config");
                if let Some(w) = t.string(self.d, "websocket") {
                    match w.value.as_str() {
                        "board" => {}
                        "app" => websocket_app = true,
                        other => self.d.error(
                            w.span.clone(),
                            format!("`websocket` must be \"board\" (mothership terminates WebSocket and boards the clients) or \"app\" (the handshake goes to the bay as HTTP and the app takes the connection over), found {other:?}"),
                        ),
                    }
                }
                subprotocols = t
                    .string_list(self.d, "subprotocols")
                    .into_iter()
                    .map(|s| s.value)
                    .collect();
                bay_ready_timeout = t.duration(self.d, "ready_timeout");
                if bay_ready_timeout.is_some_and(|d| d < Duration::from_millis(10)) {
                    if let Some(span) = t.key_span("ready_timeout") {
                        self.d.error(span, "`ready_timeout` must be at least 10ms");
                    }
                }
                restart_span = t.key_span("restart");
            }
            (routes, route_binds) = self.routes(&mut t);
            critical = t.bool(self.d, "critical");
            tags = t
                .string_list(self.d, "tags")
                .into_iter()
                .map(|s| s.value)
                .collect();
            self.process_keys(&mut t, &mut own);
        }
        t.finish(self.d);

        let name = name?;
        let command = command?;
        if let Err(e) = check_name(&name.value) {
            self.d.error(name.span.clone(), e);
        }
        let argv = if args_present || !command.value.trim().contains(char::is_whitespace) {
            let mut v = vec![command.value.trim().to_string()];
            v.extend(args);
            v
        } else {
            if units::looks_like_shell(&command.value) {
                self.d.warning(
                    command.span.clone(),
                    "this command uses shell syntax, but it is split into words and run without a shell; \
                     write command = \"sh\" and args = [\"-c\", \"...\"] if a shell is meant",
                );
            }
            match units::split_command(&command.value) {
                Ok(v) => v,
                Err(e) => {
                    self.d
                        .error(command.span.clone(), format!("cannot split `command`: {e}"));
                    return None;
                }
            }
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            self.d.error(command.span.clone(), "`command` is empty");
            return None;
        }

        // The program's env_file sits between its group's defaults and its own env.
        let mut env = base.env.clone();
        merge(&mut env, env_file);
        merge(&mut env, own_env);
        // `${NAME}` in arguments, from the environment the child will get (see
        // `expand_braced`): the supervisor adds MS_SHIP, and the program's env beats the
        // fleet's beats the inherited. The script of a shell's `-c` is left alone: the
        // shell expands it itself, from that same environment, as its own syntax says
        // (pasting a value into a script would make code of its quotes and `&`).
        let ship = name.value.clone();
        let fleet = &self.fleet_env;
        let inherited = self.env;
        let child_var = |k: &str| -> Option<String> {
            if k == "MS_SHIP" {
                return Some(ship.clone());
            }
            [&env, fleet]
                .iter()
                .find_map(|vars| vars.iter().rev().find(|(n, _)| n == k))
                .map(|(_, v)| v.clone())
                .or_else(|| inherited(k))
        };
        let shell = argv.first().is_some_and(|p| {
            let base = p.rsplit('/').next().unwrap_or(p);
            matches!(
                base,
                "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "mksh"
            )
        });
        let mut argv = argv;
        for i in 1..argv.len() {
            if !(shell && argv[i - 1] == "-c") {
                argv[i] = expand_braced(&argv[i], &child_var);
            }
        }
        let mut maxconn = None;
        let (health, ready, ready_timeout, watchdog) = if is_bay {
            // A bay is ready once it has docked; one that has not within ready_timeout
            // has failed to start.
            let timeout = bay_ready_timeout.unwrap_or(health::DEFAULT_READY_TIMEOUT);
            (None, Ready::Docked, timeout, None)
        } else if is_prelaunch {
            let timeout = health::DEFAULT_READY_TIMEOUT;
            (None, Ready::Delay(health::SETTLE), timeout, None)
        } else {
            let mut keys = health_keys.over(&base.health);
            maxconn = keys.maxconn;
            if let Some(hc) = &mut keys.healthcheck {
                hc.value = expand_braced(&hc.value, &child_var);
            }
            self.health(keys, bind.as_ref(), oneshot)
        };
        let mut merged_config = base.config.clone();
        merge(&mut merged_config, config);
        let mut all_tags = base.tags.clone();
        for t in tags {
            if !all_tags.contains(&t) {
                all_tags.push(t);
            }
        }
        let restart = if oneshot {
            Restart::Never
        } else if is_bay {
            // Bays are long-lived: one that ends, however, is started again and docked.
            if let Some(r) = own
                .restart
                .or(base.restart)
                .filter(|r| *r != Restart::Always)
            {
                let span = restart_span.clone().unwrap_or_else(|| name.span.clone());
                self.d.error(
                    span,
                    format!(
                        "bay `{}`: restart = \"{}\" is not available for bays, which are always restarted when they end (remove it, or write \"always\")",
                        name.value,
                        r.as_str()
                    ),
                );
            }
            Restart::Always
        } else {
            own.restart.or(base.restart).unwrap_or(Restart::Always)
        };
        let program = Program {
            log_file: log_file.as_ref().map(|(p, _)| p.clone()),
            name: name.value.clone(),
            role,
            argv,
            env,
            config: merged_config,
            subprotocols,
            websocket_app,
            cwd: own
                .cwd
                .or_else(|| base.cwd.clone())
                .unwrap_or_else(|| self.dir.to_path_buf()),
            bind,
            health,
            ready,
            ready_timeout,
            watchdog,
            maxconn,
            depends_on: deps.iter().map(|d| d.value.clone()).collect(),
            deps: Vec::new(),
            routes,
            critical: critical.or(base.critical).unwrap_or(true),
            oneshot,
            tags: all_tags,
            stop_signal: own
                .stop_signal
                .or(base.stop_signal)
                .unwrap_or(libc::SIGTERM),
            grace_period: own
                .grace_period
                .or(base.grace_period)
                .unwrap_or(DEFAULT_GRACE),
            restart,
            crash_limit: own
                .crash_limit
                .or(base.crash_limit)
                .unwrap_or(DEFAULT_CRASH_LIMIT),
            crash_window: own
                .crash_window
                .or(base.crash_window)
                .unwrap_or(DEFAULT_CRASH_WINDOW),
            max_memory: own.max_memory.or(base.max_memory),
        };
        Some(Draft {
            program,
            name_span: name.span,
            deps,
            route_binds,
            order,
        })
    }

    fn routes(&mut self, t: &mut Table<'_, '_>) -> (Vec<Route>, Vec<Located<String>>) {
        let path = format!("{}.routes", t.path);
        let Some(v) = t.get("routes") else {
            return (Vec::new(), Vec::new());
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.d.error(
                v.span(),
                format!(
                    "`{path}` must be an array, found {}",
                    type_name(v.get_ref())
                ),
            );
            return (Vec::new(), Vec::new());
        };
        let (mut routes, mut binds) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            if let Some((r, b)) = self.route(item, &format!("{path}[{i}]")) {
                routes.push(r);
                binds.push(b);
            }
        }
        (routes, binds)
    }

    fn route(&mut self, item: &Value<'_>, path: &str) -> Option<(Route, Located<String>)> {
        let (bind, pattern, strip_prefix, ua) = match item.get_ref() {
            DeValue::String(s) => {
                let Some((b, p)) = s.split_once(':') else {
                    self.d.error(item.span(), format!("route {s:?} must look like \"<bind>:<pattern>\", e.g. \"http:/api/.*\""));
                    return None;
                };
                (
                    Located::new(b.to_string(), item.span()),
                    Located::new(p.to_string(), item.span()),
                    None,
                    None,
                )
            }
            DeValue::Table(tt) => {
                let mut t = Table::new(tt, item.span(), path);
                let bind = t.required_string(self.d, "bind");
                let pattern = t.required_string(self.d, "pattern");
                let strip = t.string(self.d, "strip_prefix").map(|s| s.value);
                let ua = t.string(self.d, "ua_filter");
                t.finish(self.d);
                (bind?, pattern?, strip, ua)
            }
            other => {
                self.d.error(
                    item.span(),
                    format!(
                        "`{path}` must be a string or a table, found {}",
                        type_name(other)
                    ),
                );
                return None;
            }
        };
        let regex = self.regex(&pattern)?;
        let ua_filter = match ua {
            None => None,
            Some(u) => Some(self.ua_filter(&u)?),
        };
        let route = Route {
            bind: bind.value.clone(),
            // Resolved with the other ids once the whole manifest is read.
            bind_id: BindId::NONE,
            id: RouteId::NONE,
            pattern: regex,
            strip_prefix,
            ua_filter,
        };
        Some((route, bind))
    }

    fn regex(&mut self, s: &Located<String>) -> Option<Regex> {
        match RegexBuilder::new(&s.value).size_limit(1 << 20).build() {
            Ok(r) => Some(r),
            Err(e) => {
                let msg = e.to_string();
                let last = msg
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(&msg)
                    .trim()
                    .to_string();
                self.d.error(
                    s.span.clone(),
                    format!("invalid regex {:?}: {}", s.value, last),
                );
                None
            }
        }
    }

    fn ua_filter(&mut self, u: &Located<String>) -> Option<UaFilter> {
        let f = match u.value.to_ascii_lowercase().as_str() {
            "browser" => UaFilter::Browser,
            "chromium" | "chrome" => UaFilter::Chromium,
            "firefox" => UaFilter::Firefox,
            "safari" => UaFilter::Safari,
            "llm" => UaFilter::Llm,
            "bot" => UaFilter::Bot,
            _ => {
                let Some(re) = u.value.strip_prefix('~') else {
                    self.d.error(
                        u.span.clone(),
                        format!(
                            "unknown ua_filter {:?}; use browser, chromium, chrome, firefox, safari, llm, bot or ~regex",
                            u.value
                        ),
                    );
                    return None;
                };
                let r = self.regex(&Located::new(format!("(?i){re}"), u.span.clone()))?;
                UaFilter::Custom(r)
            }
        };
        Some(f)
    }

    fn phase(&mut self, t: &mut Table<'_, '_>) -> Option<Phase> {
        let s = t.string(self.d, "phase")?;
        match s.value.as_str() {
            "request" => Some(Phase::Request),
            "response" => Some(Phase::Response),
            _ => {
                self.d.error(
                    s.span,
                    format!(
                        "`phase` must be \"request\" or \"response\", found {:?}",
                        s.value
                    ),
                );
                None
            }
        }
    }

    fn module(&mut self, mut t: Table<'_, '_>, base: &Base) -> Option<Module> {
        let name = t.required_string(self.d, "name");
        let wasm = t.required_string(self.d, "wasm");
        let routes: Vec<Located<String>> = t.string_list(self.d, "routes");
        let phase = self.phase(&mut t);
        let config = self.expanded_map(&mut t, "config");
        let tags: Vec<String> = t
            .string_list(self.d, "tags")
            .into_iter()
            .map(|s| s.value)
            .collect();
        let fuel = t.int(self.d, "fuel", 1, 1_000_000_000);
        let memory = t.size(self.d, "memory", WASM_PAGE, 4 << 30);
        t.finish(self.d);
        let (name, wasm) = (name?, wasm?);
        let path = self.path(&wasm.value);
        if !path.is_file() {
            self.d.error(
                wasm.span.clone(),
                format!("WASM module file {} does not exist", path.display()),
            );
        }
        let routes = routes.iter().filter_map(|r| self.regex(r)).collect();
        let mut merged = base.config.clone();
        merge(&mut merged, config);
        let mut all_tags = base.tags.clone();
        all_tags.extend(tags.into_iter().filter(|t| !base.tags.contains(t)));
        Some(Module {
            name: name.value,
            wasm: path,
            routes,
            phase: phase.or(base.phase).unwrap_or(Phase::Request),
            config: merged,
            tags: all_tags,
            fuel: fuel.map_or(DEFAULT_FUEL, |n| n as u64),
            memory: memory.unwrap_or(DEFAULT_WASM_MEMORY),
        })
    }

    fn binds(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let Some(bt) = ms.table(self.d, "bind") else {
            return;
        };
        let mut seen = HashSet::new();
        for (k, v) in sorted_entries(groups_table(&bt)) {
            let name = k.get_ref().to_string();
            let path = format!("mothership.bind.{name}");
            let (addr, proxy, from) = match v.get_ref() {
                DeValue::String(s) => (
                    Located::new(s.to_string(), v.span()),
                    ProxyProtocol::Off,
                    None,
                ),
                DeValue::Table(tt) => {
                    let mut t = Table::new(tt, v.span(), path.clone());
                    let addr = t.required_string(self.d, "addr");
                    let proxy = match t.get("proxy_protocol").map(|pv| (pv, pv.get_ref())) {
                        None | Some((_, DeValue::Boolean(false))) => ProxyProtocol::Off,
                        Some((_, DeValue::Boolean(true))) => ProxyProtocol::Auto,
                        Some((_, DeValue::String(s))) if s == "required" => ProxyProtocol::Required,
                        Some((pv, other)) => {
                            self.d.error(pv.span(), format!("`{path}.proxy_protocol` must be true, false or \"required\", found {}", match other { DeValue::String(s) => format!("\"{s}\""), o => type_name(o).to_string() }));
                            ProxyProtocol::Off
                        }
                    };
                    let from_span = t.key_span("proxy_protocol_from");
                    let from: Option<Vec<Cidr>> = from_span.clone().map(|_| {
                        t.string_list(self.d, "proxy_protocol_from")
                            .into_iter()
                            .filter_map(|c| match Cidr::parse(&c.value) {
                                Ok(n) => Some(n),
                                Err(e) => {
                                    self.d.error(c.span, e);
                                    None
                                }
                            })
                            .collect()
                    });
                    if let (Some(span), ProxyProtocol::Off) = (from_span, proxy) {
                        self.d.error(span, format!("`{path}.proxy_protocol_from` has no effect without `proxy_protocol = true` or `\"required\"`"));
                    }
                    t.finish(self.d);
                    let Some(addr) = addr else { continue };
                    (addr, proxy, from)
                }
                other => {
                    self.d.error(v.span(), format!("`{path}` must be a bind string or a table {{ addr, proxy_protocol, proxy_protocol_from }}, found {}", type_name(other)));
                    continue;
                }
            };
            if let Some(a) = self.bind_addr(&addr) {
                if proxy != ProxyProtocol::Off && matches!(a, BindAddr::Unix(_)) {
                    self.d.error(
                        addr.span.clone(),
                        "`proxy_protocol` is only available on TCP binds",
                    );
                }
                let key = a.to_string();
                if !seen.insert(key.clone()) {
                    self.d
                        .error(addr.span.clone(), format!("{key} is bound twice"));
                }
                let from = from.unwrap_or_else(|| {
                    DEFAULT_PROXY_FROM
                        .iter()
                        .filter_map(|c| Cidr::parse(c).ok())
                        .collect()
                });
                m.binds.push(Bind {
                    name,
                    addr: a,
                    proxy_protocol: proxy,
                    proxy_protocol_from: from,
                });
            }
        }
        let mut bt = bt;
        mark_all_asked(&mut bt);
        bt.finish(self.d);
    }

    fn cors_cache(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let Some(v) = ms.get("cors_cache") else {
            return;
        };
        match v.get_ref() {
            DeValue::Boolean(b) => m.cors_cache.enabled = *b,
            DeValue::Table(tt) => {
                let mut t = Table::new(tt, v.span(), "mothership.cors_cache");
                if let Some(b) = t.bool(self.d, "enabled") {
                    m.cors_cache.enabled = b;
                }
                if let Some(ttl) = t.duration(self.d, "default_ttl") {
                    m.cors_cache.default_ttl = ttl;
                }
                if let Some(n) = t.int(self.d, "max_entries", 1, 10_000_000) {
                    m.cors_cache.max_entries = n as usize;
                }
                t.finish(self.d);
            }
            other => self.d.error(
                v.span(),
                format!(
                    "`mothership.cors_cache` must be a boolean or a table, found {}",
                    type_name(other)
                ),
            ),
        }
    }

    fn static_dirs(
        &mut self,
        ms: &mut Table<'_, '_>,
        m: &mut Manifest,
        binds: &mut Vec<Located<String>>,
    ) {
        for (i, (tt, span)) in self
            .array_of_tables(ms, "static_dirs")
            .into_iter()
            .enumerate()
        {
            let mut t = Table::new(tt, span, format!("mothership.static_dirs[{i}]"));
            let path = t.required_string(self.d, "path");
            let prefix = t.required_string(self.d, "prefix");
            let bind = t.string(self.d, "bind");
            let dotfiles = t.bool(self.d, "dotfiles").unwrap_or(false);
            t.finish(self.d);
            let (Some(path), Some(prefix)) = (path, prefix) else {
                continue;
            };
            if !prefix.value.starts_with('/') {
                self.d.error(
                    prefix.span.clone(),
                    format!("static prefix {:?} must start with `/`", prefix.value),
                );
            }
            let dir = self.path(&path.value);
            if !dir.is_dir() {
                self.d.warning(
                    path.span.clone(),
                    format!("static directory {} does not exist (yet)", dir.display()),
                );
            }
            if let Some(b) = &bind {
                binds.push(b.clone());
            }
            m.static_dirs.push(StaticDir {
                path: dir,
                prefix: prefix.value,
                bind: bind.map(|b| b.value),
                bind_id: None,
                dotfiles,
            });
        }
    }

    fn uplinks(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        for (i, (tt, span)) in self.array_of_tables(ms, "uplinks").into_iter().enumerate() {
            let mut t = Table::new(tt, span, format!("mothership.uplinks[{i}]"));
            let url = t.required_string(self.d, "url");
            let name = t.string(self.d, "name");
            let timeout = t
                .duration(self.d, "timeout")
                .unwrap_or(Duration::from_secs(5));
            t.finish(self.d);
            let Some(url) = url else { continue };
            let expanded = self.expanded(&url);
            match uplink::parse(&expanded) {
                Ok(mut u) => {
                    u.name = name.map(|n| n.value).unwrap_or_else(|| u.host.clone());
                    u.timeout = timeout;
                    m.uplinks.push(u);
                }
                Err(e) => self.d.error(url.span, e),
            }
        }
    }

    /// `control_group`, `control_group_access`.
    fn control_group(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let group = ms.string(self.d, "control_group");
        let access = ms.string(self.d, "control_group_access");
        let full = match &access {
            None => false,
            Some(a) => match a.value.as_str() {
                "read" => false,
                "full" => true,
                other => {
                    self.d.error(
                        a.span.clone(),
                        format!("`control_group_access` is \"read\" (status, logs) or \"full\" (also start, stop, restart, signal, reopen), found {other:?}"),
                    );
                    false
                }
            },
        };
        match (group, access) {
            (Some(g), _) => {
                let name = self.expanded(&g);
                if name.is_empty() {
                    self.d.error(g.span, "`control_group` is empty");
                } else {
                    m.control_group = Some(ControlGroup { name, full });
                }
            }
            (None, Some(a)) => self
                .d
                .error(a.span, "`control_group_access` without a `control_group`"),
            (None, None) => {}
        }
    }

    /// `log_dir`, `log_max_size`, `log_keep`, `log_compress`.
    fn log_files(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        if let Some(d) = ms.string(self.d, "log_dir") {
            let v = self.expanded(&d);
            if v.is_empty() {
                self.d.error(d.span, "`log_dir` is empty");
            } else {
                m.log_files.dir = Some(self.path(&v));
            }
        }
        for key in ["log_max_size", "log_keep", "log_compress"] {
            if let (None, Some(span)) = (&self.log_tuning, ms.key_span(key)) {
                self.log_tuning = Some((key, span));
            }
        }
        if let Some(n) = ms.size(self.d, "log_max_size", 4096, 1 << 40) {
            m.log_files.max_size = n;
        }
        if let Some(n) = ms.int(self.d, "log_keep", 0, 1000) {
            m.log_files.keep = n as u32;
        }
        if let Some(b) = ms.bool(self.d, "log_compress") {
            m.log_files.compress = b;
        }
    }

    /// `on_event`, `on_event_timeout`, `webhook`, `webhook_secret`.
    fn event_hooks(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let span = ms.key_span("on_event");
        let command: Vec<String> = ms
            .string_list(self.d, "on_event")
            .iter()
            .map(|s| self.expanded(s))
            .collect();
        if let Some(span) = span {
            if command.first().is_none_or(|c| c.is_empty()) {
                self.d.error(
                    span,
                    "`on_event` needs a command: a list such as [\"/usr/local/bin/notify\", \"--quiet\"]",
                );
            }
        }
        // Without a command the timeout still bounds how long landing waits for webhook
        // deliveries; without either it would do nothing.
        let hooked = !command.is_empty() || ms.key_span("webhook").is_some();
        m.events.command = command;
        let timeout_span = ms.key_span("on_event_timeout");
        if let Some(d) = ms.duration(self.d, "on_event_timeout") {
            m.events.timeout = d;
            if let (false, Some(span)) = (hooked, timeout_span) {
                self.d.error(
                    span,
                    "`on_event_timeout` without an `on_event` command or a `webhook` to act on",
                );
            }
        }
        let secret = ms.string(self.d, "webhook_secret");
        let secret_span = ms.key_span("webhook_secret");
        if let Some(url) = ms.string(self.d, "webhook") {
            let expanded = self.expanded(&url);
            match uplink::parse(&expanded) {
                Ok(u) if u.userinfo => self.d.error(
                    url.span,
                    "`webhook` has user info (`user:password@`), which would not be sent: the receiver checks `webhook_secret`'s signature instead",
                ),
                Ok(u) if u.scheme == "http" => {
                    m.events.webhook = Some(Webhook {
                        host: u.host,
                        port: u.port,
                        path: if u.path.is_empty() { "/".into() } else { u.path },
                        masked: u.masked,
                        secret: secret.as_ref().map(|s| self.expanded(s)),
                    })
                }
                Ok(u) => self.d.error(
                    url.span,
                    format!(
                        "`webhook` must be an http:// URL, found {}:// (no TLS client in the loop: post to a local relay)",
                        u.scheme
                    ),
                ),
                Err(e) => self.d.error(url.span, e.replace("uplink", "webhook")),
            }
        } else if let (Some(_), Some(span)) = (secret, secret_span) {
            self.d
                .error(span, "`webhook_secret` without a `webhook` to sign for");
        }
    }

    fn flagship(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let Some(mut t) = ms.table(self.d, "flagship") else {
            return;
        };
        let table_span = t.span.clone();
        let f = &mut m.flagship;
        f.enabled = t.bool(self.d, "enabled").unwrap_or(false);
        let election = t.string(self.d, "election");
        let url = t.string(self.d, "election_url");
        f.app = t.string(self.d, "app").map(|a| a.value);
        if let Some(d) = t.duration(self.d, "prelaunch_timeout") {
            f.prelaunch_timeout = d;
        }
        if let Some(d) = t.duration(self.d, "election_timeout") {
            f.election_timeout = d;
        }
        let static_flagship = match t.get("static_flagship") {
            None => None,
            Some(v) => match v.get_ref() {
                DeValue::String(s) => {
                    let val = self.expanded(&Located::new(s.to_string(), v.span()));
                    Some(StaticFlagship::Value(val))
                }
                DeValue::Table(tt) => {
                    let mut st = Table::new(tt, v.span(), "mothership.flagship.static_flagship");
                    let cmd = st.required_string(self.d, "command");
                    let eq = st.required_string(self.d, "equals");
                    st.finish(self.d);
                    match (cmd, eq) {
                        (Some(c), Some(e)) => match units::split_command(&c.value) {
                            Ok(argv) if !argv.is_empty() => Some(StaticFlagship::Command {
                                command: argv,
                                equals: e.value,
                            }),
                            Ok(_) => {
                                self.d.error(c.span, "`command` is empty");
                                None
                            }
                            Err(err) => {
                                self.d
                                    .error(c.span, format!("cannot split `command`: {err}"));
                                None
                            }
                        },
                        _ => None,
                    }
                }
                other => {
                    self.d.error(v.span(), format!("`static_flagship` must be a string or a table {{ command, equals }}, found {}", type_name(other)));
                    None
                }
            },
        };
        t.finish(self.d);
        let kind = election
            .as_ref()
            .map(|e| e.value.clone())
            .unwrap_or_else(|| "static".into());
        match kind.as_str() {
            "static" => {
                m.flagship.election = Election::Static(
                    static_flagship.unwrap_or(StaticFlagship::Value(String::new())),
                );
            }
            "postgres" | "postgresql" => {
                let span = election
                    .as_ref()
                    .map(|e| e.span.clone())
                    .unwrap_or(table_span.clone());
                let Some(url) = url else {
                    self.d
                        .error(span, "election = \"postgres\" needs `election_url`");
                    return;
                };
                let expanded = self.expanded(&url);
                if m.flagship.enabled && !cfg!(feature = "postgres") {
                    self.d.error(span, "this build has no PostgreSQL support: flagship election with election = \"postgres\" is not available (build with --features postgres)");
                } else if m.flagship.enabled {
                    if let Err(e) = check_sslmode(&expanded, self.env) {
                        self.d.error(url.span.clone(), e);
                    }
                }
                m.flagship.election = Election::Postgres { url: expanded };
            }
            other => {
                let span = election.map(|e| e.span).unwrap_or(table_span.clone());
                self.d.error(
                    span,
                    format!("`election` must be \"static\" or \"postgres\", found {other:?}"),
                );
            }
        }
    }

    fn http(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let Some(mut t) = ms.table(self.d, "http") else {
            return;
        };
        let h = &mut m.http;
        for (key, slot) in [
            ("header_timeout", &mut h.header_timeout),
            ("keepalive_timeout", &mut h.keepalive_timeout),
            ("connect_timeout", &mut h.connect_timeout),
            ("response_timeout", &mut h.response_timeout),
            ("body_timeout", &mut h.body_timeout),
            ("tunnel_timeout", &mut h.tunnel_timeout),
            ("pool_idle_timeout", &mut h.pool_idle_timeout),
            ("websocket_ping_interval", &mut h.websocket_ping_interval),
            ("websocket_resume_timeout", &mut h.websocket_resume_timeout),
        ] {
            if let Some(d) = t.duration(self.d, key) {
                if d.is_zero() {
                    let span = t.get(key).map(|v| v.span()).unwrap_or(0..0);
                    self.d.error(
                        span,
                        format!("`mothership.http.{key}` must be longer than 0"),
                    );
                } else {
                    *slot = d;
                }
            }
        }
        if let Some(d) = t.duration(self.d, "hold_timeout") {
            h.hold_timeout = d;
        }
        if let Some(n) = t.int(self.d, "hold_queue", 1, 1_000_000) {
            h.hold_queue = n as usize;
        }
        if let Some(n) = t.int(self.d, "breaker_failures", 0, 1_000_000) {
            h.breaker_failures = n as u32;
        }
        if let Some(d) = t.duration(self.d, "breaker_window") {
            h.breaker_window = d;
        }
        if let Some(d) = t.duration(self.d, "breaker_cooldown") {
            if d > Duration::from_secs(30) || d.is_zero() {
                let span = t.get("breaker_cooldown").map(|v| v.span()).unwrap_or(0..0);
                self.d.error(
                    span,
                    "`mothership.http.breaker_cooldown` must be longer than 0 and at most 30s",
                );
            } else {
                h.breaker_cooldown = d;
            }
        }
        if let Some(v) = t.get("breaker_statuses") {
            let codes = v.get_ref().as_array().map(|a| {
                a.iter()
                    .map(|c| match c.get_ref() {
                        DeValue::Integer(i) => i.as_str().parse::<u16>().ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<u16>>>()
            });
            match codes.flatten() {
                Some(c) if c.iter().all(|s| (500..=599).contains(s)) => h.breaker_statuses = c,
                _ => self.d.error(
                    v.span(),
                    "`mothership.http.breaker_statuses` must be a list of 5xx statuses, e.g. [502, 503, 504]",
                ),
            }
        }
        // A head must fit one connection buffer (64 KiB).
        if let Some(n) = t.size(self.d, "max_head_size", 1024, 64 << 10) {
            h.max_head_size = n as usize;
        }
        if let Some(n) = t.int(self.d, "max_headers", 1, 1000) {
            h.max_headers = n as usize;
        }
        let cap = crate::proto::dock::DEFAULT_MAX_PAYLOAD as u64;
        if let Some(n) = t.size(self.d, "websocket_max_message", 125, cap - 16) {
            h.websocket_max_message = n as usize;
        }
        if let Some(n) = t.size(self.d, "websocket_send_queue", 64 << 10, 1 << 30) {
            h.websocket_send_queue = n as usize;
        }
        if let Some(n) = t.size(self.d, "docking_max_frame", 64 << 10, cap) {
            h.docking_max_frame = n as usize;
        }
        if let Some(n) = t.size(self.d, "max_body_size", 0, u64::MAX >> 2) {
            h.max_body_size = n;
        }
        if let Some(n) = t.int(self.d, "max_connections", 1, 10_000_000) {
            h.max_connections = n as usize;
        }
        if let Some(b) = t.bool(self.d, "access_log") {
            h.access_log = b;
        }
        if let Some(b) = t.bool(self.d, "request_start_header") {
            h.request_start_header = b;
        }
        t.finish(self.d);
    }

    fn rate_limiting(&mut self, ms: &mut Table<'_, '_>, m: &mut Manifest) {
        let Some(mut t) = ms.table(self.d, "rate_limiting") else {
            return;
        };
        m.rate_limiting.global_rps = t.number(self.d, "global_rps");
        m.rate_limiting.per_ip_rpm = t.number(self.d, "per_ip_rpm");
        t.finish(self.d);
    }

    /// Cross-checks: names, duplicates, dependencies and cycles, route binds, ports.
    fn check_programs(
        &mut self,
        drafts: &[Draft],
        pre: &[Draft],
        m: &Manifest,
        static_binds: &[Located<String>],
    ) {
        let mut names: HashMap<String, &Draft> = HashMap::new();
        for d in drafts {
            let key = d.program.name.to_ascii_lowercase();
            if let Some(first) = names.get(&key) {
                self.d.error(
                    d.name_span.clone(),
                    format!(
                        "duplicate name `{}`: a {} named `{}` is already declared (names are unique across ships and bays, ignoring case)",
                        d.program.name,
                        first.program.kind(),
                        first.program.name
                    ),
                );
            } else {
                names.insert(key, d);
            }
        }
        let mut pre_names: HashMap<String, &Draft> = HashMap::new();
        for d in pre {
            let key = d.program.name.to_ascii_lowercase();
            if let std::collections::hash_map::Entry::Vacant(slot) = pre_names.entry(key) {
                slot.insert(d);
            } else {
                self.d.error(
                    d.name_span.clone(),
                    format!("duplicate prelaunch job name `{}`", d.program.name),
                );
            }
        }
        for (set, all, what) in [
            (drafts, &names, "ship or bay"),
            (pre, &pre_names, "prelaunch job"),
        ] {
            for d in set {
                for dep in &d.deps {
                    if !all.contains_key(&dep.value.to_ascii_lowercase()) {
                        let known: Vec<&str> =
                            set.iter().map(|x| x.program.name.as_str()).collect();
                        let hint = diag::suggest(&dep.value, known.iter().copied())
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        self.d.error(
                            dep.span.clone(),
                            format!(
                                "`{}` depends on `{}`, which is not a {}{}",
                                d.program.name, dep.value, what, hint
                            ),
                        );
                    } else if dep.value.eq_ignore_ascii_case(&d.program.name) {
                        self.d.error(
                            dep.span.clone(),
                            format!("`{}` depends on itself", d.program.name),
                        );
                    }
                }
            }
            self.check_cycles(set);
        }
        let bind_names: Vec<&str> = m.binds.iter().map(|b| b.name.as_str()).collect();
        let unknown_bind = |d: &mut Diags, b: &Located<String>, what: &str| {
            if !bind_names.contains(&b.value.as_str()) {
                let hint = match diag::suggest(&b.value, bind_names.iter().copied()) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None if bind_names.is_empty() => {
                        "; no binds are declared in [mothership.bind]".to_string()
                    }
                    None => format!("; declared binds: {}", bind_names.join(", ")),
                };
                d.error(
                    b.span.clone(),
                    format!(
                        "{what} names bind `{}`, which is not in [mothership.bind]{hint}",
                        b.value
                    ),
                );
            }
        };
        for d in drafts {
            for b in &d.route_binds {
                unknown_bind(self.d, b, &format!("a route of `{}`", d.program.name));
            }
        }
        for b in static_binds {
            unknown_bind(self.d, b, "a static dir");
        }
        if let Some(port) = m.metrics_port {
            for b in &m.binds {
                if let BindAddr::Tcp(a) = &b.addr {
                    if a.port() == port && (a.ip().is_loopback() || a.ip().is_unspecified()) {
                        self.d.error(
                            self.metrics_span.clone(),
                            format!(
                                "metrics_port {port} clashes with bind `{}` ({})",
                                b.name, b.addr
                            ),
                        );
                    }
                }
            }
        }
        // A ship cannot listen where the edge does (a Procfile's web on the port the
        // platform hands the edge, say).
        for d in drafts {
            let Some(BindAddr::Tcp(s)) = &d.program.bind else {
                continue;
            };
            for b in &m.binds {
                let BindAddr::Tcp(e) = &b.addr else { continue };
                let overlap = s.port() == e.port()
                    && (s.ip() == e.ip() || s.ip().is_unspecified() || e.ip().is_unspecified());
                if overlap {
                    self.d.error(
                        d.name_span.clone(),
                        format!(
                            "`{}` binds {}, where the edge's bind `{}` listens ({})",
                            d.program.name, s, b.name, b.addr
                        ),
                    );
                }
            }
        }
        // Two programs binding the same address cannot both run.
        let mut bound: HashMap<String, &str> = HashMap::new();
        for d in drafts {
            if let Some(b) = &d.program.bind {
                if let Some(other) = bound.insert(b.to_string(), &d.program.name) {
                    self.d.warning(
                        d.name_span.clone(),
                        format!("`{}` and `{}` both bind {}", other, d.program.name, b),
                    );
                }
            }
        }
    }

    /// Reports each dependency cycle once, as `a -> b -> a`.
    fn check_cycles(&mut self, set: &[Draft]) {
        let names: Vec<&str> = set.iter().map(|d| d.program.name.as_str()).collect();
        let deps: Vec<Vec<&str>> = set
            .iter()
            .map(|d| d.deps.iter().map(|x| x.value.as_str()).collect())
            .collect();
        for cycle in graph::cycles(&graph::resolve(&names, &deps)) {
            let Some(&last) = cycle.last() else { continue };
            let names: Vec<&str> = cycle.iter().map(|&i| names[i]).collect();
            self.d.error(
                set[last].name_span.clone(),
                format!("dependency cycle: {}", names.join(" -> ")),
            );
        }
    }
}

/// Groups tables (`fleet`, `bays`, `mothership.bind`) have free-form keys.
fn groups_table<'a, 'i>(t: &Table<'a, 'i>) -> &'a DeTable<'i> {
    t.inner()
}

fn mark_all_asked(t: &mut Table<'_, '_>) {
    t.accept_any();
}

fn merge(into: &mut Vec<(String, String)>, from: Vec<(String, String)>) {
    for (k, v) in from {
        match into.iter_mut().find(|(ik, _)| *ik == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}

/// Names: ASCII, no whitespace or control characters, no `/`; 1 to 64 characters.
pub fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() {
        return Err("name is empty".into());
    }
    if n.len() > 64 {
        return Err(format!("name `{n}` is longer than 64 characters"));
    }
    if let Some(c) = n.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(format!(
            "name {n:?} contains {c:?}; names are ASCII without spaces, control characters or `/`"
        ));
    }
    Ok(())
}

/// The `sslmode` of a PostgreSQL URL (libpq's default, `prefer`, when absent).
pub fn sslmode_of(url: &str) -> String {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("sslmode="))
        .unwrap_or("prefer")
        .to_ascii_lowercase()
}

/// Refuses the sslmodes that allow a plain-text connection (`disable`, `allow`, `prefer`)
/// unless `MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE` is `1`, `true` or `yes` in `env`.
fn check_sslmode(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    if url.matches("sslmode=").count() > 1 {
        return Err("`sslmode` is given more than once in election_url".into());
    }
    let mode = sslmode_of(url);
    match mode.as_str() {
        "require" | "verify-ca" | "verify-full" => Ok(()),
        "disable" | "allow" | "prefer" => {
            let allowed = env("MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE")
                .is_some_and(|v| units::truthy(&v));
            if allowed {
                Ok(())
            } else {
                Err(format!(
                    "sslmode={mode} may connect without TLS; use sslmode=require, verify-ca or verify-full (or set MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE=1 to allow it){}",
                    if url.contains("sslmode=") { "" } else { " (no sslmode means prefer)" }
                ))
            }
        }
        other => Err(format!(
            "unknown sslmode {other:?}; use disable, allow, prefer, require, verify-ca or verify-full"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Manifest {
        let env = |k: &str| match k {
            "PORT" => Some("4000".to_string()),
            _ => None,
        };
        let l = parse(
            Path::new("m.toml"),
            Path::new("/srv/app"),
            text.to_string(),
            &env,
        );
        match l.manifest {
            Some(m) => m,
            None => panic!("{}", l.render_diags()),
        }
    }

    fn errors(text: &str) -> String {
        let l = parse(
            Path::new("m.toml"),
            Path::new("/srv/app"),
            text.to_string(),
            &|_| None,
        );
        assert!(l.manifest.is_none(), "expected errors");
        l.render_diags()
    }

    #[test]
    fn arguments_expand_braced_variables_from_the_childs_environment() {
        let m = parse_ok(
            "[mothership]\nenv = { FLEET = \"f\" }\n[[fleet.web]]\nname = \"w\"\ncommand = \"serve\"\nargs = [\"${PORT} ${OWN} ${FLEET} ${MS_SHIP} ${UNSET} ${UNSET:-d} $PORT $$ ${x%y}\"]\nenv = { OWN = \"o\" }\nbind = \"127.0.0.1:${PORT}\"\n[[fleet.web]]\nname = \"s\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"serve ${PORT} $PORT\", \"${PORT}\"]\n",
        );
        assert_eq!(
            m.programs[0].argv[1],
            "4000 o f w ${UNSET} d $PORT $$ ${x%y}"
        );
        // A shell's script is the shell's to expand; its positional arguments are not.
        assert_eq!(
            m.programs[1].argv[1..],
            ["-c", "serve ${PORT} $PORT", "4000"]
        );
    }

    #[test]
    fn dependencies_are_ids_within_their_set_and_follow_the_tag_filter() {
        let mut m = parse_ok(
            "[[fleet.web]]\nname = \"db\"\ncommand = \"x\"\ntags = [\"data\"]\n[[fleet.web]]\nname = \"cache\"\ncommand = \"x\"\n[[fleet.web]]\nname = \"app\"\ncommand = \"x\"\ndepends_on = [\"DB\", \"cache\"]\n[[fleet.jobs]]\nname = \"migrate\"\ncommand = \"x\"\noneshot = true\ndepends_on = [\"app\"]\n",
        );
        let ids = |m: &Manifest, name: &str| -> Vec<usize> {
            let p = m.programs.iter().find(|p| p.name == name).expect(name);
            p.deps.iter().map(|d| d.index()).collect()
        };
        assert_eq!(ids(&m, "app"), vec![0, 1]);
        assert_eq!(ids(&m, "migrate"), vec![2]);
        // Leaving db out shifts every position: the ids are resolved again.
        m.filter_tags(&[], &["data".to_string()]);
        assert_eq!(ids(&m, "app"), vec![0], "cache is now first");
        assert_eq!(ids(&m, "migrate"), vec![1]);
    }

    #[test]
    fn routes_and_static_folders_get_ids_that_follow_the_tag_filter() {
        let mut m = parse_ok(
            "[mothership]\nbind = { http = \"3000\", admin = \"3001\" }\n[[mothership.static_dirs]]\npath = \"/srv\"\nprefix = \"/s\"\nbind = \"admin\"\n[[mothership.static_dirs]]\npath = \"/srv\"\nprefix = \"/t\"\n[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\ntags = [\"t\"]\nroutes = [\"admin:/a\", \"http:/a\"]\n[[fleet.web]]\nname = \"b\"\ncommand = \"x\"\nroutes = [\"http:/b\"]\n",
        );
        let ids = |m: &Manifest| -> Vec<(usize, usize)> {
            let routes = m.programs.iter().flat_map(|p| &p.routes);
            routes.map(|r| (r.id.index(), r.bind_id.index())).collect()
        };
        assert_eq!(ids(&m), vec![(0, 1), (1, 0), (2, 0)]);
        let statics: Vec<_> = m.static_dirs.iter().map(|s| s.bind_id).collect();
        assert_eq!(statics, vec![Some(BindId::at(1)), None]);
        m.filter_tags(&[], &["t".to_string()]);
        assert_eq!(ids(&m), vec![(0, 0)], "b's route is now the first");
    }

    #[test]
    fn modules_with_limits_names_once_and_the_tag_filter() {
        let mut m = parse_ok(
            "[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\n[[modules]]\nname = \"guard\"\nwasm = \"/bin/sh\"\n[[modules]]\nname = \"extra\"\nwasm = \"/bin/sh\"\ntags = [\"t\"]\nfuel = 5000\nmemory = \"1MiB\"\nphase = \"response\"\n",
        );
        assert_eq!(m.modules[0].fuel, DEFAULT_FUEL);
        assert_eq!(m.modules[0].memory, DEFAULT_WASM_MEMORY);
        assert_eq!((m.modules[1].fuel, m.modules[1].memory), (5000, 1 << 20));
        assert_eq!(m.modules[1].phase, Phase::Response);
        // --only keeps the untagged guard, and filters the tagged one.
        m.filter_tags(&["other".to_string()], &[]);
        let names: Vec<&str> = m.modules.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, vec!["guard"]);
        let e = errors(
            "[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\n[[modules]]\nname = \"g\"\nwasm = \"/bin/sh\"\n[[modules]]\nname = \"G\"\nwasm = \"/bin/sh\"\nfuel = 0\n[[modules]]\nname = \"h\"\nwasm = \"/nonexistent.wasm\"\nmemory = \"1KiB\"\n",
        );
        assert!(e.contains("a second module named \"G\""), "{e}");
        assert!(e.contains("fuel"), "{e}");
        assert!(e.contains("memory"), "{e}");
        assert!(e.contains("/nonexistent.wasm does not exist"), "{e}");
    }

    #[test]
    fn health_checks_and_readiness_with_their_defaults_and_refusals() {
        let m = parse_ok(
            "[base.ship]\nhealth_interval = \"1s\"\n[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\nbind = \"3000\"\nhealthcheck = \"/up\"\nhealth_fails = 5\nunhealthy_restart = \"never\"\n[[fleet.web]]\nname = \"b\"\ncommand = \"x\"\nbind = \"3001\"\n[[fleet.web]]\nname = \"c\"\ncommand = \"x\"\nready = \"2s\"\nready_timeout = \"5s\"\n[[fleet.jobs]]\nname = \"j\"\ncommand = \"x\"\noneshot = true\n",
        );
        let h = m.programs[0].health.as_ref().expect("a's check");
        assert_eq!(h.interval, Duration::from_secs(1), "from [base.ship]");
        assert_eq!((h.fails, h.passes), (5, health::DEFAULT_PASSES));
        assert_eq!(h.timeout, health::DEFAULT_TIMEOUT);
        assert_eq!(h.unhealthy_restart, None);
        assert!(matches!(m.programs[0].ready, Ready::Healthcheck));
        assert!(matches!(m.programs[1].ready, Ready::Bind));
        assert!(matches!(m.programs[2].ready, Ready::Delay(d) if d == Duration::from_secs(2)));
        assert_eq!(m.programs[2].ready_timeout, Duration::from_secs(5));
        assert!(matches!(m.programs[3].ready, Ready::Exit));
        for (text, want) in [
            ("healthcheck = \"/up\"", "this ship has none"),
            ("ready = \"healthcheck\"", "needs a `healthcheck`"),
            ("ready = \"bind\"", "needs the ship's `bind`"),
            ("watchdog = \"1s\"", "needs `ready = \"notify\"`"),
            ("ready = \"soon\"", "`ready` must be"),
            ("unhealthy_restart = \"often\"", "unhealthy_restart"),
            ("health_interval = \"1ms\"", "at least 10ms"),
        ] {
            let e = errors(&format!(
                "[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\n{text}\n"
            ));
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("m.toml:4:"), "{text}: located: {e}");
        }
    }

    #[test]
    fn a_ship_may_not_bind_where_the_edge_listens() {
        let e = errors("[mothership]\nbind = { http = \"0.0.0.0:5001\" }\n[[fleet.web]]\nname = \"web\"\ncommand = \"x\"\nbind = \"127.0.0.1:5001\"\n");
        assert!(e.contains("where the edge's bind `http` listens"), "{e}");
    }

    #[test]
    fn binds_and_metrics_port_expand_variables() {
        let m = parse_ok(
            "[mothership]\nbind = { http = \"127.0.0.1:${PORT}\", other = { addr = \"0.0.0.0:${NOPE:-4001}\" } }\nmetrics_port = \"${METRICS:-9100}\"\n[[fleet.web]]\nname = \"w\"\ncommand = \"x\"\nbind = \"tcp://127.0.0.1:${SHIP_PORT:-4100}\"\n",
        );
        let binds: Vec<String> = m.binds.iter().map(|b| b.addr.to_string()).collect();
        assert!(
            binds.contains(&"tcp://127.0.0.1:4000".to_string()),
            "{binds:?}"
        );
        assert!(
            binds.contains(&"tcp://0.0.0.0:4001".to_string()),
            "{binds:?}"
        );
        assert_eq!(m.metrics_port, Some(9100));
        assert_eq!(
            m.programs[0]
                .bind
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("tcp://127.0.0.1:4100")
        );
        // An invalid expanded value is reported where it was written, with what it became.
        let e = errors("[mothership]\nbind = { http = \"127.0.0.1:${PORT}\" }\n");
        assert!(
            e.contains("m.toml:2:") && e.contains("expanded to `127.0.0.1:`"),
            "{e}"
        );
        let e = errors("[mothership]\nmetrics_port = \"x${PORT}\"\n");
        assert!(e.contains("m.toml:2:") && e.contains("found `x`"), "{e}");
    }

    #[test]
    fn ships_and_bays_keep_declaration_order_across_groups() {
        let m = parse_ok(
            "[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\n[[fleet.data]]\nname = \"b\"\ncommand = \"x\"\n[[bays.chat]]\nname = \"c\"\ncommand = \"x\"\n[[fleet.web]]\nname = \"d\"\ncommand = \"x\"\n",
        );
        let names: Vec<&str> = m.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(m.programs[2].kind(), "bay");
        assert_eq!(m.programs[3].group(), "web");
    }

    #[test]
    fn base_templates_merge() {
        let m = parse_ok(
            r#"
[base.ship]
env = { A = "base", B = "base" }
tags = ["t1", "t2"]
critical = false
grace_period = "3s"
[[fleet.web]]
name = "w"
command = "x"
env = { B = "own", C = "$PORT" }
tags = ["t2", "t3"]
[[fleet.web]]
name = "v"
command = "x"
critical = true
grace_period = 1
"#,
        );
        let w = &m.programs[0];
        assert_eq!(
            w.env,
            [
                ("A".into(), "base".into()),
                ("B".into(), "own".into()),
                ("C".into(), "4000".into())
            ]
        );
        assert_eq!(w.tags, ["t1", "t2", "t3"]);
        assert!(!w.critical);
        assert_eq!(w.grace_period, Duration::from_secs(3));
        assert!(m.programs[1].critical);
        assert_eq!(m.programs[1].grace_period, Duration::from_secs(1));
    }

    #[test]
    fn max_memory_sizes() {
        let m = parse_ok(
            "[base.ship]\nmax_memory = \"1GiB\"\n[[fleet.web]]\nname = \"w\"\ncommand = \"x\"\nmax_memory = \"512MB\"\n[[fleet.web]]\nname = \"v\"\ncommand = \"x\"\n",
        );
        assert_eq!(m.programs[0].max_memory, Some(512 << 20));
        assert_eq!(m.programs[1].max_memory, Some(1 << 30));
        let e = errors("[[fleet.web]]\nname = \"w\"\ncommand = \"x\"\nmax_memory = \"10KB\"\n");
        assert!(e.contains("4:14") && e.contains("max_memory"), "{e}");
        let e = errors("[[fleet.web]]\nname = \"w\"\ncommand = \"x\"\nmax_memory = \"lots\"\n");
        assert!(e.contains("invalid size"), "{e}");
    }

    #[test]
    fn defaults_paths_and_commands() {
        let m = parse_ok(
            "[mothership]\nbind = { http = \"3000\", s = \"unix://run/s.sock\" }\n[[fleet.web]]\nname = \"w\"\ncommand = \"bundle exec 'puma -C x'\"\ncwd = \"app\"\nroutes = [\"http:/api/.*\"]\n[[fleet.web]]\nname = \"j\"\ncommand = \"my prog\"\nargs = [\"a b\"]\noneshot = true\nrestart = \"always\"\n",
        );
        let w = &m.programs[0];
        assert_eq!(w.argv, ["bundle", "exec", "puma -C x"]);
        assert_eq!(w.cwd, Path::new("/srv/app/app"));
        assert_eq!(w.stop_signal, libc::SIGTERM);
        assert_eq!(w.grace_period, Duration::from_secs(10));
        assert_eq!(
            (w.crash_limit, w.crash_window),
            (5, Duration::from_secs(60))
        );
        assert_eq!(w.restart, Restart::Always);
        assert!(w.critical && !w.oneshot);
        assert_eq!(w.routes[0].bind, "http");
        assert_eq!(w.routes[0].pattern.as_str(), "/api/.*");
        let j = &m.programs[1];
        assert_eq!(
            j.argv,
            ["my prog", "a b"],
            "with args, command is taken as is"
        );
        assert_eq!(j.restart, Restart::Never, "oneshot jobs never restart");
        assert_eq!(
            m.binds[1].addr,
            BindAddr::Unix("/srv/app/run/s.sock".into())
        );
        assert!(m.cors_cache.enabled);
    }

    #[test]
    fn tables_of_the_later_layers_are_validated() {
        let m = parse_ok(
            r#"
[mothership]
metrics_port = 9100
compression = true
cors_cache = { enabled = false, default_ttl = "5m", max_entries = 10 }
rate_limiting = { global_rps = 100, per_ip_rpm = 60.5 }
[[mothership.uplinks]]
url = "postgres://u:pw@db:6543/app"
timeout = "250ms"
[mothership.flagship]
enabled = true
static_flagship = { command = "hostname", equals = "web-1" }
prelaunch_timeout = "2m"
"#,
        );
        assert_eq!(m.metrics_port, Some(9100));
        assert!(m.compression);
        assert_eq!(
            m.cors_cache,
            CorsCache {
                enabled: false,
                default_ttl: Duration::from_secs(300),
                max_entries: 10
            }
        );
        assert_eq!(
            m.rate_limiting,
            RateLimiting {
                global_rps: Some(100.0),
                per_ip_rpm: Some(60.5)
            }
        );
        assert_eq!(m.uplinks[0].masked, "postgres://u:***@db:6543/app");
        assert_eq!(m.uplinks[0].name, "db");
        assert_eq!(m.uplinks[0].timeout, Duration::from_millis(250));
        assert!(
            matches!(&m.flagship.election, Election::Static(StaticFlagship::Command { equals, .. }) if equals == "web-1")
        );
        assert_eq!(m.flagship.prelaunch_timeout, Duration::from_secs(120));

        let e = errors("[mothership]\nrate_limiting = { global_rps = -1 }\n[[mothership.uplinks]]\nurl = \"ftp://x\"\n[mothership.flagship]\nenabled = true\nelection = \"postgres\"\nelection_url = \"postgres://x/y\"\n");
        assert!(e.contains("m.toml:2:32: error: `mothership.rate_limiting.global_rps` must be a finite number >= 0"), "{e}");
        assert!(
            e.contains("m.toml:4:7: error: uplink scheme `ftp://` is not supported"),
            "{e}"
        );
        if cfg!(feature = "postgres") {
            assert!(
                e.contains("m.toml:8:16: error: sslmode=prefer may connect without TLS"),
                "{e}"
            );
        } else {
            assert!(
                e.contains("m.toml:7:12: error: this build has no PostgreSQL support"),
                "{e}"
            );
        }
    }

    #[test]
    fn sslmodes() {
        assert_eq!(sslmode_of("postgres://h/db"), "prefer");
        assert_eq!(
            sslmode_of("postgres://h/db?x=1&sslmode=Verify-Full"),
            "verify-full"
        );
        let none = |_: &str| None;
        assert!(check_sslmode("postgres://h/db?sslmode=require", &none).is_ok());
        assert!(check_sslmode("postgres://h/db?sslmode=verify-ca", &none).is_ok());
        assert!(check_sslmode("postgres://h/db?sslmode=bogus", &none).is_err());
        let e = check_sslmode("postgres://h/db", &none).unwrap_err();
        assert!(e.contains("no sslmode means prefer"), "{e}");
        assert!(check_sslmode("postgres://h/db?sslmode=disable", &none).is_err());
        let allow = |k: &str| {
            (k == "MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE").then(|| "yes".to_string())
        };
        assert!(check_sslmode("postgres://h/db?sslmode=disable", &allow).is_ok());
    }

    #[test]
    fn located_errors() {
        let e = errors("[[fleet.web]]\nname = \"a\"\ncommand = \"x\"\nbind = \"nope\"\n[[fleet.web]]\nname = \"A\"\ncommand = \"x\"\n");
        assert!(
            e.contains("m.toml:4:8: error: invalid bind \"nope\""),
            "{e}"
        );
        assert!(e.contains("m.toml:6:8: error: duplicate name `A`"), "{e}");
        let e = errors("fleet = 3\n[bogus]\n");
        assert!(
            e.contains("m.toml:1:9: error: `fleet` must be a table, found an integer"),
            "{e}"
        );
        assert!(
            e.contains("m.toml:2:2: error: unknown top-level key `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn log_and_event_keys_that_would_do_nothing_are_refused() {
        const WEB: &str = "[[fleet.web]]\nname = \"w\"\ncommand = \"x\"\n";
        let e = errors(&format!(
            "[mothership]\nlog_keep = 3\nlog_compress = true\n{WEB}"
        ));
        assert!(
            e.contains("m.toml:2:1: error: `log_keep` without a log file to act on"),
            "{e}"
        );
        // With a destination they act.
        let m = parse_ok(&format!(
            "[mothership]\nlog_keep = 3\n{WEB}log_file = \"w.log\"\n"
        ));
        assert_eq!(m.log_files.keep, 3);
        assert_eq!(
            m.programs[0].log_file.as_deref(),
            Some(Path::new("/srv/app/w.log"))
        );
        for bad in ["", ".", "..", "logs/", "logs/.."] {
            let e = errors(&format!("{WEB}log_file = \"{bad}\"\n"));
            assert!(
                e.contains("m.toml:4:12: error: `log_file` needs a file name"),
                "{bad}: {e}"
            );
        }
        let e = errors(&format!("[mothership]\non_event_timeout = \"5s\"\n{WEB}"));
        assert!(
            e.contains("m.toml:2:1: error: `on_event_timeout` without an `on_event` command or a `webhook`"),
            "{e}"
        );
        // With only a webhook it bounds the wait for deliveries at landing.
        let m = parse_ok(&format!(
            "[mothership]\non_event_timeout = \"9s\"\nwebhook = \"http://127.0.0.1:9/h\"\n{WEB}"
        ));
        assert_eq!(m.events.timeout, Duration::from_secs(9));
        let e = errors(&format!(
            "[mothership]\nwebhook = \"http://u:secret@127.0.0.1:9/h\"\n{WEB}"
        ));
        assert!(
            e.contains("m.toml:2:11: error: `webhook` has user info"),
            "{e}"
        );
    }
}
