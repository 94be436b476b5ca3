//! Command line: clap definitions, one function per subcommand, and the mapping of every
//! outcome to a documented exit status.

mod chart;
pub mod ctl;
mod init;
mod preflight;
mod run;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::manifest::{self, Loaded, Manifest};
use crate::output::logger::LogFormat;
use crate::sysinit;

/// Exit status: the fleet landed cleanly.
pub const EXIT_OK: i32 = 0;
/// Exit status: the fleet failed (critical program failed for good, prelaunch failed, a
/// critical program could not be spawned) or mothership could not start.
pub const EXIT_FAILED: i32 = 1;
/// Exit status: bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the manifest is invalid (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "mothership",
    version,
    propagate_version = true,
    about = "Launch a fleet of processes, keep it alive, land it cleanly",
    disable_version_flag = true,
    args_conflicts_with_subcommands = false
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Manifest file [default: ship-manifest.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Run only ships and bays with one of these tags (comma separated or repeated)
    #[arg(long, value_name = "TAGS", value_delimiter = ',', global = true)]
    pub only: Vec<String>,
    /// Do not run ships and bays with any of these tags (comma separated or repeated)
    #[arg(long, value_name = "TAGS", value_delimiter = ',', global = true)]
    pub except: Vec<String>,
    /// Format of mothership's own log lines
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Print the version and exit
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version, global = true)]
    version: Option<bool>,
    /// Act as the machine's init even though /proc is mounted (PID 1 only)
    #[arg(
        long,
        global = true,
        conflicts_with = "no_init",
        help_heading = "Init mode"
    )]
    pub init: bool,
    /// Never act as the machine's init, even as PID 1 without /proc
    #[arg(long, global = true, help_heading = "Init mode")]
    pub no_init: bool,
    /// Init mode: set the machine's hostname
    #[arg(long, value_name = "NAME", global = true, help_heading = "Init mode")]
    pub hostname: Option<String>,
    /// Init mode: what to do once the fleet has landed
    #[arg(
        long,
        value_enum,
        value_name = "ACTION",
        global = true,
        help_heading = "Init mode"
    )]
    pub at_landing: Option<crate::sysinit::AtLanding>,
    /// Init mode: write a non-zero exit status to this x86 I/O port before powering off
    /// (qemu's isa-debug-exit device)
    #[arg(long, value_name = "PORT", value_parser = crate::sysinit::parse_port, global = true, help_heading = "Init mode")]
    pub exit_port: Option<u16>,
    /// Run the fleet with the dashboard in the terminal (its output goes to the logs pane)
    #[arg(long, global = true)]
    pub tui: bool,
    /// Write a newline to this open descriptor once every program is ready, then close it
    /// (s6 and OpenRC's notify=fd:N)
    #[arg(long, value_name = "N", global = true)]
    pub notify_fd: Option<i32>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Launch the fleet and supervise it until it lands (the default)
    Run,
    /// Validate the manifest and print a summary
    #[command(alias = "validate")]
    Clearance,
    /// Print binds, routes in match order, static dirs and the launch order
    Chart,
    /// Validate the manifest and check that every uplink is reachable
    Preflight,
    /// Show the running fleet's programs (through its control socket)
    Status {
        /// Print the fleet's answer as JSON (an object with a `programs` array)
        #[arg(long)]
        json: bool,
        /// The control socket (default: control.sock in the socket folder)
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
    /// Ask the running fleet to reopen its log files (after an external logrotate)
    Reopen {
        /// The control socket (default: control.sock in the socket folder)
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
    /// The dashboard, attached to the running fleet through its control socket
    Top {
        /// The control socket (default: control.sock in the socket folder)
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
    /// Start stopped programs of the running fleet (names, groups, tags or `all`)
    Start(Operate),
    /// Stop programs of the running fleet gracefully; they stay stopped until started
    Stop(Operate),
    /// Restart programs of the running fleet gracefully, in dependency order
    Restart(Operate),
    /// Send a signal to the main process of programs of the running fleet
    Signal {
        /// A program's name, a group, a tag, or `all`
        #[arg(value_name = "TARGET")]
        target: String,
        /// The signal: a name (`HUP`, `SIGUSR1`) or a number
        #[arg(value_name = "SIGNAL")]
        signal: String,
        /// Print the fleet's answer as JSON
        #[arg(long)]
        json: bool,
        /// The control socket (default: control.sock in the socket folder)
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
    /// Print a program's recent output from the running fleet (both streams, each line
    /// with the time it was read), and follow it with -f
    Logs {
        /// The program's name
        #[arg(value_name = "NAME")]
        name: String,
        /// How many of the last lines
        #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 100)]
        lines: u64,
        /// Go on printing its new lines as they come, until interrupted or the fleet lands
        #[arg(short, long)]
        follow: bool,
        /// Only the lines that match this regular expression
        #[arg(long, value_name = "REGEX")]
        grep: Option<String>,
        /// Only the lines read within this long (10m, 1h30m, 45s)
        #[arg(long, value_name = "DURATION", value_parser = crate::manifest::units::parse_duration)]
        since: Option<std::time::Duration>,
        /// Print each line as a JSON object
        #[arg(long)]
        json: bool,
        /// The control socket (default: control.sock in the socket folder)
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
    },
    /// Write a commented starter manifest (or one made from a Procfile)
    Init {
        /// Overwrite an existing manifest
        #[arg(short, long)]
        force: bool,
        /// Make the manifest from this Procfile: one program per line, `web` behind the
        /// edge on $PORT
        #[arg(long, value_name = "PROCFILE")]
        from: Option<std::path::PathBuf>,
    },
}

/// What `start`, `stop` and `restart` take.
#[derive(Args, Debug)]
struct Operate {
    /// Programs' names, groups (`group:NAME` to say so), tags (`tag:NAME`), or `all`
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,
    /// Print the fleet's answer as JSON
    #[arg(long)]
    json: bool,
    /// Return once every program named is running (start, restart) or stopped (stop)
    #[arg(short, long)]
    wait: bool,
    /// How long --wait waits before it gives up (exit 1)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::manifest::units::parse_duration)]
    timeout: std::time::Duration,
    /// The control socket (default: control.sock in the socket folder)
    #[arg(long, value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
}

/// Entry point of the binary: parses the command line and returns the exit status.
pub fn main() -> i32 {
    main_with(std::env::args_os())
}

pub fn main_with(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
            if sysinit::wanted(false, false) == Ok(true) {
                // A bad kernel command line must not panic the kernel.
                sysinit::shutdown(code, &sysinit::Settings::default());
            }
            return code;
        }
    };
    let g = cli.global;
    match sysinit::wanted(g.init, g.no_init) {
        Err(msg) => {
            eprintln!("mothership: {msg}");
            EXIT_USAGE
        }
        Ok(true) => {
            let s = sysinit::Settings {
                hostname: g.hostname.clone(),
                at_landing: g.at_landing.unwrap_or(sysinit::AtLanding::Poweroff),
                exit_port: g.exit_port,
            };
            sysinit::install_panic_hook(&s);
            sysinit::boot(&s);
            let code = command(cli.command, &g);
            sysinit::shutdown(code, &s)
        }
        Ok(false) => {
            let init_only = [
                ("--hostname", g.hostname.is_some()),
                ("--at-landing", g.at_landing.is_some()),
                ("--exit-port", g.exit_port.is_some()),
            ];
            if let Some((flag, _)) = init_only.iter().find(|f| f.1) {
                eprintln!(
                    "mothership: {flag} applies in init mode only (PID 1 without /proc, or --init)"
                );
                return EXIT_USAGE;
            }
            command(cli.command, &g)
        }
    }
}

fn command(c: Option<Command>, g: &Global) -> i32 {
    let g = g.clone();
    match c.unwrap_or(Command::Run) {
        Command::Run => run::run(&g),
        Command::Clearance => clearance(&g),
        Command::Chart => chart::chart(&g),
        Command::Preflight => preflight::preflight(&g),
        Command::Init { force, from } => init::init(&g, force, from.as_deref()),
        Command::Status { json, socket } => ctl::status(socket.as_deref(), json),
        Command::Reopen { socket } => ctl::reopen(socket.as_deref()),
        Command::Top { socket } => match dashboard_here() {
            #[cfg(feature = "tui")]
            Ok(()) => crate::tui::top::top(&ctl::socket(socket.as_deref())),
            #[cfg(not(feature = "tui"))]
            Ok(()) => {
                let _ = socket;
                EXIT_USAGE
            }
            Err(e) => {
                eprintln!("mothership: top: {e}");
                EXIT_USAGE
            }
        },
        Command::Start(o) => operate(&o, "start"),
        Command::Stop(o) => operate(&o, "stop"),
        Command::Restart(o) => operate(&o, "restart"),
        Command::Logs {
            name,
            lines,
            follow,
            grep,
            since,
            json,
            socket,
        } => ctl::logs(
            socket.as_deref(),
            &ctl::LogsAsk {
                name,
                lines,
                follow,
                grep,
                since,
            },
            json,
        ),
        Command::Signal {
            target,
            signal,
            json,
            socket,
        } => ctl::operate(
            socket.as_deref(),
            "signal",
            std::slice::from_ref(&target),
            Some(&signal),
            json,
            None,
        ),
    }
}

fn operate(o: &Operate, cmd: &str) -> i32 {
    let wait = o.wait.then_some(o.timeout);
    ctl::operate(o.socket.as_deref(), cmd, &o.targets, None, o.json, wait)
}

/// Whether the dashboard can run here: built in, and a terminal on stdin and stdout.
fn dashboard_here() -> Result<(), &'static str> {
    if !cfg!(feature = "tui") {
        return Err("this build has no dashboard (it was built without the `tui` feature)");
    }
    // SAFETY: isatty on the standard descriptors.
    let tty = unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 };
    if !tty {
        return Err("the dashboard needs a terminal on stdin and stdout (`mothership status` prints the same without one)");
    }
    Ok(())
}

pub(crate) fn manifest_path(g: &Global) -> PathBuf {
    g.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(manifest::DEFAULT_FILE))
}

/// Loads the manifest, printing diagnostics to stderr. `Err` carries the exit status.
pub(crate) fn load(g: &Global) -> Result<Manifest, i32> {
    let path = manifest_path(g);
    let loaded: Loaded = match manifest::load(&path, &|k: &str| std::env::var(k).ok()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mothership: {e}");
            if !path.exists() && g.config.is_none() {
                eprintln!("mothership: run `mothership init` to write a starter manifest, or pass -c FILE");
            }
            return Err(EXIT_CONFIG);
        }
    };
    if !loaded.diags.list.is_empty() {
        eprint!("{}", loaded.render_diags());
    }
    match loaded.manifest {
        Some(m) => {
            let mut m = m;
            for note in m.filter_tags(&g.only, &g.except) {
                eprintln!("mothership: {note}");
            }
            Ok(m)
        }
        None => {
            let n = loaded.diags.error_count();
            eprintln!(
                "mothership: {} is invalid ({n} error{})",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            Err(EXIT_CONFIG)
        }
    }
}

fn clearance(g: &Global) -> i32 {
    let m = match load(g) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // Every module is compiled and instantiated as `run` would.
    if let Err(errors) = crate::payload::Payloads::load(&m.modules, std::time::Instant::now()) {
        for e in errors {
            eprintln!("mothership: {e}");
        }
        return EXIT_CONFIG;
    }
    let count = |f: &dyn Fn(&manifest::Program) -> bool| m.programs.iter().filter(|p| f(p)).count();
    let ships = count(&|p| p.kind() == "ship");
    let jobs = count(&|p| p.kind() == "job");
    let bays = count(&|p| p.kind() == "bay");
    let routes: usize = m.programs.iter().map(|p| p.routes.len()).sum();
    println!("{}: cleared for launch", m.path.display());
    println!(
        "  {ships} ship{}, {bays} bay{}, {jobs} job{}, {} prelaunch job{}",
        plural(ships),
        plural(bays),
        plural(jobs),
        m.prelaunch.len(),
        plural(m.prelaunch.len())
    );
    println!(
        "  {} bind{}, {routes} route{}",
        m.binds.len(),
        plural(m.binds.len()),
        plural(routes)
    );
    if !m.uplinks.is_empty() || !m.static_dirs.is_empty() || !m.modules.is_empty() {
        println!(
            "  {} uplink{}, {} static dir{}, {} module{}",
            m.uplinks.len(),
            plural(m.uplinks.len()),
            m.static_dirs.len(),
            plural(m.static_dirs.len()),
            m.modules.len(),
            plural(m.modules.len())
        );
    }
    EXIT_OK
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_work_before_and_after_the_subcommand() {
        for args in [
            &["mothership", "-c", "x.toml", "clearance"][..],
            &["mothership", "clearance", "-c", "x.toml"][..],
            &["mothership", "validate", "--config=x.toml"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(
                cli.global.config.as_deref(),
                Some(std::path::Path::new("x.toml"))
            );
            assert!(matches!(cli.command, Some(Command::Clearance)));
        }
        let cli = Cli::try_parse_from(["mothership", "--only", "a,b", "--only", "c", "--except=d"])
            .unwrap();
        assert_eq!(cli.global.only, ["a", "b", "c"]);
        assert_eq!(cli.global.except, ["d"]);
        assert!(cli.command.is_none());
    }
}
