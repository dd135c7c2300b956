//! Object management calls (PKCS#11 3.0 §5.7, §5.14): which kind of object a handle names
//! (a session object of [`super::session_objects`], an import job of [`super::byok`], a
//! certificate of [`super::certs`], or a version's key object of [`super::objects`]), then
//! that kind's function. Creation and generation go to session objects when the template
//! asks for one (`CKA_TOKEN` FALSE), else to [`super::create`].
//!
//! A handle whose session object belongs to another principal's session, or to a broken
//! home session, is `CKR_OBJECT_HANDLE_INVALID` (`CKR_KEY_HANDLE_INVALID` where a key is
//! expected), as if it did not exist.

use super::ck::*;
use super::gate;
use super::instance::{ObjectRef, SessionObj};
use super::session_objects::{self, Lookup};
use super::ClientConnection;
use super::P11Error;
use keyward_wire::pkcs11::{Attribute, Mechanism, ObjectHandle, Pkcs11Response, SessionId};

/// What a handle names for one request, looked up once in the instance's one handle space
/// ([`super::instance::ObjectRef`]).
pub(super) enum Named {
    /// A session object the session sees.
    Session(Box<SessionObj>),
    /// A session object the session may not see (another slot's; private and not logged in).
    Hidden,
    /// An import job's private key (whether the principal sees it is the job's business).
    Job,
    /// A certificate (likewise).
    Cert,
    /// A version's key object, or nothing the instance knows: the key path decides.
    Key,
}

/// A C_GenerateKey (`public` `None`) or C_GenerateKeyPair call, named once for the token
/// and session-object paths.
#[derive(Clone, Copy)]
pub(super) struct Generation<'a> {
    pub(super) action: &'static str,
    pub(super) mechanism: &'a Mechanism,
    pub(super) public: Option<&'a [Attribute]>,
    pub(super) secret: &'a [Attribute],
}

impl ClientConnection {
    /// The kind of object `handle` names for `session`: a session object (seen or not), or
    /// else, once a handle an earlier keywardd gave is adopted (design §4), an import job's
    /// key, a certificate or a key object.
    pub(super) fn named(
        &self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<Named, P11Error> {
        match self.session_object(session, handle)? {
            Lookup::Seen(o) => return Ok(Named::Session(o)),
            Lookup::Hidden => return Ok(Named::Hidden),
            Lookup::No => {}
        }
        self.adopt_in(session, handle)?;
        Ok(match self.inst.lock().named(handle) {
            Some(ObjectRef::Job(_)) => Named::Job,
            Some(ObjectRef::Cert(_)) => Named::Cert,
            _ => Named::Key,
        })
    }

    /// An import job's key refused for `action` (`rv`, audited) if the principal sees the
    /// job, else `invalid`: the key only unwraps.
    pub(super) fn refuse_job(
        &self,
        session: SessionId,
        handle: ObjectHandle,
        action: &str,
        rv: u64,
        invalid: u64,
    ) -> P11Error {
        match self.job_refusal(session, handle, action, rv, invalid) {
            Ok(refused) => refused.unwrap_or_else(|| P11Error::from(invalid)),
            Err(e) => e,
        }
    }

    /// `C_GetAttributeValue` (§5.7).
    pub(super) fn get_attribute_value(
        &mut self,
        session: SessionId,
        object: ObjectHandle,
        types: &[u64],
    ) -> Result<Pkcs11Response, P11Error> {
        match self.session_object(session, object)? {
            Lookup::Seen(o) => self.session_object_attributes(session, &o, types),
            Lookup::Hidden => Err(CKR_OBJECT_HANDLE_INVALID.into()),
            Lookup::No => self.get_attributes(session, object, types),
        }
    }

    /// `C_SetAttributeValue` (§5.7).
    pub(super) fn set_attribute_value(
        &mut self,
        session: SessionId,
        object: ObjectHandle,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_SetAttributeValue";
        match self.named(session, object)? {
            Named::Session(o) => self.set_session_object_attributes(object, &o, template),
            Named::Hidden => Err(CKR_OBJECT_HANDLE_INVALID.into()),
            Named::Job => Err(self.refuse_job(
                session,
                object,
                ACTION,
                CKR_ACTION_PROHIBITED,
                CKR_OBJECT_HANDLE_INVALID,
            )),
            Named::Cert => match self.cert_of(session, object)? {
                Some((ctx, cert)) => self.set_cert_attributes(session, &ctx, &cert, template),
                None => Err(CKR_OBJECT_HANDLE_INVALID.into()),
            },
            Named::Key => self.set_attributes(session, object, template),
        }
    }

    /// `C_CopyObject` (§5.7): never for a Keyward key (design §4 "No side doors").
    pub(super) fn copy_object(
        &mut self,
        session: SessionId,
        object: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        match self.named(session, object)? {
            // Session objects report CKA_COPYABLE=FALSE.
            Named::Session(_) => return Err(CKR_ACTION_PROHIBITED.into()),
            Named::Hidden => return Err(CKR_OBJECT_HANDLE_INVALID.into()),
            Named::Job => {
                return Err(self.refuse_job(
                    session,
                    object,
                    "C_CopyObject",
                    CKR_ACTION_PROHIBITED,
                    CKR_OBJECT_HANDLE_INVALID,
                ))
            }
            Named::Cert => {
                return Err(match self.cert_of(session, object)? {
                    Some((ctx, cert)) => P11Error::from(self.copy_cert(&ctx, &cert)),
                    None => CKR_OBJECT_HANDLE_INVALID.into(),
                })
            }
            Named::Key => {}
        }
        // A Keyward key is never copied (design §4 "No side doors").
        let (ctx, obj) = self.visible_object(session, object, CKR_OBJECT_HANDLE_INVALID)?;
        Err(self.refused(
            &ctx.principal,
            "C_CopyObject",
            Some(obj.version_name()),
            gate::copy_gate(),
        ))
    }

    /// `C_DestroyObject` (§5.7).
    pub(super) fn destroy_object(
        &mut self,
        session: SessionId,
        object: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        match self.named(session, object)? {
            Named::Session(_) => self.destroy_session_object(session, object),
            Named::Hidden => Err(CKR_OBJECT_HANDLE_INVALID.into()),
            Named::Job => Err(self.refuse_job(
                session,
                object,
                "C_DestroyObject",
                CKR_ACTION_PROHIBITED,
                CKR_OBJECT_HANDLE_INVALID,
            )),
            Named::Cert => match self.cert_of(session, object)? {
                Some((ctx, cert)) => self.destroy_cert(session, &ctx, &cert),
                None => Err(CKR_OBJECT_HANDLE_INVALID.into()),
            },
            Named::Key => self.destroy(session, object),
        }
    }

    /// `C_GetObjectSize` (§5.7): `CK_UNAVAILABLE_INFORMATION` for every visible object.
    pub(super) fn object_size(
        &mut self,
        session: SessionId,
        object: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        match self.named(session, object)? {
            Named::Session(_) => {}
            Named::Hidden | Named::Job => return Err(CKR_OBJECT_HANDLE_INVALID.into()),
            Named::Cert => {
                self.cert_of(session, object)?
                    .ok_or(CKR_OBJECT_HANDLE_INVALID)?;
            }
            Named::Key => {
                self.visible_object(session, object, CKR_OBJECT_HANDLE_INVALID)?;
            }
        }
        Ok(Pkcs11Response::Size(None))
    }

    /// `C_CreateObject` (§5.7): a session object, or a token object of [`super::create`].
    pub(super) fn create_any(
        &mut self,
        session: SessionId,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        if session_objects::wants_session_object(template) {
            return self.create_session_object(session, template);
        }
        self.create_object(session, template)
    }

    /// `C_GenerateKey` (`public` `None`) and `C_GenerateKeyPair` (§5.14): session objects
    /// if the secret or private template asks for them (a session private key comes with a
    /// session public key), else token objects of [`super::create`].
    pub(super) fn generate_any(
        &mut self,
        session: SessionId,
        mechanism: &Mechanism,
        public: Option<&[Attribute]>,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        let action = if public.is_some() {
            "C_GenerateKeyPair"
        } else {
            "C_GenerateKey"
        };
        let call = Generation {
            action,
            mechanism,
            public,
            secret: template,
        };
        if session_objects::wants_session_object(template) {
            return self.generate_session_objects(session, call);
        }
        self.generate(session, call)
    }

    /// `C_DeriveKey` (§5.14): no derivation mechanism is offered (`CKA_DERIVE` is FALSE).
    pub(super) fn derive_key(
        &mut self,
        session: SessionId,
        base_key: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        match self.named(session, base_key)? {
            // No derivation mechanism is offered (CKA_DERIVE is FALSE).
            Named::Session(_) => return Err(CKR_MECHANISM_INVALID.into()),
            Named::Hidden | Named::Job | Named::Cert => return Err(CKR_KEY_HANDLE_INVALID.into()),
            Named::Key => {}
        }
        let (ctx, obj) = self.visible_object(session, base_key, CKR_KEY_HANDLE_INVALID)?;
        Err(self.refused(
            &ctx.principal,
            "C_DeriveKey",
            Some(obj.version_name()),
            gate::derive_gate(),
        ))
    }
}
