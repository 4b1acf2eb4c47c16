//! Deployment rows: writing a deployment and its steps, reading them back.

use super::*;

pub(super) fn nanos(t: Timestamp) -> i64 {
    t.as_nanosecond() as i64
}

pub(super) fn timestamp(n: i64) -> Timestamp {
    Timestamp::from_nanosecond(n as i128).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn insert_deployment(
    tx: &Transaction,
    id: Option<u64>,
    r: &NewDeployment,
    state: State,
    landed: bool,
    created: Timestamp,
    updated: Timestamp,
    namespace: Option<&str>,
) -> rusqlite::Result<u64> {
    let action = match r.action {
        Action::Deploy => "deploy",
        Action::Delete => "delete",
    };
    let validation = serde_json::to_string(&r.validation).expect("strings serialise");
    tx.prepare_cached(
        "INSERT INTO deployments (id, account, application, repo, environment, commit_id, action, pusher, \
         quarantine, validation, state, landed, created_at, updated_at, namespace) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id.map(|i| i as i64),
        r.account,
        r.application,
        r.repo,
        r.environment,
        r.commit,
        action,
        r.pusher,
        r.quarantine,
        validation,
        state.as_str(),
        landed,
        nanos(created),
        nanos(updated),
        namespace
    ])?;
    Ok(tx.last_insert_rowid() as u64)
}

/// A whole deployment as recorded (landed, with its steps), under its own id.
pub(super) fn insert_whole(tx: &Transaction, d: &Deployment) -> rusqlite::Result<()> {
    insert_deployment(tx, Some(d.id), &d.request, d.state, true, d.created_at, d.updated_at, d.namespace.as_deref())?;
    for (seq, step) in d.steps.iter().enumerate() {
        insert_step(tx, d.id, seq as i64, step)?;
    }
    Ok(())
}

pub(super) fn insert_step(tx: &Transaction, id: u64, seq: i64, step: &Step) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO steps (deployment, seq, at, state, message) VALUES (?, ?, ?, ?, ?)")?
        .execute(params![id as i64, seq, nanos(step.at), step.state.as_str(), step.message])?;
    Ok(())
}

pub(super) fn bad_column(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_owned().into())
}

pub(super) fn deployment_row(r: &Row) -> rusqlite::Result<Deployment> {
    let action = match r.get_ref(6)?.as_str()? {
        "delete" => Action::Delete,
        _ => Action::Deploy,
    };
    let validation: String = r.get(9)?;
    let state: String = r.get(10)?;
    Ok(Deployment {
        id: r.get::<_, i64>(0)? as u64,
        request: NewDeployment {
            account: r.get(1)?,
            application: r.get(2)?,
            repo: r.get(3)?,
            environment: r.get(4)?,
            commit: r.get(5)?,
            action,
            pusher: r.get(7)?,
            quarantine: r.get(8)?,
            validation: serde_json::from_str(&validation).map_err(|_| bad_column(9, "validation is not JSON"))?,
        },
        state: State::parse(&state).ok_or_else(|| bad_column(10, "unknown state"))?,
        created_at: timestamp(r.get(11)?),
        updated_at: timestamp(r.get(12)?),
        steps: Vec::new(),
        namespace: r.get(13)?,
    })
}

pub(super) fn with_steps(c: &rusqlite::Connection, mut d: Deployment) -> rusqlite::Result<Deployment> {
    let mut stmt = c.prepare_cached("SELECT at, state, message FROM steps WHERE deployment = ? ORDER BY seq")?;
    d.steps = stmt
        .query_map([d.id as i64], |r| {
            let state: String = r.get(1)?;
            Ok(Step {
                at: timestamp(r.get(0)?),
                state: State::parse(&state).ok_or_else(|| bad_column(1, "unknown state"))?,
                message: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(d)
}
