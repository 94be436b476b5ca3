//! Flagship election with a real PostgreSQL (feature `postgres`): a cluster made in a temp
//! dir with initdb and pg_ctl (run as the `postgres` user when the tests run as root).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::secs;
use crate::support::*;

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql")
}

fn as_postgres(bin: &Path, args: &[&str]) -> std::process::Output {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.args(args).output().unwrap()
}

/// A PostgreSQL cluster on a free loopback port, stopped on drop.
pub struct Pg {
    pub port: u16,
    pub data: PathBuf,
    pub bin: PathBuf,
    _dir: Dir,
}

impl Pg {
    /// `ssl`: (server cert, key) to enable TLS with.
    pub fn start(tag: &str, ssl: Option<(&Path, &Path)>) -> Pg {
        let dir = Dir::new(tag);
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.join("data");
        let bin = pg_bin();
        fs::create_dir_all(dir.join("sock")).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let st = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir.path)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let o = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.join("sock").display()
        );
        if let Some((cert, key)) = ssl {
            // The server reads its key as the postgres user, with tight permissions.
            let c = data.join("server.crt");
            let k = data.join("server.key");
            fs::copy(cert, &c).unwrap();
            fs::copy(key, &k).unwrap();
            fs::set_permissions(&k, fs::Permissions::from_mode(0o600)).unwrap();
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                Command::new("chown")
                    .args(["postgres"])
                    .arg(&c)
                    .arg(&k)
                    .status()
                    .unwrap();
            }
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = dir.join("pg.log");
        let o = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&o.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        );
        Pg {
            port,
            data,
            bin,
            _dir: dir,
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

/// A manifest for an election: prelaunch `pre` and one ship that records when it started.
fn election_manifest(d: &Dir, url: &str, pre: &str, extra: &str) {
    let out = d.join("out");
    fs::create_dir_all(&out).unwrap();
    let o = out.display();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.flagship]
enabled = true
election = "postgres"
election_url = "{url}"
election_timeout = "10s"
{extra}
[[mothership.prelaunch]]
name = "migrate"
command = "sh"
args = ["-c", "echo $$ >> {o}/prelaunch; {pre}; date +%s%N > {o}/prelaunch-done"]
[[fleet.web]]
name = "app"
command = "sh"
args = ["-c", "date +%s%N >> {o}/started; exec sleep 1000"]
"#
        ),
    );
}

fn instance(d: &Dir, n: usize) -> Fleet {
    let err = d.join(&format!("i{n}.err"));
    let out = d.join(&format!("i{n}.out"));
    let mut f = Fleet::start_with(d, &[], |c| {
        // Instances on one machine: each its own socket folder (one control socket each).
        c.env("MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE", "1")
            .env("MOTHERSHIP_DEPLOYMENT", "release-1")
            .env("MS_SOCKET_DIR", d.join(&format!("sock{n}")))
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
    });
    f.out = out;
    f.err = err;
    f
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn three_instances_one_flagship_escorts_start_after_ready() {
    let pg = Pg::start("pg-three", None);
    let d = Dir::new("election-three");
    election_manifest(&d, &pg.url("sslmode=disable"), "sleep 1.5", "");
    let mut fleets: Vec<Fleet> = (0..3).map(|i| instance(&d, i)).collect();
    let started = d.join("out/started");
    let ok = wait_for(secs(30), || lines(&started).len() >= 3);
    // The escorts' lines reach their files through the output writer, a moment after
    // the ships they started may have written theirs.
    let escorted = |logs: &[String]| {
        logs.iter()
            .filter(|l| l.contains("escort: the flagship published ready"))
            .count()
    };
    let mut logs: Vec<String> = Vec::new();
    wait_for(secs(10), || {
        logs = fleets.iter().map(|f| f.stderr()).collect();
        escorted(&logs) >= 2
    });
    assert!(ok, "{logs:#?}");
    assert_eq!(lines(&d.join("out/prelaunch")).len(), 1, "{logs:#?}");
    let done: u128 = lines(&d.join("out/prelaunch-done"))[0].parse().unwrap();
    for s in lines(&started) {
        assert!(
            s.parse::<u128>().unwrap() >= done,
            "a ship started before ready: {logs:#?}"
        );
    }
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("flagship: this instance runs"))
            .count(),
        1,
        "{logs:#?}"
    );
    assert_eq!(escorted(&logs), 2, "{logs:#?}");
    // A restart of the same deployment finds it ready and skips prelaunch.
    let mut late = instance(&d, 3);
    assert!(
        wait_for(secs(20), || lines(&started).len() >= 4),
        "{}",
        late.stderr()
    );
    assert!(late.logged("already ran"), "{}", late.stderr());
    assert_eq!(lines(&d.join("out/prelaunch")).len(), 1);
    for f in fleets.iter_mut().chain(std::iter::once(&mut late)) {
        f.signal(libc::SIGTERM);
        assert_eq!(f.wait(secs(15)), Some(0), "{}", f.stderr());
    }
}

#[test]
fn a_failed_prelaunch_makes_every_instance_exit_1() {
    let pg = Pg::start("pg-abort", None);
    let d = Dir::new("election-abort");
    election_manifest(&d, &pg.url("sslmode=disable"), "sleep 1; exit 3", "");
    let mut fleets: Vec<Fleet> = (0..3).map(|i| instance(&d, i)).collect();
    for f in &mut fleets {
        assert_eq!(f.wait(secs(30)), Some(1), "{}", f.stderr());
    }
    let logs: Vec<String> = fleets.iter().map(|f| f.stderr()).collect();
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("published abort"))
            .count(),
        2,
        "{logs:#?}"
    );
    assert!(lines(&d.join("out/started")).is_empty());
}

/// The flagship stops with `sig` during prelaunch: the escort takes over.
fn takeover_after(sig: i32, tag: &str) {
    let pg = Pg::start(tag, None);
    let d = Dir::new(&format!("election-{tag}"));
    election_manifest(&d, &pg.url("sslmode=disable"), "sleep 3", "");
    let mut a = instance(&d, 0);
    assert!(
        wait_for(secs(20), || a
            .stderr()
            .contains("flagship: this instance runs")),
        "{}",
        a.stderr()
    );
    let mut b = instance(&d, 1);
    assert!(
        wait_for(secs(20), || b.stderr().contains("escort: another instance")),
        "{}",
        b.stderr()
    );
    a.signal(sig);
    assert!(a.wait(secs(15)).is_some(), "{}", a.stderr());
    let started = d.join("out/started");
    assert!(
        wait_for(secs(30), || !lines(&started).is_empty()),
        "{}",
        b.stderr()
    );
    assert!(b.logged("takes over"), "{}", b.stderr());
    assert_eq!(
        lines(&d.join("out/prelaunch")).len(),
        2,
        "the escort ran prelaunch again"
    );
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait(secs(15)), Some(0), "{}", b.stderr());
}

#[test]
fn an_escort_takes_over_when_the_flagship_dies_during_prelaunch() {
    takeover_after(libc::SIGKILL, "pg-takeover-kill");
}

#[test]
fn a_flagship_stopped_by_a_signal_hands_over_instead_of_aborting() {
    takeover_after(libc::SIGTERM, "pg-takeover-term");
}

#[test]
fn escorts_give_up_after_prelaunch_timeout_and_signals_work_while_waiting() {
    let pg = Pg::start("pg-timeout", None);
    let d = Dir::new("election-timeout");
    election_manifest(
        &d,
        &pg.url("sslmode=disable"),
        "sleep 20",
        "prelaunch_timeout = \"1s\"",
    );
    let mut a = instance(&d, 0);
    assert!(
        wait_for(secs(20), || a
            .stderr()
            .contains("flagship: this instance runs")),
        "{}",
        a.stderr()
    );
    let mut b = instance(&d, 1);
    assert_eq!(b.wait(secs(15)), Some(1), "{}", b.stderr());
    assert!(
        b.logged("did not publish ready within prelaunch_timeout"),
        "{}",
        b.stderr()
    );
    // Another escort (same fleet, so the same lock; a long prelaunch_timeout), stopped by
    // a signal while it waits: it lands at once, without a verdict.
    let d2 = Dir::new("election-timeout-2");
    election_manifest(&d2, &pg.url("sslmode=disable"), "sleep 20", "");
    let mut c = instance(&d2, 2);
    assert!(
        wait_for(secs(20), || c.stderr().contains("escort: another instance")),
        "{}",
        c.stderr()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        c.wait(Duration::ZERO).is_none(),
        "still waiting: {}",
        c.stderr()
    );
    c.signal(libc::SIGTERM);
    // Within election_timeout (10 s): an escort does not wait for its blocked worker.
    assert_eq!(c.wait(secs(8)), Some(0), "{}", c.stderr());
    a.signal(libc::SIGTERM);
    assert!(a.wait(secs(30)).is_some());
}

#[test]
fn insecure_sslmodes_are_refused_unless_allowed() {
    let d = Dir::new("election-insecure");
    election_manifest(
        &d,
        "postgres://postgres@127.0.0.1:1/postgres?sslmode=prefer",
        "true",
        "",
    );
    let (code, _, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("sslmode=prefer may connect without TLS"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mothership"))
        .arg("clearance")
        .current_dir(&d.path)
        .env("MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE", "yes")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA and a server certificate for `localhost` only (no IP address in it), and a second,
/// unrelated CA.
fn make_certs(d: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// One instance, a prelaunch that writes a file and a job: exit status and stderr.
fn elect_once(url: &str, tag: &str) -> (i32, String, bool) {
    let d = Dir::new(tag);
    let ran = d.join("ran");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership.flagship]\nenabled = true\nelection = \"postgres\"\nelection_url = \"{url}\"\nelection_timeout = \"5s\"\n[[mothership.prelaunch]]\nname = \"p\"\ncommand = \"touch\"\nargs = [\"{}\"]\n[[fleet.web]]\nname = \"j\"\ncommand = \"true\"\noneshot = true\n",
            ran.display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mothership"))
        .current_dir(&d.path)
        .env("NO_COLOR", "1")
        .env("MOTHERSHIP_DEPLOYMENT", tag)
        .env("MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        ran.exists(),
    )
}

#[test]
fn tls_sslmodes_against_a_server_with_a_test_ca() {
    let certs = Dir::new("pg-certs");
    make_certs(&certs.path);
    let pg = Pg::start(
        "pg-tls",
        Some((&certs.join("server.crt"), &certs.join("server.key"))),
    );
    // Only TLS connections are let in, so a pass proves TLS was used.
    fs::write(
        pg.data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )
    .unwrap();
    let o = as_postgres(
        &pg.bin.join("pg_ctl"),
        &["-D", pg.data.to_str().unwrap(), "reload"],
    );
    assert!(o.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let ca = certs.join("ca.pem").display().to_string();
    let other = certs.join("other-ca.pem").display().to_string();
    let at = |host: &str, q: &str| format!("postgres://postgres@{host}:{}/postgres?{q}", pg.port);

    let (code, err, ran) = elect_once(
        &at(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "tls-full",
    );
    assert_eq!((code, ran), (0, true), "verify-full by name: {err}");
    let (code, err, ran) = elect_once(
        &at(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "tls-full-ip",
    );
    assert_eq!((code, ran), (1, false), "{err}");
    assert!(
        err.contains("cannot connect"),
        "the name does not match: {err}"
    );
    let (code, err, _) = elect_once(
        &at("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        "tls-ca",
    );
    assert_eq!(code, 0, "verify-ca ignores the name: {err}");
    let (code, err, _) = elect_once(
        &at(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={other}"),
        ),
        "tls-other-ca",
    );
    assert_eq!(code, 1, "another CA: {err}");
    let (code, err, _) = elect_once(&at("127.0.0.1", "sslmode=require"), "tls-require");
    assert_eq!(code, 0, "require: {err}");
    let (code, err, _) = elect_once(
        &at("127.0.0.1", &format!("sslmode=require&sslrootcert={other}")),
        "tls-require-root",
    );
    assert_eq!(code, 1, "require with a root checks the chain: {err}");
    let (code, err, _) = elect_once(&at("127.0.0.1", "sslmode=disable"), "tls-disable");
    assert_eq!(code, 1, "plain text is refused by this server: {err}");
    let (code, err, _) = elect_once(&at("127.0.0.1", "sslmode=prefer"), "tls-prefer");
    assert_eq!(code, 0, "prefer uses TLS when offered: {err}");
}
