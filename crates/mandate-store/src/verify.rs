//! Verifying the trail held by any store.

use ed25519_dalek::VerifyingKey;
use mandate_audit::{Verifier, VerifyFailure, VerifyReport};

use crate::{Store, StoreResult};

/// How many events [`verify_audit`] reads per call.
pub const VERIFY_PAGE: usize = 2048;

/// Reads the whole trail from `store`, page by page, and verifies it and its checkpoints with a
/// [`Verifier`] trusting `keys`.
///
/// The outer result is the store's (could the trail be read?), the inner one the verdict.
/// Checkpoints are listed before the events are read, so events appended meanwhile only
/// lengthen the trail and never make it look truncated.
pub async fn verify_audit(store: &dyn Store, keys: Vec<(String, VerifyingKey)>) -> StoreResult<Result<VerifyReport, VerifyFailure>> {
    let checkpoints = store.list_checkpoints().await?;
    let mut verifier = Verifier::new(keys);
    let mut after = 0;
    loop {
        let page = store.read_audit(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in &page {
            if let Err(failure) = verifier.push(event) {
                return Ok(Err(failure));
            }
        }
    }
    Ok(verifier.finish(&checkpoints))
}
