//! Container logs of an environment: what `kubectl logs` shows for each of its pods (every
//! module's and devpop's own hops'), merged newest first, or followed live. Only the cluster
//! target has logs; the render-only target says where they live instead.
//!
//! Bounded: at most [`MAX_LENGTH`] lines per answer, [`MAX_PODS`] pods, [`MAX_LINE_BYTES`] per
//! line, and a followed stream ends after [`MAX_FOLLOW`].

use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use futures_util::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use super::kube::{sentence, KubeCluster};
use crate::rendering::{LABEL_HOP, LABEL_MANAGED_BY};

pub const MAX_LENGTH: usize = 1000;
pub const DEFAULT_LENGTH: usize = 100;
pub const MAX_PODS: usize = 50;
pub const MAX_LINE_BYTES: usize = 16 * 1024;
pub const MAX_FOLLOW: Duration = Duration::from_secs(3600);

/// Which lines: of one module (its hop name: a module's name, or `private-ingress`, `egress`,
/// `static-server`) or all, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub module: Option<String>,
    pub length: usize,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LogsError {
    /// The target keeps no logs (render-only): where they are instead.
    #[error("{0}")]
    NotHere(String),
    /// The query cannot be answered as asked.
    #[error("{0}")]
    BadQuery(String),
    /// The cluster could not be asked.
    #[error("cluster: {0}")]
    Unavailable(String),
}

impl LogQuery {
    /// Checks a query from a client: a module name of the characters a hop label has, a length
    /// within bounds (default [`DEFAULT_LENGTH`]).
    pub fn new(module: Option<&str>, length: Option<usize>) -> Result<Self, LogsError> {
        let module = match module.filter(|m| !m.is_empty()) {
            Some(m)
                if m.len() <= 63 && m.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Some(m.to_owned())
            }
            Some(m) => {
                return Err(LogsError::BadQuery(format!(
                    "module {m:?}: a module name is lower-case letters, digits and '-' (as in section.config.json)"
                )))
            }
            None => None,
        };
        let length = match length {
            None => DEFAULT_LENGTH,
            Some(n) if (1..=MAX_LENGTH).contains(&n) => n,
            Some(n) => return Err(LogsError::BadQuery(format!("length {n}: ask for 1 to {MAX_LENGTH} lines"))),
        };
        Ok(LogQuery { module, length })
    }
}

/// One log line of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// RFC 3339, as the kubelet stamped it.
    pub timestamp: String,
    /// The pod.
    #[serde(rename = "instanceName")]
    pub instance_name: String,
    /// The hop the pod belongs to (a module's name, or one of devpop's own hops).
    pub module: String,
    pub container: String,
    pub message: String,
}

/// A followed log: entries as they come, until the client leaves or [`MAX_FOLLOW`].
pub type LogStream = Pin<Box<dyn Stream<Item = LogEntry> + Send>>;

/// One container of one pod.
#[derive(Debug, Clone)]
struct Source {
    pod: String,
    module: String,
    container: String,
}

/// Splits a line the kubelet stamped (`timestamps=true`): `2026-11-30T06:00:00.123Z message`.
pub fn parse_line(line: &str, source: (&str, &str, &str)) -> Option<LogEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (timestamp, message) = line.split_once(' ').unwrap_or((line, ""));
    if timestamp.parse::<jiff::Timestamp>().is_err() {
        return None;
    }
    let mut message = message.to_owned();
    if message.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [...]");
    }
    Some(LogEntry {
        timestamp: timestamp.to_owned(),
        instance_name: source.0.to_owned(),
        module: source.1.to_owned(),
        container: source.2.to_owned(),
        message,
    })
}

/// Newest first; the same instant keeps each container's own order (later line first).
pub fn newest_first(mut entries: Vec<LogEntry>, length: usize) -> Vec<LogEntry> {
    // Stable sort on the parsed instant, after reversing, so equal stamps end up newest first.
    entries.reverse();
    entries.sort_by_key(|e| std::cmp::Reverse(e.timestamp.parse::<jiff::Timestamp>().ok()));
    entries.truncate(length);
    entries
}

impl KubeCluster {
    /// The environment's pods (devpop's, of one module when asked), each container once.
    async fn sources(&self, namespace: &str, query: &LogQuery) -> Result<Vec<Source>, LogsError> {
        let mut selector = format!("{LABEL_MANAGED_BY}=devpop");
        if let Some(m) = &query.module {
            selector.push_str(&format!(",{LABEL_HOP}={m}"));
        }
        let pods = Api::<Pod>::namespaced(self.client(), namespace)
            .list(&ListParams::default().labels(&selector).limit(MAX_PODS as u32))
            .await
            .map_err(|e| LogsError::Unavailable(sentence(&e)))?;
        let mut sources = Vec::new();
        for pod in pods.items.into_iter().take(MAX_PODS) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(name) = pod.metadata.name.clone() else { continue };
            let module = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_HOP)).cloned().unwrap_or_default();
            for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                sources.push(Source { pod: name.clone(), module: module.clone(), container: c.name.clone() });
            }
        }
        Ok(sources)
    }

    /// The last `query.length` lines of the environment's containers, newest first.
    pub async fn logs(&self, namespace: &str, query: &LogQuery) -> Result<Vec<LogEntry>, LogsError> {
        let api = Api::<Pod>::namespaced(self.client(), namespace);
        let mut entries = Vec::new();
        for s in self.sources(namespace, query).await? {
            let params = LogParams {
                container: Some(s.container.clone()),
                tail_lines: Some(query.length as i64),
                timestamps: true,
                ..LogParams::default()
            };
            let text = match api.logs(&s.pod, &params).await {
                Ok(text) => text,
                // A container that has not started yet has no logs: not an error.
                Err(kube::Error::Api(e)) if e.code == 400 || e.code == 404 => continue,
                Err(e) => return Err(LogsError::Unavailable(sentence(&e))),
            };
            entries.extend(text.lines().filter_map(|l| parse_line(l, (&s.pod, &s.module, &s.container))));
        }
        Ok(newest_first(entries, query.length))
    }

    /// The environment's containers' lines from now on (after the last `query.length` of each),
    /// as they are written.
    pub async fn follow(&self, namespace: &str, query: &LogQuery) -> Result<LogStream, LogsError> {
        let api = Api::<Pod>::namespaced(self.client(), namespace);
        let mut streams = Vec::new();
        for s in self.sources(namespace, query).await? {
            let params = LogParams {
                container: Some(s.container.clone()),
                tail_lines: Some(query.length as i64),
                timestamps: true,
                follow: true,
                ..LogParams::default()
            };
            let reader = match api.log_stream(&s.pod, &params).await {
                Ok(reader) => reader,
                Err(kube::Error::Api(e)) if e.code == 400 || e.code == 404 => continue,
                Err(e) => return Err(LogsError::Unavailable(sentence(&e))),
            };
            let lines = reader.lines().filter_map(move |line| {
                let entry = line.ok().and_then(|l| parse_line(&l, (&s.pod, &s.module, &s.container)));
                async move { entry }
            });
            streams.push(lines.boxed());
        }
        let merged = stream::select_all(streams);
        let deadline = tokio::time::sleep(MAX_FOLLOW);
        Ok(Box::pin(merged.take_until(deadline)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_bounded_and_names_a_module_as_the_config_does() {
        assert_eq!(LogQuery::new(None, None).unwrap(), LogQuery { module: None, length: DEFAULT_LENGTH });
        assert_eq!(LogQuery::new(Some("m1-cache"), Some(5)).unwrap().module.as_deref(), Some("m1-cache"));
        assert!(matches!(LogQuery::new(None, Some(0)), Err(LogsError::BadQuery(_))));
        assert!(matches!(LogQuery::new(None, Some(MAX_LENGTH + 1)), Err(LogsError::BadQuery(_))));
        for bad in ["a,b", "x=y", "A", "a b", &"a".repeat(64)] {
            assert!(matches!(LogQuery::new(Some(bad), None), Err(LogsError::BadQuery(_))), "{bad}");
        }
    }

    #[test]
    fn lines_are_split_at_the_kubelets_stamp_and_cut_when_long() {
        let e = parse_line("2026-11-30T06:00:00.5Z GET / 200\n", ("p", "m", "c")).unwrap();
        assert_eq!((e.timestamp.as_str(), e.message.as_str()), ("2026-11-30T06:00:00.5Z", "GET / 200"));
        assert!(parse_line("not a stamp", ("p", "m", "c")).is_none());
        let long = format!("2026-11-30T06:00:00Z {}", "é".repeat(MAX_LINE_BYTES));
        let e = parse_line(&long, ("p", "m", "c")).unwrap();
        assert!(e.message.len() <= MAX_LINE_BYTES + 6 && e.message.ends_with(" [...]"));
    }

    #[test]
    fn entries_of_all_containers_are_merged_newest_first() {
        let at = |t: &str, m: &str| parse_line(&format!("{t} {m}"), ("p", "m", "c")).unwrap();
        let merged = newest_first(
            vec![
                at("2026-11-30T06:00:01Z", "a1"),
                at("2026-11-30T06:00:03Z", "a2"),
                at("2026-11-30T06:00:02Z", "b1"),
                at("2026-11-30T06:00:03Z", "b2"),
            ],
            3,
        );
        let messages: Vec<&str> = merged.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["b2", "a2", "b1"]);
    }
}
