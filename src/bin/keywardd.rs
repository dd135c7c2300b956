//! keywardd: the only process that holds the backing token's PIN and talks to the token
//! (design §1). It loads the configuration and the PIN, locks and opens the store, logs in to
//! the token, reconciles the store's object map with the token (reporting drift, deleting
//! nothing), destroys versions whose grace has ended, signs the audit chain head with a key in
//! the token (every 1,000 records or 10 s, and at a clean stop), and serves the admin and
//! client sockets until SIGTERM or SIGINT.
//!
//! Every refusal to start is one line on stderr, `keywardd: ...`, saying what to fix, and a
//! documented exit code (see [`AFTER_HELP`]). Logs go to stderr through `tracing` (filter:
//! `KEYWARD_LOG`, default `info`); they never carry a PIN, a key or a secret.
#![forbid(unsafe_code)]

use clap::Parser;
use keyward::admin::AdminService;
use keyward::audit::checkpoint::{
    spawn_checkpointer, CheckpointConfig, Checkpointer, CheckpointerThread,
};
use keyward::audit::coalesce::Limits as AuditLimits;
use keyward::audit::writer::{AuditWriter, WriterConfig};
use keyward::context::{Clock, SystemClock};
use keyward::daemon::config::{Config, PinSource};
use keyward::daemon::pin::{self, PinError};
use keyward::daemon::pkcs11::Pkcs11Service;
use keyward::daemon::server::{self, Settings, Shared, SocketKind};
use keyward::daemon::{FileClock, StoreLock};
use keyward::store::Store;
use keyward_token::{Token, TokenError};
use parking_lot::Mutex;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Exit codes (each refusal is one line on stderr saying what to fix):
  0  clean stop (SIGTERM or SIGINT)
  1  anything else (e.g. a socket cannot be bound)
  2  bad configuration or usage
  3  wrong token PIN: do not restart automatically, a real HSM locks its token after a few
     wrong PINs (systemd: RestartPreventExitStatus=3)
  4  PKCS#11 module or token not found
  5  store unusable: missing, corrupt, of a newer schema, or held by another keywardd
  6  the PIN file is open to its group or others (chmod 600 it)

Logging: KEYWARD_LOG (an env filter, e.g. debug or keyward=debug), default
info,cryptoki::mechanism=off.";

/// Exit codes (documented in AFTER_HELP and the README).
const EXIT_OTHER: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_WRONG_PIN: u8 = 3;
const EXIT_NO_TOKEN: u8 = 4;
const EXIT_STORE: u8 = 5;
const EXIT_PIN_PERMISSIONS: u8 = 6;

/// How long a clean stop waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// keywardd: Keyward's daemon, the only process that holds the backing token's PIN
#[derive(Debug, Parser)]
#[command(name = "keywardd", version, after_help = AFTER_HELP)]
struct Cli {
    /// The configuration file (TOML: [store], [token], [admin], [client], [daemon])
    #[arg(long, short = 'c', value_name = "PATH")]
    config: PathBuf,
}

/// Why keywardd did not start (or stopped): an exit code and one line for stderr.
struct Refusal {
    code: u8,
    message: String,
}

fn refuse(code: u8, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(&cli.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refusal { code, message }) => {
            // One line, whatever the causes printed.
            let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("keywardd: {line}");
            ExitCode::from(code)
        }
    }
}

fn init_logging() {
    // cryptoki logs every mechanism it cannot name as an error while the token is probed.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,cryptoki::mechanism=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(config_path: &Path) -> Result<(), Refusal> {
    let config = Config::load(config_path).map_err(|e| refuse(EXIT_CONFIG, e.0))?;
    let pin = pin::load(&config.pin).map_err(|e| match e {
        PinError::Permissions { .. } => refuse(EXIT_PIN_PERMISSIONS, e.to_string()),
        _ => refuse(EXIT_CONFIG, e.to_string()),
    })?;
    let admin_gid = config
        .admin_group
        .as_deref()
        .map(server::resolve_group)
        .transpose()
        .map_err(|e| refuse(EXIT_CONFIG, e))?;

    let (_lock, store) = open_store(&config.store_path)?;
    let token = open_token(&config, pin)?;

    let clock: Arc<dyn Clock> = match &config.clock_file {
        Some(path) => {
            tracing::warn!(path = %path.display(), "TEST CLOCK in use ([testing] clock_file): never in production");
            Arc::new(FileClock::new(path.clone()))
        }
        None => Arc::new(SystemClock),
    };
    let token = Arc::new(token);
    let service = Arc::new(Mutex::new(AdminService::with_token(
        store,
        Arc::clone(&clock),
        Arc::clone(&token),
    )));
    reconcile(&service);
    report_duplicate_names(&service);
    if let Err(e) = service.lock().refresh() {
        return Err(refuse(
            EXIT_STORE,
            format!("cannot read the policy and key catalog: {}", e.message),
        ));
    }
    // The audit chain head is signed by a key in the token every 1,000 records or
    // audit_checkpoint_secs (10 s), stored in the token at most that often, checked every
    // second, and once more at a clean stop (design §6).
    let checkpointer = Checkpointer::open(
        &config.store_path,
        Arc::clone(&token),
        CheckpointConfig::every(Duration::from_secs(config.audit_checkpoint_secs)),
    )
    .map_err(|e| {
        refuse(
            EXIT_OTHER,
            format!("cannot set up audit checkpoints in the token: {e}"),
        )
    })?;
    let head_overdue = checkpointer.overdue();
    let checkpoints = spawn_checkpointer(Arc::new(checkpointer), Duration::from_secs(1));
    // The data path's audit records (design §6): group commit in the background; when it
    // cannot persist, new PKCS#11 operations are refused.
    let writer = AuditWriter::open(
        &config.store_path,
        WriterConfig {
            on_commit: Some(checkpoints.notifier()),
            // A signed head the token has not stored for 10x its interval refuses new
            // operations as an audit outage does.
            hold: Some(head_overdue),
            limits: AuditLimits {
                window: Duration::from_millis(config.audit_coalesce_window_ms),
                rate: config.audit_records_per_uid_per_second,
                burst: config.audit_burst_per_uid,
            },
            ..WriterConfig::default()
        },
    )
    .map_err(|e| refuse(EXIT_STORE, format!("cannot start the audit writer: {e}")))?;
    let writer = Arc::new(writer);
    let published = service.lock().published();
    // Session objects left in the token belong to no module session now (design §4).
    if let Err(e) = token.destroy_session_objects() {
        return Err(refuse(
            EXIT_OTHER,
            format!("cannot remove orphaned session objects from the token: {e}"),
        ));
    }
    let pkcs11 = Pkcs11Service::new(published, token, Arc::clone(&writer), clock);
    pkcs11.attach_admin(Arc::clone(&service));
    pkcs11.set_session_object_quota(config.session_objects_per_instance);
    pkcs11.set_unseen_ring_cap(config.max_unseen_configured_rings);
    pkcs11.set_limits(config.resources);

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| refuse(EXIT_OTHER, format!("cannot handle signal {signal}: {e}")))?;
    }
    // Bound before any thread of ours starts (bind sets the process umask for a moment).
    let admin = server::bind(&config.admin_socket, SocketKind::Admin, 0o660, admin_gid)
        .map_err(|e| refuse(EXIT_OTHER, e))?;
    let client = server::bind(&config.client_socket, SocketKind::Client, 0o666, None)
        .map_err(|e| refuse(EXIT_OTHER, e))?;

    let destroyer = {
        let service = Arc::clone(&service);
        let stop = Arc::clone(&stop);
        let period = Duration::from_secs(config.destroy_check_secs);
        std::thread::Builder::new()
            .name("destroy-due".into())
            .spawn(move || destroy_loop(&service, &stop, period))
            .map_err(|e| refuse(EXIT_OTHER, format!("cannot start the destroy thread: {e}")))?
    };

    raise_nofile(&config.limits);
    let shared = Shared::new(
        Arc::clone(&service),
        Settings {
            limits: config.limits.clone(),
            shutdown_grace: SHUTDOWN_GRACE,
        },
        config.admin_socket.clone(),
        Some(pkcs11),
    );
    tracing::info!(pid = std::process::id(), "keywardd ready");
    server::serve(&shared, vec![admin, client], &stop);
    drop(shared);
    if destroyer.join().is_err() {
        tracing::error!("the destroy thread panicked");
    }
    // Shutdown order: checkpointer stop → writer shutdown → final checkpoint (in close).
    checkpoints.stop();
    if let Err(e) = writer.shutdown() {
        tracing::error!(error = %e, "the audit writer could not write its last records");
    }
    close(service, &checkpoints);
    tracing::info!("keywardd stopped");
    Ok(())
}

/// Signs the audit chain head at a clean stop (after the last request).
fn final_checkpoint(checkpoints: &CheckpointerThread) {
    match checkpoints.checkpointer().checkpoint_now() {
        Ok(Some(c)) => tracing::info!(seq = c.seq, "audit chain head signed at stop"),
        Ok(None) => tracing::info!("audit chain head already signed"),
        Err(e) => tracing::error!(error = %e, "cannot sign the audit chain head at stop"),
    }
}

/// Locks and opens the store. The lock is taken first, so two daemons never both open it.
fn open_store(path: &Path) -> Result<(StoreLock, Store), Refusal> {
    let shown = path.display();
    if !path.exists() {
        return Err(refuse(
            EXIT_STORE,
            format!(
                "no store at {shown}: create it with `keywardctl --db {shown} init --org ORG \
                 --admin MEMBER`, or fix [store] path"
            ),
        ));
    }
    let lock = match StoreLock::acquire(path) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(refuse(
                EXIT_STORE,
                format!(
                    "the store {shown} is held by another keywardd (lock {}): stop that one \
                     first",
                    keyward::daemon::lock_path(path).display()
                ),
            ))
        }
        Err(e) => {
            return Err(refuse(
                EXIT_STORE,
                format!(
                    "cannot lock the store {shown} ({}: {e}): check the directory's \
                     permissions",
                    keyward::daemon::lock_path(path).display()
                ),
            ))
        }
    };
    // Design §9 "Files": the store holds the audit log, every binding and the MAC key of
    // service-account keys; only keywardd's user reads it (set after the open, which may
    // create the -wal and -shm with the store's mode).
    let restrict = || {
        keyward::store::restrict_files(path).map_err(|e| {
            refuse(
                EXIT_STORE,
                format!("the store must be private to keywardd's user: {e}"),
            )
        })
    };
    let store = Store::open(path).map_err(|e| {
        refuse(
            EXIT_STORE,
            format!(
                "the store {shown} is unusable: {e}: restore it from a backup, or fix \
                 [store] path"
            ),
        )
    })?;
    for (file, mode) in restrict()? {
        tracing::warn!(file = %file.display(), mode = format!("{mode:04o}"), "store file was open to its group or others: set to 0600");
    }
    Ok((lock, store))
}

fn open_token(config: &Config, pin: secrecy::SecretString) -> Result<Token, Refusal> {
    let module = config.token_module.display();
    Token::open_with(
        &config.token_module,
        config.token_init_args.as_deref(),
        &config.token_label,
        pin,
    )
    .map_err(|e| match e {
        TokenError::Load { .. } => refuse(
            EXIT_NO_TOKEN,
            format!("{e}: fix [token] module (is the PKCS#11 library installed?)"),
        ),
        TokenError::TokenNotFound { .. } | TokenError::AmbiguousToken { .. } => refuse(
            EXIT_NO_TOKEN,
            format!("{e} ({module}): fix [token] label, or initialise the token"),
        ),
        TokenError::PinIncorrect { .. } => {
            let source = match &config.pin {
                PinSource::File(p) => format!("the PIN file {}", p.display()),
                PinSource::Env(v) => format!("the environment variable {v}"),
            };
            refuse(
                EXIT_WRONG_PIN,
                format!(
                    "{e}: fix {source}; keywardd does not retry, as an HSM locks its token \
                     after a few wrong PINs"
                ),
            )
        }
        other => refuse(
            EXIT_OTHER,
            format!(
                "cannot open the token '{}' in {module}: {other}",
                config.token_label
            ),
        ),
    })
}

/// Labels and CKA_IDs that several keys of a ring hold (stores from before design §9's
/// uniqueness rule) are logged at start, not refused (finds return the oldest first).
fn report_duplicate_names(service: &Mutex<AdminService>) {
    match service.lock().name_duplicates() {
        Ok(lines) => {
            for line in lines {
                tracing::warn!("{line}");
            }
        }
        Err(e) => tracing::error!(error = %e.message, "cannot check key names for duplicates"),
    }
}

/// Compares the store's object map with the token at start; drift is logged (and audited by
/// the handler as `keywardd`). Nothing is deleted.
fn reconcile(service: &Mutex<AdminService>) {
    let started = Instant::now();
    match service.lock().reconcile() {
        Ok(report) if report.orphans.is_empty() && report.missing.is_empty() => {
            tracing::info!(took_ms = started.elapsed().as_millis(), %report, "reconciliation: no drift");
        }
        Ok(report) => {
            for o in &report.orphans {
                tracing::warn!(object = %o, "reconciliation: token object with no version (left in place)");
            }
            for m in &report.missing {
                tracing::warn!(version = %m, "reconciliation: version whose token object is gone");
            }
            tracing::warn!(%report, "reconciliation found drift; nothing was deleted");
        }
        Err(e) => tracing::error!(error = %e.message, "reconciliation failed"),
    }
}

/// Destroys versions whose grace has ended and expired import jobs' wrapping pairs, now and
/// then every `period`, until `stop`.
fn destroy_loop(service: &Mutex<AdminService>, stop: &AtomicBool, period: Duration) {
    loop {
        match service.lock().destroy_due() {
            Ok(done) => {
                for name in done {
                    tracing::info!(version = %name, "destroyed: grace period over");
                }
            }
            Err(e) => tracing::error!(error = %e.message, "scheduled destroy failed"),
        }
        match service.lock().expire_import_jobs() {
            Ok(done) => {
                for name in done {
                    tracing::info!(job = %name, "import job expired: wrapping pair destroyed");
                }
            }
            Err(e) => tracing::error!(error = %e.message, "import job expiry failed"),
        }
        let until = Instant::now() + period;
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100).min(period));
        }
    }
}

/// Closes the store and the token once no request is running. If a connection thread still
/// holds the service (a request past the grace period), wait for the lock up to the grace
/// period and exit while holding it, so no request starts anew.
fn close(service: Arc<Mutex<AdminService>>, checkpoints: &CheckpointerThread) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut service = service;
    loop {
        match Arc::try_unwrap(service) {
            Ok(mutex) => {
                final_checkpoint(checkpoints);
                drop(mutex.into_inner());
                return;
            }
            Err(still_shared) if Instant::now() < deadline => {
                service = still_shared;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(still_shared) => {
                let guard = still_shared.try_lock_for(SHUTDOWN_GRACE);
                if guard.is_none() {
                    tracing::warn!("a request is still running after the grace period");
                }
                final_checkpoint(checkpoints);
                tracing::info!("keywardd stopped");
                std::process::exit(0);
            }
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every connection holds two descriptors
/// (its stream and the clone shutdown uses) and every module instance a pidfd, so the
/// default limits need far more than the usual soft limit of 1,024. Warns if even the hard
/// limit is short of what the `[daemon]` limits need.
fn raise_nofile(limits: &keyward::daemon::config::Limits) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    if lim.current != lim.maximum {
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE to its hard limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let need = count(limits.max_connections)
        .saturating_add(count(limits.max_admin_connections))
        .saturating_mul(2)
        .saturating_add(count(limits.max_instances))
        .saturating_add(64);
    if now < need {
        tracing::warn!(
            nofile = now,
            need,
            "RLIMIT_NOFILE is below what the [daemon] limits need (2 per connection, 1 per \
             module instance, + 64): connections past it will be refused; raise it \
             (systemd: LimitNOFILE=) or lower max_connections and max_instances"
        );
    }
}
