//! The handshake: admitting a connection under the limits, deciding who is calling, joining
//! or making a module instance.

use super::*;

impl Shared {
    /// Registers a new connection, or says which limit refuses it.
    pub(super) fn admit(
        &self,
        id: u64,
        kind: SocketKind,
        uid: Option<u32>,
        stream: &UnixStream,
    ) -> Result<(), (&'static str, usize)> {
        let l = &self.settings.limits;
        let (global, per_uid) = match kind {
            SocketKind::Client => (
                ("max_connections", l.max_connections),
                ("max_connections_per_uid", l.max_connections_per_uid),
            ),
            SocketKind::Admin => (
                ("max_admin_connections", l.max_admin_connections),
                (
                    "max_admin_connections_per_uid",
                    l.max_admin_connections_per_uid,
                ),
            ),
        };
        let mut conns = self.conns.lock();
        if conns.per_uid.get(&(kind, uid)).copied().unwrap_or(0) >= per_uid.1 {
            return Err(per_uid);
        }
        if conns.count(kind) >= global.1 {
            return Err(global);
        }
        let clone = stream.try_clone().map_err(|e| {
            tracing::error!(error = %e, "cannot register a connection");
            global
        })?;
        conns.by_id.insert(
            id,
            ConnEntry {
                stream: clone,
                kind,
                uid,
            },
        );
        *conns.per_socket.entry(kind).or_default() += 1;
        *conns.per_uid.entry((kind, uid)).or_default() += 1;
        Ok(())
    }

    /// Who is calling (design §1), or why the handshake is refused.
    pub(super) fn principal(
        &self,
        hello: &Hello,
        peer: Option<&PeerCred>,
    ) -> Result<Principal, Refusal> {
        let uid = peer.map(|p| p.uid);
        if let Some(key) = &hello.credentials {
            return self.authenticate_key(key.expose_secret(), peer);
        }
        let Some(peer) = peer else {
            return Ok(Principal::anonymous());
        };
        let mapped = {
            let mut svc = self.service.lock();
            get_mapping(svc.store_mut().connection(), peer.uid)
        };
        match mapped {
            Ok(Some(member)) => Ok(Principal::new(member)),
            Ok(None) => Ok(Principal {
                member: Member::UnixUid(peer.uid),
                unix_gids: peer.groups.clone(),
            }),
            Err(e) => {
                tracing::error!(error = %e, uid, "cannot read the uid mapping");
                Err(Refusal {
                    rv: rv::CKR_DEVICE_ERROR,
                    message: "keywardd cannot read its store; see its log".into(),
                })
            }
        }
    }

    pub(super) fn authenticate_key(
        &self,
        key: &str,
        peer: Option<&PeerCred>,
    ) -> Result<Principal, Refusal> {
        let uid = peer.map(|p| p.uid);
        let key_id = credentials::key_id_of(key)
            .unwrap_or("(malformed)")
            .to_owned();
        // Check, evaluation and record under one hold of the throttle (lock order: the
        // throttle, then the service mutex), so parallel attempts are counted one by one.
        let mut throttle = self.throttle.lock();
        if let Some(left) = throttle.locked(uid, Instant::now()) {
            drop(throttle);
            tracing::warn!(uid, key_id, "service-account key refused: peer locked out");
            // Without the key id: the key was not checked, and identical refusals coalesce.
            self.audit_auth_refusal(
                None,
                peer,
                rv::CKR_PIN_LOCKED,
                "peer uid locked out after too many wrong service-account keys; the key was \
                 not checked",
            );
            return Err(Refusal {
                rv: rv::CKR_PIN_LOCKED,
                message: format!(
                    "too many wrong service-account keys from this user: try again in {} s",
                    left.as_secs().max(1)
                ),
            });
        }
        let found = {
            let mut svc = self.service.lock();
            credentials::authenticate(svc.store_mut().connection(), key)
        };
        let delay = match &found {
            Ok(Some(_)) => {
                throttle.success(&key_id, uid);
                Duration::ZERO
            }
            Ok(None) => throttle.failure(&key_id, uid, Instant::now()),
            Err(_) => Duration::ZERO,
        };
        drop(throttle);
        match found {
            Ok(Some(account)) => Ok(Principal::new(Member::ServiceAccount(account))),
            Ok(None) => {
                tracing::warn!(uid, key_id, "wrong service-account key");
                self.audit_auth_refusal(
                    Some(&key_id),
                    peer,
                    rv::CKR_PIN_INCORRECT,
                    "wrong, revoked or deleted service-account key",
                );
                std::thread::sleep(delay);
                Err(Refusal {
                    rv: rv::CKR_PIN_INCORRECT,
                    message: format!(
                        "the service-account key {key_id} (KEYWARD_CREDENTIALS) is wrong, \
                         revoked, or its account is deleted"
                    ),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check a service-account key");
                Err(Refusal {
                    rv: rv::CKR_DEVICE_ERROR,
                    message: "keywardd cannot read its store; see its log".into(),
                })
            }
        }
    }

    /// Records a refused service-account key (`rv`: wrong, or its peer locked out) through
    /// the audit writer, where identical refusals coalesce and count against the peer uid's
    /// audit rate (design §6, §9); without a PKCS#11 service, in the store directly.
    fn audit_auth_refusal(
        &self,
        key_id: Option<&str>,
        peer: Option<&PeerCred>,
        rv: u64,
        why: &str,
    ) {
        let record = NewRecord {
            time_ms: self.clock.now_ms(),
            principal: peer.map_or_else(
                || Member::Anonymous.to_string(),
                |p| Member::UnixUid(p.uid).to_string(),
            ),
            peer_pid: peer.and_then(|p| p.pid),
            peer_uid: peer.map(|p| p.uid),
            instance: None,
            action: "auth.serviceAccountKey".into(),
            resource: key_id.map(|id| format!("serviceAccountKey:{id}")),
            outcome: Outcome::Denied,
            rv,
            detail: Some(why.into()),
            request_id: None,
        };
        if let Some(p11) = &self.pkcs11 {
            if let Err(e) = p11.audit().submit(record) {
                tracing::error!(error = %e, "cannot audit a refused service-account key");
            }
            return;
        }
        let mut svc = self.service.lock();
        let written = svc.store_mut().write().and_then(|tx| {
            audit::append(&tx, &record)?;
            Ok(tx.commit()?)
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot audit a wrong service-account key");
        }
    }

    /// The instance of this connection: new, or the one whose secret it presented (from the
    /// same pid only). A new module instance over a cap is refused (design §9).
    pub(super) fn instance(
        &self,
        hello: &Hello,
        peer: Option<&PeerCred>,
    ) -> Result<(InstanceSecret, Joined), Refusal> {
        let pid = peer.and_then(|p| p.pid);
        let uid = peer.map(|p| p.uid);
        let module = hello.client == ClientKind::Module;
        let mut table = self.instances.lock();
        if let Some(secret) = &hello.instance_secret {
            let key = *secret.expose_secret();
            if let Some(inst) = table.by_secret.get_mut(&key) {
                if inst.pid != pid || pid.is_none() {
                    return Err(Refusal {
                        rv: rv::CKR_DEVICE_ERROR,
                        message: "this instance secret belongs to another process".into(),
                    });
                }
                inst.conns += 1;
                inst.detached = None;
                let joined = Joined {
                    id: inst.id.clone(),
                    key: Some(key),
                };
                return Ok((secret.clone(), joined));
            }
        }
        let (fresh, id) = Instances::fresh_secret();
        // A module presenting a secret this keywardd does not know (an earlier keywardd gave
        // it, design §4): the instance keeps it, bound to this pid, so the object handles
        // derived from it stay valid. Without a pid to bind it to, a new secret.
        let bytes = match &hello.instance_secret {
            Some(secret) if module && pid.is_some() => *secret.expose_secret(),
            _ => fresh,
        };
        if !module {
            return Ok((InstanceSecret::from_bytes(bytes), Joined { id, key: None }));
        }
        // This uid's instances that are done with go first: the same process making a new
        // instance finalised its old one.
        let forgotten = table.sweep(self.grace(), Some(uid), pid);
        let l = &self.settings.limits;
        let refused = if table.per_uid.get(&uid).copied().unwrap_or(0) >= l.max_instances_per_uid {
            Some(("max_instances_per_uid", l.max_instances_per_uid))
        } else if table.by_secret.len() >= l.max_instances {
            Some(("max_instances", l.max_instances))
        } else {
            None
        };
        if let Some((limit, max)) = refused {
            drop(table);
            self.forget(&forgotten);
            self.limit_log
                .lock()
                .refused(limit, max, uid, "a new module instance");
            return Err(Refusal {
                rv: rv::CKR_DEVICE_MEMORY,
                message: format!(
                    "keywardd refuses a new module instance: {} ([daemon] {limit} = {max}); \
                     instances are freed when their processes exit",
                    if limit == "max_instances" {
                        "it holds its limit of instances"
                    } else {
                        "this user holds its limit of instances"
                    }
                ),
            });
        }
        let pidfd = pid
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
            });
        let born = table.made;
        table.by_secret.insert(
            bytes,
            Instance {
                id: id.clone(),
                pid,
                uid,
                conns: 1,
                detached: None,
                pidfd,
                born,
            },
        );
        *table.per_uid.entry(uid).or_default() += 1;
        table.made += 1;
        drop(table);
        self.forget(&forgotten);
        Ok((
            InstanceSecret::from_bytes(bytes),
            Joined {
                id,
                key: Some(bytes),
            },
        ))
    }
}
