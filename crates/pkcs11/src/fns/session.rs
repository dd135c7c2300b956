//! Session management (3.0 §5.6): open, close, info, login, logout.

use crate::error::Error;
use crate::state::{instance, Login};
use keyward_wire::pkcs11::{Pin, Pkcs11Request, SlotId, UserType};
use pkcs11_sys as sys;

/// C_OpenSession: connects (and logs in again) if need be; `CKR_TOKEN_NOT_PRESENT` when
/// keywardd is not reachable.
pub fn open_session(slot: u64, flags: u64) -> Result<u64, Error> {
    let inst = instance()?;
    let id = inst.slot(slot)?.id;
    if flags & sys::CKF_SERIAL_SESSION == 0 {
        return Err(Error::SessionParallelNotSupported);
    }
    let read_write = flags & sys::CKF_RW_SESSION != 0;
    // 3.0 §5.6: an SO has only read-write sessions (C_Login(CKU_SO) is refused while a
    // read-only one exists, and a read-only one does not open while the SO is logged in).
    if !read_write
        && inst
            .logins
            .lock()
            .get(&id)
            .is_some_and(|l| l.user == UserType::So)
    {
        return Err(Error::SessionReadWriteSoExists);
    }
    inst.open_session(id, read_write)
}

/// C_CloseSession. The session is forgotten locally whatever keywardd answers; one that
/// died with its connection is `CKR_SESSION_HANDLE_INVALID` like any other call on it.
/// Closing the slot's last live session logs the slot out (3.0 §5.6), here as in keywardd:
/// a login kept only here would make C_GetSessionInfo of the next session say
/// `CKS_*_USER_FUNCTIONS` while keywardd finds no private object in it (GnuTLS then skips
/// C_Login and finds nothing).
pub fn close_session(h: u64) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.forget_session(h);
    let closed = inst.call_in_done(&s, Pkcs11Request::CloseSession { session: s.remote });
    {
        let sessions = inst.sessions.lock();
        if sessions.counts(s.slot, s.generation).0 == 0 {
            inst.logins.lock().remove(&s.slot);
        }
    }
    closed
}

/// C_CloseAllSessions.
pub fn close_all_sessions(slot: u64) -> Result<(), Error> {
    let inst = instance()?;
    let id = inst.slot(slot)?.id;
    let handles = inst.sessions.lock().on_slot(id);
    for h in handles {
        match close_session(h) {
            // Dead sessions and a lost connection: those sessions are closed all the same.
            Ok(()) | Err(Error::SessionHandleInvalid(_)) => {}
            Err(Error::Wire(e)) if e.is_disconnect() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What C_GetSessionInfo reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The slot.
    pub slot: u64,
    /// `CKS_*`.
    pub state: u64,
    /// `CKF_SERIAL_SESSION`, `CKF_RW_SESSION`.
    pub flags: u64,
}

/// The `CKS_*` state of a session given its slot's login.
pub fn session_state(read_write: bool, login: Option<UserType>) -> u64 {
    match (read_write, login) {
        (false, None) => sys::CKS_RO_PUBLIC_SESSION,
        (false, Some(_)) => sys::CKS_RO_USER_FUNCTIONS,
        (true, None) => sys::CKS_RW_PUBLIC_SESSION,
        (true, Some(UserType::So)) => sys::CKS_RW_SO_FUNCTIONS,
        (true, Some(_)) => sys::CKS_RW_USER_FUNCTIONS,
    }
}

/// C_GetSessionInfo (answered locally: login state is the instance's own).
pub fn session_info(h: u64) -> Result<SessionInfo, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let login = inst.logins.lock().get(&s.slot).map(|l| l.user);
    let rw = if s.read_write { sys::CKF_RW_SESSION } else { 0 };
    Ok(SessionInfo {
        slot: s.slot.0,
        state: session_state(s.read_write, login),
        flags: sys::CKF_SERIAL_SESSION | rw,
    })
}

/// Maps a `CKU_*`.
pub fn user_type(u: u64) -> Result<UserType, Error> {
    match u {
        sys::CKU_USER => Ok(UserType::User),
        sys::CKU_SO => Ok(UserType::So),
        sys::CKU_CONTEXT_SPECIFIC => Ok(UserType::ContextSpecific),
        other => Err(Error::UserTypeInvalid(other)),
    }
}

/// C_Login (design §1: a service-account key as PIN, or empty / NULL for the pre-login
/// principal). The PIN is kept, zeroised on drop, to log in again after a reconnect.
pub fn login(h: u64, user: u64, pin: Option<Pin>) -> Result<(), Error> {
    let inst = instance()?;
    let user = user_type(user)?;
    let s = inst.session(h)?;
    if user != UserType::ContextSpecific {
        if let Some(current) = inst.logins.lock().get(&s.slot) {
            return Err(if current.user == user {
                Error::UserAlreadyLoggedIn
            } else {
                Error::UserAnotherAlreadyLoggedIn
            });
        }
        if user == UserType::So {
            let generation = s.generation;
            let sessions = inst.sessions.lock();
            let ro = sessions.on_slot(s.slot).into_iter().any(|h| {
                sessions
                    .get(h)
                    .is_some_and(|x| x.generation == generation && !x.read_write)
            });
            if ro {
                return Err(Error::SessionReadOnlyExists);
            }
        }
    }
    inst.call_in_done(
        &s,
        Pkcs11Request::Login {
            slot: s.slot,
            user,
            pin: pin.clone(),
        },
    )?;
    if user != UserType::ContextSpecific {
        inst.logins.lock().insert(s.slot, Login { user, pin });
    }
    Ok(())
}

/// C_Logout: wipes the kept PIN first, whatever keywardd answers.
pub fn logout(h: u64) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let slot: SlotId = s.slot;
    if inst.logins.lock().remove(&slot).is_none() {
        return Err(Error::UserNotLoggedIn);
    }
    inst.call_in_done(&s, Pkcs11Request::Logout { slot })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(session_state(false, None), sys::CKS_RO_PUBLIC_SESSION);
        assert_eq!(
            session_state(false, Some(UserType::User)),
            sys::CKS_RO_USER_FUNCTIONS
        );
        assert_eq!(session_state(true, None), sys::CKS_RW_PUBLIC_SESSION);
        assert_eq!(
            session_state(true, Some(UserType::User)),
            sys::CKS_RW_USER_FUNCTIONS
        );
        assert_eq!(
            session_state(true, Some(UserType::So)),
            sys::CKS_RW_SO_FUNCTIONS
        );
    }

    #[test]
    fn user_types() {
        assert_eq!(user_type(sys::CKU_USER).unwrap(), UserType::User);
        assert_eq!(user_type(sys::CKU_SO).unwrap(), UserType::So);
        assert!(matches!(user_type(7), Err(Error::UserTypeInvalid(7))));
    }
}
