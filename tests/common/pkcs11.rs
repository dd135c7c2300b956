//! Test helpers for keywardd's PKCS#11 half: a module-like client on the client socket
//! (`Hello` as `ClientKind::Module`) sending `Pkcs11Request`s.

use keyward_wire::pkcs11::{
    AttrResult, AttrValue, Attribute, Blob, MechParams, Mechanism, ObjectHandle, Operation, Pin,
    Pkcs11Request as R, Pkcs11Response as P, SessionId, SlotDescription, SlotId, UserType,
};
use keyward_wire::{
    Client, ClientKind, Hello, RequestBody, ResponseBody, ServiceAccountKey, WireError,
};
use std::path::Path;

pub const CKA_CLASS: u64 = 0x0;
pub const CKA_LABEL: u64 = 0x3;
pub const CKA_VALUE: u64 = 0x11;
pub const CKA_ID: u64 = 0x102;
pub const CKA_SENSITIVE: u64 = 0x103;
pub const CKA_SIGN: u64 = 0x108;
pub const CKA_DECRYPT: u64 = 0x105;
pub const CKA_COPYABLE: u64 = 0x171;
pub const CKA_EC_POINT: u64 = 0x181;
pub const CKA_MODULUS: u64 = 0x120;
pub const CKO_PUBLIC_KEY: u64 = 2;
pub const CKO_PRIVATE_KEY: u64 = 3;
pub const CKO_SECRET_KEY: u64 = 4;
pub const CKM_ECDSA_SHA256: u64 = 0x1044;
pub const CKM_SHA256_RSA_PKCS: u64 = 0x40;
pub const CKM_AES_GCM: u64 = 0x1087;
pub const CKR_KEY_HANDLE_INVALID: u64 = 0x60;
pub const CKR_KEY_FUNCTION_NOT_PERMITTED: u64 = 0x68;
pub const CKR_MECHANISM_PARAM_INVALID: u64 = 0x71;
pub const CKR_MECHANISM_INVALID: u64 = 0x70;
pub const CKR_PIN_INCORRECT: u64 = 0xA0;
pub const CKR_TOKEN_WRITE_PROTECTED: u64 = 0xE2;
pub const CKR_ACTION_PROHIBITED: u64 = 0x1B;

/// One module instance's connection.
pub struct P11 {
    client: Client,
}

impl P11 {
    /// A new instance; `credentials` as KEYWARD_CREDENTIALS would give.
    pub fn connect(socket: &Path, credentials: Option<&str>) -> P11 {
        let hello = Hello::new(
            ClientKind::Module,
            None,
            credentials.map(ServiceAccountKey::new),
        );
        P11 {
            client: Client::connect(socket, &hello).expect("connect to the client socket"),
        }
    }

    /// One request: the response or the CK_RV.
    pub fn call(&mut self, req: R) -> Result<P, u64> {
        match self.client.call(RequestBody::Pkcs11(req)) {
            Ok(ResponseBody::Pkcs11(p)) => Ok(p),
            Ok(other) => panic!("unexpected response {other:?}"),
            Err(WireError::Remote(reply)) => Err(reply.rv),
            Err(e) => panic!("wire error {e}"),
        }
    }

    pub fn slots(&mut self) -> Vec<SlotDescription> {
        match self.call(R::ListSlots { configured: vec![] }) {
            Ok(P::Slots(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    pub fn open(&mut self, slot: SlotId) -> SessionId {
        match self.call(R::OpenSession {
            slot,
            read_write: true,
        }) {
            Ok(P::Session(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    pub fn login(&mut self, slot: SlotId, pin: &str) -> Result<(), u64> {
        self.call(R::Login {
            slot,
            user: UserType::User,
            pin: Some(Pin::new(pin.as_bytes().to_vec())),
        })
        .map(|_| ())
    }

    pub fn logout(&mut self, slot: SlotId) {
        self.call(R::Logout { slot }).expect("logout");
    }

    pub fn find(&mut self, session: SessionId, template: Vec<Attribute>) -> Vec<ObjectHandle> {
        match self.call(R::FindObjects { session, template }) {
            Ok(P::Objects(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    /// The objects of class `class` labelled `label`.
    pub fn find_labelled(
        &mut self,
        session: SessionId,
        class: u64,
        label: &str,
    ) -> Vec<ObjectHandle> {
        self.find(
            session,
            vec![
                Attribute {
                    ty: CKA_CLASS,
                    value: AttrValue::Ulong(class),
                },
                Attribute {
                    ty: CKA_LABEL,
                    value: AttrValue::Bytes(Blob::new(label.as_bytes().to_vec())),
                },
            ],
        )
    }

    pub fn attrs(
        &mut self,
        session: SessionId,
        object: ObjectHandle,
        types: &[u64],
    ) -> Result<Vec<AttrResult>, u64> {
        match self.call(R::GetAttributeValue {
            session,
            object,
            types: types.to_vec(),
        }) {
            Ok(P::Attributes(a)) => Ok(a),
            Ok(other) => panic!("{other:?}"),
            Err(rv) => Err(rv),
        }
    }

    /// The bytes of one attribute.
    pub fn bytes(&mut self, session: SessionId, object: ObjectHandle, ty: u64) -> Vec<u8> {
        match self
            .attrs(session, object, &[ty])
            .expect("attributes")
            .remove(0)
        {
            AttrResult::Value(AttrValue::Bytes(b)) => b.as_slice().to_vec(),
            other => panic!("attribute {ty:#x}: {other:?}"),
        }
    }

    pub fn init(
        &mut self,
        op: Operation,
        session: SessionId,
        mechanism: Mechanism,
        key: ObjectHandle,
    ) -> Result<(), u64> {
        self.call(R::OperationInit {
            op,
            session,
            mechanism,
            key: Some(key),
        })
        .map(|_| ())
    }

    pub fn one_shot(
        &mut self,
        op: Operation,
        session: SessionId,
        data: &[u8],
    ) -> Result<Vec<u8>, u64> {
        match self.call(R::OperationOneShot {
            op,
            session,
            data: Blob::new(data.to_vec()),
        }) {
            Ok(P::Data(d)) => Ok(d.as_slice().to_vec()),
            Ok(other) => panic!("{other:?}"),
            Err(rv) => Err(rv),
        }
    }
}

/// A mechanism without parameters.
pub fn mech(ty: u64) -> Mechanism {
    Mechanism {
        ty,
        params: MechParams::None,
    }
}
