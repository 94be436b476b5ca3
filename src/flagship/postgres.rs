//! Flagship election with PostgreSQL (feature `postgres`), on one worker thread that reports
//! to the loop (see [`super::coord`]).
//!
//! Every instance of a deployment derives the same advisory-lock key: a 64-bit FNV-1a hash
//! of `flagship.app`, or else of the names of the ships and bays, sorted. The instance whose
//! `pg_try_advisory_lock` succeeds is the flagship. It holds the lock (and its session) for
//! the whole prelaunch. It writes its state to the table `mothership_flagship` (one row per
//! key: deployment, state `running`, `ready` or `abort`, time), then publishes the outcome
//! with `NOTIFY mothership_flagship`. Only then does it release the lock.
//!
//! The others are escorts. They `LISTEN` on that channel and wait in
//! `pg_advisory_lock` (no polling; bounded by `prelaunch_timeout` through `lock_timeout`).
//! The lock comes free when the flagship has published, or when its session ended because
//! it died. The escort that gets it reads the row:
//! - `ready` for this deployment: the escort starts its ships;
//! - `abort`: the escort exits 1;
//! - still `running`: the flagship died, and this escort takes over and runs prelaunch.
//!
//! A deployment is told from the previous one by its identifier:
//! - `MOTHERSHIP_DEPLOYMENT` if set;
//! - else the first of a few release variables set by common platforms;
//! - else a hash of the manifest file.
//!
//! An instance that wins the lock and finds `ready` for its own deployment (a restart)
//! skips prelaunch.
//!
//! `sslmode` follows libpq, with TLS by rustls:
//! - `disable`: no TLS.
//! - `allow` and `prefer`: TLS if the server offers it, unverified. These two and
//!   `disable` are refused unless `MOTHERSHIP_ALLOW_INSECURE_POSTGRES_SSLMODE` allows them.
//! - `require`: TLS, unverified, unless `sslrootcert` is given; then it is checked as for
//!   `verify-ca`.
//! - `verify-ca`: the chain is checked against `sslrootcert` (a PEM file, or `system` for
//!   the system's roots; default `~/.postgresql/root.crt`).
//! - `verify-full`: the chain and the host name are checked.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::coord::{Command, Coordinator, Report};
use super::Rank;
use crate::manifest::{Election, Manifest};

const CHANNEL: &str = "mothership_flagship";
/// Advisory lock taken while the table is created (a fixed key: "MS_FLAG1" in ASCII).
const TABLE_LOCK: i64 = 0x4d53_5f46_4c41_4731;
/// How often the flagship checks that its session (and so its lock) is still there.
const SESSION_CHECK: Duration = Duration::from_secs(5);

/// Release identifiers set by common platforms, tried in order after
/// `MOTHERSHIP_DEPLOYMENT`.
const RELEASE_VARS: [&str; 8] = [
    "HEROKU_RELEASE_VERSION",
    "HEROKU_SLUG_COMMIT",
    "SOURCE_VERSION",
    "RAILWAY_DEPLOYMENT_ID",
    "RENDER_GIT_COMMIT",
    "FLY_IMAGE_REF",
    "GITHUB_SHA",
    "GIT_COMMIT",
];

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The advisory-lock key of this deployment's fleet.
pub fn lock_key(m: &Manifest) -> i64 {
    let name = match &m.flagship.app {
        Some(app) => format!("app:{app}"),
        None => {
            let mut names: Vec<&str> = m.programs.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            format!("ships:{}", names.join(","))
        }
    };
    fnv1a(format!("mothership flagship {name}").as_bytes()) as i64
}

/// What tells this deployment from the previous one (see the module documentation).
pub fn deployment_id(m: &Manifest) -> String {
    if let Some(v) = std::env::var("MOTHERSHIP_DEPLOYMENT")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return v;
    }
    for var in RELEASE_VARS {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            return format!("{var}={v}");
        }
    }
    let text = std::fs::read(&m.path).unwrap_or_default();
    log::warn!(
        "flagship election: no MOTHERSHIP_DEPLOYMENT (nor a platform release variable): the deployment is named after the manifest's contents, so a new release with the same manifest will find prelaunch done and skip it"
    );
    format!("manifest:{:016x}", fnv1a(&text))
}

struct Setup {
    url: String,
    key: i64,
    deployment: String,
    election_timeout: Duration,
    prelaunch_timeout: Duration,
}

/// To the loop: send and wake it.
struct Out {
    tx: Sender<Report>,
    waker: Arc<Waker>,
}

impl Out {
    fn send(&self, r: Report) {
        let _ = self.tx.send(r);
        let _ = self.waker.wake();
    }
}

/// Starts the election on its worker thread.
pub fn start(m: &Manifest, waker: Arc<Waker>) -> std::io::Result<Coordinator> {
    let Election::Postgres { url } = &m.flagship.election else {
        return Err(std::io::Error::other("not a PostgreSQL election"));
    };
    let setup = Setup {
        url: url.clone(),
        key: lock_key(m),
        deployment: deployment_id(m),
        election_timeout: m.flagship.election_timeout,
        prelaunch_timeout: m.flagship.prelaunch_timeout,
    };
    log::info!(
        "flagship election: PostgreSQL at {}, key {}, deployment {}",
        crate::manifest::uplink::mask(url),
        setup.key,
        setup.deployment
    );
    let (rtx, rrx) = mpsc::channel();
    let (ctx, crx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("flagship-pg".into())
        .spawn(move || {
            let out = Out { tx: rtx, waker };
            if let Err(e) = run(&setup, &out, &crx) {
                out.send(Report::Failed(e));
            }
        })?;
    Ok(Coordinator::new(rrx, ctx, Some(worker)))
}

fn db_err(what: &str, e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{what}: {} ({})", d.message(), d.code().code()),
        None => format!("{what}: {e}"),
    }
}

fn run(s: &Setup, out: &Out, cmds: &Receiver<Command>) -> Result<(), String> {
    let mut client = connect(&s.url, s.election_timeout)?;
    // Every statement of the election (not the escort's wait below) within the timeout.
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            s.election_timeout.as_millis().clamp(1, i32::MAX as u128)
        ))
        .map_err(|e| db_err("setting up the session", e))?;
    // The flagship's session must outlive the prelaunch (PostgreSQL 14 and later); the
    // server's notices (such as "already exists, skipping") are not for the log.
    let _ = client.batch_execute("SET idle_session_timeout = 0");
    let _ = client.batch_execute("SET client_min_messages = warning");
    ensure_table(&mut client)?;
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&s.key])
        .map_err(|e| db_err("taking the election lock", e))?
        .get(0);
    if got {
        return lead(client, s, out, cmds, "it took the election lock");
    }
    out.send(Report::Elected(
        Rank::Escort,
        format!(
            "another instance holds the election lock; waiting up to {:?} for its prelaunch",
            s.prelaunch_timeout
        ),
    ));
    client
        .batch_execute(&format!(
            "LISTEN {CHANNEL}; SET statement_timeout = 0; SET lock_timeout = {}",
            s.prelaunch_timeout.as_millis().clamp(1, i32::MAX as u128)
        ))
        .map_err(|e| db_err("waiting for the flagship", e))?;
    match client.query_one("SELECT pg_advisory_lock($1)", &[&s.key]) {
        Ok(_) => {}
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Err(format!(
                "the flagship did not publish ready within prelaunch_timeout ({:?})",
                s.prelaunch_timeout
            ))
        }
        Err(e) => return Err(db_err("waiting for the flagship", e)),
    }
    let _ = client.batch_execute(&format!(
        "SET lock_timeout = 0; SET statement_timeout = {}",
        s.election_timeout.as_millis().clamp(1, i32::MAX as u128)
    ));
    {
        use postgres::fallible_iterator::FallibleIterator;
        let mut notes = client.notifications();
        let mut pending = notes.iter();
        while let Ok(Some(n)) = pending.next() {
            log::debug!("flagship notification: {}", n.payload());
        }
    }
    match status(&mut client, s.key)? {
        Some((dep, state)) if dep == s.deployment && state == "ready" => {
            unlock(&mut client, s.key);
            out.send(Report::Ready("the flagship published ready".into()));
            Ok(())
        }
        Some((dep, state)) if dep == s.deployment && state == "abort" => {
            unlock(&mut client, s.key);
            Err("the flagship's prelaunch failed (it published abort)".into())
        }
        _ => lead(
            client,
            s,
            out,
            cmds,
            "the flagship's session ended before it published ready; this escort takes over",
        ),
    }
}

/// Holding the lock: run prelaunch here (or skip it if this deployment's already ran),
/// then publish the outcome and let go.
fn lead(
    mut client: Client,
    s: &Setup,
    out: &Out,
    cmds: &Receiver<Command>,
    why: &str,
) -> Result<(), String> {
    if let Some((dep, state)) = status(&mut client, s.key)? {
        if dep == s.deployment && state == "ready" {
            unlock(&mut client, s.key);
            out.send(Report::Ready(
                "this deployment's prelaunch already ran (a restart)".into(),
            ));
            return Ok(());
        }
    }
    publish(&mut client, s, "running")?;
    out.send(Report::Elected(Rank::Flagship, why.to_string()));
    // The session (and so the lock) is held until the loop says how prelaunch went; it is
    // checked now and then, since losing it frees the lock for an escort to take over.
    let ok = loop {
        match cmds.recv_timeout(SESSION_CHECK) {
            Ok(Command::PrelaunchDone { ok }) => break ok,
            Ok(Command::Release) => {
                // Landing on a signal: no verdict; an escort takes over.
                unlock(&mut client, s.key);
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = client.simple_query("SELECT 1") {
                    return Err(db_err(
                        "lost the election session during prelaunch (an escort may take over)",
                        e,
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
    };
    let state = if ok { "ready" } else { "abort" };
    let r = publish(&mut client, s, state);
    unlock(&mut client, s.key);
    r
}

fn publish(client: &mut Client, s: &Setup, state: &str) -> Result<(), String> {
    client
        .execute(
            "INSERT INTO mothership_flagship (key, deployment, state, updated_at) \
             VALUES ($1, $2, $3, now()) ON CONFLICT (key) DO UPDATE \
             SET deployment = EXCLUDED.deployment, state = EXCLUDED.state, updated_at = now()",
            &[&s.key, &s.deployment, &state],
        )
        .map_err(|e| db_err("writing the flagship state", e))?;
    let payload = format!("{}:{state}:{}", s.key, s.deployment);
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .map_err(|e| db_err("notifying", e))?;
    Ok(())
}

fn status(client: &mut Client, key: i64) -> Result<Option<(String, String)>, String> {
    let rows = client
        .query(
            "SELECT deployment, state FROM mothership_flagship WHERE key = $1",
            &[&key],
        )
        .map_err(|e| db_err("reading the flagship state", e))?;
    Ok(rows.first().map(|r| (r.get(0), r.get(1))))
}

fn unlock(client: &mut Client, key: i64) {
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&key]);
}

fn ensure_table(client: &mut Client) -> Result<(), String> {
    // Instances starting together would race to create it (IF NOT EXISTS is not safe
    // against that): a transaction-level advisory lock of its own puts them in a row.
    let r = client.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({TABLE_LOCK}); \
         CREATE TABLE IF NOT EXISTS mothership_flagship (\
           key bigint PRIMARY KEY, deployment text NOT NULL, state text NOT NULL, \
           updated_at timestamptz NOT NULL DEFAULT now()); COMMIT"
    ));
    match r {
        Ok(()) => Ok(()),
        // Created by an instance that does not take that lock (an older one): harmless.
        Err(e)
            if matches!(
                e.code(),
                Some(&SqlState::UNIQUE_VIOLATION)
                    | Some(&SqlState::DUPLICATE_TABLE)
                    | Some(&SqlState::DUPLICATE_OBJECT)
            ) =>
        {
            let _ = client.batch_execute("ROLLBACK");
            Ok(())
        }
        Err(e) => Err(db_err("creating the table mothership_flagship", e)),
    }
}

/// `sslmode` and `sslrootcert` are handled here (with rustls); the rest of the URL goes to
/// the client's own parser.
fn split_tls_params(url: &str) -> (String, String, Option<String>) {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = "prefer".to_string();
    let mut seen_mode = false;
    let mut root = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        if let Some(v) = kv.strip_prefix("sslmode=") {
            // The manifest check refuses a second one; the first is the one it checked.
            if !seen_mode {
                mode = v.to_ascii_lowercase();
                seen_mode = true;
            }
        } else if let Some(v) = kv.strip_prefix("sslrootcert=") {
            root = Some(v.to_string());
        } else {
            rest.push(kv);
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, mode, root)
}

fn connect(url: &str, timeout: Duration) -> Result<Client, String> {
    let (plain, mode, root) = split_tls_params(url);
    let masked = crate::manifest::uplink::mask(url);
    let mut cfg: Config = plain
        .parse()
        .map_err(|e| format!("election_url {masked}: {e}"))?;
    cfg.connect_timeout(timeout);
    // A connection that dies silently is noticed in about 25 s, not hours.
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(10));
    cfg.keepalives_interval(Duration::from_secs(5));
    cfg.keepalives_retries(3);
    let fail = |e: postgres::Error| db_err(&format!("cannot connect to {masked}"), e);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |verifier: Arc<dyn ServerCertVerifier>| -> Result<_, String> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    };
    let unverified: Arc<dyn ServerCertVerifier> = Arc::new(NoVerify(Arc::clone(&provider)));
    match mode.as_str() {
        "disable" => {
            cfg.ssl_mode(postgres::config::SslMode::Disable);
            cfg.connect(NoTls).map_err(fail)
        }
        "allow" | "prefer" => {
            cfg.ssl_mode(postgres::config::SslMode::Prefer);
            cfg.connect(tls(unverified)?).map_err(fail)
        }
        "require" if root.is_none() => {
            cfg.ssl_mode(postgres::config::SslMode::Require);
            cfg.connect(tls(unverified)?).map_err(fail)
        }
        "require" | "verify-ca" | "verify-full" => {
            let roots = load_roots(root.as_deref())?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("TLS roots: {e}"))?;
            // The system's roots vouch for any public name: only with the name checked
            // (libpq refuses anything else with them).
            let full = mode == "verify-full" || root.as_deref() == Some("system");
            let verifier: Arc<dyn ServerCertVerifier> = if full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            };
            cfg.ssl_mode(postgres::config::SslMode::Require);
            cfg.connect(tls(verifier)?).map_err(fail)
        }
        other => Err(format!("unknown sslmode {other:?}")),
    }
}

fn load_roots(root: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let path = match root {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err("sslrootcert=system: no system root certificates found".into());
            }
            return Ok(store);
        }
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            std::path::Path::new(&home).join(".postgresql/root.crt")
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!(
            "sslrootcert {}: no certificate in it",
            path.display()
        ));
    }
    Ok(store)
}

/// `allow`, `prefer` and `require` without a root: encryption, no authentication (as libpq).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_are_taken_out_of_the_url() {
        let (u, m, r) = split_tls_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        );
        assert_eq!(u, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(m, "verify-full");
        assert_eq!(r.as_deref(), Some("/ca.pem"));
        let (u, m, r) = split_tls_params("postgres://h/db");
        assert_eq!(
            (u.as_str(), m.as_str(), r),
            ("postgres://h/db", "prefer", None)
        );
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a(b"app:a"), fnv1a(b"app:b"));
    }
}
