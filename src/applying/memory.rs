//! An in-memory cluster: the [`Target`] the pipeline tests run against where no Kubernetes API
//! server can run. It keeps the applied objects per namespace,
//! prunes by the environment's objects, and reports the rollout outcome it was told to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use super::{ApplyReport, DryRun, Subject, Target, TargetError};
use crate::rendering::{Object, Rendered};

/// How a Deployment's rollout ends in the fake cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Fails with this reason (e.g. `ImagePullBackOff: ...`).
    Fails(String),
    /// Never becomes ready (the deadline decides).
    Hangs,
    /// Fails this once, then is ready.
    FailsOnce(String),
}

#[derive(Default)]
struct State {
    /// namespace -> object key (`Kind/name`) -> object
    namespaces: BTreeMap<String, BTreeMap<String, Object>>,
    /// Deployment name -> outcome (default: ready).
    health: BTreeMap<String, Health>,
    /// A call log: ("apply" | "prune" | "remove", namespace, what).
    calls: Vec<(String, String, String)>,
}

pub struct MemoryCluster {
    state: Mutex<State>,
    /// Open (true): applies go through. Closed: each apply waits here until it opens, so a test
    /// can hold deployments mid-apply and see what runs beside what.
    gate: tokio::sync::watch::Sender<bool>,
    /// How many applies are waiting at the closed gate.
    at_gate: tokio::sync::watch::Sender<usize>,
}

impl Default for MemoryCluster {
    fn default() -> Self {
        MemoryCluster {
            state: Mutex::default(),
            gate: tokio::sync::watch::Sender::new(true),
            at_gate: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl MemoryCluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies from now on wait until [`MemoryCluster::open_gate`].
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Waits until `n` applies are waiting at the closed gate (an event, not a sleep).
    pub async fn applies_waiting(&self, n: usize) {
        let mut waiting = self.at_gate.subscribe();
        waiting.wait_for(|w| *w >= n).await.expect("the cluster outlives its watchers");
    }

    pub fn set_health(&self, deployment: &str, health: Health) {
        self.state.lock().unwrap().health.insert(deployment.to_owned(), health);
    }

    /// The objects in a namespace, by `Kind/name`.
    pub fn objects(&self, namespace: &str) -> BTreeMap<String, Object> {
        self.state.lock().unwrap().namespaces.get(namespace).cloned().unwrap_or_default()
    }

    pub fn namespaces(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().namespaces.keys().cloned().collect()
    }

    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl Target for MemoryCluster {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn apply(&self, _: &Subject, rendered: &Rendered) -> Result<ApplyReport, TargetError> {
        let mut gate = self.gate.subscribe();
        if !*gate.borrow_and_update() {
            self.at_gate.send_modify(|w| *w += 1);
            let _ = gate.wait_for(|open| *open).await;
            self.at_gate.send_modify(|w| *w -= 1);
        }
        let mut s = self.state.lock().unwrap();
        let ns = rendered.namespace.clone();
        let new: BTreeMap<String, Object> = rendered.objects.iter().map(|o| (o.key(), o.clone())).collect();
        let old = s.namespaces.insert(ns.clone(), new.clone()).unwrap_or_default();
        let pruned: Vec<String> = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
        s.calls.push(("apply".into(), ns.clone(), format!("{} objects", new.len())));
        for p in &pruned {
            s.calls.push(("prune".into(), ns.clone(), p.clone()));
        }
        Ok(ApplyReport {
            applied: new.len(),
            summary: format!("{} objects applied, {} pruned", new.len(), pruned.len()),
            pruned,
        })
    }

    async fn rollout(&self, _: &Subject, rendered: &Rendered, deadline: Duration) -> Result<String, TargetError> {
        let outcomes: Vec<(String, Health)> = {
            let mut s = self.state.lock().unwrap();
            let names: Vec<String> =
                rendered.objects.iter().filter(|o| o.kind() == "Deployment").map(|o| o.name().to_owned()).collect();
            names
                .into_iter()
                .map(|n| {
                    let h = s.health.get(&n).cloned().unwrap_or(Health::Ready);
                    if let Health::FailsOnce(reason) = h {
                        s.health.insert(n.clone(), Health::Ready);
                        (n, Health::Fails(reason))
                    } else {
                        (n, h)
                    }
                })
                .collect()
        };
        for (name, health) in &outcomes {
            match health {
                Health::Ready | Health::FailsOnce(_) => {}
                Health::Fails(reason) => {
                    return Err(TargetError::Unhealthy { object: format!("Deployment/{name}"), reason: reason.clone() })
                }
                Health::Hangs => {
                    tokio::time::sleep(deadline).await;
                    return Err(TargetError::Unhealthy {
                        object: format!("Deployment/{name}"),
                        reason: format!("not ready within {}s (the deployment's deadline)", deadline.as_secs()),
                    });
                }
            }
        }
        Ok(format!("{} Deployments ready", outcomes.len()))
    }

    async fn dry_run(&self, _: &Subject, rendered: &Rendered) -> Result<Option<DryRun>, TargetError> {
        Ok(Some(DryRun::summary(format!("{} objects would be applied", rendered.objects.len()))))
    }

    async fn remove(&self, _: &Subject, namespace: &str) -> Result<String, TargetError> {
        let mut s = self.state.lock().unwrap();
        s.namespaces.remove(namespace);
        s.calls.push(("remove".into(), namespace.to_owned(), String::new()));
        Ok(format!("namespace {namespace} deleted"))
    }
}
