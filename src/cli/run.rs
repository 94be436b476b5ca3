//! `mothership run`: load the manifest, start the output writer and the logger, and hand
//! the fleet to the supervisor.

use std::io::IsTerminal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{load, Global, EXIT_FAILED};
use crate::manifest::Role;
use crate::output::{logger, Output};
use crate::supervisor::Style;

pub fn run(g: &Global) -> i32 {
    // Before anything opens a descriptor of its own: what the parent left open is not
    // passed on to the children.
    crate::supervisor::spawn::cloexec_inherited();
    let notify_fd = match g.notify_fd.map(notification_fd).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mothership: {e}");
            return super::EXIT_USAGE;
        }
    };
    if g.tui {
        if let Err(e) = super::dashboard_here() {
            eprintln!("mothership: --tui: {e}");
            return super::EXIT_USAGE;
        }
    }
    let mut m = match load(g) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let (out, writer) = match Output::start() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mothership: cannot start the output writer: {e}");
            return EXIT_FAILED;
        }
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let style = Style {
        colour_stdout: !no_color && std::io::stdout().is_terminal(),
        colour_stderr: !no_color && std::io::stderr().is_terminal() && !g.tui,
        journal_only: g.tui,
    };
    logger::init(g.log_format, Some(out.clone()), style.colour_stderr);
    logger::set_width(m.name_width());
    log::info!(
        "initializing: {} (mothership {}, pid {})",
        m.path.display(),
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );

    // Modules are compiled and instantiated before anything starts: one that cannot run
    // stops the launch (never a fleet running without its guard).
    let payloads = match crate::payload::Payloads::load(&m.modules, std::time::Instant::now()) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                log::error!("failed: {e}");
            }
            out.finish(writer);
            return super::EXIT_CONFIG;
        }
    };
    if !m.modules.is_empty() {
        log::info!("{} WASM module(s) loaded", m.modules.len());
    }
    raise_fd_limit();
    if !m.uplinks.is_empty() {
        if let Err(code) = check_uplinks(&m) {
            out.finish(writer);
            return code;
        }
    }
    if m.flagship.enabled {
        if let Err(code) = elect(&mut m) {
            out.finish(writer);
            return code;
        }
    }
    let socket_dir = socket_dir();
    // The control socket is there; bays dock there; programs with ready = "notify" get
    // their notification socket there (those need it: without them, a folder that cannot
    // be made only means no control socket).
    let needs_dir = m.programs.iter().any(|p| {
        matches!(p.role, Role::Bay { .. }) || matches!(p.ready, crate::manifest::Ready::Notify)
    });
    // A group that may use the control socket: resolved here, where the machine is.
    let group = match &m.control_group {
        None => None,
        Some(g) => match group_id(&g.name) {
            Some(gid) => Some(crate::control::Group { gid, full: g.full }),
            None => {
                log::error!(
                    "failed: control_group {:?}: no such group on this machine",
                    g.name
                );
                out.finish(writer);
                return EXIT_FAILED;
            }
        },
    };
    let dir = prepare_socket_dir(&socket_dir, group.map(|g| g.gid));
    if let Err(e) = &dir {
        // Bays and notifying programs need the folder; a control_group asked for the
        // control socket, and a fleet without it would refuse every operator.
        if needs_dir || group.is_some() {
            log::error!("failed: socket directory {}: {e}", socket_dir.display());
            out.finish(writer);
            return EXIT_FAILED;
        }
        log::warn!(
            "no control socket: socket directory {}: {e}",
            socket_dir.display()
        );
    }
    let control = match dir
        .is_ok()
        .then(|| crate::control::bind(&socket_dir, group))
    {
        None => None,
        Some(Ok(b)) => Some(crate::control::Control::new(b)),
        // Instances of a fleet with a flagship election may share a machine: the first
        // has the control socket, the others run without one.
        Some(Err(crate::control::BindError::Live(_))) if m.flagship.enabled => {
            log::warn!(
                "no control socket: another instance answers on {}; this one runs without (give each instance its own MS_SOCKET_DIR to reach it)",
                socket_dir.join(crate::control::SOCKET).display()
            );
            None
        }
        Some(Err(crate::control::BindError::Live(e))) => {
            log::error!("failed: {e}");
            out.finish(writer);
            return EXIT_FAILED;
        }
        Some(Err(crate::control::BindError::Other(e))) if group.is_some() => {
            log::error!("failed: control_group: {e}");
            out.finish(writer);
            return EXIT_FAILED;
        }
        Some(Err(crate::control::BindError::Other(e))) => {
            log::warn!("no control socket: {e}");
            None
        }
    };
    // What an earlier instance of this manifest left when it was killed is stopped before
    // anything is bound or spawned.
    let record = crate::supervisor::leftovers::Record::start(&socket_dir, &m.path);
    let notifier = crate::supervisor::notify::Notifier::from_env(notify_fd);
    // The dashboard owns the terminal from here until the loop ends; mothership's own
    // lines go to its logs pane meanwhile.
    #[cfg(feature = "tui")]
    let mut term = None;
    #[cfg(feature = "tui")]
    if g.tui {
        match crate::tui::term::Terminal::enter(1) {
            Ok(t) => {
                let _ = logger::divert(true);
                term = Some(t);
            }
            Err(e) => {
                log::error!("failed: cannot set up the terminal for --tui: {e}");
                out.finish(writer);
                return EXIT_FAILED;
            }
        }
    }
    let result = crate::root::run(
        &m,
        payloads,
        control,
        out.clone(),
        style,
        &socket_dir,
        record,
        notifier,
        g.tui,
    );
    #[cfg(feature = "tui")]
    if let Some(mut t) = term.take() {
        t.restore();
        // What was logged after the dashboard's last turn (the end of the landing).
        for line in logger::divert(false) {
            let mut line = line;
            line.push(b'\n');
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
        }
    }
    let code = match result {
        Ok(outcome) => {
            // The loop no longer watches signals: let TERM and INT end the process while
            // the last output is written, should the terminal or log reader be stuck.
            crate::reactor::default_stop_signals();
            if outcome.code == 0 {
                log::info!("landed: {}", outcome.reason);
            } else {
                log::error!("failed: {}", outcome.reason);
            }
            outcome.code
        }
        Err(e) => {
            log::error!("failed: cannot set up the event loop: {e}");
            EXIT_FAILED
        }
    };
    out.finish(writer);
    code
}

/// Decides whether this instance is the flagship; an escort drops the prelaunch jobs.
fn elect(m: &mut crate::manifest::Manifest) -> Result<(), i32> {
    use crate::flagship::{decide_static, Rank};
    use crate::manifest::Election;
    let dir = match m.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (rank, why) = match &m.flagship.election {
        Election::Static(s) => match decide_static(s, &dir, m.flagship.election_timeout) {
            Ok(r) => r,
            Err(e) => {
                log::error!("failed: flagship election: {e}");
                return Err(EXIT_FAILED);
            }
        },
        // Run by the supervisor's loop with a worker thread (refused by the manifest check
        // in a build without the `postgres` feature).
        Election::Postgres { .. } if cfg!(feature = "postgres") => return Ok(()),
        Election::Postgres { .. } => {
            log::error!("failed: flagship election with PostgreSQL is not in this build");
            return Err(EXIT_FAILED);
        }
    };
    match rank {
        Rank::Flagship => log::info!("flagship: this instance runs the prelaunch jobs ({why})"),
        Rank::Escort => {
            log::info!(
                "escort: skipping {} prelaunch job(s), which the flagship runs ({why})",
                m.prelaunch.len()
            );
            m.prelaunch.clear();
        }
    }
    Ok(())
}

/// Checks every uplink before anything starts; `Err` carries the exit status.
fn check_uplinks(m: &crate::manifest::Manifest) -> Result<(), i32> {
    log::info!("checking {} uplink(s)", m.uplinks.len());
    let reports = match crate::uplinks::check_all(&m.uplinks) {
        Ok(Some(r)) => r,
        Ok(None) => {
            log::error!("failed: interrupted while checking uplinks");
            return Err(EXIT_FAILED);
        }
        Err(e) => {
            log::error!("failed: cannot check uplinks: {e}");
            return Err(EXIT_FAILED);
        }
    };
    let lines = crate::uplinks::format_reports(&reports);
    for (r, line) in reports.iter().zip(&lines) {
        if r.result.is_ok() {
            log::info!("uplink {line}");
        } else {
            log::error!("uplink {line}");
        }
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.result.is_err())
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        log::error!(
            "failed: {} uplink(s) unreachable: {}; nothing was started",
            failed.len(),
            failed.join(", ")
        );
        Err(EXIT_FAILED)
    }
}

/// Raises the soft limit on open files to the hard limit: a proxy with many connections
/// needs them, and children inherit the higher limit only if they ask for it themselves.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                log::debug!("open files limit raised from {old} to {}", lim.rlim_max);
            }
        }
    }
}

/// `$MS_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/mothership`, else `/tmp/mothership`.
pub fn socket_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MS_SOCKET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("mothership");
    }
    PathBuf::from("/tmp/mothership")
}

/// The id of the group `name`.
fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: group is plain data getgrnam_r fills; buf outlives the call.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 1 << 16];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, with buf's length.
    let r = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (r == 0 && !found.is_null()).then_some(group.gr_gid)
}

/// Creates the socket directory with mode 0700 (0710 and the group's, when a group may
/// use the control socket), and refuses one owned by another user.
fn prepare_socket_dir(dir: &Path, group: Option<u32>) -> std::io::Result<()> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir)?;
    let meta = std::fs::metadata(dir)?;
    // A shared folder (such as /tmp: sticky, or open for anyone to write) is never made
    // private: it is refused.
    let mode = meta.permissions().mode();
    if existed && mode & 0o1002 != 0 {
        return Err(std::io::Error::other(format!(
            "a folder shared with other users (mode {:o}); give mothership a private one",
            mode & 0o7777
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    match group {
        Some(gid) => {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|e| {
                std::io::Error::other(format!(
                    "cannot give it to the control_group (gid {gid}; mothership's user must be a member): {e}"
                ))
            })?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
        }
        None => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
    }
}

/// The descriptor of `--notify-fd`: open, and not one of the standard streams.
fn notification_fd(n: i32) -> Result<std::fs::File, String> {
    use std::os::fd::FromRawFd;
    if n < 3 {
        return Err(format!(
            "--notify-fd {n}: descriptors 0 to 2 are the standard streams"
        ));
    }
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return Err(format!("--notify-fd {n}: no such open descriptor"));
    }
    // SAFETY: the descriptor is open and, from here on, owned by nothing else in this
    // process (it was inherited; `cloexec_inherited` keeps it from the children).
    Ok(unsafe { std::fs::File::from_raw_fd(n) })
}
