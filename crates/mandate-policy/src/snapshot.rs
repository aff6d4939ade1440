//! A compiled, validated, immutable policy set and its evaluation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, Policy, PolicyId, PolicySet, Request, Schema};

use crate::actions::{ActionInfo, ActionTable};
use crate::cache::BoundedCache;
use crate::compile::{self, Compiled};
use crate::decision::{PolicyMeta, decide, id_str};
use crate::mapping::{self, Names, Resolved, TypeCache};
use crate::slice::{ScopeIndex, SliceKey, SliceRequest};
use crate::{ActionKind, ContextInput, Decision, DecisionInput, Diagnostic, EntityData, PolicySources, PrincipalInput};

/// A compiled policy set: the schema, the policies (validated against it in strict mode),
/// their scope index and a cache of slices. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct PolicySnapshot {
    version: String,
    schema: Schema,
    /// Policies in file order, each under its reported id.
    policies: Vec<Policy>,
    /// Entity uids each policy names literally (actions left out).
    literals: Vec<Vec<EntityUid>>,
    all: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    index: ScopeIndex,
    actions: ActionTable,
    names: Names,
    types: TypeCache,
    prepared: BoundedCache<SliceKey, Prepared>,
    /// Contexts of requests made under a task, by task id.
    contexts: BoundedCache<String, CachedContext>,
    authorizer: Authorizer,
}

impl PolicySnapshot {
    /// Parses the schema and each policy file, then validates every policy against the
    /// schema in strict mode. Any problem refuses the whole set; each diagnostic names its
    /// file and, where Cedar knows it, the line and column.
    ///
    /// A policy's id is its `@id("...")` annotation, or `<file>#<n>` for the n-th policy of
    /// a file without one. Ids must be unique across files.
    pub fn compile(src: &PolicySources) -> Result<Self, Vec<Diagnostic>> {
        let Compiled { schema, policies, all } = compile::compile(src)?;
        let internal = |message| compile::internal(&src.schema_file, message);
        let names = Names::new().map_err(internal)?;
        let actions = ActionTable::new(&schema, &names).map_err(internal)?;
        let literals =
            policies.iter().map(|p| p.entity_literals().into_iter().filter(|u| u.type_name().basename() != "Action").collect()).collect();
        Ok(PolicySnapshot {
            version: src.version(),
            meta: policies.iter().map(|p| (p.id().clone(), PolicyMeta::of(p))).collect(),
            index: ScopeIndex::new(&policies),
            literals,
            policies,
            all,
            schema,
            actions,
            names,
            types: TypeCache::default(),
            prepared: BoundedCache::default(),
            contexts: BoundedCache::default(),
            authorizer: Authorizer::new(),
        })
    }

    /// The version of the sources this was compiled from (see [`PolicySources::version`]).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How many policies the set holds.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Policy ids in file order.
    pub fn policy_ids(&self) -> Vec<String> {
        self.policies.iter().map(|p| id_str(p.id()).to_owned()).collect()
    }

    /// The Cedar schema the policies were validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Decides `input`. Deny by default; never an error: a request that cannot be mapped
    /// to Cedar, or any evaluation error, is a deny carrying the error text.
    pub fn evaluate(&self, input: &DecisionInput, entities: &EntityData) -> Decision {
        self.decide(input, entities, Mode::Sliced)
    }

    /// [`evaluate`](Self::evaluate) with every policy handed to Cedar: the reference the
    /// sliced evaluation is tested and measured against.
    #[doc(hidden)]
    pub fn evaluate_unsliced(&self, input: &DecisionInput, entities: &EntityData) -> Decision {
        self.decide(input, entities, Mode::Unsliced)
    }

    /// [`evaluate`](Self::evaluate) computing the slice afresh instead of using the cache.
    #[doc(hidden)]
    pub fn evaluate_uncached(&self, input: &DecisionInput, entities: &EntityData) -> Decision {
        self.decide(input, entities, Mode::SlicedUncached)
    }

    /// How many slices are cached.
    #[doc(hidden)]
    pub fn cached_slices(&self) -> usize {
        self.prepared.len()
    }

    fn decide(&self, input: &DecisionInput, data: &EntityData, mode: Mode) -> Decision {
        match self.try_decide(input, data, mode) {
            Ok(decision) => decision,
            Err(Refusal::Input(message)) => Decision::invalid_input(&self.version, message),
            Err(Refusal::Internal(message)) => Decision::evaluation_error(&self.version, message),
        }
    }

    fn try_decide(&self, input: &DecisionInput, data: &EntityData, mode: Mode) -> Result<Decision, Refusal> {
        let principal = mapping::principal_uid(&input.principal, &self.names, &self.types).map_err(Refusal::Input)?;
        let action = self.actions.resolve(&input.action.name, input.action.kind).map_err(Refusal::Input)?;
        let resource = mapping::resource(&input.resource, &self.names, &self.types, data).map_err(Refusal::Input)?;
        let context = self.context(&input.context, action.kind, mode).map_err(Refusal::Input)?;
        let key = SliceKey {
            principal,
            action: action.uid.clone(),
            kind: if matches!(action, Cow::Borrowed(_)) { None } else { input.action.kind },
            resource_type: resource.uid.type_name().clone(),
            generation: data.generation(),
        };
        let prepared = self.prepared(&key, &input.principal, &action, data, mode)?;
        let resource_uid = resource.uid.clone();
        let entities = with_resource(&prepared.base, resource, data).map_err(Refusal::Internal)?;
        let request = Request::new(key.principal, key.action, resource_uid, context, None).map_err(|e| Refusal::Internal(e.to_string()))?;
        let policies = prepared.policies.as_ref().unwrap_or(&self.all);
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        Ok(decide(&response, &self.meta, &self.version))
    }

    /// The context record, reused while a task's requests carry an equal context (the task
    /// record is the costly part; a context without a task is cheap to build).
    fn context(&self, input: &ContextInput, kind: Option<ActionKind>, mode: Mode) -> Result<Context, String> {
        let task = match (&input.task, mode) {
            (Some(task), Mode::Sliced) => task.id.as_str(),
            _ => return mapping::context(input, kind),
        };
        if let Some(hit) = self.contexts.get(task).filter(|c| c.kind == kind && c.input == *input) {
            return Ok(hit.context.clone());
        }
        let context = mapping::context(input, kind)?;
        let cached = CachedContext { input: input.clone(), kind, context: context.clone() };
        self.contexts.insert(task.to_owned(), Arc::new(cached));
        Ok(context)
    }

    /// The policy slice and base entities for `key`, from the cache when the cached entry was
    /// built for the same principal.
    fn prepared(
        &self,
        key: &SliceKey,
        principal: &PrincipalInput,
        action: &ActionInfo,
        data: &EntityData,
        mode: Mode,
    ) -> Result<Arc<Prepared>, Refusal> {
        if mode == Mode::Sliced
            && let Some(hit) = self.prepared.get(key).filter(|p| p.principal == *principal)
        {
            return Ok(hit);
        }
        let resolved = mapping::principal(principal, key.principal.clone(), data).map_err(Refusal::Input)?;
        let ancestors = if resolved.from_data { data.ancestors(&resolved.uid) } else { Vec::new() };
        let positions: Vec<usize> = match mode {
            Mode::Unsliced => (0..self.policies.len()).collect(),
            Mode::Sliced | Mode::SlicedUncached => self.index.select(&SliceRequest {
                principal: &key.principal,
                principal_ancestors: &ancestors,
                action: &action.uid,
                action_ancestors: &action.ancestors,
                resource_type: &key.resource_type,
            }),
        };
        let policies = match mode {
            Mode::Unsliced => None,
            Mode::Sliced | Mode::SlicedUncached => Some(
                PolicySet::from_policies(positions.iter().filter_map(|&i| self.policies.get(i).cloned()))
                    .map_err(|e| Refusal::Internal(format!("cannot build a policy slice: {e}")))?,
            ),
        };

        // The principal, the action, and every loaded entity a policy could reach from the
        // principal's attributes or from the entities the sliced policies name.
        let mut list = Vec::new();
        if !data.is_empty() {
            let mut start: Vec<EntityUid> =
                positions.iter().filter_map(|&i| self.literals.get(i)).flatten().filter(|u| data.get(u).is_some()).cloned().collect();
            if resolved.from_data {
                start.extend(data.refs(&resolved.uid).iter().cloned());
            }
            data.reachable(start, |u| *u == resolved.uid || *u == action.uid, &mut list);
        }
        list.push(resolved.entity);
        list.push(action.entity.clone());
        let base = Entities::from_entities(list, None).map_err(|e| Refusal::Internal(format!("cannot assemble request entities: {e}")))?;

        let prepared = Arc::new(Prepared { principal: principal.clone(), policies, base });
        if mode == Mode::Sliced {
            self.prepared.insert(key.clone(), Arc::clone(&prepared));
        }
        Ok(prepared)
    }
}

/// How much of the index to use; anything but `Sliced` exists for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sliced,
    SlicedUncached,
    Unsliced,
}

/// Why a request got no decision from Cedar.
enum Refusal {
    /// The request cannot be expressed in Cedar.
    Input(String),
    /// Something failed while deciding.
    Internal(String),
}

/// What is cached per [`SliceKey`]: the policies to evaluate and the request entities that
/// do not depend on the resource.
#[derive(Debug)]
struct Prepared {
    /// The principal the entities were built from; a request with another one rebuilds.
    principal: PrincipalInput,
    /// The slice; `None` for every policy.
    policies: Option<PolicySet>,
    /// The principal, the action and the loaded entities they and the policies reach.
    base: Entities,
}

/// A context as built for one input, reused while the input is equal.
#[derive(Debug)]
struct CachedContext {
    input: ContextInput,
    kind: Option<ActionKind>,
    context: Context,
}

/// The base entities plus the resource and the loaded entities it reaches. A resource
/// already present (the principal itself, or a loaded entity) is not added again.
fn with_resource<'b>(base: &'b Entities, resource: Resolved, data: &EntityData) -> Result<Cow<'b, Entities>, String> {
    if base.get(&resource.uid).is_some() {
        return Ok(Cow::Borrowed(base));
    }
    let mut list = Vec::new();
    if resource.from_data {
        let refs = data.refs(&resource.uid).to_vec();
        data.reachable(refs, |u| *u == resource.uid || base.get(u).is_some(), &mut list);
    }
    list.push(resource.entity);
    base.clone().add_entities(list, None).map(Cow::Owned).map_err(|e| format!("cannot assemble request entities: {e}"))
}
