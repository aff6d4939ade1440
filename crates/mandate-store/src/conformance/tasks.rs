//! Conformance of tasks (storage, listing, ending, delegation trees) and attestation replay
//! protection.

use std::collections::BTreeSet;

use mandate_core::{TaskEnd, TaskStatus};

use super::{T0, agent, child, join_all, task, unique};
use crate::{Store, StoreError, TaskFilter};

/// Tasks round-trip, conflict by id, refer to known agents and parents, and list newest first
/// under every filter.
pub async fn tasks(store: &dyn Store) {
    let owner = agent(&unique("task-agent"));
    store.insert_agent(&owner).await.unwrap();
    let t1 = task(&unique("t"), &owner, T0 + 1_000, T0 + 60_000);
    let t2 = task(&unique("t"), &owner, T0 + 2_000, T0 + 60_000);
    let t3 = child(&unique("t"), &t1, T0 + 3_000);
    for t in [&t1, &t2, &t3] {
        store.insert_task(t).await.unwrap();
    }

    assert_eq!(store.get_task(&t1.id).await.unwrap(), Some(t1.clone()), "tasks: round-trip");
    assert_eq!(store.get_task(&t3.id).await.unwrap(), Some(t3.clone()), "tasks: round-trip delegated");
    assert_eq!(store.get_task("no-such-task").await.unwrap(), None, "tasks: unknown reads None");
    assert!(
        matches!(store.insert_task(&t1).await, Err(StoreError::Conflict(_))),
        "tasks: a second task with the same id must be a conflict"
    );
    let stranger = task(&unique("t"), &agent(&unique("unregistered")), T0, T0 + 1);
    assert!(
        matches!(store.insert_task(&stranger).await, Err(StoreError::NotFound(_))),
        "tasks: a task of an unknown agent must be not found"
    );
    let orphan = child(&unique("t"), &task("no-such-parent", &owner, T0, T0 + 1), T0);
    assert!(
        matches!(store.insert_task(&orphan).await, Err(StoreError::NotFound(_))),
        "tasks: a task whose parent is unknown must be not found"
    );
    assert_eq!(store.get_task(&orphan.id).await.unwrap(), None, "tasks: a refused insert leaves nothing");

    let ids = |ts: Vec<mandate_core::Task>| ts.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let by_agent = TaskFilter { agent: Some(owner.name.to_string()), ..TaskFilter::default() };
    assert_eq!(
        ids(store.list_tasks(&by_agent).await.unwrap()),
        [t3.id.as_str(), t2.id.as_str(), t1.id.as_str()],
        "tasks: list by agent, newest first"
    );
    let limited = TaskFilter { limit: 2, ..by_agent.clone() };
    assert_eq!(ids(store.list_tasks(&limited).await.unwrap()), [t3.id.as_str(), t2.id.as_str()], "tasks: limit");
    let none = TaskFilter { limit: 0, ..by_agent.clone() };
    assert!(store.list_tasks(&none).await.unwrap().is_empty(), "tasks: limit 0 returns nothing");
    let by_root = TaskFilter { root: Some(t1.id.clone()), ..TaskFilter::default() };
    assert_eq!(ids(store.list_tasks(&by_root).await.unwrap()), [t3.id.as_str(), t1.id.as_str()], "tasks: list by root");
    let live = TaskFilter { status: Some(TaskStatus::Live), ..by_agent.clone() };
    assert_eq!(store.list_tasks(&live).await.unwrap().len(), 3, "tasks: list by status");
    let revoked = TaskFilter { status: Some(TaskStatus::Revoked), ..by_agent.clone() };
    assert!(store.list_tasks(&revoked).await.unwrap().is_empty(), "tasks: status filter excludes");

    let all_live = ids(store.live_tasks().await.unwrap());
    for t in [&t1, &t2, &t3] {
        assert!(all_live.contains(&t.id), "tasks: live_tasks holds every live task");
    }
    assert_eq!(
        store.live_task_ids_of_agent(owner.name.as_str()).await.unwrap(),
        [t3.id.as_str(), t2.id.as_str(), t1.id.as_str()],
        "tasks: live ids of agent, newest first"
    );
    assert!(store.live_task_ids_of_agent("no-such-agent").await.unwrap().is_empty());
}

/// `end_tasks` ends only live tasks, once, atomically; expiry lists what is due.
pub async fn task_endings(store: &dyn Store) {
    let owner = agent(&unique("end-agent"));
    store.insert_agent(&owner).await.unwrap();
    let base = T0 + 10_000_000;
    let a = task(&unique("t"), &owner, base, base + 5_000);
    let b = task(&unique("t"), &owner, base + 1, base + 10_000);
    let c = task(&unique("t"), &owner, base + 2, base + 20_000);
    for t in [&a, &b, &c] {
        store.insert_task(t).await.unwrap();
    }

    let due = store.expired_live_task_ids(base + 10_000).await.unwrap();
    assert!(due.contains(&a.id) && due.contains(&b.id), "task_endings: expiry at or before now is due");
    assert!(!due.contains(&c.id), "task_endings: a later expiry is not due");
    let pa = due.iter().position(|x| x == &a.id);
    let pb = due.iter().position(|x| x == &b.id);
    assert!(pa < pb, "task_endings: due ids come soonest expiry first");

    let revoke = TaskEnd { status: TaskStatus::Revoked, at_ms: base + 100, by: "tok_admin".into(), reason: "incident 7".into() };
    let ended = store.end_tasks(&[a.id.clone(), "no-such-task".into(), a.id.clone()], &revoke).await.unwrap();
    assert_eq!(ended, [a.id.as_str()], "task_endings: ends a live task once, skips unknown ids");
    let got = store.get_task(&a.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.ended.as_ref()), (TaskStatus::Revoked, Some(&revoke)), "task_endings: end recorded");

    let complete = TaskEnd { status: TaskStatus::Completed, at_ms: base + 200, by: format!("agent:{}", owner.name), reason: "done".into() };
    let ended = store.end_tasks(&[a.id.clone(), b.id.clone()], &complete).await.unwrap();
    assert_eq!(ended, [b.id.as_str()], "task_endings: an ended task is not ended again");
    assert!(store.end_tasks(&[a.id.clone(), b.id.clone()], &complete).await.unwrap().is_empty(), "task_endings: idempotent");
    assert_eq!(store.get_task(&a.id).await.unwrap().unwrap().ended, Some(revoke), "task_endings: first end stays");
    assert!(store.end_tasks(&[], &complete).await.unwrap().is_empty(), "task_endings: nothing to end");

    let live_now = store.live_task_ids_of_agent(owner.name.as_str()).await.unwrap();
    assert_eq!(live_now, [c.id.as_str()], "task_endings: only the unended task is live");
    let due = store.expired_live_task_ids(base + 10_000).await.unwrap();
    assert!(!due.contains(&a.id) && !due.contains(&b.id), "task_endings: ended tasks are never due");
    let live = store.live_tasks().await.unwrap();
    assert!(live.iter().all(|t| t.id != a.id && t.id != b.id), "task_endings: live_tasks drops ended tasks");

    let not_an_end = TaskEnd { status: TaskStatus::Live, ..complete.clone() };
    assert!(
        matches!(store.end_tasks(std::slice::from_ref(&c.id), &not_an_end).await, Err(StoreError::Invalid(_))),
        "task_endings: ending as `live` is invalid"
    );
    assert_eq!(store.get_task(&c.id).await.unwrap().unwrap().status, TaskStatus::Live, "task_endings: refused end leaves it");

    // Racing calls over the same ids: every task ends exactly once.
    let racing: Vec<_> = (0..24).map(|i| task(&unique("race"), &owner, base + 1_000 + i, base + 60_000)).collect();
    for t in &racing {
        store.insert_task(t).await.unwrap();
    }
    let all_ids: Vec<String> = racing.iter().map(|t| t.id.clone()).collect();
    let mut reversed = all_ids.clone();
    reversed.reverse();
    let expire = TaskEnd { status: TaskStatus::Expired, at_ms: base + 60_000, by: "system".into(), reason: "ttl".into() };
    let calls = vec![store.end_tasks(&all_ids, &expire), store.end_tasks(&reversed, &expire), store.end_tasks(&all_ids, &expire)];
    let results: Vec<Vec<String>> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
    let total: usize = results.iter().map(Vec::len).sum();
    let union: BTreeSet<&String> = results.iter().flatten().collect();
    assert_eq!((total, union.len()), (all_ids.len(), all_ids.len()), "task_endings: racing ends end each task once");
}

/// `descendant_task_ids` follows `parent_id` transitively, ordered by depth.
pub async fn task_tree(store: &dyn Store) {
    let owner = agent(&unique("tree-agent"));
    store.insert_agent(&owner).await.unwrap();
    let root = task(&unique("root"), &owner, T0, T0 + 60_000);
    let c1 = child(&unique("c1"), &root, T0 + 1);
    let c2 = child(&unique("c2"), &root, T0 + 2);
    let g1 = child(&unique("g1"), &c1, T0 + 3);
    let gg = child(&unique("gg"), &g1, T0 + 4);
    let g2 = child(&unique("g2"), &c2, T0 + 5);
    for t in [&root, &c1, &c2, &g1, &gg, &g2] {
        store.insert_task(t).await.unwrap();
    }
    assert_eq!(
        store.descendant_task_ids(&root.id).await.unwrap(),
        [c1.id.as_str(), c2.id.as_str(), g1.id.as_str(), g2.id.as_str(), gg.id.as_str()],
        "task_tree: every descendant, by depth then creation"
    );
    assert_eq!(store.descendant_task_ids(&c1.id).await.unwrap(), [g1.id.as_str(), gg.id.as_str()], "task_tree: a subtree");
    assert!(store.descendant_task_ids(&gg.id).await.unwrap().is_empty(), "task_tree: a leaf has none");
    assert!(store.descendant_task_ids("no-such-task").await.unwrap().is_empty(), "task_tree: unknown has none");
    let tree = store.list_tasks(&TaskFilter { root: Some(root.id.clone()), ..TaskFilter::default() }).await.unwrap();
    assert_eq!(tree.len(), 6, "task_tree: every task of the tree shares its root");
}

/// A `(issuer, jti)` pair is accepted once until it is purged after its expiry.
pub async fn jti_replay(store: &dyn Store) {
    let iss = unique("https://issuer");
    let other = unique("https://issuer");
    let now = T0;
    assert!(store.consume_jti(&iss, "j1", now + 1_000, now).await.unwrap(), "jti_replay: first use");
    assert!(!store.consume_jti(&iss, "j1", now + 1_000, now).await.unwrap(), "jti_replay: replay refused");
    assert!(!store.consume_jti(&iss, "j1", now + 9_000, now + 500).await.unwrap(), "jti_replay: still refused later");
    assert!(store.consume_jti(&other, "j1", now + 1_000, now).await.unwrap(), "jti_replay: scoped per issuer");

    // Purge: an entry is kept while expires_at_ms >= now_ms.
    assert!(store.consume_jti(&iss, "j2", now + 600, now).await.unwrap());
    assert!(!store.consume_jti(&iss, "j2", now + 600, now + 600).await.unwrap(), "jti_replay: kept at its expiry");
    assert!(store.consume_jti(&iss, "j2", now + 5_000, now + 601).await.unwrap(), "jti_replay: purged after expiry");
    assert!(!store.consume_jti(&iss, "j1", now + 1_000, now + 601).await.unwrap(), "jti_replay: purge keeps live ones");

    // Racing first uses: exactly one wins.
    let calls: Vec<_> = (0..16).map(|_| store.consume_jti(&iss, "j3", now + 10_000, now)).collect();
    let wins = join_all(calls).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(wins, 1, "jti_replay: racing first uses, exactly one wins");
}
