//! Deduplication of concurrent pulls: while a reference is being pulled on this node, further
//! pulls of it wait for that one's result instead of downloading again.
//!
//! A pull runs as its own task, so it finishes (and its waiters get the result) even if the
//! caller that started it goes away. Results are shared as `Arc<RuntimeError>` on failure;
//! the first caller gets the original error back when it is the only one holding it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::mpsc;

use super::{ProgressSink, PullProgress};
use crate::error::RuntimeError;
use crate::ImageInfo;

type SharedPull = Shared<BoxFuture<'static, Result<ImageInfo, Arc<RuntimeError>>>>;

struct InFlight {
    result: SharedPull,
    sink: ProgressSink,
}

/// The pulls running on this node, by normalized reference. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct InFlightPulls {
    pulls: Arc<Mutex<HashMap<String, InFlight>>>,
}

impl InFlightPulls {
    /// Joins the running pull of `key`, or starts `start(sink)` as a task if there is none.
    /// `progress` receives the pull's events from now on.
    pub(crate) async fn run<F, Fut>(
        &self,
        key: &str,
        progress: Option<mpsc::Sender<PullProgress>>,
        start: F,
    ) -> Result<ImageInfo, RuntimeError>
    where
        F: FnOnce(ProgressSink) -> Fut,
        Fut: Future<Output = Result<ImageInfo, RuntimeError>> + Send + 'static,
    {
        let result = {
            let mut pulls = self.pulls.lock().expect("pulls lock");
            match pulls.get(key) {
                Some(running) => {
                    if let Some(tx) = progress {
                        running.sink.add(tx);
                    }
                    running.result.clone()
                }
                None => {
                    let sink = ProgressSink::default();
                    if let Some(tx) = progress {
                        sink.add(tx);
                    }
                    let pull = start(sink.clone());
                    let this = self.clone();
                    let owned_key = key.to_string();
                    let task = tokio::spawn(async move {
                        let result = pull.await.map_err(Arc::new);
                        this.pulls.lock().expect("pulls lock").remove(&owned_key);
                        result
                    });
                    let failed_key = key.to_string();
                    let result = async move {
                        task.await.unwrap_or_else(|join| {
                            Err(Arc::new(RuntimeError::Registry {
                                reference: failed_key,
                                reason: format!("the pull task failed: {join}"),
                                fix: "retry the pull".to_string(),
                            }))
                        })
                    }
                    .boxed()
                    .shared();
                    pulls.insert(
                        key.to_string(),
                        InFlight {
                            result: result.clone(),
                            sink,
                        },
                    );
                    result
                }
            }
        };
        result
            .await
            .map_err(|e| Arc::try_unwrap(e).unwrap_or_else(RuntimeError::Shared))
    }

    /// How many pulls are running (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pulls.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn info(name: &str) -> ImageInfo {
        ImageInfo {
            name: name.into(),
            digest: "sha256:d".into(),
            size: 1,
            updated_at: None,
        }
    }

    #[tokio::test]
    async fn concurrent_pulls_of_one_reference_run_once() {
        let pulls = InFlightPulls::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let start = |runs: Arc<AtomicUsize>| {
            move |_sink| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(info("a"))
            }
        };
        let (a, b) = tokio::join!(
            pulls.run("a", None, start(runs.clone())),
            pulls.run("a", None, start(runs.clone())),
        );
        assert_eq!(a.unwrap(), info("a"));
        assert_eq!(b.unwrap(), info("a"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(pulls.len(), 0);
        // Once finished, a new pull runs again.
        pulls.run("a", None, start(runs.clone())).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let pulls = InFlightPulls::default();
        let fail = |_sink| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(RuntimeError::ImageNotFound { image: "x".into() })
        };
        let (a, b) = tokio::join!(pulls.run("x", None, fail), pulls.run("x", None, fail));
        for r in [a, b] {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("x"), "{e}");
        }
    }
}
