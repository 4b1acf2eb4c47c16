//! An environment's container logs, followed, from the cluster target's API server: every
//! container of every devpop pod in the namespace (or of one hop), the last lines first, then
//! new ones as they are written. Bounded: pods, containers, line length.

use futures_util::io::{AsyncBufRead, AsyncBufReadExt};
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::Client;

use super::TargetError;
use crate::rendering::LABEL_HOP;

/// The most pods and containers per pod followed at once.
pub const MAX_PODS: usize = 20;
pub const MAX_CONTAINERS: usize = 5;
/// The lines of each container shown before following.
pub const TAIL_LINES: i64 = 100;
/// The longest line passed on (the rest of a longer one is dropped, marked with `…`).
pub const MAX_LINE: usize = 4096;

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// The pod's hop (`private-ingress`, a module's hop, `egress`, ...).
    pub hop: String,
    pub pod: String,
    pub container: String,
    pub line: String,
}

/// Follows the logs of the namespace's devpop pods (only `hop`'s when given), merged as they
/// come. A container whose log cannot be opened is skipped (a pod still starting).
pub async fn follow(
    client: Client,
    namespace: &str,
    hop: Option<&str>,
) -> Result<BoxStream<'static, LogLine>, TargetError> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let selector = match hop {
        Some(h) => format!("{LABEL_HOP}={h}"),
        None => LABEL_HOP.to_owned(),
    };
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| TargetError::Unavailable(super::kube::sentence(&e)))?;
    let mut streams = Vec::new();
    for pod in list.items.into_iter().take(MAX_PODS) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hop = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_HOP)).cloned().unwrap_or_default();
        let containers = pod.spec.map(|s| s.containers).unwrap_or_default();
        for c in containers.into_iter().take(MAX_CONTAINERS) {
            let params = LogParams {
                container: Some(c.name.clone()),
                follow: true,
                tail_lines: Some(TAIL_LINES),
                ..Default::default()
            };
            let Ok(reader) = pods.log_stream(&name, &params).await else { continue };
            let (hop, pod, container) = (hop.clone(), name.clone(), c.name);
            streams.push(
                lines(Box::pin(reader))
                    .map(move |line| LogLine { hop: hop.clone(), pod: pod.clone(), container: container.clone(), line })
                    .boxed(),
            );
        }
    }
    Ok(stream::select_all(streams).boxed())
}

/// The lines of `reader`, each at most [`MAX_LINE`] bytes (longer ones cut), control
/// characters replaced, without reading more than one buffer ahead.
fn lines(reader: std::pin::Pin<Box<dyn AsyncBufRead + Send>>) -> BoxStream<'static, String> {
    stream::unfold((reader, Vec::new(), false), |(mut reader, mut line, mut cut)| async move {
        loop {
            let buf = match reader.fill_buf().await {
                Ok(b) => b,
                Err(_) => return None,
            };
            if buf.is_empty() {
                // The log ended: the last, unterminated line.
                if line.is_empty() {
                    return None;
                }
                let text = show(&line, cut);
                line.clear();
                return Some((text, (reader, line, false)));
            }
            let (n, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let take = &buf[..if done { n - 1 } else { n }];
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&take[..take.len().min(room)]);
            cut |= take.len() > room;
            reader.as_mut().consume(n);
            if done {
                let text = show(&line, cut);
                line.clear();
                return Some((text, (reader, line, false)));
            }
        }
    })
    .boxed()
}

fn show(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String =
        text.trim_end_matches('\r').chars().map(|c| if c.is_control() && c != '\t' { '\u{FFFD}' } else { c }).collect();
    if cut {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_bounded_and_cleaned() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\r\ntwo\u{1b}[31m\n{long}\nlast");
        let reader = futures_util::io::BufReader::with_capacity(7, futures_util::io::Cursor::new(input.into_bytes()));
        let got: Vec<String> = lines(Box::pin(reader)).collect().await;
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], "one");
        assert_eq!(got[1], "two\u{FFFD}[31m");
        assert_eq!(got[2], format!("{}…", "x".repeat(MAX_LINE)));
        assert_eq!(got[3], "last");
    }
}
