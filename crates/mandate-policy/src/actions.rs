//! Actions as a request sees them: the schema's `Mandate::Action` hierarchy, and the kind
//! groups (`read`, `write`, `execute`) an undeclared action is placed in.

use std::borrow::Cow;
use std::collections::HashMap;

use cedar_policy::{Entity, EntityUid, Schema};

use crate::ActionKind;
use crate::mapping::Names;

/// One action: its uid, its entity (parents included) and its transitive groups.
#[derive(Debug, Clone)]
pub(crate) struct ActionInfo {
    pub uid: EntityUid,
    pub entity: Entity,
    pub ancestors: Vec<EntityUid>,
    pub kind: Option<ActionKind>,
}

/// The schema's `Mandate::Action` actions by name, and the three kind groups.
#[derive(Debug)]
pub(crate) struct ActionTable {
    names: Names,
    declared: HashMap<String, ActionInfo>,
    /// Each kind's group and the group's own ancestors, the group first.
    groups: Vec<(ActionKind, Vec<EntityUid>)>,
}

impl ActionTable {
    pub fn new(schema: &Schema, names: &Names) -> Result<Self, String> {
        let entities = schema.action_entities().map_err(|e| e.to_string())?;
        let ancestors = |uid: &EntityUid| -> Vec<EntityUid> { entities.ancestors(uid).map(|a| a.cloned().collect()).unwrap_or_default() };
        let groups: Vec<(ActionKind, EntityUid)> = ActionKind::ALL.into_iter().map(|k| (k, names.action_uid(k.as_str()))).collect();
        let mut declared = HashMap::new();
        for uid in schema.actions().filter(|u| u.type_name() == &names.action) {
            let up = ancestors(uid);
            // The most powerful kind wins, so an action in several groups counts as the riskiest.
            let kind = groups.iter().rev().find(|(_, g)| g == uid || up.contains(g)).map(|(k, _)| *k);
            let entity = entities.get(uid).cloned().unwrap_or_else(|| Entity::new_no_attrs(uid.clone(), up.iter().cloned().collect()));
            let info = ActionInfo { uid: uid.clone(), entity, ancestors: up, kind };
            declared.insert(uid.id().unescaped().to_owned(), info);
        }
        let groups = groups
            .into_iter()
            .map(|(k, g)| {
                let mut up = ancestors(&g);
                up.insert(0, g);
                (k, up)
            })
            .collect();
        Ok(ActionTable { names: names.clone(), declared, groups })
    }

    /// The declared action (the caller's kind is then ignored), or one placed in the group of
    /// the caller's kind, or in no group.
    pub fn resolve(&self, name: &str, kind: Option<ActionKind>) -> Result<Cow<'_, ActionInfo>, String> {
        if name.is_empty() {
            return Err("action name must not be empty".to_owned());
        }
        if let Some(info) = self.declared.get(name) {
            return Ok(Cow::Borrowed(info));
        }
        let uid = self.names.action_uid(name);
        let ancestors: Vec<EntityUid> =
            kind.and_then(|k| self.groups.iter().find(|(g, _)| *g == k)).map(|(_, a)| a.clone()).unwrap_or_default();
        let entity = Entity::new_no_attrs(uid.clone(), ancestors.iter().cloned().collect());
        Ok(Cow::Owned(ActionInfo { uid, entity, ancestors, kind }))
    }
}
