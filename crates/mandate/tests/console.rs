//! The web console in a real browser: the real `mandate serve`, Debian's headless Chromium
//! driven over WebDriver (chromedriver), the pages clicked through as a person would, and
//! every effect checked over the API. A screenshot of each page is saved as a test artifact
//! under `$CARGO_TARGET_TMPDIR/console-screenshots/`.
//!
//! Needs `/usr/bin/chromedriver` and Chromium (`apt-get install chromium chromium-driver`);
//! without them the test fails and says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "the console test drives a real browser: install Chromium and its WebDriver with \
             `apt-get install -y chromium chromium-driver` (CI's .ci/run does this)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "chromedriver did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url, profiles: tempfile::tempdir().unwrap() }
    }

    /// A fresh headless Chromium with a profile of its own.
    async fn browser(&self, name: &str) -> Browser {
        let profile = self.profiles.path().join(name);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        // chromedriver can be slow to answer its first session on a busy machine.
        let mut last = None;
        for _ in 0..20 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => {
                    c.set_window_size(1280, 1000).await.unwrap();
                    return c;
                }
                Err(e) => {
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        panic!("no browser session: {last:?}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a PNG of the whole page the browser shows now.
async fn shot(b: &Browser, name: &str) {
    let height = b.execute("return document.documentElement.scrollHeight", vec![]).await.unwrap().as_u64().unwrap_or(1000);
    b.set_window_size(1280, u32::try_from((height + 120).clamp(700, 6000)).unwrap()).await.unwrap();
    let png = b.screenshot().await.unwrap();
    b.set_window_size(1280, 1000).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = shots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

/// Clicks what submits a form or follows a link, and waits until the next page has loaded (the
/// old document gone, the new one complete): a WebDriver click does not always wait for it.
async fn press(b: &Browser, el: fantoccini::elements::Element) {
    let old = b.find(Locator::Css("html")).await.unwrap();
    el.click().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while old.tag_name().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the click did not lead to a new page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let ready = b.execute("return document.readyState", vec![]).await.ok();
        if ready.as_ref().and_then(Value::as_str) == Some("complete") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the next page did not finish loading");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn text(b: &Browser) -> String {
    b.find(Locator::Css("body")).await.unwrap().text().await.unwrap()
}

async fn log_in(b: &Browser, server: &Server, token: &str) {
    b.goto(&format!("{}/console", server.url)).await.unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/console/login", "an anonymous visit goes to the login page");
    b.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(token).await.unwrap();
    press(b, b.find(Locator::Css("section.login button[type=submit]")).await.unwrap()).await;
}

/// A task's status over the API.
async fn status(server: &Server, task: &str) -> String {
    server.admin().get_task(task).await.unwrap().status
}

/// The value of the hidden CSRF field in an HTML page.
fn csrf_in(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
    html[at..].split('"').next().unwrap().to_owned()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_runs_the_console_in_a_browser() {
    let driver = Driver::start();
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(shots());
    let server = Server::start();
    let admin = server.admin();
    let pep = pep(&server).await;
    let approver = admin.create_token("approver", "carol@example.com").await.unwrap();
    let auditor = admin.create_token("auditor", "dave@example.com").await.unwrap();
    let pep_token = admin.create_token("pep", "gateway").await.unwrap();
    let bootstrap = admin.list_tokens().await.unwrap().into_iter().find(|t| t.label == "bootstrap").unwrap();

    // Three agents at work: one reads tickets, one refunds payments, one is about to be stopped.
    let support = register_agent(&admin, "support-bot", &[]).await;
    let billing = register_agent(&admin, "billing-bot", &[]).await;
    let scratch = register_agent(&admin, "scratch-bot", &[]).await;
    let (m_support, t_support) = open_task(&server, &support, &read_intent()).await;
    let r = pep.evaluate(&evaluation(&support, &m_support, "tickets.read", "ticket", "4411", "internal")).await.unwrap();
    assert!(r.decision);
    let bound = |r: &mandate_proto::authzen::EvaluationResponse| {
        let ctx = r.context.as_ref().unwrap();
        (ctx["decision_id"].as_str().unwrap().to_owned(), ctx["receipt"].as_str().map(str::to_owned))
    };
    let (read_decision, read_receipt) = bound(&r);
    let r = pep.evaluate(&evaluation(&support, &m_support, "tickets.delete", "ticket", "4411", "internal")).await.unwrap();
    assert_eq!(reason(&r), "action_outside_intent");
    // A gateway reports the tool call it forwarded (the evidence intake a remote gateway uses).
    let call = mandate_proto::gateway::EvidenceEvent {
        kind: "tool.call".into(),
        ts_ms: now() * 1000,
        agent: Some(support.name.clone()),
        task: Some(t_support.clone()),
        details: json!({"upstream": "helpdesk", "tool": "tickets.read", "action": "helpdesk.tickets.read", "kind": "read",
                        "decision": true, "reason": "allowed", "forwarded": true, "result": "ok", "latency_us": 1800,
                        "decision_id": read_decision}),
        receipt: read_receipt,
    };
    pep.submit_evidence(&[call]).await.unwrap();
    // support-bot hands the reading part of its task to research-bot: a chain of two agents.
    let research = register_agent(&admin, "research-bot", &[]).await;
    let sub_intent = json!({
        "type": "agent_task", "purpose": "Find earlier tickets like 4411",
        "actions": ["tickets.search"], "resources": ["ticket:*"], "max_classification": "internal", "lifetime_seconds": 300
    });
    let child = server.anon().delegate(&m_support, &attestation(&research, &server.url), &sub_intent).await.unwrap();
    let (m_child, t_child) = (child.access_token, child.task_id);
    let r = pep.evaluate(&evaluation(&research, &m_child, "tickets.search", "ticket", "4411", "internal")).await.unwrap();
    assert!(r.decision, "{r:?}");
    let (search_decision, search_receipt) = bound(&r);
    let call = mandate_proto::gateway::EvidenceEvent {
        kind: "tool.call".into(),
        ts_ms: now() * 1000,
        agent: Some(research.name.clone()),
        task: Some(t_child.clone()),
        details: json!({"upstream": "helpdesk", "tool": "tickets.search", "action": "helpdesk.tickets.search", "kind": "read",
                        "decision": true, "reason": "allowed", "forwarded": true, "result": "ok", "latency_us": 2400,
                        "decision_id": search_decision}),
        receipt: search_receipt,
    };
    pep.submit_evidence(&[call]).await.unwrap();
    let refund_intent = json!({
        "type": "agent_task", "purpose": "Refund the duplicate charge on order 991",
        "actions": ["payments.refund"], "resources": ["payment:*"], "max_classification": "internal", "lifetime_seconds": 600
    });
    let (m_billing, t_billing) = open_task(&server, &billing, &refund_intent).await;
    // The refund is an execution: policy holds it for a person, bound to these exact arguments.
    let refund = |m: &str| {
        let mut r = evaluation(&billing, m, "payments.refund", "payment", "991", "internal");
        r.context = json!({"arguments": {"amount": 42, "currency": "EUR", "order": "991"}}).as_object().cloned();
        r
    };
    let r = pep.evaluate(&refund(&m_billing)).await.unwrap();
    assert_eq!(reason(&r), "approval_required");
    let first_approval = r.context.as_ref().unwrap()["approval_id"].as_str().unwrap().to_owned();
    let (_m_scratch, t_scratch) = open_task(&server, &scratch, &read_intent()).await;

    // ---- the admin logs in ----
    let b = driver.browser("admin").await;
    b.goto(&format!("{}/console", server.url)).await.unwrap();
    shot(&b, "01-login").await;
    log_in(&b, &server, ADMIN).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console");
    let page = text(&b).await;
    for name in ["support-bot", "billing-bot", "scratch-bot", "research-bot", "alice@example.com", "Summarise support tickets"] {
        assert!(page.contains(name), "agents page shows {name}:\n{page}");
    }
    let who = b.find(Locator::Css("header .who")).await.unwrap().text().await.unwrap().to_lowercase();
    assert!(who.contains("bootstrap") && who.contains("admin"), "who is logged in: {who}");
    shot(&b, "02-agents").await;

    // ---- the kill switch ----
    press(&b, b.find(Locator::Css("form[action='/console/agents/scratch-bot/disable'] button")).await.unwrap()).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console/agents/scratch-bot");
    let page = text(&b).await;
    assert!(page.contains("Agent `scratch-bot` is disabled; 1 task revoked."), "{page}");
    assert_eq!(admin.get_agent("scratch-bot").await.unwrap().status, "disabled");
    assert_eq!(status(&server, &t_scratch).await, "revoked");
    shot(&b, "03-agent-disabled").await;

    // ---- tasks, filtered with the form ----
    b.goto(&format!("{}/console/tasks", server.url)).await.unwrap();
    b.find(Locator::Css("select[name=agent]")).await.unwrap().select_by_value("support-bot").await.unwrap();
    b.find(Locator::Css("select[name=status]")).await.unwrap().select_by_value("live").await.unwrap();
    press(&b, b.find(Locator::Css("form.filters button[type=submit]")).await.unwrap()).await;
    let url = b.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/tasks");
    assert_eq!(url.query(), Some("agent=support-bot&status=live"));
    let rows = b.find_all(Locator::Css("table.grid tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "only support-bot's live task");
    let page = text(&b).await;
    assert!(page.contains("Summarise ticket 4411") && !page.contains("Refund the duplicate charge"), "{page}");
    shot(&b, "04-tasks-filtered").await;

    // ---- the task's timeline, verified, with the chain of agents below it ----
    press(&b, b.find(Locator::Css(&format!("table a[href='/console/tasks/{t_support}']"))).await.unwrap()).await;
    assert_eq!(b.current_url().await.unwrap().path(), format!("/console/tasks/{t_support}"));
    // Follow the chain down to the delegated task, and back up to the root.
    press(&b, b.find(Locator::Css(&format!("ul.tree a[href='/console/tasks/{t_child}']"))).await.unwrap()).await;
    let page = text(&b).await;
    assert!(page.contains("Find earlier tickets like 4411") && page.contains("To stop the whole chain, revoke its root task"), "{page}");
    assert!(page.contains("Delegated task opened") && page.contains("Tool call tickets.search forwarded"), "{page}");
    shot(&b, "05-delegated-task").await;
    press(&b, b.find(Locator::Css(&format!("ul.tree a[href='/console/tasks/{t_support}']"))).await.unwrap()).await;
    assert_eq!(b.current_url().await.unwrap().path(), format!("/console/tasks/{t_support}"));
    let page = text(&b).await;
    let tree = b.find(Locator::Css("ul.tree")).await.unwrap().text().await.unwrap();
    assert!(tree.contains("support-bot") && tree.contains("research-bot"), "{tree}");
    assert!(page.contains("verified"), "{page}");
    assert!(page.contains("The whole trail is intact"), "{page}");
    for want in [
        "Task opened",
        "Mandate issued",
        "Decision allow tickets.read",
        "Decision deny tickets.delete",
        "action_outside_intent",
        "Tool call tickets.read forwarded",
        "helpdesk",
        "Delegated task opened",
        "Find earlier tickets like 4411",
        "Decision allow tickets.search",
        "Tool call tickets.search forwarded",
        "and the 1 task(s) delegated from it",
    ] {
        assert!(page.contains(want), "timeline shows {want:?}:\n{page}");
    }
    let events = b.find_all(Locator::Css("ol.events li.event")).await.unwrap();
    assert_eq!(
        events.len(),
        9,
        "the root's opened, issued, two decisions, a tool call; the child's opened, issued, a decision, a tool call"
    );
    assert!(b.find_all(Locator::Css("li.event .chain.ok")).await.unwrap().len() == 9, "every event verified");
    shot(&b, "06-timeline").await;

    // ---- stop the whole chain with one action; both mandates are refused at once ----
    b.find(Locator::Css("input[name=reason]")).await.unwrap().send_keys("ticket closed by a person").await.unwrap();
    let button = b.find(Locator::Css("form.revoke button[type=submit]")).await.unwrap();
    assert_eq!(button.text().await.unwrap(), "Revoke this task and 1 delegated");
    press(&b, button).await;
    let page = text(&b).await;
    assert!(page.contains("Task revoked, and 1 task delegated from it."), "{page}");
    assert!(page.contains("ticket closed by a person"), "{page}");
    assert_eq!(status(&server, &t_support).await, "revoked");
    assert_eq!(status(&server, &t_child).await, "revoked", "the delegated task dies with its root");
    let r = pep.evaluate(&evaluation(&support, &m_support, "tickets.read", "ticket", "4411", "internal")).await.unwrap();
    assert_eq!(reason(&r), "task_revoked");
    let r = pep.evaluate(&evaluation(&research, &m_child, "tickets.search", "ticket", "4411", "internal")).await.unwrap();
    assert!(!r.decision, "{r:?}");
    assert!(b.find_all(Locator::Css("form.revoke")).await.unwrap().is_empty(), "no revoke button on an ended task");
    assert_eq!(b.find_all(Locator::Css("li.event.ev-end")).await.unwrap().len(), 2, "the root and the child ended");
    shot(&b, "07-timeline-revoked").await;

    // ---- the policy page and a what-if ----
    b.goto(&format!("{}/console/policy", server.url)).await.unwrap();
    let page = text(&b).await;
    assert!(page.contains("agents.read-within-task") && page.contains("Version"), "{page}");
    let before = admin.audit_events(&[("kind", "decision".to_owned()), ("limit", "1000".to_owned())]).await.unwrap().events.len();
    b.find(Locator::Css("input[name=subject_id]")).await.unwrap().send_keys("billing-bot").await.unwrap();
    b.find(Locator::Css("input[name=action]")).await.unwrap().send_keys("payments.refund").await.unwrap();
    b.find(Locator::Css("input[name=resource_type]")).await.unwrap().send_keys("payment").await.unwrap();
    b.find(Locator::Css("input[name=resource_id]")).await.unwrap().send_keys("991").await.unwrap();
    b.find(Locator::Css("select[name=classification]")).await.unwrap().select_by_value("internal").await.unwrap();
    press(&b, b.find(Locator::Css("form.whatif button[type=submit]")).await.unwrap()).await;
    let page = text(&b).await;
    assert!(page.contains("A real request would get: approval required approval_required"), "{page}");
    assert!(page.contains("agents.execute-needs-approval"), "{page}");
    let after = admin.audit_events(&[("kind", "decision".to_owned()), ("limit", "1000".to_owned())]).await.unwrap().events.len();
    assert_eq!(before, after, "a what-if is never recorded as a decision");
    shot(&b, "08-policy-what-if").await;

    // ---- forged forms: refused, nothing changed ----
    let session = b.get_named_cookie("mandate_session").await.unwrap();
    assert!(session.http_only().unwrap_or(false), "the session cookie is HttpOnly");
    let cookie = format!("mandate_session={}", session.value());
    let http = no_redirects();
    let revoke_url = format!("{}/console/tasks/{t_billing}/revoke", server.url);
    let page_html = http.get(format!("{}/console/tasks", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_in(&page_html);
    for (body, origin, why) in [
        ("reason=forged".to_owned(), None, "csrf_token_missing"),
        ("reason=forged&csrf=not-the-token".to_owned(), None, "csrf_token_wrong"),
        (format!("csrf={csrf}"), Some("http://evil.example"), "cross_origin"),
    ] {
        let mut req =
            http.post(&revoke_url).header("cookie", &cookie).header("content-type", "application/x-www-form-urlencoded").body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{why}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("csrf_refused") && html.contains(why), "{why}: {html}");
        assert!(html.contains("nothing was changed"));
    }
    assert_eq!(status(&server, &t_billing).await, "live", "no forged form changed anything");
    let refused = admin.audit_events(&[("kind", "console.csrf_refused".to_owned())]).await.unwrap().events;
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|e| e["actor"] == format!("token:{}", bootstrap.id)), "{refused:?}");
    // The genuine token from the page works (the same request, not forged).
    let resp = http
        .post(format!("{}/console/policy", server.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&subject_id=support-bot&action=tickets.read&resource_type=ticket&resource_id=1&classification=internal"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // ---- log out; an approver and an auditor ----
    press(&b, b.find(Locator::Css("form[action='/console/logout'] button")).await.unwrap()).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console/login");
    assert!(text(&b).await.contains("You are logged out."));
    let resp = http.get(format!("{}/console", server.url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 303, "the old session is gone");

    log_in(&b, &server, &auditor.token).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console");
    assert!(text(&b).await.contains("dave@example.com"));
    assert!(b.find_all(Locator::Css("form[action$='/disable']")).await.unwrap().is_empty(), "an auditor sees no disable button");
    b.goto(&format!("{}/console/tasks", server.url)).await.unwrap();
    assert!(b.find_all(Locator::Css("form[action$='/revoke']")).await.unwrap().is_empty(), "an auditor sees no revoke button");
    b.goto(&format!("{}/console/tasks/{t_billing}", server.url)).await.unwrap();
    assert!(b.find_all(Locator::Css("form.revoke")).await.unwrap().is_empty());
    shot(&b, "09-auditor-task").await;
    // And the server refuses what the page does not offer, even with a genuine CSRF token.
    let auditor_cookie = format!("mandate_session={}", b.get_named_cookie("mandate_session").await.unwrap().value());
    let html =
        http.get(format!("{}/console/tasks", server.url)).header("cookie", &auditor_cookie).send().await.unwrap().text().await.unwrap();
    let resp = http
        .post(&revoke_url)
        .header("cookie", &auditor_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf_in(&html)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("a `auditor` token may not revoke tasks"));
    assert_eq!(status(&server, &t_billing).await, "live");

    b.goto(&format!("{}/console/approvals", server.url)).await.unwrap();
    assert_eq!(b.find_all(Locator::Css("article.approval")).await.unwrap().len(), 1);
    assert!(b.find_all(Locator::Css("form[action$='/decide']")).await.unwrap().is_empty(), "an auditor cannot decide");
    press(&b, b.find(Locator::Css("form[action='/console/logout'] button")).await.unwrap()).await;

    // ---- the approver approves the held refund: the identical call goes through once ----
    log_in(&b, &server, &approver.token).await;
    b.goto(&format!("{}/console/approvals", server.url)).await.unwrap();
    let card = b.find(Locator::Css(&format!("article#approval-{first_approval}"))).await.unwrap();
    let shown = card.text().await.unwrap();
    for want in [
        "payments.refund → payment:991",
        "billing-bot",
        &t_billing,
        "\"amount\": 42",
        "\"currency\": \"EUR\"",
        "agents.execute-needs-approval",
    ] {
        assert!(shown.contains(want), "the card shows the exact call ({want}):\n{shown}");
    }
    assert!(b.find_all(Locator::Css("form[action$='/disable'], form[action$='/revoke']")).await.unwrap().is_empty());
    shot(&b, "10-approvals-pending").await;
    card.find(Locator::Css("input[name=comment]")).await.unwrap().send_keys("duplicate charge confirmed with the customer").await.unwrap();
    press(&b, card.find(Locator::Css("button[value=approve]")).await.unwrap()).await;
    let page = text(&b).await;
    assert!(page.contains("Approved `payments.refund` on `payment:991`: the agent's identical call is allowed once."), "{page}");
    let a = admin.get_approval(&first_approval, None).await.unwrap();
    assert_eq!(a.status, "approved");
    assert_eq!(a.decided_by_label.as_deref(), Some("carol@example.com"));
    assert_eq!(a.decided_by.as_deref(), Some(format!("token:{}", approver.id).as_str()));
    let r = pep.evaluate(&refund(&m_billing)).await.unwrap();
    assert!(r.decision, "the identical call is allowed: {r:?}");
    let r = pep.evaluate(&refund(&m_billing)).await.unwrap();
    assert_eq!(reason(&r), "approval_required", "only once");
    let second_approval = r.context.as_ref().unwrap()["approval_id"].as_str().unwrap().to_owned();
    assert_ne!(second_approval, first_approval);
    // The second one is denied from the page.
    b.goto(&format!("{}/console/approvals", server.url)).await.unwrap();
    let card = b.find(Locator::Css(&format!("article#approval-{second_approval}"))).await.unwrap();
    press(&b, card.find(Locator::Css("button[value=deny]")).await.unwrap()).await;
    assert!(text(&b).await.contains("Denied `payments.refund` on `payment:991`."));
    assert_eq!(admin.get_approval(&second_approval, None).await.unwrap().status, "denied");
    let page = text(&b).await;
    assert!(page.contains("Nothing is waiting for a decision.") && page.contains("duplicate charge confirmed with the customer"), "{page}");
    shot(&b, "11-approvals-decided").await;
    // Deciding twice is refused with the approvals API's code, and changes nothing.
    let approver_cookie = format!("mandate_session={}", b.get_named_cookie("mandate_session").await.unwrap().value());
    let html = http
        .get(format!("{}/console/approvals", server.url))
        .header("cookie", &approver_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = http
        .post(format!("{}/console/approvals/{first_approval}/decide", server.url))
        .header("cookie", &approver_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&decision=deny", csrf_in(&html)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.unwrap().contains("approval_decided"));
    assert_eq!(admin.get_approval(&first_approval, None).await.unwrap().status, "used");
    // The refund task's timeline tells it: requested, approved by carol, used, requested, denied.
    b.goto(&format!("{}/console/tasks/{t_billing}", server.url)).await.unwrap();
    let page = text(&b).await;
    for want in
        ["Approval requested", "Approval approved", "Approval used", "Approval denied", "carol@example.com", "duplicate charge confirmed"]
    {
        assert!(page.contains(want), "timeline shows {want:?}:\n{page}");
    }
    assert!(page.contains("The whole trail is intact"));
    shot(&b, "12-timeline-approvals").await;

    // A pep token cannot log in at all.
    press(&b, b.find(Locator::Css("form[action='/console/logout'] button")).await.unwrap()).await;
    log_in(&b, &server, &pep_token.token).await;
    assert_eq!(b.current_url().await.unwrap().path(), "/console/login");
    let page = text(&b).await;
    assert!(page.contains("cannot log in to the console") && page.contains("role_not_allowed"), "{page}");
    shot(&b, "13-login-pep-refused").await;
    b.close().await.unwrap();

    // ---- everything the people did is in the verified trail, under their tokens ----
    let v = admin.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    let trail = admin.audit_trail(&t_support).await.unwrap().events;
    let revoked = trail.iter().find(|e| e["kind"] == "task.revoked").unwrap();
    assert_eq!(revoked["actor"], format!("token:{}", bootstrap.id));
    assert_eq!(revoked["details"]["reason"], "ticket closed by a person");
    let logins = admin.audit_events(&[("kind", "console.login".to_owned())]).await.unwrap().events;
    let actors: Vec<&Value> = logins.iter().map(|e| &e["actor"]).collect();
    assert!(
        actors.contains(&&json!(format!("token:{}", bootstrap.id))) && actors.contains(&&json!(format!("token:{}", auditor.id))),
        "{actors:?}"
    );
    let disabled = admin.audit_events(&[("kind", "agent.disabled".to_owned())]).await.unwrap().events;
    assert_eq!(disabled[0]["actor"], format!("token:{}", bootstrap.id));
    println!("screenshots in {}", shots().display());
}

/// The cookies as a plain HTTP client sees them: `HttpOnly`, `SameSite=Strict`, scoped to the
/// console, not `Secure` on plain HTTP; the login's double submit is enforced.
#[tokio::test(flavor = "multi_thread")]
async fn session_cookies_are_strict_and_login_needs_its_form() {
    let server = Server::start();
    let http = no_redirects();
    let resp = http.get(format!("{}/console/login", server.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let set = h.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(set.starts_with("mandate_login_csrf="), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/console"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP: no Secure");
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    let login_cookie = set.split(';').next().unwrap().to_owned();
    let csrf = csrf_in(&resp.text().await.unwrap());
    assert_eq!(login_cookie, format!("mandate_login_csrf={csrf}"), "double submit: the cookie and the field agree");

    let post = |cookie: Option<String>, body: String| {
        let mut r =
            http.post(format!("{}/console/login", server.url)).header("content-type", "application/x-www-form-urlencoded").body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Without the form's cookie, or with another value, a login is a forgery.
    let r = post(None, format!("csrf={csrf}&token={ADMIN}")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("csrf_refused"));
    let r = post(Some(login_cookie.clone()), format!("csrf=other&token={ADMIN}")).await.unwrap();
    assert_eq!(r.status(), 403);
    // A wrong token.
    let r = post(Some(login_cookie.clone()), format!("csrf={csrf}&token=mdt_wrong")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("That API token is not valid."));

    let r = post(Some(login_cookie.clone()), format!("csrf={csrf}&token={ADMIN}")).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers().get("location").unwrap(), "/console");
    let cookies: Vec<String> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let session = cookies.iter().find(|c| c.starts_with("mandate_session=")).unwrap();
    assert!(session.contains("; HttpOnly") && session.contains("; SameSite=Strict") && session.contains("; Path=/console"), "{session}");
    assert!(!session.contains("Secure"));
    let id = session.split(';').next().unwrap().trim_start_matches("mandate_session=");
    assert!(id.len() >= 43, "at least 32 random bytes");
    assert!(!session.contains(ADMIN), "the API token is never echoed");
    assert!(cookies.iter().any(|c| c.starts_with("mandate_login_csrf=;") && c.contains("Max-Age=0")), "the login cookie is dropped");

    // The session works, and dies with its API token.
    let a = server.admin();
    let t = a.create_token("approver", "erin@example.com").await.unwrap();
    let html = http.get(format!("{}/console/login", server.url)).send().await.unwrap();
    let c = html.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = csrf_in(&html.text().await.unwrap());
    let r = post(Some(c), format!("csrf={csrf}&token={}", t.token)).await.unwrap();
    let session = r.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = http.get(format!("{}/console/tasks", server.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("erin@example.com"));
    a.revoke_api_token(&t.id).await.unwrap();
    let page = http.get(format!("{}/console/tasks", server.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers().get("location").unwrap(), "/console/login?ended=revoked");
}

/// Logs in over plain HTTP; returns the session cookie and the page's CSRF token.
async fn http_login(server: &Server, http: &reqwest::Client, token: &str) -> (String, String) {
    let page = http.get(format!("{}/console/login", server.url)).send().await.unwrap();
    let cookie = page.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = csrf_in(&page.text().await.unwrap());
    let r = http
        .post(format!("{}/console/login", server.url))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = http.get(format!("{}/console/tasks", server.url)).header("cookie", &session).send().await.unwrap().text().await.unwrap();
    (session.clone(), csrf_in(&html))
}

/// Bad input on every console form: a clear page with a stable code, never a panic, nothing
/// changed.
#[tokio::test(flavor = "multi_thread")]
async fn bad_console_input_gets_clear_errors_and_changes_nothing() {
    let server = Server::start();
    let admin = server.admin();
    let agent = register_agent(&admin, "support-bot", &[]).await;
    let (_, task) = open_task(&server, &agent, &read_intent()).await;
    let http = no_redirects();
    let (session, csrf) = http_login(&server, &http, ADMIN).await;
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{}{path}", server.url))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let expect = |status: u16, code: &'static str| {
        move |r: reqwest::Response| async move {
            assert_eq!(r.status(), status, "{code}");
            assert_eq!(r.headers().get("content-type").unwrap(), "text/html; charset=utf-8");
            let body = r.text().await.unwrap();
            assert!(body.contains(code), "{code}: {body}");
        }
    };
    // Garbage bytes are a form without a CSRF token.
    expect(403, "csrf_refused")(post(&format!("/console/tasks/{task}/revoke"), vec![0xff, 0x00, 0xfe, b'&', b'=']).await.unwrap()).await;
    // Unknown things.
    expect(404, "task_not_found")(post("/console/tasks/task_nope/revoke", format!("csrf={csrf}").into_bytes()).await.unwrap()).await;
    expect(404, "agent_not_found")(post("/console/agents/nobody/disable", format!("csrf={csrf}").into_bytes()).await.unwrap()).await;
    expect(404, "approval_not_found")(
        post("/console/approvals/apr_nope/decide", format!("csrf={csrf}&decision=approve").into_bytes()).await.unwrap(),
    )
    .await;
    expect(400, "invalid_request")(
        post("/console/approvals/apr_nope/decide", format!("csrf={csrf}&decision=maybe").into_bytes()).await.unwrap(),
    )
    .await;
    // A reason too long, a what-if that cannot be evaluated.
    let long = "x".repeat(600);
    expect(400, "invalid_request")(
        post(&format!("/console/tasks/{task}/revoke"), format!("csrf={csrf}&reason={long}").into_bytes()).await.unwrap(),
    )
    .await;
    let what_if = |extra: &str| {
        format!("csrf={csrf}&subject_id=support-bot&action=tickets.read&resource_type=ticket&resource_id=1{extra}").into_bytes()
    };
    expect(400, "invalid_context")(post("/console/policy", what_if("&context=%7Bnot+json")).await.unwrap()).await;
    expect(400, "invalid_context")(post("/console/policy", what_if("&context=%5B1%5D")).await.unwrap()).await;
    expect(400, "unknown_classification")(post("/console/policy", what_if("&classification=secret")).await.unwrap()).await;
    expect(400, "unknown_action_kind")(post("/console/policy", what_if("&kind=delete")).await.unwrap()).await;
    expect(400, "agent_not_found")(
        post("/console/policy", format!("csrf={csrf}&subject_id=ghost&action=a&resource_type=t&resource_id=1").into_bytes()).await.unwrap(),
    )
    .await;
    expect(400, "task_not_found")(post("/console/policy", what_if("&task=task_nope")).await.unwrap()).await;
    expect(400, "invalid_request")(post("/console/policy", format!("csrf={csrf}&subject_id=support-bot").into_bytes()).await.unwrap())
        .await;
    // A what-if under the live task: inside its intent, allowed by policy, and not recorded.
    let r = post("/console/policy", what_if(&format!("&task={task}&classification=internal"))).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("inside the task&#39;s intent") || body.contains("inside the task's intent"), "{body}");
    assert!(body.contains("agents.read-within-task"), "{body}");
    let r = post("/console/policy", what_if(&format!("&task={task}&classification=confidential"))).await.unwrap();
    assert!(r.text().await.unwrap().contains("classification_above_intent"));
    // A filter that is not a status, a page that does not exist, a body over the limit.
    let r = http.get(format!("{}/console/tasks?status=bogus", server.url)).header("cookie", &session).send().await.unwrap();
    expect(400, "invalid_request")(r).await;
    let r = http.get(format!("{}/console/nothing/here", server.url)).header("cookie", &session).send().await.unwrap();
    expect(404, "not_found")(r).await;
    let r = post(&format!("/console/tasks/{task}/revoke"), vec![b'a'; 200 * 1024]).await.unwrap();
    assert_eq!(r.status(), 413);
    // Nothing of this changed anything.
    assert_eq!(admin.get_task(&task).await.unwrap().status, "live");
    assert_eq!(admin.get_agent("support-bot").await.unwrap().status, "active");
    let decisions = admin.audit_events(&[("kind", "decision".to_owned())]).await.unwrap().events;
    assert!(decisions.is_empty(), "a what-if is never a recorded decision: {decisions:?}");
}
