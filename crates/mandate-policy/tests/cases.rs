//! Policy unit tests from TOML.

mod common;

use mandate_policy::{EntityData, Outcome, STARTER_TESTS, run_cases};

use common::*;

#[test]
fn the_starter_tests_pass() {
    let report = run_cases(&starter(), &EntityData::empty(), STARTER_TESTS).unwrap();
    assert!(report.cases.len() >= 15);
    assert_eq!(report.failed(), 0, "{report}");
    let ceiling = report.cases.iter().find(|c| c.name == "a confidential ticket is above an internal task").unwrap();
    assert_eq!(ceiling.reason, "classification_above_intent");
}

#[test]
fn failures_are_reported_with_what_happened() {
    let cases = r#"
[[case]]
name = "wrongly expects an allow"
principal = { type = "agent", id = "bot" }
action = "tickets.write"
resource = { type = "ticket", id = "1", classification = "public" }
task = { purpose = "x", actions = ["tickets.*"], resources = ["ticket:*"], max_classification = "public" }
expect = "allow"

[[case]]
name = "right outcome, wrong policy"
principal = { type = "agent", id = "bot" }
action = { name = "tickets.read" }
resource = { type = "ticket", id = "1", classification = "public" }
context = { now = 2026-01-05T12:00:00Z, extra = { channel = "chat" } }
task = { purpose = "x", actions = ["tickets.*"], resources = ["ticket:*"], max_classification = "public" }
expect = "allow"
expect_policies = ["someone-else"]

[[case]]
name = "a person"
principal = { type = "user", id = "alice", properties = { team = "support" } }
action = "tickets.read"
resource = { type = "ticket", id = "1" }
expect = "deny"
"#;
    let report = run_cases(&starter(), &EntityData::empty(), cases).unwrap();
    assert_eq!((report.passed(), report.failed()), (1, 2), "{report}");
    let first = &report.cases[0];
    assert_eq!((first.expected, first.actual, first.reason.as_str()), (Outcome::Allow, Outcome::Deny, "no_policy_permits"));
    let text = report.to_string();
    assert!(text.contains("FAIL  wrongly expects an allow: expected allow, got deny (no_policy_permits)"), "{text}");
    assert!(text.contains("expected policies [someone-else], got [agents.read-within-task]"), "{text}");
    assert!(text.ends_with("1 passed, 2 failed"), "{text}");
}

#[test]
fn case_file_mistakes_name_the_case() {
    let s = starter();
    let run = |toml: &str| run_cases(&s, &EntityData::empty(), toml).unwrap_err();
    let base = "principal = { type = \"agent\", id = \"a\" }\naction = \"tickets.read\"\nresource = { type = \"ticket\", id = \"1\" }\nexpect = \"deny\"\n";

    let err = run(&format!("[[case]]\nname = \"typo\"\n{base}expct = \"allow\"\n"));
    assert_eq!(err.code(), "invalid_case");
    assert!(err.to_string().starts_with("case `typo`: unknown field `expct`"), "{err}");

    let err = run(&format!("[[case]]\nname = \"agent props\"\n{}", base.replace("id = \"a\" }", "id = \"a\", properties = {} }")));
    assert!(err.to_string().contains("case `agent props`"), "{err}");

    let err = run(&format!("[[case]]\nname = \"same\"\n{base}\n[[case]]\nname = \"same\"\n{base}"));
    assert!(err.to_string().contains("unique"), "{err}");

    let err = run(&format!("[[case]]\n{base}"));
    assert!(err.to_string().starts_with("case `#1`: missing field `name`"), "{err}");

    assert_eq!(run("").code(), "invalid_cases");
    assert_eq!(run("[[case]\n").code(), "invalid_cases");

    let err = run(&format!("[[case]]\nname = \"bad outcome\"\n{}", base.replace("\"deny\"", "\"maybe\"")));
    assert!(err.to_string().contains("maybe"), "{err}");
}

#[test]
fn floats_in_cases_are_denied_like_requests() {
    let cases = r#"
[[case]]
name = "a float"
principal = { type = "agent", id = "bot" }
action = "tickets.read"
resource = { type = "ticket", id = "1", classification = "public", properties = { score = 0.5 } }
task = { purpose = "x", actions = ["tickets.*"], resources = ["ticket:*"], max_classification = "public" }
expect = "deny"
"#;
    let report = run_cases(&starter(), &EntityData::empty(), cases).unwrap();
    assert_eq!(report.cases[0].reason, "invalid_input");
    assert_eq!(report.failed(), 0);
}
