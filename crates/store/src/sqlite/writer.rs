//! The writer thread: the only code that writes the database.
//!
//! It commits the transactions waiting in its queue together ("group commit"): one SQLite
//! transaction per batch, one savepoint per store transaction. A failed precondition rolls back
//! its own savepoint only; the others still commit. The batch pays one fsync, which is what lets
//! a thousand nodes' reports commit without a thousand fsyncs a second. Nobody is answered before
//! the commit is durable, and subscribers see each revision after it is.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::watch::{Committed, LARGE_TXN};
use super::{db, Job, Shared};
use crate::{Change, Op, StoreError};

/// A batch takes more queued transactions only while it holds fewer operations than this, so one
/// huge batch does not delay the replies of the small transactions queued behind it for long.
const MAX_BATCH_OPS: usize = 10_000;

pub(crate) struct TxnRequest {
    pub(crate) ops: Vec<Op>,
    pub(crate) reply: oneshot::Sender<Result<u64, StoreError>>,
}

pub(crate) enum WriterMsg {
    Txn(TxnRequest),
    /// Anything else run on the write connection, in queue order: compaction, and reads of an
    /// in-memory store.
    Job(Job),
}

/// Runs until every sender is gone.
pub(crate) fn run(mut conn: Connection, queue: &mpsc::Receiver<WriterMsg>, shared: &Shared) {
    while let Ok(msg) = queue.recv() {
        let first = match msg {
            WriterMsg::Job(job) => {
                job(&mut conn);
                continue;
            }
            WriterMsg::Txn(t) => t,
        };
        let mut ops = first.ops.len();
        let mut batch = vec![first];
        // A job queued after a transaction must see it, so it runs after the batch.
        let mut after = None;
        while ops < MAX_BATCH_OPS {
            match queue.try_recv() {
                Ok(WriterMsg::Txn(t)) => {
                    ops += t.ops.len();
                    batch.push(t);
                }
                Ok(WriterMsg::Job(job)) => {
                    after = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, batch, shared);
        if let Some(job) = after {
            job(&mut conn);
        }
    }
}

/// What one transaction of a batch came to.
enum Outcome {
    Committed(Vec<Change>),
    /// Nothing changed (only deletes of absent objects): answered with the revision as it was.
    Unchanged,
    Failed(StoreError),
}

fn commit_batch(conn: &mut Connection, batch: Vec<TxnRequest>, shared: &Shared) {
    let start = shared.revision.load(Ordering::Acquire);
    let (replies, ops): (Vec<_>, Vec<_>) = batch.into_iter().map(|t| (t.reply, t.ops)).unzip();
    match write_batch(conn, start, ops) {
        Ok((outcomes, last)) => {
            shared.revision.store(last, Ordering::Release);
            let mut revision = start;
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let result = match outcome {
                    Outcome::Committed(changes) => {
                        revision += 1;
                        let changes = (changes.len() <= LARGE_TXN).then_some(changes);
                        // No receivers is fine: nobody is watching.
                        let _ = shared.live.send(Arc::new(Committed { revision, changes }));
                        Ok(revision)
                    }
                    // The revision at this point of the batch, as if it ran alone.
                    Outcome::Unchanged => Ok(revision),
                    Outcome::Failed(e) => Err(e),
                };
                // A caller that went away still had its transaction committed; nothing to tell.
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "store batch commit failed; nothing of it was written");
            let reason = e.to_string();
            let mut first = Some(e);
            for reply in replies {
                let error = first.take().unwrap_or_else(|| StoreError::Unavailable {
                    reason: reason.clone(),
                });
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Writes every transaction of the batch and commits; returns each one's outcome and the last
/// revision. An error here means nothing of the batch was written.
fn write_batch(
    conn: &mut Connection,
    start: u64,
    batch: Vec<Vec<Op>>,
) -> Result<(Vec<Outcome>, u64), StoreError> {
    let now = crate::now_millis();
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut revision = start;
    let mut outcomes = Vec::with_capacity(batch.len());
    for ops in batch {
        let mut sp = tx.savepoint()?;
        let outcome = match db::apply(&sp, revision + 1, ops, now) {
            Ok(changes) if changes.is_empty() => Outcome::Unchanged,
            Ok(changes) => Outcome::Committed(changes),
            Err(e) => Outcome::Failed(e),
        };
        if let Outcome::Committed(_) = outcome {
            sp.commit()?;
            revision += 1;
        } else {
            sp.rollback()?;
        }
        outcomes.push(outcome);
    }
    if revision != start {
        db::set_revision(&tx, revision)?;
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    Ok((outcomes, revision))
}
