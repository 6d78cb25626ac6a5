//! The task-exit stream: containerd's `/tasks/exit` events for our namespace, filtered to the
//! init processes of Hivemind containers.
//!
//! containerd (Go gRPC) sends a stream's response headers only with its first event, so a
//! subscription cannot be confirmed by awaiting the call. To return only once the subscription
//! is live (and no exit after `exits()` returns can be missed), we publish a marker event on our
//! own topic until it comes back through the stream.

use std::time::Duration;

use containerd_client::events::TaskExit as TaskExitEvent;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tracing::warn;

use super::Containerd;
use crate::error::RuntimeError;
use crate::{labels, TaskExit};

const EXIT_TOPIC: &str = "/tasks/exit";
const OOM_TOPIC: &str = "/tasks/oom";
/// Our own topic for the subscription marker; other subscribers filter it out by topic.
const MARKER_TOPIC: &str = "/hivemind/subscribed";
/// How long `exits()` waits for its subscription to become live.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Containerd {
    pub(super) async fn task_exits(&self) -> Result<mpsc::Receiver<TaskExit>, RuntimeError> {
        let (tx, rx) = mpsc::channel(256);
        let (ready_tx, mut ready_rx) = oneshot::channel();
        let marker = format!("hivemind-subscribe-{:016x}", rand::random::<u64>());
        let ns = &self.inner.config.namespace;
        let filters = vec![
            format!("namespace==\"{ns}\",topic==\"{EXIT_TOPIC}\""),
            format!("namespace==\"{ns}\",topic==\"{OOM_TOPIC}\""),
            format!("namespace==\"{ns}\",topic==\"{MARKER_TOPIC}\""),
        ];
        tokio::spawn(forward_exits(
            self.clone(),
            filters,
            marker.clone(),
            ready_tx,
            tx,
        ));
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            self.publish_marker(&marker).await?;
            tokio::select! {
                ready = &mut ready_rx => {
                    return match ready {
                        Ok(()) => Ok(rx),
                        Err(_) => Err(RuntimeError::Protocol {
                            op: "subscribe to task exits",
                            id: ns.clone(),
                            reason: "the event stream closed at once".to_string(),
                        }),
                    };
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::Protocol {
                    op: "subscribe to task exits",
                    id: ns.clone(),
                    reason: format!("subscription not live after {SUBSCRIBE_TIMEOUT:?}"),
                });
            }
        }
    }

    async fn publish_marker(&self, marker: &str) -> Result<(), RuntimeError> {
        let event = TaskExitEvent {
            container_id: marker.to_string(),
            id: marker.to_string(),
            ..Default::default()
        };
        EventsClient::new(self.channel())
            .publish(self.request(PublishRequest {
                topic: MARKER_TOPIC.to_string(),
                event: Some(containerd_client::to_any(&event)),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::grpc("publish subscription marker", marker, s))
    }
}

/// Runs until the receiver is dropped or the stream breaks (then the channel closes).
async fn forward_exits(
    runtime: Containerd,
    filters: Vec<String>,
    marker: String,
    ready: oneshot::Sender<()>,
    tx: mpsc::Sender<TaskExit>,
) {
    let mut ready = Some(ready);
    let subscribed = EventsClient::new(runtime.channel())
        .subscribe(runtime.request(SubscribeRequest { filters }))
        .await;
    let mut stream = match subscribed {
        Ok(r) => r.into_inner(),
        Err(status) => {
            warn!(%status, "subscribing to task exits failed");
            return;
        }
    };
    loop {
        let envelope = tokio::select! {
            _ = tx.closed() => return,
            next = stream.next() => match next {
                Some(Ok(envelope)) => envelope,
                Some(Err(status)) => {
                    warn!(%status, "task exit stream broke");
                    return;
                }
                None => return,
            },
        };
        let Some(any) = envelope.event else { continue };
        if envelope.topic == OOM_TOPIC {
            let Ok(oom) = containerd_client::events::TaskOom::decode(any.value.as_slice()) else {
                continue;
            };
            let event = TaskExit {
                id: oom.container_id,
                exit_code: 137,
                oom: true,
            };
            if tx.send(event).await.is_err() {
                return;
            }
            continue;
        }
        let Ok(exit) = TaskExitEvent::decode(any.value.as_slice()) else {
            continue;
        };
        if envelope.topic == MARKER_TOPIC {
            if exit.container_id == marker {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            continue;
        }
        // Only init processes (exec processes have their own ids) of our containers.
        if exit.id != exit.container_id {
            continue;
        }
        match runtime.container_get(&exit.container_id).await {
            Ok(Some(c)) if c.labels.contains_key(labels::REPLICA) => {}
            _ => continue,
        }
        let event = TaskExit {
            id: exit.container_id,
            exit_code: exit.exit_status as i32,
            oom: false,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}
