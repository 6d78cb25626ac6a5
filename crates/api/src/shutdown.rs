//! The server's "stopping" signal, handed to long-lived responses (event streams, long polls) so
//! that graceful shutdown does not wait minutes for them.

use tokio::sync::watch;

/// A receiver of the stopping signal; `serve` adds it to every request as an extension.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// The sender (send `true` to stop) and the signal.
    pub(crate) fn channel() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once the server is stopping. A router used without `serve` (tests, embedding)
    /// has no signal; callers then pass `None` to [`stopped`] and wait forever.
    pub(crate) async fn wait(mut self) {
        // An error means the sender is gone, i.e. `serve` has returned: stopping too.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Resolves when `signal` says the server is stopping; never when there is no signal.
pub(crate) async fn stopped(signal: Option<Shutdown>) {
    match signal {
        Some(s) => s.wait().await,
        None => std::future::pending().await,
    }
}
