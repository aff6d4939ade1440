//! Verifying a whole trail, as an API answer.

use mandate_audit::VerifyFailure;
use mandate_proto::admin::AuditVerifyResponse;
use mandate_store::{Store, StoreError};
use mandate_token::PublicKey;

/// Every event in order, then every signed checkpoint (listed first, so one signed while the
/// events are read cannot make a whole trail look truncated). A broken trail is an `Ok`
/// answer with `ok: false` and the first bad sequence number; only a store failure is `Err`.
pub async fn verify_trail(store: &dyn Store, keys: &[PublicKey]) -> Result<AuditVerifyResponse, StoreError> {
    let keys = keys.iter().map(|k| (k.kid().to_owned(), *k.dalek())).collect();
    Ok(match mandate_store::verify_audit(store, keys).await? {
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
