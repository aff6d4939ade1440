//! From policy text to a validated Cedar policy set: each file parsed on its own (so a
//! diagnostic names its file and line), policy ids assigned, every policy validated against
//! the schema in strict mode.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};

use crate::decision::{ID_ANNOTATION, id_str};
use crate::{Diagnostic, PolicySources};

/// A policy set that parsed and validated.
pub(crate) struct Compiled {
    pub schema: Schema,
    /// In file order, each under its reported id.
    pub policies: Vec<Policy>,
    pub all: PolicySet,
}

/// Parses and validates `src`; any problem refuses the whole set.
pub(crate) fn compile(src: &PolicySources) -> Result<Compiled, Vec<Diagnostic>> {
    let mut diags = Vec::new();

    let schema = match Schema::from_cedarschema_str(&src.schema) {
        Ok((schema, _warnings)) => Some(schema),
        Err(e) => {
            let detail = DetailedError::from(&e);
            diags.extend(Diagnostic::from_cedar(&src.schema_file, &src.schema, "schema_error", &detail));
            None
        }
    };

    let mut policies = Vec::new();
    let mut files: HashMap<String, (&str, &str)> = HashMap::new();
    for (file, text) in &src.policies {
        match parse_file(file, text) {
            Ok(parsed) => {
                for (id, policy) in parsed {
                    if files.contains_key(&id) {
                        let at = find_id_annotation(text, &id);
                        diags.push(Diagnostic::at(file, text, at, "duplicate_policy_id", format!("policy id `{id}` is already used")));
                        continue;
                    }
                    files.insert(id.clone(), (file.as_str(), text.as_str()));
                    policies.push(policy.new_id(PolicyId::new(&id)));
                }
            }
            Err(mut errs) => diags.append(&mut errs),
        }
    }
    let Some(schema) = schema else {
        return Err(diags);
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    let all = PolicySet::from_policies(policies.iter().cloned()).map_err(|e| internal(&src.schema_file, e.to_string()))?;
    let result = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
    for error in result.validation_errors() {
        let (file, text) = files.get(id_str(error.policy_id())).copied().unwrap_or((&src.schema_file, ""));
        let detail = DetailedError::from(error);
        diags.extend(Diagnostic::from_cedar(file, text, "validation_error", &detail));
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Compiled { schema, policies, all })
}

/// A problem that is Mandate's, not the policy author's.
pub(crate) fn internal(file: &str, message: String) -> Vec<Diagnostic> {
    vec![Diagnostic::at(file, "", None, "internal_error", message)]
}

/// Parses one policy file into `(id, policy)` pairs in file order.
fn parse_file(file: &str, text: &str) -> Result<Vec<(String, Policy)>, Vec<Diagnostic>> {
    let set = PolicySet::from_str(text).map_err(|e| {
        let detail = DetailedError::from(&e);
        Diagnostic::from_cedar(file, text, "parse_error", &detail)
    })?;
    if set.templates().next().is_some() {
        let at = text.find("?principal").or_else(|| text.find("?resource"));
        return Err(vec![Diagnostic::at(
            file,
            text,
            at,
            "template_not_supported",
            "templates (`?principal`, `?resource`) are not supported: write a static policy".to_owned(),
        )]);
    }
    // The parser names policies `policy0`, `policy1`, ... in source order.
    let mut numbered: Vec<(usize, &Policy)> = set
        .policies()
        .map(|p| {
            let n = id_str(p.id()).strip_prefix("policy").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
            (n, p)
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let mut out = Vec::with_capacity(numbered.len());
    for (position, (_, policy)) in numbered.into_iter().enumerate() {
        let id = match policy.annotation(ID_ANNOTATION) {
            Some(id) if id.trim().is_empty() => {
                return Err(vec![Diagnostic::at(file, text, text.find("@id"), "invalid_policy_id", "`@id` must not be empty".to_owned())]);
            }
            Some(id) => id.to_owned(),
            None => format!("{file}#{}", position + 1),
        };
        out.push((id, policy.clone()));
    }
    Ok(out)
}

/// Where `@id("<id>")` is written in `text`, if it can be found.
fn find_id_annotation(text: &str, id: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text.get(from..).and_then(|t| t.find("@id")).map(|i| i + from) {
        let rest = text.get(at + 3..).unwrap_or("").trim_start();
        let rest = rest.strip_prefix('(').unwrap_or("").trim_start();
        if rest.strip_prefix('"').is_some_and(|r| r.starts_with(id) && r.get(id.len()..).is_some_and(|t| t.starts_with('"'))) {
            return Some(at);
        }
        from = at + 3;
    }
    None
}
