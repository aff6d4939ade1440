//! The live decision point: the enforced policy set, an optional shadow set, the loaded
//! entities, each swapped atomically on reload.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::{Decision, DecisionInput, EntityData, PolicySnapshot};

/// One request's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The decision to enforce.
    pub enforced: Decision,
    /// What the shadow policy set would have decided: for logging and comparison only,
    /// never enforced.
    pub shadow: Option<Decision>,
}

/// Evaluates requests against the current snapshot; swaps are lock-free and a request in
/// flight keeps the snapshot it started with.
#[derive(Debug)]
pub struct PolicyEngine {
    current: ArcSwap<PolicySnapshot>,
    shadow: ArcSwapOption<PolicySnapshot>,
    entities: ArcSwap<EntityData>,
}

impl PolicyEngine {
    /// An engine enforcing `current`, evaluating `shadow` alongside, with no entities loaded.
    pub fn new(current: PolicySnapshot, shadow: Option<PolicySnapshot>) -> Self {
        PolicyEngine {
            current: ArcSwap::from_pointee(current),
            shadow: ArcSwapOption::new(shadow.map(Arc::new)),
            entities: ArcSwap::from_pointee(EntityData::empty()),
        }
    }

    /// The enforced snapshot.
    pub fn current(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// The shadow snapshot, if one is loaded.
    pub fn shadow(&self) -> Option<Arc<PolicySnapshot>> {
        self.shadow.load_full()
    }

    /// Replaces the enforced snapshot (hot reload).
    pub fn swap(&self, snapshot: PolicySnapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Replaces or removes the shadow snapshot.
    pub fn swap_shadow(&self, snapshot: Option<PolicySnapshot>) {
        self.shadow.store(snapshot.map(Arc::new));
    }

    /// Replaces the loaded entities.
    pub fn set_entities(&self, entities: EntityData) {
        self.entities.store(Arc::new(entities));
    }

    /// The loaded entities.
    pub fn entities(&self) -> Arc<EntityData> {
        self.entities.load_full()
    }

    /// Decides `input` with the enforced snapshot and, when there is one, the shadow.
    pub fn evaluate(&self, input: &DecisionInput) -> Evaluation {
        let entities = self.entities.load();
        let enforced = self.current.load().evaluate(input, &entities);
        let shadow = self.shadow.load().as_ref().map(|s| s.evaluate(input, &entities));
        Evaluation { enforced, shadow }
    }
}
