//! Entities loaded from outside requests: people, groups, documents (`mandate entities load`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::entities_errors::EntitiesError;
use cedar_policy::ffi::DetailedError;
use cedar_policy::{Entities, Entity, EntityUid, EvalResult};
use sha2::{Digest, Sha256};

use crate::error::lowercase_first;
use crate::{PolicyError, PolicySnapshot};

/// Gives every parsed entity set its own generation, so slices cached for one set are
/// never used with another. `0` is the empty set.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Entities in Cedar's JSON entity format, with their transitive parents computed.
///
/// A request's principal or resource whose uid is here is taken from here (the request's
/// properties are then ignored); entities they reference, and entities policies name, are
/// available to policies too. Action entities come from the schema and are never taken
/// from here.
#[derive(Debug, Clone)]
pub struct EntityData {
    entities: Entities,
    /// For each entity that has them, the entity uids its attributes and tags mention.
    refs: HashMap<EntityUid, Vec<EntityUid>>,
    generation: u64,
    version: String,
}

impl EntityData {
    /// No entities.
    pub fn empty() -> Self {
        EntityData { entities: Entities::empty(), refs: HashMap::new(), generation: 0, version: String::new() }
    }

    /// Parses a JSON array of entities (`[{"uid": {"type": "User", "id": "alice"},
    /// "attrs": {...}, "parents": [...]}]`). With a snapshot, the entities must conform to
    /// its schema.
    pub fn parse(json: &str, schema: Option<&PolicySnapshot>) -> Result<Self, PolicyError> {
        // Cedar's message with every cause it chains, e.g. which attribute does not conform.
        let bad = |e: EntitiesError| {
            let detail = DetailedError::from(&e);
            PolicyError::InvalidEntities(lowercase_first(detail.message.trim_end_matches('.')))
        };
        let entities = Entities::from_json_str(json, schema.map(PolicySnapshot::schema)).map_err(bad)?;
        let actions: Vec<EntityUid> = entities.iter().map(Entity::uid).filter(|u| u.type_name().basename() == "Action").collect();
        let entities = if actions.is_empty() { entities } else { entities.remove_entities(actions).map_err(bad)? };
        let mut version = Sha256::new();
        version.update(json.as_bytes());
        Ok(Self::from_parts(entities, format!("sha256:{}", hex::encode(version.finalize()))))
    }

    /// Wraps entities built in code. `version` is reported as [`EntityData::version`].
    pub fn from_entities(entities: Entities, version: impl Into<String>) -> Self {
        Self::from_parts(entities, version.into())
    }

    fn from_parts(entities: Entities, version: String) -> Self {
        let mut refs = HashMap::new();
        for entity in entities.iter() {
            let mut found = Vec::new();
            for (_, value) in entity.attrs().chain(entity.tags()) {
                if let Ok(value) = value {
                    collect_uids(&value, &mut found);
                }
            }
            if !found.is_empty() {
                refs.insert(entity.uid(), found);
            }
        }
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        EntityData { entities, refs, generation, version }
    }

    /// How many entities are loaded.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether no entities are loaded.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// `sha256:<hex>` of the JSON the entities were parsed from; empty for no entities.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The loaded entity with this uid.
    pub fn get(&self, uid: &EntityUid) -> Option<&Entity> {
        self.entities.get(uid)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The transitive parents of `uid`.
    pub(crate) fn ancestors(&self, uid: &EntityUid) -> Vec<EntityUid> {
        self.entities.ancestors(uid).map(|a| a.cloned().collect()).unwrap_or_default()
    }

    /// Adds to `out` every loaded entity a policy could reach from `start`: the entities
    /// themselves and, transitively, those their attributes and tags mention. Entities for
    /// which `present` holds are already in the request and are neither added nor followed.
    pub(crate) fn reachable(&self, start: Vec<EntityUid>, present: impl Fn(&EntityUid) -> bool, out: &mut Vec<Entity>) {
        let mut queue = start;
        let mut seen = HashSet::new();
        while let Some(uid) = queue.pop() {
            if present(&uid) || seen.contains(&uid) {
                continue;
            }
            let Some(entity) = self.entities.get(&uid) else {
                continue;
            };
            if let Some(more) = self.refs.get(&uid) {
                queue.extend(more.iter().cloned());
            }
            seen.insert(uid);
            out.push(entity.clone());
        }
    }

    /// The uids the attributes and tags of `uid` mention.
    pub(crate) fn refs(&self, uid: &EntityUid) -> &[EntityUid] {
        self.refs.get(uid).map_or(&[], Vec::as_slice)
    }
}

impl Default for EntityData {
    fn default() -> Self {
        EntityData::empty()
    }
}

fn collect_uids(value: &EvalResult, out: &mut Vec<EntityUid>) {
    match value {
        EvalResult::EntityUid(uid) => out.push(uid.clone()),
        EvalResult::Set(set) => set.iter().for_each(|v| collect_uids(v, out)),
        EvalResult::Record(record) => record.iter().for_each(|(_, v)| collect_uids(v, out)),
        EvalResult::Bool(_) | EvalResult::Long(_) | EvalResult::String(_) | EvalResult::ExtensionValue(_) => {}
    }
}
