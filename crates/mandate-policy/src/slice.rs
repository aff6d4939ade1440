//! Policy slicing: per request, hand Cedar only the policies whose scope can match.
//!
//! Cedar evaluates every policy it is given, so its cost grows with the policy count even
//! when a policy's scope (`principal == ...`, `action in ...`) rules it out at once. The
//! index below maps each scope constraint to the policies that carry it; a request selects
//! the policies whose principal, action and resource constraints can all be satisfied by
//! the request's entities and their ancestors. The selection is a superset of the policies
//! whose scope matches, never a subset, so a sliced decision equals the unsliced one:
//! a policy left out could not have been satisfied, and (scope constraints are evaluated
//! first and cannot error) could not have errored either.
//!
//! Slices are cached per [`SliceKey`] inside the snapshot, which is immutable and replaced
//! whole on reload, so a cache never outlives the policies it was computed from.

use std::collections::HashMap;

use cedar_policy::{ActionConstraint, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint};

use crate::ActionKind;

/// A principal or resource scope constraint, whichever slot it came from.
enum Scope {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl From<PrincipalConstraint> for Scope {
    fn from(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Scope::Any,
            PrincipalConstraint::Eq(u) => Scope::Eq(u),
            PrincipalConstraint::In(u) => Scope::In(u),
            PrincipalConstraint::Is(t) => Scope::Is(t),
            PrincipalConstraint::IsIn(t, u) => Scope::IsIn(t, u),
        }
    }
}

impl From<ResourceConstraint> for Scope {
    fn from(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => Scope::Any,
            ResourceConstraint::Eq(u) => Scope::Eq(u),
            ResourceConstraint::In(u) => Scope::In(u),
            ResourceConstraint::Is(t) => Scope::Is(t),
            ResourceConstraint::IsIn(t, u) => Scope::IsIn(t, u),
        }
    }
}

/// Policies by the entity a scope slot names: the principal or the action slot.
#[derive(Debug, Default)]
struct UidSlot {
    any: Vec<u32>,
    /// `== uid`: matches only the request's own uid.
    eq: HashMap<EntityUid, Vec<u32>>,
    /// `in uid` and `is T in uid`: matches the request's uid or any ancestor (and type T).
    within: HashMap<EntityUid, Vec<(u32, Option<EntityTypeName>)>>,
    /// `is T`.
    is: HashMap<EntityTypeName, Vec<u32>>,
}

impl UidSlot {
    fn add(&mut self, i: u32, scope: Scope) {
        match scope {
            Scope::Any => self.any.push(i),
            Scope::Eq(u) => self.eq.entry(u).or_default().push(i),
            Scope::In(u) => self.within.entry(u).or_default().push((i, None)),
            Scope::Is(t) => self.is.entry(t).or_default().push(i),
            Scope::IsIn(t, u) => self.within.entry(u).or_default().push((i, Some(t))),
        }
    }

    fn select(&self, uid: &EntityUid, ancestors: &[EntityUid], out: &mut Bits) {
        out.set_all(&self.any);
        if let Some(v) = self.eq.get(uid) {
            out.set_all(v);
        }
        if let Some(v) = self.is.get(uid.type_name()) {
            out.set_all(v);
        }
        for u in std::iter::once(uid).chain(ancestors) {
            for (i, t) in self.within.get(u).into_iter().flatten() {
                if t.as_ref().is_none_or(|t| t == uid.type_name()) {
                    out.set(*i);
                }
            }
        }
    }
}

/// Policies by the resource type their resource slot allows. `in uid` allows any type
/// (the resource's ancestors are not part of the cache key), so it counts as any.
#[derive(Debug, Default)]
struct TypeSlot {
    any: Vec<u32>,
    by_type: HashMap<EntityTypeName, Vec<u32>>,
}

impl TypeSlot {
    fn add(&mut self, i: u32, scope: Scope) {
        match scope {
            Scope::Any | Scope::In(_) => self.any.push(i),
            Scope::Eq(u) => self.by_type.entry(u.type_name().clone()).or_default().push(i),
            Scope::Is(t) | Scope::IsIn(t, _) => self.by_type.entry(t).or_default().push(i),
        }
    }

    fn select(&self, type_name: &EntityTypeName, out: &mut Bits) {
        out.set_all(&self.any);
        if let Some(v) = self.by_type.get(type_name) {
            out.set_all(v);
        }
    }
}

/// The scope index over a snapshot's policies, by position.
#[derive(Debug)]
pub(crate) struct ScopeIndex {
    len: usize,
    principal: UidSlot,
    action: UidSlot,
    resource: TypeSlot,
}

impl ScopeIndex {
    pub fn new(policies: &[Policy]) -> Self {
        let mut index =
            ScopeIndex { len: policies.len(), principal: UidSlot::default(), action: UidSlot::default(), resource: TypeSlot::default() };
        for (i, policy) in policies.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index.principal.add(i, policy.principal_constraint().into());
            index.resource.add(i, policy.resource_constraint().into());
            match policy.action_constraint() {
                ActionConstraint::Any => index.action.add(i, Scope::Any),
                ActionConstraint::Eq(u) => index.action.add(i, Scope::Eq(u)),
                ActionConstraint::In(us) => us.into_iter().for_each(|u| index.action.add(i, Scope::In(u))),
            }
        }
        index
    }

    /// Positions, in order, of the policies whose scope the request can satisfy.
    pub fn select(&self, request: &SliceRequest<'_>) -> Vec<usize> {
        let mut p = Bits::new(self.len);
        self.principal.select(request.principal, request.principal_ancestors, &mut p);
        let mut a = Bits::new(self.len);
        self.action.select(request.action, request.action_ancestors, &mut a);
        let mut r = Bits::new(self.len);
        self.resource.select(request.resource_type, &mut r);
        p.and(&a);
        p.and(&r);
        p.ones().collect()
    }
}

/// What a slice depends on.
pub(crate) struct SliceRequest<'a> {
    pub principal: &'a EntityUid,
    pub principal_ancestors: &'a [EntityUid],
    pub action: &'a EntityUid,
    pub action_ancestors: &'a [EntityUid],
    pub resource_type: &'a EntityTypeName,
}

/// What a slice, and everything cached with it, depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SliceKey {
    pub principal: EntityUid,
    pub action: EntityUid,
    /// The caller's action kind; only set for actions the schema does not declare.
    pub kind: Option<ActionKind>,
    pub resource_type: EntityTypeName,
    /// The entity data's generation: the principal's ancestors come from it.
    pub generation: u64,
}

/// A fixed-size bit set over policy positions.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: u32) {
        let i = i as usize;
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    fn set_all(&mut self, positions: &[u32]) {
        positions.iter().for_each(|&i| self.set(i));
    }

    fn and(&mut self, other: &Bits) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= b);
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
}
