//! `loop`: a bounded request loop. Each request resolves the URL's host afresh with the system
//! resolver (so DNS changes are seen), opens a new connection (so load balancing shows), and
//! counts the outcome. At the end one JSON summary goes to stdout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::http::{get, Url};

/// Bodies longer than this are cut before counting, to keep the summary readable.
const MAX_KEY: usize = 100;

/// When the loop stops: after `count` requests or after `duration`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) count: Option<u64>,
    pub(crate) duration: Option<Duration>,
}

/// Outcomes so far.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Summary {
    /// Successful (2xx) answers per trimmed body.
    pub(crate) by_body: BTreeMap<String, u64>,
    /// Failures per kind: `HTTP 500`, `timeout`, `connect: …`, `resolve: …`.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Latencies of successful requests, in ms.
    latencies: Vec<f64>,
    failed: u64,
}

impl Summary {
    pub(crate) fn record(&mut self, outcome: Result<(u16, Vec<u8>), String>, elapsed: Duration) {
        match outcome {
            Ok((status, body)) if (200..300).contains(&status) => {
                let text = String::from_utf8_lossy(&body);
                let key: String = text.trim().chars().take(MAX_KEY).collect();
                *self.by_body.entry(key).or_default() += 1;
                self.latencies.push(elapsed.as_secs_f64() * 1000.0);
            }
            Ok((status, _)) => self.fail(format!("HTTP {status}")),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, kind: String) {
        self.failed += 1;
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn ok(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub(crate) fn requests(&self) -> u64 {
        self.ok() + self.failed
    }

    /// The `q` quantile (0..=1) of successful latencies, nearest-rank; `None` without any.
    pub(crate) fn percentile(&self, q: f64) -> Option<f64> {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = (q * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let round = |x: Option<f64>| x.map(|ms| (ms * 1000.0).round() / 1000.0);
        serde_json::json!({
            "requests": self.requests(),
            "ok": self.ok(),
            "failed": self.failed,
            "by_body": self.by_body,
            "errors": self.errors,
            "p50_ms": round(self.percentile(0.50)),
            "p99_ms": round(self.percentile(0.99)),
        })
    }
}

/// One request: resolve, connect to the first address that answers, `GET`, all within `timeout`.
pub(crate) async fn request_once(url: &Url, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("resolve: {e}"))?
            .collect();
        let mut last = String::from("resolve: no addresses");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(mut stream) => {
                    return get(&mut stream, url)
                        .await
                        .map_err(|e| format!("read: {e}"));
                }
                Err(e) => last = format!("connect: {e}"),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("timeout".to_string()))
}

/// Runs the loop. Request starts are `interval` apart; a slow request delays the next one
/// rather than causing a burst.
pub(crate) async fn run(
    url: &Url,
    bounds: Bounds,
    interval: Duration,
    timeout: Duration,
) -> Summary {
    let mut summary = Summary::default();
    let start = Instant::now();
    let deadline = bounds.duration.map(|d| start + d);
    let mut ticker = tokio::time::interval(interval.max(Duration::from_micros(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if bounds.count.is_some_and(|n| summary.requests() >= n) {
            break;
        }
        ticker.tick().await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let t = Instant::now();
        let outcome = request_once(url, timeout).await;
        summary.record(outcome, t.elapsed());
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn summary_counts_bodies_errors_and_percentiles() {
        let mut s = Summary::default();
        for i in 1..=100 {
            let body = if i % 4 == 0 { "web-b\n" } else { "web-a\n" };
            s.record(Ok((200, body.as_bytes().to_vec())), ms(i));
        }
        s.record(Ok((500, b"failing\n".to_vec())), ms(1));
        s.record(Err("timeout".into()), ms(2000));
        s.record(Err("timeout".into()), ms(2000));
        assert_eq!((s.requests(), s.ok()), (103, 100));
        assert_eq!(s.percentile(0.5), Some(50.0));
        assert_eq!(s.percentile(0.99), Some(99.0));
        assert_eq!(s.percentile(1.0), Some(100.0));
        assert_eq!(s.percentile(0.0), Some(1.0));
        let json = s.to_json();
        assert_eq!(json["requests"], 103);
        assert_eq!(json["ok"], 100);
        assert_eq!(json["failed"], 3);
        assert_eq!(json["by_body"]["web-a"], 75);
        assert_eq!(json["by_body"]["web-b"], 25);
        assert_eq!(json["errors"]["HTTP 500"], 1);
        assert_eq!(json["errors"]["timeout"], 2);
        assert_eq!(json["p50_ms"], 50.0);
        assert_eq!(json["p99_ms"], 99.0);
    }

    #[test]
    fn empty_summary_has_null_percentiles() {
        let json = Summary::default().to_json();
        assert_eq!(json["requests"], 0);
        assert!(json["p50_ms"].is_null() && json["p99_ms"].is_null());
        assert_eq!(json["by_body"], serde_json::json!({}));
    }

    #[test]
    fn long_bodies_are_cut() {
        let mut s = Summary::default();
        s.record(Ok((204, "x".repeat(500).into_bytes())), ms(1));
        assert_eq!(s.by_body.keys().next().unwrap().len(), MAX_KEY);
    }
}
