//! Attacks on the shared-memory transport (issue 19 item 2, acceptance 3): a client that
//! holds its ring's memfd writes anything anywhere in it at any time, writes after it
//! submitted a request, tries to truncate or grow it, and offers keywardd descriptors of its
//! own; meanwhile a well-behaved client signs through the module, on its own ring, and every
//! signature comes back. The attacker writes with `pwrite` on the memfd (no mapping needed:
//! the same pages).

use super::common::daemon::Env;
use super::common::module::{self, ring_slot, Settings};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keyward_wire::codec::{decode, encode};
use keyward_wire::pkcs11::{Pkcs11Request as R, Pkcs11Response as P};
use keyward_wire::ring::{
    self as wring, AREA_BYTES, REQUEST_AT, RESPONSE_AT, RING_BYTES, W_REQ_LEN, W_REQ_SEQ,
    W_RESP_LEN, W_RESP_SEQ,
};
use keyward_wire::{Client, ClientKind, Hello, Request, RequestBody, Response, ResponseBody};
use rand::RngCore;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";

/// keywardd with ring `web`, key `ec` (EC P-256) and `signer@payments` bound
/// signerVerifier on it; `daemon_lines` go to its `[daemon]` section. Returns the key.
fn world(daemon_lines: &str) -> (Env, String) {
    let mut env = Env::new();
    let signer = env.service_account_offline("signer");
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}{daemon_lines}")).unwrap();
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(
        &format!("{RING}/cryptoKeys/ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:signer@payments",
    );
    (env, signer)
}

/// What keywardd's descriptors point to (`/proc/<pid>/fd`).
fn daemon_fds(env: &Env) -> Vec<String> {
    let dir = format!("/proc/{}/fd", env.pid());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// keywardd's mappings of rings (`/proc/<pid>/maps`; it closes its memfds once mapped).
fn rings_held(env: &Env) -> usize {
    let maps = format!("/proc/{}/maps", env.pid());
    std::fs::read_to_string(&maps)
        .unwrap_or_else(|e| panic!("{maps}: {e}"))
        .lines()
        .filter(|l| l.contains("/memfd:keyward-ring"))
        .count()
}

/// A raw client of the client socket with its ring's descriptors (memfd, to keywardd, to
/// the client).
struct Attacker {
    client: Client,
    memfd: OwnedFd,
    to_daemon: OwnedFd,
    to_client: OwnedFd,
    seq: u64,
    resp_seen: u64,
}

impl Attacker {
    fn new(env: &Env) -> Attacker {
        let hello = Hello::new(ClientKind::Module, None, None);
        let mut client = Client::connect(&env.client_socket, &hello).expect("connect");
        match client.call(RequestBody::Pkcs11(R::OpenRing)) {
            Ok(ResponseBody::Pkcs11(P::Ring { bytes })) => {
                assert_eq!(bytes, RING_BYTES as u64)
            }
            other => panic!("OpenRing: {other:?}"),
        }
        let mut fds = wring::recv_fds(client.stream(), 3)
            .expect("the ring's descriptors")
            .into_iter();
        let (memfd, to_daemon, to_client) = (
            fds.next().unwrap(),
            fds.next().unwrap(),
            fds.next().unwrap(),
        );
        Attacker {
            client,
            memfd,
            to_daemon,
            to_client,
            seq: 0,
            resp_seen: 0,
        }
    }

    fn write(&self, at: usize, bytes: &[u8]) {
        rustix::io::pwrite(&self.memfd, bytes, at as u64).expect("pwrite on the memfd");
    }

    fn word(&self, w: usize) -> u64 {
        let mut b = [0u8; 8];
        rustix::io::pread(&self.memfd, &mut b, (w * 8) as u64).expect("pread");
        u64::from_le_bytes(b)
    }

    fn wake(&self) {
        let _ = rustix::io::write(&self.to_daemon, &1u64.to_ne_bytes());
    }

    /// Submits `payload` the way the module does: bytes, length, sequence, wake-up.
    fn submit(&mut self, payload: &[u8]) {
        self.write(REQUEST_AT, payload);
        self.write(W_REQ_LEN * 8, &(payload.len() as u64).to_le_bytes());
        self.seq += 1;
        self.write(W_REQ_SEQ * 8, &self.seq.to_le_bytes());
        self.wake();
    }

    /// keywardd's next answer in the ring, or `None` if it closed the connection or gave
    /// none within 10 s.
    fn answer(&mut self) -> Option<Response> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let seq = self.word(W_RESP_SEQ);
            if seq != self.resp_seen {
                self.resp_seen = seq;
                let len = usize::try_from(self.word(W_RESP_LEN)).unwrap();
                assert!(len <= AREA_BYTES, "keywardd wrote a length past the area");
                let mut buf = vec![0u8; len];
                rustix::io::pread(&self.memfd, &mut buf, RESPONSE_AT as u64).unwrap();
                return Some(decode(&buf).expect("keywardd's answer decodes"));
            }
            if self.closed() {
                return None;
            }
            let mut fds = [
                rustix::event::PollFd::new(&self.to_client, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(self.client.stream(), rustix::event::PollFlags::IN),
            ];
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.to_client, &mut b);
        }
        None
    }

    /// True once keywardd has closed the socket.
    fn closed(&mut self) -> bool {
        self.client.peer_closed()
    }
}

fn ping(id: u64) -> Vec<u8> {
    encode(&Request {
        id,
        body: RequestBody::Pkcs11(R::Ping),
    })
    .unwrap()
}

#[test]
fn a_client_scribbling_into_its_ring_harms_no_one_else() {
    let excl = module::exclusive();
    let (mut env, signer) = world("");
    // The well-behaved client: the module, on its own ring.
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    let session = p11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(signer.clone().into())))
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    assert_eq!(
        session
            .sign(&Mechanism::EcdsaSha256, key, b"x")
            .unwrap()
            .len(),
        64
    );
    let module_rings = rings_held(&env);
    assert!(
        module_rings >= 1,
        "the module's connection has no shared-memory ring\n{}",
        env.daemon_log()
    );

    let stop = AtomicBool::new(false);
    let (signed, session) = std::thread::scope(|scope| {
        let stop = &stop;
        let worker = scope.spawn(move || {
            let mut n = 0u32;
            // Bounded: at most 100,000 signatures, until the attacks are over.
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let sig = session
                    .sign(&Mechanism::EcdsaSha256, key, &n.to_be_bytes())
                    .unwrap_or_else(|e| panic!("signature {n} during the attacks: {e}"));
                assert_eq!(sig.len(), 64);
                n += 1;
            }
            (n, session)
        });
        let mut rng = rand::thread_rng();

        // 1. Truncate, grow, reseal: the kernel refuses all three; the size stays.
        let mut a = Attacker::new(&env);
        assert!(rustix::fs::ftruncate(&a.memfd, 0).is_err(), "truncated");
        assert!(rustix::fs::ftruncate(&a.memfd, 8).is_err(), "shrunk");
        assert!(
            rustix::fs::ftruncate(&a.memfd, (RING_BYTES * 4) as u64).is_err(),
            "grown"
        );
        assert!(
            rustix::fs::fcntl_add_seals(&a.memfd, rustix::fs::SealFlags::WRITE).is_err(),
            "resealed"
        );
        assert_eq!(
            rustix::fs::fstat(&a.memfd).unwrap().st_size,
            RING_BYTES as i64
        );
        // The ring still works for its owner.
        a.submit(&ping(1));
        let r = a.answer().expect("an answer to a ping through the ring");
        assert_eq!((r.id, r.body), (1, Ok(ResponseBody::Pkcs11(P::Pong))));

        // 2. Writes after submission: a ping, then garbage over it and its length while
        // keywardd reads. keywardd answers its own copy (a pong) or finds the copy malformed
        // and closes this connection; nothing else.
        for round in 0..20u64 {
            a.submit(&ping(100 + round));
            for _ in 0..50 {
                let mut junk = vec![0u8; 64];
                rng.fill_bytes(&mut junk);
                a.write(REQUEST_AT, &junk);
                a.write(W_REQ_LEN * 8, &rng.next_u64().to_le_bytes()[..]);
            }
            match a.answer() {
                Some(r) => {
                    assert_eq!(r.id, 100 + round, "an answer to another request");
                    assert_eq!(r.body, Ok(ResponseBody::Pkcs11(P::Pong)));
                }
                None => {
                    assert!(a.closed(), "no answer, yet the connection is open");
                    a = Attacker::new(&env);
                }
            }
        }

        // 3. Random writes anywhere, header included, with wake-ups: keywardd closes the
        // connection (a length past the area, a message that does not decode) or ignores
        // what is no new request; it never answers garbage with another client's data.
        for _ in 0..30 {
            let mut junk = vec![0u8; 4096];
            rng.fill_bytes(&mut junk);
            let at = (rng.next_u32() as usize) % (RING_BYTES - junk.len());
            a.write(at, &junk);
            a.write(W_REQ_SEQ * 8, &rng.next_u64().to_le_bytes());
            a.wake();
            if a.closed() {
                a = Attacker::new(&env);
            }
        }
        drop(a);

        // 4. Descriptors offered to keywardd (a regular file, a pipe, an unsealed memfd):
        // never taken, never mapped.
        let offered = env.dir().join("offered-to-keywardd");
        std::fs::write(&offered, b"not a ring").unwrap();
        let file = std::fs::File::open(&offered).unwrap();
        let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
        let pipe_name = format!("pipe:[{}]", rustix::fs::fstat(&pipe_r).unwrap().st_ino);
        let unsealed =
            rustix::fs::memfd_create("offered-memfd", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, RING_BYTES as u64).unwrap();
        for fd in [file.as_fd(), pipe_r.as_fd(), unsealed.as_fd()] {
            let hello = Hello::new(ClientKind::Module, None, None);
            let mut c = Client::connect(&env.client_socket, &hello).expect("connect");
            wring::send_fds(c.stream(), &[fd]).unwrap();
            // Its byte puts the socket out of step: keywardd closes it or answers nothing
            // sensible; the call fails either way.
            assert!(
                c.call(RequestBody::Pkcs11(R::Ping)).is_err(),
                "a ping after a stray byte"
            );
            let held = daemon_fds(&env);
            assert!(
                !held.iter().any(|l| l.contains("offered-to-keywardd")
                    || l.contains("offered-memfd")
                    || *l == pipe_name),
                "keywardd kept an offered descriptor: {held:?}"
            );
        }

        stop.store(true, Ordering::Relaxed);
        worker.join().expect("the well-behaved client")
    });
    assert!(signed > 0, "the well-behaved client signed nothing");
    assert!(env.running(), "keywardd died: {}", env.daemon_log());
    // Its connection still works after the attacks.
    assert_eq!(
        session
            .sign(&Mechanism::EcdsaSha256, key, b"y")
            .unwrap()
            .len(),
        64
    );
    drop(session);
    drop(p11);
    drop(excl);
}

#[test]
fn without_a_ring_the_module_keeps_to_the_socket() {
    let excl = module::exclusive();
    // A uid cap on buffered bytes below one ring: keywardd refuses it, the module falls back.
    let (env, signer) = world(&format!(
        "max_buffered_bytes_per_uid = {}\n",
        RING_BYTES / 2
    ));
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    let session = p11.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(signer.into())))
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    for i in 0..20u8 {
        assert_eq!(
            session
                .sign(&Mechanism::EcdsaSha256, key, &[i])
                .unwrap()
                .len(),
            64
        );
    }
    assert_eq!(rings_held(&env), 0, "{}", env.daemon_log());
    drop(session);
    drop(p11);
    drop(excl);
}
