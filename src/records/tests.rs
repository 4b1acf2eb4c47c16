//! The records store's unit tests.

use super::*;

pub(crate) fn request(env: &str) -> NewDeployment {
    NewDeployment {
        account: "1".into(),
        application: "2".into(),
        repo: "site".into(),
        environment: env.into(),
        commit: "a".repeat(40),
        action: Action::Deploy,
        pusher: "dev".into(),
        quarantine: None,
        validation: vec!["Validating".into()],
    }
}

fn key(env: &str) -> EnvKey {
    ("1".into(), "2".into(), "site".into(), env.into())
}

#[test]
fn ids_grow_and_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::open(dir.path()).unwrap();
    let a = r.create(request("Production")).unwrap();
    let b = r.create(request("Staging")).unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    r.transition(1, State::Rendering, "rendering").unwrap();
    r.set_namespace(1, "section-x").unwrap();
    drop(r);
    let r = Records::open(dir.path()).unwrap();
    let a = r.get(1).unwrap();
    assert_eq!(a.state, State::Rendering);
    assert_eq!(a.namespace.as_deref(), Some("section-x"));
    assert_eq!(a.steps.len(), 3);
    assert_eq!(a.request, request("Production"));
    let unfinished: Vec<u64> = r.unfinished().unwrap().iter().map(|(d, _)| d.id).collect();
    assert_eq!(unfinished, [1, 2]);
    assert_eq!(r.create(request("Production")).unwrap().id, 3);
}

#[test]
fn a_noted_deployment_is_stored_with_its_note_and_later_steps_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::open(dir.path()).unwrap();
    let d = r.create_noted(request("Production"), "reconciled: branch at b, last deployment at a".into()).unwrap();
    let stored = r.get(d.id).unwrap();
    let messages: Vec<&str> = stored.steps.iter().map(|s| s.message.as_str()).collect();
    assert_eq!(messages[1], "reconciled: branch at b, last deployment at a", "{messages:?}");
    assert_eq!(stored.steps, d.steps, "what create_noted returns is what a reader sees");
    r.transition(d.id, State::Rendering, "rendering").unwrap();
    assert_eq!(r.get(d.id).unwrap().steps[2].message, "rendering");
}

#[test]
fn the_state_machine_refuses_skipping_and_leaving_terminal_states() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::open(dir.path()).unwrap();
    r.create(request("Production")).unwrap();
    assert!(matches!(r.transition(1, State::Ready, "x"), Err(RecordError::BadTransition { .. })));
    for s in [State::Rendering, State::Applying, State::Progressing, State::Ready] {
        r.transition(1, s, s.as_str()).unwrap();
    }
    assert!(r.transition(1, State::Failed, "late").is_err());
    assert!(r.get(1).unwrap().state.is_terminal());
    assert!(matches!(r.note(9, "x"), Err(RecordError::NotFound(9))));
}

#[test]
fn pages_are_newest_first_filtered_and_counted_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::open(dir.path()).unwrap();
    for i in 0..30 {
        let d = r.create(request(if i % 3 == 0 { "Staging" } else { "Production" })).unwrap();
        if i % 2 == 0 {
            r.transition(d.id, State::Superseded, "newer").unwrap();
        }
    }
    let (page, total) = r.page(&Filter::default(), 5, 10).unwrap();
    assert_eq!(total, 30);
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), (16..=25).rev().collect::<Vec<_>>());
    let staging = Filter::environment(&key("Staging"));
    let (page, total) = r.page(&staging, 0, 4).unwrap();
    assert_eq!(total, 10);
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [28, 25, 22, 19]);
    let cursor = Filter { before: Some(16), ..Filter::default() };
    let (page, total) = r.page(&cursor, 0, 3).unwrap();
    assert_eq!((page.iter().map(|d| d.id).collect::<Vec<_>>(), total), (vec![15, 14, 13], 30));
    let superseded = Filter { state: Some(State::Superseded), ..Filter::default() };
    assert_eq!(r.page(&superseded, 0, 100).unwrap().1, 15);
    let other = Filter { account: Some("7".into()), ..Filter::default() };
    assert_eq!(r.page(&other, 0, 100).unwrap(), (vec![], 0));
    assert_eq!(r.newest(&key("Staging")).unwrap().unwrap().id, 28);
}

#[test]
fn a_pending_deployment_lands_with_its_audit_entry_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::open(dir.path()).unwrap();
    let first = r.create(request("Production")).unwrap();
    let mut pending = request("Production");
    pending.commit = "p".repeat(40);
    let a = r.create_pending(pending).unwrap();
    assert!(!r.landed(a.id).unwrap());
    // Under way: it counts as asked for, so reconciliation leaves the environment alone.
    let seen = r.environment_record(&key("Production")).unwrap();
    assert_eq!(seen.newest.unwrap().id, first.id);
    assert_eq!(seen.commits_asked, ["a".repeat(40), "p".repeat(40)]);
    let entry = audit::AuditEntry::now("dev", None, "push", "1", "2/site/Production", "x");
    r.land(a.id, Some(entry)).unwrap();
    assert!(r.landed(a.id).unwrap());
    let audit = audit::AuditLog::with_db(r.db().clone());
    assert_eq!(audit.page(&audit::Visible::All, 0, 10).unwrap().1, 1);
    let mut other = request("Production");
    other.commit = "b".repeat(40);
    let b = r.create_pending(other).unwrap();
    r.not_landed(b.id, "the branch did not move").unwrap();
    let seen = r.environment_record(&key("Production")).unwrap();
    assert_eq!(seen.newest.unwrap().id, a.id, "a push that did not land is not what the environment runs");
    assert_eq!(r.get(b.id).unwrap().state, State::Failed);
}

#[test]
fn retention_keeps_the_newest_per_environment_and_the_last_ready_one() {
    let dir = tempfile::tempdir().unwrap();
    let r = Records::open(dir.path()).unwrap();
    r.set_keep_per_environment(3);
    let ready = r.create(request("Production")).unwrap().id;
    for s in [State::Rendering, State::Applying, State::Progressing, State::Ready] {
        r.transition(ready, s, "x").unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..6 {
        let d = r.create(request("Production")).unwrap();
        r.transition(d.id, State::Failed, "no").unwrap();
        ids.push(d.id);
    }
    let staging = r.create(request("Staging")).unwrap().id;
    assert_eq!(r.prune(&key("Production")).unwrap(), 3);
    let (left, total) = r.page(&Filter::environment(&key("Production")), 0, 100).unwrap();
    assert_eq!(total, 4);
    assert_eq!(left.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[5], ids[4], ids[3], ready]);
    assert!(r.get(ids[0]).is_none());
    assert!(r.get(staging).is_some());
    // Ids are never handed out again, even after the newest rows are gone.
    assert!(r.create(request("Production")).unwrap().id > staging);
}
