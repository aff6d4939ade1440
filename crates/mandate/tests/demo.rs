//! `mandate demo`, the first of the README's two commands, runs the whole story on its own:
//! the real binary, no configuration, and its output tells each part of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::time::Duration;

#[test]
fn the_demo_tells_the_whole_story_and_verifies_the_trail() {
    let out = assert_cmd::Command::cargo_bin("mandate")
        .unwrap()
        .arg("demo")
        .env("MANDATE_LOG", "warn")
        .env_remove("MANDATE_URL")
        .env_remove("MANDATE_TOKEN")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mandate demo failed:\n{stdout}\n{stderr}");
    let line = |needle: &str| {
        stdout.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with `{needle}` in:\n{stdout}")).to_owned()
    };
    // Decisions over AuthZEN: the intent as a ceiling, policy inside it.
    assert!(line("tickets.export ticket:4411").contains("action_outside_intent"));
    assert!(line("payments.refund payment:991").contains("approval_required"));
    // Delegation: the child may do what it kept, not what it left out; a wider sub-intent is
    // refused with its reason; revoking the parent stops the child.
    assert!(line("delegated task").contains("to research-bot"));
    assert!(line("research-bot tickets.read ticket:4411").contains("allowed"));
    assert!(line("research-bot tickets.write ticket:4411").contains("action_outside_intent"));
    let refused = line("a wider sub-intent is refused");
    assert!(refused.contains("intent_wider") && refused.contains("tickets.export"), "{refused}");
    assert!(line("(after the parent's revoke)").contains("task_revoked"));
    // Tools through the gateway: a filtered list, an allowed call with the brokered secret,
    // refusals with reasons, nothing refused reaching the upstream, revocation mid-session.
    assert!(line("tools/list →").contains("2 of 4 tools: deploy.production, tickets.search"));
    assert!(line("tools/call tickets.search ").contains("forwarded"));
    assert!(line("tools/call tickets.export").contains("action_outside_intent"));
    assert!(line("tools/call email.send").contains("no_policy_permits"));
    assert!(line("tools/call deploy.production").contains("approval_required"));
    assert!(line("upstream effects").contains("0 email(s) sent, 0 deployment(s)"));
    // A person approves the held call: it goes through once, and only once.
    assert!(line("`mandate approval approve` by dana@example.com").contains("approved"));
    assert!(line("tools/call deploy.production (approved)").contains("forwarded"));
    assert!(line("tools/call deploy.production (again)").contains("approval_required"));
    assert!(line("a granted approval covers").contains("1 deployment(s) now"));
    assert!(line("(after revoke)").contains("task_revoked"));
    assert!(line("CALLED  demo/tickets.search").contains("[secret demo-tools-token v1]"));
    // The kill switch, then the verified trail.
    assert!(line("a new attestation is refused").contains("agent_disabled"));
    assert!(line("ok: ").contains("signed checkpoints"), "{stdout}");
    // The upstream's secret is generated per run and never printed.
    assert!(!stdout.contains("demo-upstream-"), "the brokered secret leaked into the output");
}
