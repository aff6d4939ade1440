//! Verifying a whole trail: every event in order, then every signed checkpoint.

use mandate_audit::{VerifyFailure, Verifier};
use mandate_proto::admin::AuditVerifyResponse;
use mandate_store::{Store, StoreError};
use mandate_token::PublicKey;

const PAGE: usize = 5000;

/// Streams the trail out of the store through the verifier. A broken trail is an `Ok` answer
/// with `ok: false` and the first bad sequence number; only a store failure is an `Err`.
pub async fn verify_trail(store: &dyn Store, keys: &[PublicKey]) -> Result<AuditVerifyResponse, StoreError> {
    let mut verifier = Verifier::new(keys.iter().map(|k| (k.kid().to_owned(), *k.dalek())).collect());
    let mut after = 0u64;
    loop {
        let page = store.read_audit(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if let Err(f) = verifier.push(e) {
                return Ok(failure(f));
            }
        }
        if page.len() < PAGE {
            break;
        }
    }
    let checkpoints = store.list_checkpoints().await?;
    Ok(match verifier.finish(&checkpoints) {
        Ok(r) => AuditVerifyResponse {
            ok: true,
            events: r.events,
            checkpoints: r.checkpoints,
            last_seq: Some(r.last_seq),
            last_hash: Some(r.last_hash),
            bad_seq: None,
            code: None,
            message: None,
        },
        Err(f) => failure(f),
    })
}

fn failure(f: VerifyFailure) -> AuditVerifyResponse {
    AuditVerifyResponse {
        ok: false,
        events: 0,
        checkpoints: 0,
        last_seq: None,
        last_hash: None,
        bad_seq: Some(f.seq),
        code: Some(f.code.to_owned()),
        message: Some(f.message),
    }
}
