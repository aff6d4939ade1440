//! Conformance of approval requests: their one-way moves, single use and expiry.

use mandate_core::{Approval, ApprovalStatus};
use serde_json::json;

use super::{T0, agent, join_all, task, unique};
use crate::{ApprovalFilter, Store, StoreError};

fn approval(id: &str, task_id: &str, binding: &str, created_at_ms: i64, expires_at_ms: i64) -> Approval {
    Approval {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        agent: "approval-agent".into(),
        mandate_jti: "jti-1".into(),
        action: "payments.refund".into(),
        resource_type: "payment".into(),
        resource_id: "991".into(),
        classification: Some("confidential".into()),
        arguments: json!({ "amount": 120, "currency": "EUR", "note": "ünï" }),
        arguments_digest: "ab".repeat(32),
        binding: binding.to_owned(),
        decision_id: format!("dec-{id}"),
        policies: vec!["agents.refund-needs-approval".into()],
        status: ApprovalStatus::Pending,
        created_at_ms,
        expires_at_ms,
        decided_by: None,
        decided_by_label: None,
        decided_at_ms: None,
        comment: None,
        used_at_ms: None,
        used_by_decision: None,
    }
}

/// Insert and read back; conflicts and unknown tasks; list filters and order; the binding
/// lookup sees only open ones; decide moves a pending one once; use succeeds exactly once, and
/// only on an approved, unexpired one; expiry moves pending and approved ones only.
pub async fn approvals(store: &dyn Store) {
    let owner = agent(&unique("approval-agent"));
    store.insert_agent(&owner).await.unwrap();
    let t = task(&unique("t"), &owner, T0, T0 + 3_600_000);
    store.insert_task(&t).await.unwrap();
    let binding = unique("binding");

    let a1 = approval(&unique("apr"), &t.id, &binding, T0 + 1_000, T0 + 60_000);
    store.insert_approval(&a1).await.unwrap();
    assert_eq!(store.get_approval(&a1.id).await.unwrap(), Some(a1.clone()), "approvals: round-trip");
    assert_eq!(store.get_approval("no-such-approval").await.unwrap(), None, "approvals: unknown reads None");
    assert!(matches!(store.insert_approval(&a1).await, Err(StoreError::Conflict(_))), "approvals: the same id twice is a conflict");
    let orphan = approval(&unique("apr"), "no-such-task", &binding, T0, T0 + 1);
    assert!(matches!(store.insert_approval(&orphan).await, Err(StoreError::NotFound(_))), "approvals: an unknown task is not found");
    assert_eq!(store.get_approval(&orphan.id).await.unwrap(), None, "approvals: a refused insert leaves nothing");

    // The binding lookup: open at a time before expiry, not at or after it.
    assert_eq!(store.open_approval_by_binding(&binding, T0 + 2_000).await.unwrap(), Some(a1.clone()), "approvals: open by binding");
    assert_eq!(store.open_approval_by_binding(&binding, T0 + 60_000).await.unwrap(), None, "approvals: an expired one is not open");
    assert_eq!(store.open_approval_by_binding(&unique("other"), T0).await.unwrap(), None, "approvals: another binding is not matched");

    // Using a pending approval does nothing.
    assert_eq!(store.use_approval(&a1.id, "dec-x", T0 + 2_000).await.unwrap(), None, "approvals: a pending one cannot be used");

    // Deciding: only approved/denied, only once, only before expiry.
    assert!(
        matches!(store.decide_approval(&a1.id, ApprovalStatus::Used, "token:x", "x", "", T0).await, Err(StoreError::Invalid(_))),
        "approvals: deciding as `used` is invalid"
    );
    assert_eq!(store.decide_approval("no-such-approval", ApprovalStatus::Approved, "t", "l", "", T0).await.unwrap(), None);
    let (decided, moved) = store
        .decide_approval(&a1.id, ApprovalStatus::Approved, "token:tok_1", "carol@example.com", "ok for 4411", T0 + 3_000)
        .await
        .unwrap()
        .unwrap();
    assert!(moved, "approvals: a pending one is decided");
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("token:tok_1"));
    assert_eq!(decided.decided_by_label.as_deref(), Some("carol@example.com"));
    assert_eq!(decided.comment.as_deref(), Some("ok for 4411"));
    assert_eq!(decided.decided_at_ms, Some(T0 + 3_000));
    assert_eq!(store.get_approval(&a1.id).await.unwrap(), Some(decided.clone()), "approvals: the decision is stored");
    let (again, moved) =
        store.decide_approval(&a1.id, ApprovalStatus::Denied, "token:tok_2", "dave", "", T0 + 4_000).await.unwrap().unwrap();
    assert!(!moved, "approvals: a decided one is not decided again");
    assert_eq!(again, decided, "approvals: a refused decision changes nothing");

    // Using: exactly once, even when racing.
    let decision_ids: Vec<String> = (0..4).map(|i| format!("dec-use-{i}")).collect();
    let uses = join_all(decision_ids.iter().map(|d| store.use_approval(&a1.id, d, T0 + 5_000)).collect()).await;
    let used: Vec<Approval> = uses.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(used.len(), 1, "approvals: racing uses succeed exactly once");
    assert_eq!(used[0].status, ApprovalStatus::Used);
    assert_eq!(used[0].used_at_ms, Some(T0 + 5_000));
    assert!(used[0].used_by_decision.as_deref().is_some_and(|d| d.starts_with("dec-use-")));
    assert_eq!(store.use_approval(&a1.id, "dec-late", T0 + 6_000).await.unwrap(), None, "approvals: a used one cannot be used again");
    assert_eq!(store.open_approval_by_binding(&binding, T0 + 6_000).await.unwrap(), None, "approvals: a used one is not open");

    // An approved one past its expiry cannot be used, and a pending one past expiry cannot be
    // decided.
    let a2 = approval(&unique("apr"), &t.id, &binding, T0 + 10_000, T0 + 20_000);
    store.insert_approval(&a2).await.unwrap();
    let (late, moved) = store.decide_approval(&a2.id, ApprovalStatus::Approved, "token:t", "l", "", T0 + 20_000).await.unwrap().unwrap();
    assert!(!moved && late.status == ApprovalStatus::Pending, "approvals: an expired one is not decided");
    store.decide_approval(&a2.id, ApprovalStatus::Approved, "token:t", "l", "", T0 + 11_000).await.unwrap().unwrap();
    assert_eq!(store.use_approval(&a2.id, "dec-expired", T0 + 20_000).await.unwrap(), None, "approvals: an expired grant is not used");

    // Denied, and one still pending, for the expiry sweep and the filters.
    let a3 = approval(&unique("apr"), &t.id, &unique("binding"), T0 + 12_000, T0 + 30_000);
    let a4 = approval(&unique("apr"), &t.id, &unique("binding"), T0 + 13_000, T0 + 25_000);
    store.insert_approval(&a3).await.unwrap();
    store.insert_approval(&a4).await.unwrap();
    store.decide_approval(&a3.id, ApprovalStatus::Denied, "token:t", "l", "no", T0 + 14_000).await.unwrap().unwrap();

    let expired = store.expire_approvals(T0 + 26_000).await.unwrap();
    let mine: Vec<&Approval> = expired.iter().filter(|a| a.task_id == t.id).collect();
    assert_eq!(
        mine.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec![a2.id.as_str(), a4.id.as_str()],
        "approvals: expiry takes approved and pending ones whose time has come, soonest first"
    );
    assert!(mine.iter().all(|a| a.status == ApprovalStatus::Expired));
    assert_eq!(store.get_approval(&a3.id).await.unwrap().unwrap().status, ApprovalStatus::Denied, "approvals: expiry leaves a denied one");
    assert!(store.expire_approvals(T0 + 26_000).await.unwrap().iter().all(|a| a.task_id != t.id), "approvals: expiry is idempotent");

    let of_task = ApprovalFilter { task: Some(t.id.clone()), ..ApprovalFilter::default() };
    let ids: Vec<String> = store.list_approvals(&of_task).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![a4.id.clone(), a3.id.clone(), a2.id.clone(), a1.id.clone()], "approvals: list is newest first");
    let denied = ApprovalFilter { status: Some(ApprovalStatus::Denied), ..of_task.clone() };
    let ids: Vec<String> = store.list_approvals(&denied).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![a3.id.clone()], "approvals: list filters by status");
    let one = ApprovalFilter { limit: 1, ..of_task.clone() };
    assert_eq!(store.list_approvals(&one).await.unwrap().len(), 1, "approvals: list honours the limit");
    let none = ApprovalFilter { limit: 0, ..of_task };
    assert!(store.list_approvals(&none).await.unwrap().is_empty(), "approvals: limit 0 returns nothing");
}
