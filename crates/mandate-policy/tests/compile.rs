//! Loading policy sets: parsing and validation diagnostics, ids, versions, directories.

mod common;

use mandate_policy::{Diagnostic, PolicySnapshot, PolicySources, validate};

use common::*;

fn diagnostics(src: &PolicySources) -> Vec<Diagnostic> {
    let diags = validate(src);
    assert!(!diags.is_empty(), "expected problems");
    assert!(PolicySnapshot::compile(src).is_err());
    diags
}

const GOOD: &str = r#"@id("read")
permit (principal, action in Mandate::Action::"read", resource);
"#;

#[test]
fn the_starter_set_is_valid() {
    assert!(validate(&PolicySources::starter()).is_empty());
    let s = starter();
    assert_eq!(s.policy_count(), 8);
    assert_eq!(s.policy_ids()[0], "tasks.open-up-to-confidential");
}

#[test]
fn a_syntax_error_names_its_file_and_line() {
    let bad = "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.risk > };\n";
    let diags = diagnostics(&with_starter_schema(&[("a.cedar", GOOD), ("b.cedar", bad)]));
    let d = &diags[0];
    assert_eq!((d.file.as_str(), d.line, d.code.as_str()), ("b.cedar", Some(3), "parse_error"), "{}", lines(&diags));
    assert!(d.to_string().starts_with("b.cedar:3:"), "{d}");
}

#[test]
fn a_validation_error_in_the_second_file_names_that_file_and_line() {
    let bad = "// second file\n\n@id(\"typo\")\npermit (principal is Mandate::Agent, action, resource)\nwhen {\n  principal.ownr == \"alice\"\n};\n";
    let diags = diagnostics(&with_starter_schema(&[("a.cedar", GOOD), ("b.cedar", bad)]));
    assert_eq!(diags.len(), 1, "{}", lines(&diags));
    let d = &diags[0];
    assert_eq!((d.file.as_str(), d.line, d.code.as_str()), ("b.cedar", Some(6), "validation_error"), "{d}");
    assert!(d.message.contains("ownr"), "{d}");
    assert!(d.message.chars().next().is_some_and(char::is_lowercase), "{d}");
}

#[test]
fn unknown_actions_and_types_in_policies_are_refused() {
    let bad = "permit (principal, action == Mandate::Action::\"tickets.raed\", resource);\npermit (principal is Usr, action, resource);\n";
    let diags = diagnostics(&with_starter_schema(&[("a.cedar", bad)]));
    assert!(diags.iter().all(|d| d.file == "a.cedar" && d.code == "validation_error"), "{}", lines(&diags));
    assert!(diags.iter().any(|d| d.line == Some(1)) && diags.iter().any(|d| d.line == Some(2)), "{}", lines(&diags));
}

#[test]
fn a_schema_error_names_the_schema_file() {
    let mut src = with_starter_schema(&[("a.cedar", GOOD)]);
    src.schema = "namespace Mandate {\n  entity Agent = { name: Strng };\n}\n".into();
    let diags = diagnostics(&src);
    assert_eq!(diags[0].file, "schema.cedarschema", "{}", lines(&diags));
    assert_eq!(diags[0].code, "schema_error");
}

#[test]
fn ids_come_from_annotations_or_file_positions_and_are_unique() {
    let text = "permit (principal, action, resource);\n@id(\"named\")\npermit (principal, action, resource);\npermit (principal, action, resource);\n";
    let s = compile(with_starter_schema(&[("x.cedar", text)]));
    assert_eq!(s.policy_ids(), vec!["x.cedar#1", "named", "x.cedar#3"]);

    let dup = "\n\n@id(\"read\")\nforbid (principal, action, resource);\n";
    let diags = diagnostics(&with_starter_schema(&[("a.cedar", GOOD), ("b.cedar", dup)]));
    assert_eq!((diags[0].file.as_str(), diags[0].line, diags[0].code.as_str()), ("b.cedar", Some(3), "duplicate_policy_id"));
}

#[test]
fn templates_are_refused() {
    let t = "\npermit (principal == ?principal, action, resource);\n";
    let diags = diagnostics(&with_starter_schema(&[("t.cedar", t)]));
    assert_eq!((diags[0].code.as_str(), diags[0].line), ("template_not_supported", Some(2)));
}

#[test]
fn the_version_covers_every_file_but_not_their_order() {
    let a = with_starter_schema(&[("a.cedar", GOOD), ("b.cedar", "")]);
    let b = with_starter_schema(&[("b.cedar", ""), ("a.cedar", GOOD)]);
    assert_eq!(a.version(), b.version());
    assert!(a.version().starts_with("sha256:") && a.version().len() == 7 + 64);

    let mut changed = a.clone();
    changed.policies[1].1.push('\n');
    assert_ne!(a.version(), changed.version());
    let mut renamed = a.clone();
    renamed.policies[1].0 = "c.cedar".into();
    assert_ne!(a.version(), renamed.version());
    let mut schema = a.clone();
    schema.schema.push(' ');
    assert_ne!(a.version(), schema.version());
    // Moving text between files is a change too.
    let split = with_starter_schema(&[("a.cedar", ""), ("b.cedar", GOOD)]);
    assert_ne!(a.version(), split.version());
    assert_eq!(compile(a.clone()).version(), a.version());
}

#[test]
fn directories_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies");
    let starter = PolicySources::starter();
    starter.write_to(&path).unwrap();
    std::fs::write(path.join("README.md"), "ignored").unwrap();
    std::fs::write(path.join("tests.toml"), "ignored").unwrap();
    let read = PolicySources::from_dir(&path).unwrap();
    assert_eq!(read, starter);
    assert_eq!(read.version(), starter.version());

    let err = starter.write_to(&path).unwrap_err();
    assert_eq!(err.code(), "policy_file_exists");

    std::fs::write(path.join("extra.cedarschema"), "").unwrap();
    assert_eq!(PolicySources::from_dir(&path).unwrap_err().code(), "policy_several_schemas");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = PolicySources::from_dir(&empty).unwrap_err();
    assert_eq!(err.code(), "policy_no_schema");
    assert!(err.to_string().starts_with("no `.cedarschema` file in `"), "{err}");
    assert_eq!(PolicySources::from_dir(&dir.path().join("missing")).unwrap_err().code(), "policy_io");

    let mut sneaky = PolicySources::starter();
    sneaky.policies.push(("../escape.cedar".into(), String::new()));
    assert_eq!(sneaky.write_to(&dir.path().join("other")).unwrap_err().code(), "invalid_policy_file_name");
}
