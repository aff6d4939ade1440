//! Conformance of secret versions.

use super::{T0, unique};
use crate::{SealedSecretBlob, SecretKind, SecretRecord, Store, StoreError};

fn record(name: &str, version: u32, created_at_ms: i64) -> SecretRecord {
    let byte = u8::try_from(version % 251).unwrap_or(0);
    SecretRecord {
        name: name.to_owned(),
        version,
        kind: SecretKind::Static,
        description: format!("token for {name} ünï"),
        created_at_ms,
        created_by: "token:tok_admin".into(),
        sealed: SealedSecretBlob {
            wrapped_key: vec![byte; 48],
            key_nonce: vec![1; 12],
            nonce: vec![2; 12],
            ciphertext: vec![0, 255, byte, 0],
        },
    }
}

/// Versions conflict on (name, version), the latest is the highest, list shows the latest of
/// each by name, delete removes every version, the kind reads back as stored.
pub async fn secrets(store: &dyn Store) {
    let a = unique("secret-a");
    let b = unique("secret-b");
    assert_eq!(store.latest_secret(&a).await.unwrap(), None, "secrets: unknown reads None");

    let a1 = record(&a, 1, T0);
    store.put_secret_version(&a1).await.unwrap();
    assert_eq!(store.latest_secret(&a).await.unwrap(), Some(a1.clone()), "secrets: reads back exactly (bytes included)");
    assert!(
        matches!(store.put_secret_version(&record(&a, 1, T0 + 1)).await, Err(StoreError::Conflict(_))),
        "secrets: the same name and version twice must be a conflict"
    );
    assert_eq!(store.latest_secret(&a).await.unwrap(), Some(a1.clone()), "secrets: a refused put changes nothing");

    let a2 = SecretRecord { description: "rotated".into(), ..record(&a, 2, T0 + 5) };
    store.put_secret_version(&a2).await.unwrap();
    assert_eq!(store.latest_secret(&a).await.unwrap(), Some(a2.clone()), "secrets: the latest version is the highest");
    let b1 = SecretRecord { kind: SecretKind::PostgresDynamic, ..record(&b, 1, T0 + 2) };
    store.put_secret_version(&b1).await.unwrap();

    let listed: Vec<SecretRecord> = store.list_secrets().await.unwrap().into_iter().filter(|s| s.name == a || s.name == b).collect();
    assert_eq!(listed, vec![a2.clone(), b1.clone()], "secrets: list holds the latest of each, by name");
    let names: Vec<String> = store.list_secrets().await.unwrap().into_iter().map(|s| s.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "secrets: list is sorted by name, each once");

    assert_eq!(store.latest_secret(&b).await.unwrap().map(|s| s.kind), Some(SecretKind::PostgresDynamic), "secrets: the kind reads back");
    assert!(store.delete_secret(&a).await.unwrap(), "secrets: delete a known secret");
    assert_eq!(store.latest_secret(&a).await.unwrap(), None, "secrets: delete removes every version");
    assert!(!store.delete_secret(&a).await.unwrap(), "secrets: delete twice is false");
    assert_eq!(store.latest_secret(&b).await.unwrap(), Some(b1.clone()), "secrets: deleting one leaves the other");
    store.put_secret_version(&record(&a, 1, T0 + 9)).await.expect("secrets: a deleted name can be put again from version 1");
    assert!(store.delete_secret(&a).await.unwrap());
    assert!(store.delete_secret(&b).await.unwrap());
}
