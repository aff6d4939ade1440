//! Verified mandates, kept until they expire so that the EdDSA check (several times the cost
//! of a decision) is paid once per mandate, not once per request. The cache only skips the
//! signature and claim checks: task liveness and agent status are read on every request.

use std::collections::HashMap;
use std::sync::Arc;

use mandate_token::VerifiedMandate;
use parking_lot::RwLock;

pub struct MandateCache {
    capacity: usize,
    map: RwLock<HashMap<String, (Arc<VerifiedMandate>, i64)>>,
}

impl MandateCache {
    pub fn new(capacity: usize) -> Self {
        MandateCache { capacity, map: RwLock::new(HashMap::new()) }
    }

    /// The cached verification of `token`, if it has not expired by `now_secs`.
    pub fn get(&self, token: &str, now_secs: i64) -> Option<Arc<VerifiedMandate>> {
        let map = self.map.read();
        match map.get(token) {
            Some((m, exp)) if *exp > now_secs => Some(m.clone()),
            _ => None,
        }
    }

    pub fn put(&self, token: &str, mandate: Arc<VerifiedMandate>, now_secs: i64) {
        if self.capacity == 0 {
            return;
        }
        let exp = mandate.claims().exp;
        let mut map = self.map.write();
        if map.len() >= self.capacity {
            map.retain(|_, (_, e)| *e > now_secs);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(token.to_owned(), (mandate, exp));
    }

    pub fn clear(&self) {
        self.map.write().clear();
    }
}
