//! Many threads generating, listing, signing with and destroying keys at once on the shared
//! token: SoftHSM2's object store fails such parallel writes with CKR_GENERAL_ERROR unless
//! the token layer serialises them (see the `token` module header). Also exercises the
//! session pool under contention.

mod common;

use common::{fixture, new_id};
use keyward_token::{KeySpec, SignMechanism};
use keyward_wire::keys::Algorithm;

#[test]
fn parallel_generate_sign_list_destroy() {
    let fx = fixture("concurrency");
    let signer = new_id(fx);
    fx.token
        .generate_key(&KeySpec {
            algorithm: Algorithm::EcSignP256Sha256,
            id: &signer,
            label: "signer",
            exportable: false,
        })
        .unwrap();
    let digest = [7u8; 32];
    std::thread::scope(|scope| {
        for t in 0..4 {
            let signer = &signer;
            scope.spawn(move || {
                for i in 0..25 {
                    let id = new_id(fx);
                    let algorithm = if i % 2 == 0 {
                        Algorithm::Aes128Gcm
                    } else {
                        Algorithm::EcSignP256Sha256
                    };
                    let label = format!("t{t}-{i}");
                    fx.token
                        .generate_key(&KeySpec {
                            algorithm,
                            id: &id,
                            label: &label,
                            exportable: false,
                        })
                        .unwrap_or_else(|e| panic!("generate {label}: {e:?}"));
                    let listed = fx
                        .token
                        .list_objects()
                        .unwrap_or_else(|e| panic!("list {label}: {e:?}"));
                    assert!(listed.iter().any(|o| o.id == id), "{label} not listed");
                    let sig = fx
                        .token
                        .sign(signer, SignMechanism::Ecdsa, &digest)
                        .unwrap();
                    assert!(fx
                        .token
                        .verify(signer, SignMechanism::Ecdsa, &digest, &sig)
                        .unwrap());
                    let expected = if algorithm.is_asymmetric() { 2 } else { 1 };
                    assert_eq!(fx.token.destroy_by_id(&id).unwrap(), expected, "{label}");
                }
            });
        }
    });
    let left: Vec<_> = fx
        .token
        .list_objects()
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(
        left,
        vec![signer.clone(), signer],
        "only the signer's two halves remain"
    );
}
