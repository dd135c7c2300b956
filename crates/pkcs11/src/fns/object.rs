//! Object management (3.0 §5.7): find, attributes, create, copy, destroy, size.
//!
//! Handles are keywardd's, per module instance (design §4); the module passes them through.

use crate::error::Error;
use crate::state::instance;
use keyward_wire::pkcs11::{AttrResult, Attribute, ObjectHandle, Pkcs11Request, Pkcs11Response};
use std::collections::VecDeque;

/// C_FindObjectsInit: keywardd returns every visible match at once; the module pages them.
pub fn find_init(h: u64, template: Vec<Attribute>) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    if inst
        .sessions
        .lock()
        .get(h)
        .is_some_and(|x| x.find.is_some())
    {
        return Err(Error::OperationActive);
    }
    let found = match inst.call_in(
        &s,
        Pkcs11Request::FindObjects {
            session: s.remote,
            template,
        },
    )? {
        Pkcs11Response::Objects(o) => o,
        _ => return Err(Error::UnexpectedResponse("expected Objects")),
    };
    if let Some(x) = inst.sessions.lock().get_mut(h) {
        x.find = Some(VecDeque::from(found));
    }
    Ok(())
}

/// C_FindObjects: up to `max` handles from the cursor.
pub fn find(h: u64, max: usize) -> Result<Vec<u64>, Error> {
    let inst = instance()?;
    inst.session(h)?;
    let mut sessions = inst.sessions.lock();
    let cursor = sessions
        .get_mut(h)
        .and_then(|x| x.find.as_mut())
        .ok_or(Error::OperationNotInitialized)?;
    let n = max.min(cursor.len());
    Ok(cursor.drain(..n).map(|o| o.0).collect())
}

/// C_FindObjectsFinal.
pub fn find_final(h: u64) -> Result<(), Error> {
    let inst = instance()?;
    inst.session(h)?;
    let mut sessions = inst.sessions.lock();
    match sessions.get_mut(h).and_then(|x| x.find.take()) {
        Some(_) => Ok(()),
        None => Err(Error::OperationNotInitialized),
    }
}

/// C_GetAttributeValue: one result per type, in order.
pub fn get_attribute_value(h: u64, object: u64, types: Vec<u64>) -> Result<Vec<AttrResult>, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let n = types.len();
    let request = Pkcs11Request::GetAttributeValue {
        session: s.remote,
        object: ObjectHandle(object),
        types,
    };
    match inst.call_in(&s, request)? {
        Pkcs11Response::Attributes(a) if a.len() == n => Ok(a),
        _ => Err(Error::UnexpectedResponse(
            "expected one attribute result per type",
        )),
    }
}

/// C_SetAttributeValue.
pub fn set_attribute_value(h: u64, object: u64, template: Vec<Attribute>) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.call_in_done(
        &s,
        Pkcs11Request::SetAttributeValue {
            session: s.remote,
            object: ObjectHandle(object),
            template,
        },
    )
}

/// C_GetObjectSize: `None` for `CK_UNAVAILABLE_INFORMATION`.
pub fn object_size(h: u64, object: u64) -> Result<Option<u64>, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    match inst.call_in(
        &s,
        Pkcs11Request::GetObjectSize {
            session: s.remote,
            object: ObjectHandle(object),
        },
    )? {
        Pkcs11Response::Size(n) => Ok(n),
        _ => Err(Error::UnexpectedResponse("expected Size")),
    }
}

/// C_CreateObject.
pub fn create_object(h: u64, template: Vec<Attribute>) -> Result<u64, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let o = inst.call_in_object(
        &s,
        Pkcs11Request::CreateObject {
            session: s.remote,
            template,
        },
    )?;
    Ok(o.0)
}

/// C_CopyObject.
pub fn copy_object(h: u64, object: u64, template: Vec<Attribute>) -> Result<u64, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let o = inst.call_in_object(
        &s,
        Pkcs11Request::CopyObject {
            session: s.remote,
            object: ObjectHandle(object),
            template,
        },
    )?;
    Ok(o.0)
}

/// C_DestroyObject.
pub fn destroy_object(h: u64, object: u64) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.call_in_done(
        &s,
        Pkcs11Request::DestroyObject {
            session: s.remote,
            object: ObjectHandle(object),
        },
    )
}
