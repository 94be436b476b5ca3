//! The modules on wasmi: loading (compile, check imports and exports, instantiate), the
//! host functions of COMPAT.md section 5 and the ones added here, and one call with its
//! fuel, its outcome and its counts. Runs on the loop thread; fuel bounds every call.

use std::time::{Duration, Instant};

use wasmi::{
    Caller, CompilationMode, Config, Engine, Error, ExternType, Func, FuncType, Instance, Linker,
    Memory, Module as Wasm, Store, StoreLimits, StoreLimitsBuilder, TrapCode, Val, ValType,
};

use super::{
    block_headers, config_json, header_edit, status_edit, target_edit, Block, Edit, ModRow,
    ModStats, Outcome, BLOCKED_BODY,
};
use crate::manifest::{Module, Phase};

/// Calls in a row that trapped after which a module is instantiated again.
const RESET_AFTER: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// At most one line a second about a module's failures.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Bounds of an instance besides fuel and memory: table elements, tables, call depth and
/// value stack (bytes).
const MAX_TABLE_ELEMENTS: usize = 65_536;
const MAX_TABLES: usize = 8;
const MAX_CALL_DEPTH: usize = 1000;
const MAX_STACK: usize = 1 << 20;
/// Longest text a module logs in one line, and lines logged per call.
const MAX_LOG: usize = 4096;
const MAX_LOG_LINES: u32 = 16;
/// Bytes the host functions copy in or out of a module's memory in one call: fuel counts
/// instructions, not the bytes a host function moves, so this bounds the rest.
const MAX_COPY: u64 = 64 << 20;
/// Changes one call may ask for.
const MAX_EDITS: usize = 64;
/// Largest answer a module may block with: body, and its headers' JSON.
const MAX_BLOCK_BODY: usize = 1 << 20;
const MAX_BLOCK_HEADERS: usize = 64 << 10;
/// Longest header name or value, or target, a module may give.
const MAX_FIELD: usize = 8192;

/// What the module's last `set_*` of a call said.
#[derive(Debug, Default)]
enum Verdict {
    #[default]
    Continue,
    Block(Block),
    /// A malformed action: the call fails (503).
    Bad(String),
}

/// The data of one module's store: what its host functions read and write.
struct State {
    name: String,
    phase: Phase,
    /// The request or response JSON of the call under way.
    input: Vec<u8>,
    config: Vec<u8>,
    /// The backend's status in the response phase (checks `set_status`).
    status: u16,
    /// The request's query in the request phase (kept by `set_path` without one).
    query: Option<String>,
    verdict: Verdict,
    edits: Vec<Edit>,
    /// Bytes copied by host functions in this call; past [`MAX_COPY`], the call fails.
    copied: u64,
    overrun: bool,
    /// Lines logged in this call, and those left out past [`MAX_LOG_LINES`].
    logs: u32,
    suppressed: u32,
    limits: StoreLimits,
    loaded: Instant,
}

struct Slot {
    name: String,
    phase: Phase,
    wasm: Wasm,
    linker: Linker<State>,
    store: Store<State>,
    /// The handler of the entry's phase: `Ok` with the right type, `Err` with its type.
    handler: Option<Result<Func, String>>,
    fuel: u64,
    memory: u64,
    config: Vec<u8>,
    loaded: Instant,
    fails: u32,
    backoff: Duration,
    next_reset: Option<Instant>,
    /// When a failure was last logged, and the failures not logged since.
    logged: Option<Instant>,
    unlogged: u64,
    stats: ModStats,
}

pub(super) struct Host {
    slots: Vec<Slot>,
}

/// Params and results of a host function.
type Sig = (&'static [ValType], &'static [ValType]);

const I32: ValType = ValType::I32;

/// The functions of the `env` and `mothership` namespaces with their types. The last
/// three `mothership` ones take any types of i32 and i64 and return nothing or one i32.
fn signature(module: &str, name: &str) -> Option<Sig> {
    let s: Sig = match (module, name) {
        ("env", "get_request" | "get_response" | "get_config") => (&[], &[I32]),
        ("env", "read_request" | "read_response" | "read_config") => (&[I32, I32], &[I32]),
        ("env", "set_action") => (&[I32], &[]),
        ("env", "set_block") => (&[I32, I32, I32], &[]),
        ("env", "set_block_with_headers") => (&[I32, I32, I32, I32, I32], &[]),
        ("env", "log") => (&[I32, I32, I32], &[]),
        ("env", "get_time") => (&[], &[ValType::F64]),
        ("env", "set_request_header" | "set_response_header") => (&[I32, I32, I32, I32], &[I32]),
        ("env", "remove_request_header" | "remove_response_header" | "set_path") => {
            (&[I32, I32], &[I32])
        }
        ("env", "set_status") => (&[I32], &[I32]),
        ("mothership", "host_log") => (&[I32, I32, I32], &[I32]),
        _ => return None,
    };
    Some(s)
}

fn loose(module: &str, name: &str) -> bool {
    module == "mothership" && matches!(name, "host_send" | "host_broadcast" | "host_close")
}

fn show(ty: &FuncType) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(|t| format!("{t:?}").to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(ty.params()), list(ty.results()))
}

fn engine() -> Engine {
    let mut c = Config::default();
    c.consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .set_max_recursion_depth(MAX_CALL_DEPTH)
        .set_max_stack_height(MAX_STACK);
    Engine::new(&c)
}

/// Why a call or an instantiation failed, for the log.
fn reason(e: &Error, fuel: u64) -> String {
    match e.as_trap_code() {
        Some(TrapCode::OutOfFuel) => format!("ran out of fuel ({fuel} per call)"),
        Some(t) => format!("trapped: {t}"),
        None => format!("failed: {e}"),
    }
}

impl Host {
    pub fn load(modules: &[Module], now: Instant) -> Result<Host, Vec<String>> {
        let engine = engine();
        let mut slots = Vec::with_capacity(modules.len());
        let mut errors = Vec::new();
        for m in modules {
            match Slot::load(&engine, m, now) {
                Ok(s) => slots.push(s),
                Err(why) => errors.push(format!("module {} ({}): {why}", m.name, m.wasm.display())),
            }
        }
        if errors.is_empty() {
            Ok(Host { slots })
        } else {
            Err(errors)
        }
    }

    pub fn rows(&self) -> Vec<ModRow> {
        self.slots
            .iter()
            .map(|s| ModRow {
                name: s.name.clone(),
                phase: s.phase,
                stats: s.stats.clone(),
            })
            .collect()
    }

    /// Calls module `i` on `input` (the request or response JSON; `query` the request's in
    /// the request phase, `status` the backend's in the response phase). `Ok`: go on with
    /// these edits; `Err`: a block or a failure.
    pub fn call(
        &mut self,
        i: usize,
        phase: Phase,
        input: Vec<u8>,
        query: Option<&str>,
        status: u16,
        now: Instant,
    ) -> Result<Vec<Edit>, Outcome> {
        let Some(s) = self.slots.get_mut(i) else {
            return Err(Outcome::Fail);
        };
        s.call(phase, input, query, status, now)
    }
}

impl Slot {
    fn load(engine: &Engine, m: &Module, now: Instant) -> Result<Slot, String> {
        let bytes = std::fs::read(&m.wasm).map_err(|e| format!("cannot read it: {e}"))?;
        let wasm = Wasm::new(engine, &bytes[..])
            .map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
        let linker = link(engine, &wasm)?;
        let handler_type = |name: &str| match wasm.get_export(name) {
            Some(ExternType::Func(ty)) => Some(Some(ty)),
            Some(_) => Some(None),
            None => None,
        };
        let (req, resp) = (handler_type("on_request"), handler_type("on_response"));
        if req.is_none() && resp.is_none() {
            return Err("exports neither on_request nor on_response".into());
        }
        let (hname, want) = match m.phase {
            Phase::Request => ("on_request", req),
            Phase::Response => ("on_response", resp),
        };
        match &want {
            None => log::warn!(
                "module {}: phase is {} but it exports no {hname}: it will do nothing",
                m.name,
                phase_name(m.phase)
            ),
            Some(Some(ty)) if ty.params().is_empty() && ty.results().is_empty() => {}
            Some(Some(ty)) => log::warn!(
                "module {}: {hname} has type {}, not () -> (): every call will fail (503)",
                m.name,
                show(ty)
            ),
            Some(None) => log::warn!(
                "module {}: its export {hname} is not a function: every call will fail (503)",
                m.name
            ),
        }
        let config = config_json(&m.config);
        let mut slot = Slot {
            name: m.name.clone(),
            phase: m.phase,
            store: Store::new(engine, state(m.name.clone(), Vec::new(), 0, now)),
            wasm,
            linker,
            handler: None,
            fuel: m.fuel,
            memory: m.memory,
            config,
            loaded: now,
            fails: 0,
            backoff: BACKOFF_MIN,
            next_reset: None,
            logged: None,
            unlogged: 0,
            stats: ModStats::default(),
        };
        slot.instantiate()?;
        Ok(slot)
    }

    /// A fresh store and instance (the start function, if any, runs on the entry's fuel).
    fn instantiate(&mut self) -> Result<(), String> {
        let engine = self.store.engine().clone();
        let st = state(
            self.name.clone(),
            self.config.clone(),
            self.memory,
            self.loaded,
        );
        let mut store = Store::new(&engine, st);
        store.limiter(|s: &mut State| -> &mut dyn wasmi::ResourceLimiter { &mut s.limits });
        store
            .set_fuel(self.fuel)
            .map_err(|e| format!("failed: {e}"))?;
        let inst: Instance = self
            .linker
            .instantiate_and_start(&mut store, &self.wasm)
            .map_err(|e| format!("cannot be instantiated: {}", reason(&e, self.fuel)))?;
        let name = match self.phase {
            Phase::Request => "on_request",
            Phase::Response => "on_response",
        };
        self.handler = inst.get_export(&store, name).map(|x| {
            let f = x
                .into_func()
                .ok_or_else(|| format!("{name} is not a function"))?;
            let ty = f.ty(&store);
            if ty.params().is_empty() && ty.results().is_empty() {
                Ok(f)
            } else {
                Err(format!("{name} has type {}, not () -> ()", show(&ty)))
            }
        });
        self.store = store;
        Ok(())
    }

    fn call(
        &mut self,
        phase: Phase,
        input: Vec<u8>,
        query: Option<&str>,
        status: u16,
        now: Instant,
    ) -> Result<Vec<Edit>, Outcome> {
        let f = match &self.handler {
            None => return Ok(Vec::new()),
            Some(Ok(f)) => *f,
            Some(Err(why)) => {
                let why = why.clone();
                self.stats.calls += 1;
                self.stats.observe(0.0);
                return Err(self.failed(why, false, now));
            }
        };
        self.stats.calls += 1;
        let st = self.store.data_mut();
        st.phase = phase;
        st.input = input;
        st.status = status;
        st.query = query.map(str::to_string);
        st.verdict = Verdict::Continue;
        st.edits.clear();
        st.copied = 0;
        st.overrun = false;
        st.logs = 0;
        st.suppressed = 0;
        if let Err(e) = self.store.set_fuel(self.fuel) {
            return Err(self.failed(format!("failed: {e}"), false, now));
        }
        let t0 = Instant::now();
        let r = f.call(&mut self.store, &[], &mut []);
        self.stats.observe(t0.elapsed().as_secs_f64());
        let st = self.store.data_mut();
        st.input = Vec::new();
        let verdict = std::mem::take(&mut st.verdict);
        let edits = std::mem::take(&mut st.edits);
        let (overrun, suppressed) = (st.overrun, st.suppressed);
        if suppressed > 0 {
            log::warn!(
                "module {}: {suppressed} more log line(s) of this call left out (at most {MAX_LOG_LINES} a call)",
                self.name
            );
        }
        if let Err(e) = r {
            // Only a trap counts towards making the instance again: running out of fuel
            // says nothing of the instance's state.
            let trap = e.as_trap_code().is_some_and(|t| t != TrapCode::OutOfFuel);
            let why = reason(&e, self.fuel);
            return Err(self.failed(why, trap, now));
        }
        if overrun {
            let why = format!(
                "moved more than {} MiB through host functions in one call",
                MAX_COPY >> 20
            );
            return Err(self.failed(why, false, now));
        }
        match verdict {
            Verdict::Bad(why) => Err(self.failed(why, false, now)),
            Verdict::Block(b) => {
                self.succeeded();
                self.stats.blocks += 1;
                Err(Outcome::Block(b))
            }
            Verdict::Continue => {
                self.succeeded();
                Ok(edits)
            }
        }
    }

    fn succeeded(&mut self) {
        self.fails = 0;
        self.backoff = BACKOFF_MIN;
        self.next_reset = None;
    }

    /// Counts and logs a failed call; after [`RESET_AFTER`] traps in a row, instantiates
    /// the module again (at most once per backoff period).
    fn failed(&mut self, why: String, trap: bool, now: Instant) -> Outcome {
        self.stats.errors += 1;
        if trap {
            self.fails = self.fails.saturating_add(1);
        }
        // One line a second at most per module (a client can make a module fail on
        // every request); the metrics count them all.
        if self
            .logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY)
        {
            let more = std::mem::take(&mut self.unlogged);
            let also = if more > 0 {
                format!(" ({more} more failure(s) since the last line)")
            } else {
                String::new()
            };
            log::warn!("module {}: {why}; answering 503{also}", self.name);
            self.logged = Some(now);
        } else {
            self.unlogged += 1;
        }
        let due = self.next_reset.is_none_or(|t| now >= t);
        if trap && self.fails >= RESET_AFTER && due {
            self.next_reset = Some(now + self.backoff);
            let wait = self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            match self.instantiate() {
                Ok(()) => {
                    self.stats.resets += 1;
                    log::warn!(
                        "module {}: {} traps in a row; instantiated again (fresh memory; not again for {}s)",
                        self.name,
                        self.fails,
                        wait.as_secs()
                    );
                    self.fails = 0;
                }
                Err(e) => log::error!("module {}: {e}; keeping the instance it had", self.name),
            }
        }
        Outcome::Fail
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Request => "request",
        Phase::Response => "response",
    }
}

fn state(name: String, config: Vec<u8>, memory: u64, loaded: Instant) -> State {
    State {
        name,
        phase: Phase::Request,
        input: Vec::new(),
        config,
        status: 0,
        query: None,
        verdict: Verdict::Continue,
        edits: Vec::new(),
        copied: 0,
        overrun: false,
        logs: 0,
        suppressed: 0,
        limits: StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory).unwrap_or(usize::MAX))
            .memories(1)
            .tables(MAX_TABLES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .trap_on_grow_failure(false)
            .build(),
        loaded,
    }
}

/// Checks every import of the module against what the host gives, with a message naming
/// the first that does not fit, and makes the linker for it.
fn link(engine: &Engine, wasm: &Wasm) -> Result<Linker<State>, String> {
    let mut linker = Linker::new(engine);
    let mut loose_done: Vec<&str> = Vec::new();
    for imp in wasm.imports() {
        let (module, name) = (imp.module(), imp.name());
        let ExternType::Func(ty) = imp.ty() else {
            return Err(format!(
                "imports {module}.{name}, which is not a function; the host gives functions only"
            ));
        };
        if loose(module, name) {
            let ints = |v: &[ValType]| v.iter().all(|t| matches!(t, ValType::I32 | ValType::I64));
            let fits = ints(ty.params()) && matches!(ty.results(), [] | [ValType::I32]);
            if !fits {
                return Err(format!(
                    "imports {module}.{name} with type {}, which the host does not give",
                    show(ty)
                ));
            }
            // (Imported twice with the same type: one definition serves both.)
            if !loose_done.contains(&name) {
                define_loose(&mut linker, name, ty.clone())?;
                loose_done.push(name);
            }
            continue;
        }
        let Some((params, results)) = signature(module, name) else {
            return Err(format!(
                "imports {module}.{name}, a function the host does not provide"
            ));
        };
        if ty.params() != params || ty.results() != results {
            let want = FuncType::new(params.iter().copied(), results.iter().copied());
            return Err(format!(
                "imports {module}.{name} with type {}; the host gives {}",
                show(ty),
                show(&want)
            ));
        }
    }
    define(&mut linker).map_err(|e| format!("cannot link: {e}"))?;
    Ok(linker)
}

fn memory(c: &Caller<'_, State>) -> Option<Memory> {
    c.get_export("memory")?.into_memory()
}

/// Whether `len` bytes at `ptr` lie in the module's memory (nothing copied).
fn readable(c: &Caller<'_, State>, ptr: i32, len: i32) -> bool {
    let (Some(m), Ok(len)) = (memory(c), usize::try_from(len)) else {
        return false;
    };
    let start = ptr as u32 as usize;
    start
        .checked_add(len)
        .is_some_and(|end| end <= m.data(c).len())
}

/// `len` bytes at `ptr` of the module's memory; None when there is no memory, they are out
/// of bounds, `len` is over `max`, or the call has moved [`MAX_COPY`] bytes already (the
/// call then fails).
fn bytes(c: &mut Caller<'_, State>, ptr: i32, len: i32, max: usize) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok().filter(|&n| n <= max)?;
    let m = memory(c)?;
    let (data, st) = m.data_and_store_mut(&mut *c);
    if !count_copy(st, len) {
        return None;
    }
    let start = ptr as u32 as usize;
    data.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
}

/// Counts `n` bytes moved in this call; false (and the call fails) past [`MAX_COPY`].
fn count_copy(st: &mut State, n: usize) -> bool {
    st.copied = st.copied.saturating_add(n as u64);
    st.overrun |= st.copied > MAX_COPY;
    !st.overrun
}

#[derive(Clone, Copy)]
enum Doc {
    Request,
    Response,
    Config,
}

fn doc_len(st: &State, which: Doc) -> usize {
    match (which, st.phase) {
        (Doc::Request, Phase::Request) | (Doc::Response, Phase::Response) => st.input.len(),
        (Doc::Config, _) => st.config.len(),
        _ => 0,
    }
}

/// `read_*`: copies min(len, max) bytes (all with a negative max) to `ptr`; the count, or
/// -1 when they do not fit in memory or there is none.
fn read_doc(mut c: Caller<'_, State>, which: Doc, ptr: i32, max: i32) -> i32 {
    let Some(m) = memory(&c) else {
        return -1;
    };
    let (data, st) = m.data_and_store_mut(&mut c);
    let n = usize::try_from(max).map_or(doc_len(st, which), |m| m.min(doc_len(st, which)));
    if !count_copy(st, n) {
        return -1;
    }
    let src: &[u8] = match (which, st.phase) {
        (Doc::Request, Phase::Request) | (Doc::Response, Phase::Response) => &st.input,
        (Doc::Config, _) => &st.config,
        _ => &[],
    };
    let start = ptr as u32 as usize;
    let Some(dst) = start
        .checked_add(n)
        .and_then(|end| data.get_mut(start..end))
    else {
        return -1;
    };
    dst.copy_from_slice(&src[..n]);
    i32::try_from(n).unwrap_or(-1)
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The status of a block: outside 0..=65535 is a failure; outside 200..=999 (an interim
/// 1xx cannot end an exchange) gives 403.
fn block_status(status: i32) -> Result<u16, String> {
    let s = u16::try_from(status).map_err(|_| format!("set_block with status {status}"))?;
    Ok(if (200..=999).contains(&s) { s } else { 403 })
}

/// The body of a block: empty at address 0, for a length that is not positive, or when
/// unreadable (as upstream); over 1 MiB, a failure.
fn block_body(c: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<Vec<u8>, String> {
    if ptr == 0 || len <= 0 {
        return Ok(Vec::new());
    }
    if len as usize > MAX_BLOCK_BODY {
        return Err(format!(
            "a block body of {len} bytes (at most {MAX_BLOCK_BODY})"
        ));
    }
    Ok(bytes(c, ptr, len, MAX_BLOCK_BODY).unwrap_or_default())
}

/// The text a module logs, at most [`MAX_LOG`] bytes of it: None when it is not all in
/// memory or not UTF-8 (a character cut at the bound is dropped).
fn log_text(c: &mut Caller<'_, State>, ptr: i32, len: i32) -> Option<String> {
    if !readable(c, ptr, len) {
        return None;
    }
    let take = usize::try_from(len).ok()?.min(MAX_LOG);
    let b = bytes(c, ptr, take as i32, MAX_LOG)?;
    match std::str::from_utf8(&b) {
        Ok(t) => Some(t.to_string()),
        Err(e) if e.error_len().is_none() && take < len as usize => {
            Some(String::from_utf8_lossy(&b[..e.valid_up_to()]).into_owned())
        }
        Err(_) => None,
    }
}

/// Logs a module's text under its name: control characters escaped (no forged lines,
/// no terminal sequences), at most [`MAX_LOG_LINES`] lines a call.
fn log_line(c: &mut Caller<'_, State>, level: i32, text: &str) {
    let st = c.data_mut();
    if st.logs >= MAX_LOG_LINES {
        st.suppressed += 1;
        return;
    }
    st.logs += 1;
    let mut clean = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() && ch != '\t' {
            clean.push_str(&ch.escape_default().to_string());
        } else {
            clean.push(ch);
        }
    }
    let lvl = match level {
        1 => log::Level::Warn,
        2 => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(lvl, "module {}: {clean}", st.name);
}

/// Records an edit a module asked for in the phase it may be asked in: 0, or -1 refused.
fn edit(c: &mut Caller<'_, State>, phase: Phase, e: Option<Edit>) -> i32 {
    let st = c.data_mut();
    match e {
        Some(e) if st.phase == phase && st.edits.len() < MAX_EDITS => {
            st.edits.push(e);
            0
        }
        _ => -1,
    }
}

/// `set_*_header` (a value) and `remove_*_header` (none) of `phase`: 0, or -1 refused.
fn set_header(
    c: &mut Caller<'_, State>,
    phase: Phase,
    (np, nn): (i32, i32),
    value: Option<(i32, i32)>,
) -> i32 {
    let name = bytes(c, np, nn, MAX_FIELD);
    let e = match value {
        Some((vp, vn)) => {
            let v = bytes(c, vp, vn, MAX_FIELD);
            name.zip(v)
                .and_then(|(n, v)| header_edit(&n, Some(&v), phase == Phase::Request))
        }
        None => name.and_then(|n| header_edit(&n, None, phase == Phase::Request)),
    };
    edit(c, phase, e)
}

fn define(l: &mut Linker<State>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap("env", "get_request", |c: Caller<'_, State>| {
        to_i32(doc_len(c.data(), Doc::Request))
    })?;
    l.func_wrap("env", "get_response", |c: Caller<'_, State>| {
        to_i32(doc_len(c.data(), Doc::Response))
    })?;
    l.func_wrap("env", "get_config", |c: Caller<'_, State>| {
        to_i32(doc_len(c.data(), Doc::Config))
    })?;
    l.func_wrap(
        "env",
        "read_request",
        |c: Caller<'_, State>, p: i32, m: i32| read_doc(c, Doc::Request, p, m),
    )?;
    l.func_wrap(
        "env",
        "read_response",
        |c: Caller<'_, State>, p: i32, m: i32| read_doc(c, Doc::Response, p, m),
    )?;
    l.func_wrap(
        "env",
        "read_config",
        |c: Caller<'_, State>, p: i32, m: i32| read_doc(c, Doc::Config, p, m),
    )?;
    l.func_wrap("env", "set_action", |mut c: Caller<'_, State>, a: i32| {
        c.data_mut().verdict = if a == 1 {
            Verdict::Block(Block {
                status: 403,
                body: BLOCKED_BODY.to_vec(),
                headers: Vec::new(),
            })
        } else {
            Verdict::Continue
        };
    })?;
    l.func_wrap(
        "env",
        "set_block",
        |mut c: Caller<'_, State>, status: i32, p: i32, n: i32| {
            let v = match (block_status(status), block_body(&mut c, p, n)) {
                (Ok(status), Ok(body)) => Verdict::Block(Block {
                    status,
                    body,
                    headers: Vec::new(),
                }),
                (Err(why), _) | (_, Err(why)) => Verdict::Bad(why),
            };
            c.data_mut().verdict = v;
        },
    )?;
    l.func_wrap(
        "env",
        "set_block_with_headers",
        |mut c: Caller<'_, State>, status: i32, p: i32, n: i32, hp: i32, hn: i32| {
            let headers = match bytes(&mut c, hp, hn, MAX_BLOCK_HEADERS) {
                Some(t) if !t.is_empty() => block_headers(&t),
                _ => Err(format!(
                    "set_block_with_headers with empty, unreadable or over {} KiB headers",
                    MAX_BLOCK_HEADERS >> 10
                )),
            };
            let v = match (block_status(status), headers, block_body(&mut c, p, n)) {
                (Ok(status), Ok(headers), Ok(body)) => Verdict::Block(Block {
                    status,
                    body,
                    headers,
                }),
                (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => Verdict::Bad(why),
            };
            c.data_mut().verdict = v;
        },
    )?;
    l.func_wrap(
        "env",
        "log",
        |mut c: Caller<'_, State>, level: i32, p: i32, n: i32| {
            if let Some(t) = log_text(&mut c, p, n) {
                log_line(&mut c, level, &t);
            }
        },
    )?;
    l.func_wrap("env", "get_time", |c: Caller<'_, State>| {
        c.data().loaded.elapsed().as_secs_f64()
    })?;
    l.func_wrap(
        "env",
        "set_request_header",
        |mut c: Caller<'_, State>, np: i32, nn: i32, vp: i32, vn: i32| {
            set_header(&mut c, Phase::Request, (np, nn), Some((vp, vn)))
        },
    )?;
    l.func_wrap(
        "env",
        "remove_request_header",
        |mut c: Caller<'_, State>, np: i32, nn: i32| {
            set_header(&mut c, Phase::Request, (np, nn), None)
        },
    )?;
    l.func_wrap(
        "env",
        "set_path",
        |mut c: Caller<'_, State>, p: i32, n: i32| {
            let t = bytes(&mut c, p, n, MAX_FIELD);
            let e = t.and_then(|t| target_edit(&t, c.data().query.as_deref()));
            edit(&mut c, Phase::Request, e)
        },
    )?;
    l.func_wrap(
        "env",
        "set_response_header",
        |mut c: Caller<'_, State>, np: i32, nn: i32, vp: i32, vn: i32| {
            set_header(&mut c, Phase::Response, (np, nn), Some((vp, vn)))
        },
    )?;
    l.func_wrap(
        "env",
        "remove_response_header",
        |mut c: Caller<'_, State>, np: i32, nn: i32| {
            set_header(&mut c, Phase::Response, (np, nn), None)
        },
    )?;
    l.func_wrap("env", "set_status", |mut c: Caller<'_, State>, s: i32| {
        let e = status_edit(s, c.data().status);
        edit(&mut c, Phase::Response, e)
    })?;
    l.func_wrap(
        "mothership",
        "host_log",
        |mut c: Caller<'_, State>, level: i32, p: i32, n: i32| {
            let t = log_text(&mut c, p, n);
            log_line(&mut c, level, t.as_deref().unwrap_or("<invalid utf-8>"));
            0
        },
    )?;
    Ok(())
}

/// `host_send`, `host_broadcast`, `host_close` with the types the module imports them with:
/// HTTP modules own no WebSocket connection, so a connection id is never valid (-2); an
/// unreadable payload gives -3, a broadcast to no one 0.
fn define_loose(l: &mut Linker<State>, name: &str, ty: FuncType) -> Result<(), String> {
    let kind = name.to_string();
    let r = l.func_new(
        "mothership",
        name,
        ty,
        move |c: Caller<'_, State>, params: &[Val], results: &mut [Val]| {
            let int = |v: Option<&Val>| match v {
                Some(Val::I32(x)) => Some(*x),
                Some(Val::I64(x)) => i32::try_from(*x).ok(),
                _ => None,
            };
            // The payload is the last two parameters (pointer, length).
            let payload = || {
                let n = params.len();
                let (p, len) = (int(params.get(n.wrapping_sub(2))), int(params.last()));
                n >= 2 && p.zip(len).is_some_and(|(p, l)| readable(&c, p, l))
            };
            let code = match kind.as_str() {
                "host_broadcast" if payload() => 0,
                "host_send" if payload() => -2,
                "host_close" => -2,
                _ => -3,
            };
            if let Some(r) = results.first_mut() {
                *r = Val::I32(code);
            }
            Ok(())
        },
    );
    r.map(|_| ()).map_err(|e| format!("cannot link: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{parse_request, parse_response, Limits, RequestHead};

    fn module(name: &str, wat: &str, phase: Phase, dir: &std::path::Path) -> Module {
        let bin = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, bin).unwrap_or_else(|e| panic!("{e}"));
        Module {
            name: name.into(),
            wasm: path,
            routes: Vec::new(),
            phase,
            config: vec![("k".into(), "v".into())],
            tags: Vec::new(),
            fuel: crate::manifest::DEFAULT_FUEL,
            memory: crate::manifest::DEFAULT_WASM_MEMORY,
        }
    }

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ms-payload-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    fn req() -> RequestHead {
        match parse_request(b"GET /p?q HTTP/1.1\r\nHost: h\r\n\r\n", &Limits::default()) {
            Ok(Some(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn load_one(tag: &str, wat: &str, phase: Phase) -> Result<Host, Vec<String>> {
        let d = dir(tag);
        let m = module(tag, wat, phase, &d);
        let r = Host::load(&[m], Instant::now());
        let _ = std::fs::remove_dir_all(&d);
        r
    }

    fn run(h: &mut Host, phase: Phase, input: &[u8]) -> Result<Vec<Edit>, Outcome> {
        h.call(0, phase, input.to_vec(), Some("q"), 200, Instant::now())
    }

    #[test]
    fn read_truncates_and_refuses_what_does_not_fit() {
        // Records read_request's answers in globals read back through set_block's status.
        let wat = r#"(module
          (import "env" "read_request" (func $r (param i32 i32) (result i32)))
          (import "env" "get_request" (func $g (result i32)))
          (import "env" "set_block" (func $b (param i32 i32 i32)))
          (memory (export "memory") 1)
          (global $mode (mut i32) (i32.const 0))
          (func (export "on_request")
            (local $v i32)
            (global.set $mode (i32.add (global.get $mode) (i32.const 1)))
            (if (i32.eq (global.get $mode) (i32.const 1))
              (then (local.set $v (call $r (i32.const 0) (i32.const 5)))))
            (if (i32.eq (global.get $mode) (i32.const 2))
              (then (local.set $v (call $r (i32.const 65534) (i32.const -1)))))
            (if (i32.eq (global.get $mode) (i32.const 3))
              (then (local.set $v (i32.sub (call $r (i32.const 100) (i32.const -1)) (call $g)))))
            (call $b (i32.add (i32.const 300) (local.get $v)) (i32.const 0) (i32.const 0))))"#;
        let mut h = load_one("read", wat, Phase::Request).unwrap_or_else(|e| panic!("{e:?}"));
        let input = b"{\"method\":\"GET\"}";
        let status = |r: Result<Vec<Edit>, Outcome>| match r {
            Err(Outcome::Block(b)) => b.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(run(&mut h, Phase::Request, input)), 305);
        assert_eq!(status(run(&mut h, Phase::Request, input)), 299);
        assert_eq!(status(run(&mut h, Phase::Request, input)), 300);
    }

    #[test]
    fn actions_blocks_and_failures() {
        let wat = r#"(module
          (import "env" "set_action" (func $a (param i32)))
          (import "env" "set_block" (func $b (param i32 i32 i32)))
          (import "env" "set_block_with_headers" (func $h (param i32 i32 i32 i32 i32)))
          (import "env" "get_config" (func $gc (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "nope")
          (data (i32.const 32) "{\"X-A\":\"1\",\"content-length\":\"3\"}")
          (data (i32.const 96) "{\"x\":\"a\nb\"}")
          (global $n (mut i32) (i32.const 0))
          (func (export "on_request")
            (global.set $n (i32.add (global.get $n) (i32.const 1)))
            (block $done
              (if (i32.eq (global.get $n) (i32.const 1)) (then (call $a (i32.const 1)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 2)) (then (call $a (i32.const 7)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 3)) (then (call $b (i32.const 451) (i32.const 16) (i32.const 4)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 4)) (then (call $b (i32.const 70000) (i32.const 16) (i32.const 4)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 5)) (then (call $b (i32.const 42) (i32.const 0) (i32.const 4)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 6)) (then (call $h (i32.const 418) (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 32)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 7)) (then (call $h (i32.const 418) (i32.const 16) (i32.const 4) (i32.const 96) (i32.const 13)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 8)) (then (call $b (i32.const 451) (i32.const 16) (i32.const 4)) (call $a (i32.const 0)) (br $done)))
              (if (i32.eq (global.get $n) (i32.const 9)) (then (call $b (i32.const 200) (i32.const 16) (call $gc)) (br $done)))
              unreachable)))"#;
        let mut h = load_one("act", wat, Phase::Request).unwrap_or_else(|e| panic!("{e:?}"));
        let block = |status: u16, body: &[u8], headers: Vec<(String, Vec<u8>)>| {
            Err(Outcome::Block(Block {
                status,
                body: body.to_vec(),
                headers,
            }))
        };
        assert_eq!(
            run(&mut h, Phase::Request, b"{}"),
            block(403, BLOCKED_BODY, vec![])
        );
        assert_eq!(run(&mut h, Phase::Request, b"{}"), Ok(vec![]));
        assert_eq!(
            run(&mut h, Phase::Request, b"{}"),
            block(451, b"nope", vec![])
        );
        assert_eq!(run(&mut h, Phase::Request, b"{}"), Err(Outcome::Fail));
        assert_eq!(run(&mut h, Phase::Request, b"{}"), block(403, b"", vec![]));
        assert_eq!(
            run(&mut h, Phase::Request, b"{}"),
            block(418, b"nope", vec![("x-a".into(), b"1".to_vec())])
        );
        assert_eq!(run(&mut h, Phase::Request, b"{}"), Err(Outcome::Fail));
        assert_eq!(run(&mut h, Phase::Request, b"{}"), Ok(vec![]));
        // get_config is {"k":"v"}: 9 bytes of body from address 16 (past "nope": zeros).
        match run(&mut h, Phase::Request, b"{}") {
            Err(Outcome::Block(b)) => assert_eq!((b.status, b.body.len()), (200, 9)),
            other => panic!("{other:?}"),
        }
        let rows = h.rows();
        assert_eq!(
            (
                rows[0].stats.calls,
                rows[0].stats.blocks,
                rows[0].stats.errors
            ),
            (9, 5, 2)
        );
    }

    #[test]
    fn fuel_memory_and_resets() {
        let wat = r#"(module
          (import "env" "set_block" (func $b (param i32 i32 i32)))
          (memory (export "memory") 1)
          (global $n (mut i32) (i32.const 0))
          (func (export "on_request")
            (global.set $n (i32.add (global.get $n) (i32.const 1)))
            (if (i32.eq (global.get $n) (i32.const 1))
              (then (if (i32.eq (memory.grow (i32.const 300)) (i32.const -1))
                (then (call $b (i32.const 507) (i32.const 0) (i32.const 0)) (return)))))
            (if (i32.lt_u (global.get $n) (i32.const 4)) (then (loop $l (br $l))))
            (if (i32.lt_u (global.get $n) (i32.const 7)) (then unreachable))
            (call $b (i32.add (i32.const 200) (global.get $n)) (i32.const 0) (i32.const 0))))"#;
        let mut h = load_one("fuel", wat, Phase::Request).unwrap_or_else(|e| panic!("{e:?}"));
        let status = |r: Result<Vec<Edit>, Outcome>| match r {
            Err(Outcome::Block(b)) => b.status,
            Err(Outcome::Fail) => 503,
            other => panic!("{other:?}"),
        };
        // Memory past the cap: -1 to the module, which goes on.
        assert_eq!(status(run(&mut h, Phase::Request, b"{}")), 507);
        // Out of fuel twice: failures, but no reason to make the instance again.
        assert_eq!(status(run(&mut h, Phase::Request, b"{}")), 503);
        assert_eq!(status(run(&mut h, Phase::Request, b"{}")), 503);
        // Three traps in a row: made again after the third.
        for _ in 0..3 {
            assert_eq!(h.rows()[0].stats.resets, 0);
            assert_eq!(status(run(&mut h, Phase::Request, b"{}")), 503);
        }
        assert_eq!(h.rows()[0].stats.resets, 1);
        // A fresh instance: its counter starts over (grows memory, refused, again).
        assert_eq!(status(run(&mut h, Phase::Request, b"{}")), 507);
        assert_eq!(h.rows()[0].stats.errors, 5);
    }

    #[test]
    fn host_functions_move_a_bounded_number_of_bytes_per_call() {
        // read_request of a 64 KiB request 2,000 times: 128 MiB, over the 64 MiB a call
        // may move; the call fails though the module asks for nothing wrong.
        let wat = r#"(module
          (import "env" "read_request" (func $r (param i32 i32) (result i32)))
          (memory (export "memory") 2)
          (func (export "on_request")
            (local $i i32)
            (loop $l
              (drop (call $r (i32.const 0) (i32.const -1)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))))"#;
        let mut h = load_one("copy", wat, Phase::Request).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            run(&mut h, Phase::Request, &[b'x'; 65536]),
            Err(Outcome::Fail)
        );
        // A small request: fine.
        assert_eq!(run(&mut h, Phase::Request, b"{}"), Ok(vec![]));
        // More than 64 edits in a call: the rest refused (-1), the first 64 kept.
        let wat = r#"(module
          (import "env" "set_request_header" (func $s (param i32 i32 i32 i32) (result i32)))
          (import "env" "set_block" (func $b (param i32 i32 i32)))
          (memory (export "memory") 1)
          (data (i32.const 0) "x-a1")
          (func (export "on_request")
            (local $i i32) (local $refused i32)
            (loop $l
              (if (i32.eq (call $s (i32.const 0) (i32.const 3) (i32.const 3) (i32.const 1)) (i32.const -1))
                (then (local.set $refused (i32.add (local.get $refused) (i32.const 1)))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
            (if (i32.ne (local.get $refused) (i32.const 36))
              (then (call $b (i32.const 500) (i32.const 0) (i32.const 0))))))"#;
        let mut h = load_one("edits", wat, Phase::Request).unwrap_or_else(|e| panic!("{e:?}"));
        let edits = run(&mut h, Phase::Request, b"{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(edits.len(), 64);
    }

    #[test]
    fn edits_only_in_their_phase_and_response_status() {
        let wat = r#"(module
          (import "env" "set_request_header" (func $srh (param i32 i32 i32 i32) (result i32)))
          (import "env" "set_path" (func $sp (param i32 i32) (result i32)))
          (import "env" "set_status" (func $ss (param i32) (result i32)))
          (import "env" "set_response_header" (func $sph (param i32 i32 i32 i32) (result i32)))
          (import "env" "set_block" (func $b (param i32 i32 i32)))
          (memory (export "memory") 1)
          (data (i32.const 0) "x-seen/new")
          (func (export "on_request")
            (drop (call $srh (i32.const 0) (i32.const 6) (i32.const 2) (i32.const 4)))
            (drop (call $sp (i32.const 6) (i32.const 4))))
          (func (export "on_response")
            (local $v i32)
            (local.set $v (i32.add
              (call $srh (i32.const 0) (i32.const 6) (i32.const 2) (i32.const 4))
              (call $ss (i32.const 299))))
            (drop (call $sph (i32.const 0) (i32.const 6) (i32.const 2) (i32.const 4)))
            (if (i32.ne (local.get $v) (i32.const -1))
              (then (call $b (i32.const 500) (i32.const 0) (i32.const 0))))))"#;
        let mut h = load_one("edit", wat, Phase::Request).unwrap_or_else(|e| panic!("{e:?}"));
        let edits = run(&mut h, Phase::Request, b"{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            edits,
            vec![
                Edit::SetHeader("x-seen".into(), b"seen".to_vec()),
                Edit::Target("/new?q".into())
            ]
        );
        let mut r = req();
        assert!(super::super::apply_request(&mut r, edits));
        assert_eq!(r.target, "/new?q");
        let mut h = load_one("edit2", wat, Phase::Response).unwrap_or_else(|e| panic!("{e:?}"));
        let edits = run(&mut h, Phase::Response, b"{}").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            edits,
            vec![
                Edit::Status(299),
                Edit::SetHeader("x-seen".into(), b"seen".to_vec())
            ]
        );
        let mut resp = match parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            &Limits::default(),
            "GET",
        ) {
            Ok(Some(r)) => r,
            other => panic!("{other:?}"),
        };
        super::super::apply_response(&mut resp, edits);
        assert_eq!(resp.status, 299);
        assert!(resp.header("x-seen").is_some());
    }

    #[test]
    fn modules_that_cannot_run_are_refused_with_the_reason() {
        let refuse = |tag: &str, wat: &str, want: &str| {
            let e = match load_one(tag, wat, Phase::Request) {
                Err(e) => e.join("\n"),
                Ok(_) => panic!("{tag} loaded"),
            };
            assert!(e.contains(tag) && e.contains(want), "{tag}: {e}");
        };
        refuse(
            "noexp",
            r#"(module (memory (export "memory") 1) (func (export "other")))"#,
            "exports neither on_request nor on_response",
        );
        refuse(
            "unknown",
            r#"(module (import "env" "nope" (func (param i32))) (func (export "on_request")))"#,
            "env.nope, a function the host does not provide",
        );
        refuse(
            "badtype",
            r#"(module (import "env" "set_action" (func (param i64))) (func (export "on_request")))"#,
            "set_action with type (i64) -> ()",
        );
        refuse(
            "global",
            r#"(module (import "env" "g" (global i32)) (func (export "on_request")))"#,
            "not a function",
        );
        refuse(
            "bigmem",
            r#"(module (memory 512) (func (export "on_request")))"#,
            "cannot be instantiated",
        );
        refuse(
            "startloop",
            r#"(module (func $s (loop $l (br $l))) (start $s) (func (export "on_request")))"#,
            "ran out of fuel",
        );
        let e = load_one("garbage", "(module)", Phase::Request).err();
        assert!(e.is_some());
        // Upstream's WebSocket functions link with the types a module gives them.
        let ok = r#"(module
          (import "mothership" "host_send" (func (param i64 i32 i32) (result i32)))
          (import "mothership" "host_broadcast" (func (param i32 i32) (result i32)))
          (import "mothership" "host_close" (func (param i32)))
          (import "mothership" "host_log" (func (param i32 i32 i32) (result i32)))
          (func (export "on_request")))"#;
        assert!(load_one("ws", ok, Phase::Request).is_ok());
    }
}
