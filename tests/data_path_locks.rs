//! The data path never waits for the admin handler (issue 16 acceptance 4): a call that leaves
//! the store unchanged (slot list, token info, sessions, finds, attribute reads) answers from
//! the published state while the admin mutex is held, as it is by a slow admin request (a
//! key generation in the token, a large reconcile). In-process: the store, token and audit
//! writer keywardd would open, one module connection, no sockets.

mod common;

use common::daemon::Env;
use common::ADMIN;
use keyward::admin::AdminService;
use keyward::audit::writer::{AuditWriter, WriterConfig};
use keyward::context::{Caller, Clock, SystemClock};
use keyward::daemon::config::Config;
use keyward::daemon::pin;
use keyward::daemon::pkcs11::{P11Error, Pkcs11Service};
use keyward::policy::{Member, Principal};
use keyward::store::Store;
use keyward_token::Token;
use keyward_wire::pkcs11::{Pkcs11Request, Pkcs11Response, SessionId};
use parking_lot::Mutex;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

const RING: &str = "projects/payments/keyRings/web";

/// How long the test waits for the data-path calls before it calls them stuck: a guard
/// against hanging the suite, not a measure (they take milliseconds when they do not wait).
const STUCK: Duration = Duration::from_secs(60);

#[test]
fn data_path_reads_while_the_admin_mutex_is_held() {
    let env = Env::new();
    for args in [
        &[
            "project",
            "create",
            "--parent",
            "organizations/acme",
            "payments",
        ][..],
        &["keyring", "create", "--parent", "projects/payments", "web"][..],
    ] {
        let mut all = vec!["--as", ADMIN];
        all.extend_from_slice(args);
        env.offline(&all).ok();
    }
    // This binary's only test, before any thread: the module reads it when the token opens.
    for (name, value) in &env.token.env {
        std::env::set_var(name, value);
    }
    let config = Config::load(&env.config).expect("configuration");
    let pin = pin::load(&config.pin).expect("token PIN");
    let token = Token::open_with(
        &config.token_module,
        config.token_init_args.as_deref(),
        &config.token_label,
        pin,
    )
    .expect("token");
    let token = Arc::new(token);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Store::open(&env.db).expect("store");
    let mut admin = AdminService::with_token(store, Arc::clone(&clock), Arc::clone(&token));
    admin.refresh().expect("published state");
    let published = admin.published();
    let admin = Arc::new(Mutex::new(admin));
    let audit = Arc::new(AuditWriter::open(&env.db, WriterConfig::default()).expect("writer"));
    let svc = Pkcs11Service::new(published, token, audit, clock);
    svc.attach_admin(Arc::clone(&admin));
    let mut caller = Caller::new(Principal::new(Member::from_str(ADMIN).expect("member")));
    caller.instance = Some("data-path-locks".into());
    let mut conn = svc.connect(&caller, None);

    // A slow admin request holds the mutex for the whole of the data-path calls.
    let held = admin.lock();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let no_key_pins = |_: &str| -> Result<Principal, P11Error> { Err(P11Error::from(0xA0)) };
        let mut call = |req: Pkcs11Request| conn.handle(req, &no_key_pins).map_err(u64::from);
        let answers = (|| {
            let slots = match call(Pkcs11Request::ListSlots { configured: vec![] })? {
                Pkcs11Response::Slots(s) => s,
                other => panic!("ListSlots answered {other:?}"),
            };
            let slot = slots
                .iter()
                .find(|s| s.ring == RING)
                .unwrap_or_else(|| panic!("no slot for {RING}: {slots:?}"))
                .slot;
            call(Pkcs11Request::GetTokenInfo { slot })?;
            let session = match call(Pkcs11Request::OpenSession {
                slot,
                read_write: false,
            })? {
                Pkcs11Response::Session(s) => s,
                other => panic!("OpenSession answered {other:?}"),
            };
            let found = call(Pkcs11Request::FindObjects {
                session,
                template: vec![],
            })?;
            call(Pkcs11Request::CloseSession { session })?;
            Ok::<_, u64>((session, found))
        })();
        let _ = tx.send(answers);
    });
    let answered = rx.recv_timeout(STUCK);
    drop(held);
    worker.join().expect("the data-path thread panicked");
    let (session, found) = answered
        .expect(
            "a data-path call (slot list, token info, session, find) waited for the admin mutex",
        )
        .expect("a data-path call was refused");
    assert_eq!(session, SessionId(1));
    assert!(
        matches!(found, Pkcs11Response::Objects(ref o) if o.is_empty()),
        "a ring without keys shows no objects: {found:?}"
    );
}
