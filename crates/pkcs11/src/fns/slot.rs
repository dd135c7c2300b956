//! Slot and token management (3.0 §5.5): the fixed slot list, slot and token info, mechanisms.

use crate::error::Error;
use crate::state::instance;
use keyward_wire::pkcs11::{MechanismInfo, Pkcs11Request, Pkcs11Response, SlotId, TokenInfo};
use pkcs11_sys as sys;

/// C_GetSlotList: the list fixed at C_Initialize; with `token_present`, only while keywardd
/// is reachable (every token is absent while it is down).
pub fn slot_list(token_present: bool) -> Result<Vec<u64>, Error> {
    let inst = instance()?;
    if token_present && !inst.daemon_up() {
        return Ok(Vec::new());
    }
    Ok(inst.slots.iter().map(|s| s.id.0).collect())
}

/// What C_GetSlotInfo reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// `slotDescription`: the key ring's full name.
    pub description: String,
    /// `CKF_REMOVABLE_DEVICE`, plus `CKF_TOKEN_PRESENT` while keywardd is reachable.
    pub flags: u64,
}

/// C_GetSlotInfo.
pub fn slot_info(slot: u64) -> Result<SlotInfo, Error> {
    let inst = instance()?;
    let s = inst.slot(slot)?;
    let present = if inst.daemon_up() {
        sys::CKF_TOKEN_PRESENT
    } else {
        0
    };
    Ok(SlotInfo {
        description: s.ring.clone(),
        flags: sys::CKF_REMOVABLE_DEVICE | present,
    })
}

/// C_GetTokenInfo: keywardd's current description, with this instance's session counts.
/// `CKR_TOKEN_NOT_PRESENT` while keywardd is down.
pub fn token_info(slot: u64) -> Result<TokenInfo, Error> {
    let inst = instance()?;
    let s = inst.slot(slot)?;
    let mut info = match inst.call(Pkcs11Request::GetTokenInfo { slot: s.id })? {
        Pkcs11Response::TokenInfo(t) => t,
        _ => return Err(Error::UnexpectedResponse("expected TokenInfo")),
    };
    let generation = inst.generation();
    let (all, rw) = inst.sessions.lock().counts(s.id, generation);
    info.session_count = Some(all);
    info.rw_session_count = Some(rw);
    // Never write-protected (design §4): creation is denied per call instead.
    info.flags &= !sys::CKF_WRITE_PROTECTED;
    Ok(info)
}

/// C_GetMechanismList.
pub fn mechanism_list(slot: u64) -> Result<Vec<u64>, Error> {
    let inst = instance()?;
    let id = inst.slot(slot)?.id;
    match inst.call(Pkcs11Request::GetMechanismList { slot: id })? {
        // Never offered, whatever the daemon says (design §4 "No side doors").
        Pkcs11Response::Mechanisms(m) => {
            Ok(m.into_iter().filter(|m| *m != sys::CKM_RSA_X_509).collect())
        }
        _ => Err(Error::UnexpectedResponse("expected Mechanisms")),
    }
}

/// C_GetMechanismInfo.
pub fn mechanism_info(slot: u64, mechanism: u64) -> Result<MechanismInfo, Error> {
    let inst = instance()?;
    let id: SlotId = inst.slot(slot)?.id;
    if mechanism == sys::CKM_RSA_X_509 {
        return Err(Error::MechanismInvalid(mechanism));
    }
    match inst.call(Pkcs11Request::GetMechanismInfo {
        slot: id,
        mechanism,
    })? {
        Pkcs11Response::MechanismInfo(m) => Ok(m),
        _ => Err(Error::UnexpectedResponse("expected MechanismInfo")),
    }
}
