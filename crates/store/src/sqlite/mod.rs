//! The SQLite backend: the store on an embedded database, run on threads of its own.
//!
//! Threading (why): SQLite calls block, and a commit with `synchronous=FULL` waits for an fsync
//! (milliseconds on real disks). Run on a tokio worker, every such wait stalls all the tasks of
//! that worker, which at a thousand nodes is every request. So no SQLite call ever runs on a
//! tokio thread; the async methods send a request over a channel and await a oneshot reply:
//!
//! - **One writer thread** owns the only connection that writes. It takes every transaction
//!   waiting in its queue (up to `MAX_BATCH_OPS` operations) and commits them as one SQLite
//!   transaction, one savepoint each: each keeps its own revision, preconditions and
//!   all-or-nothing outcome, but the batch pays one fsync ("group commit"). Replies go out only
//!   after the commit is durable.
//! - **Reader threads** (`READERS`, for a file) each own a read connection. WAL gives every read
//!   the last committed state without waiting for the writer, so reads scale and never queue
//!   behind an fsync. A read that starts after `txn` returned sees that transaction.
//! - **In memory** there is one connection (an in-memory database is private to it), so the
//!   writer thread serves reads too, in queue order.
//!
//! The handle is cheap to clone; the threads end when the last handle is dropped (their queues
//! close), finishing what is queued first.

mod db;
mod watch;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use hivemind_types::Kind;
use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use crate::backend::{Backend, Index};
use crate::{Op, StoreError, Watch};
use writer::WriterMsg;

#[cfg(test)]
pub(crate) use db::index_sql;

/// A migrated in-memory connection, for tests of the SQL itself.
#[cfg(test)]
pub(crate) fn db_for_tests() -> Connection {
    db::open_in_memory().expect("an in-memory database opens")
}

/// Read threads of a file store: two lets one long list (a full replica scan) run while point
/// reads go on, without competing with the writer for the machine's two cores.
const READERS: usize = 2;

/// Work for a thread that owns a connection.
pub(crate) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Where read jobs go: the reader pool, or (in memory) the writer's queue.
#[derive(Clone)]
pub(crate) enum Readers {
    Pool(mpsc::Sender<Job>),
    Writer(mpsc::Sender<WriterMsg>),
}

impl Readers {
    fn submit(&self, job: Job) -> Result<(), StoreError> {
        let sent = match self {
            Readers::Pool(tx) => tx.send(job).is_ok(),
            Readers::Writer(tx) => tx.send(WriterMsg::Job(job)).is_ok(),
        };
        sent.then_some(()).ok_or_else(StoreError::closed)
    }

    /// Runs `f` on a read connection and returns its result.
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Box::new(move |conn: &mut Connection| {
            // The caller may have gone (a dropped request); nothing to do then.
            let _ = tx.send(f(conn));
        }))?;
        rx.await.map_err(|_| StoreError::closed())?
    }
}

/// State the writer thread shares with the handles.
pub(crate) struct Shared {
    /// The revision of the last durable commit; read without a round trip.
    pub(crate) revision: AtomicU64,
    pub(crate) live: broadcast::Sender<Arc<watch::Committed>>,
}

pub(crate) struct SqliteBackend {
    writer: mpsc::Sender<WriterMsg>,
    readers: Readers,
    shared: Arc<Shared>,
}

impl SqliteBackend {
    pub(crate) fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        let conn = db::open_writer(path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(db::open_reader(path)?);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for (i, conn) in readers.into_iter().enumerate() {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("store-read-{i}"))
                .spawn(move || read_loop(conn, &rx))
                .map_err(StoreError::thread)?;
        }
        SqliteBackend::start(conn, |_| Readers::Pool(tx))
    }

    pub(crate) fn open_in_memory() -> Result<SqliteBackend, StoreError> {
        SqliteBackend::start(db::open_in_memory()?, |writer| {
            Readers::Writer(writer.clone())
        })
    }

    fn start(
        conn: Connection,
        readers: impl FnOnce(&mpsc::Sender<WriterMsg>) -> Readers,
    ) -> Result<SqliteBackend, StoreError> {
        let (live, _) = broadcast::channel(watch::LIVE_BUFFER);
        let shared = Arc::new(Shared {
            revision: AtomicU64::new(db::revision(&conn)?),
            live,
        });
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("store-write".into())
            .spawn(move || writer::run(conn, &rx, &thread_shared))
            .map_err(StoreError::thread)?;
        Ok(SqliteBackend {
            readers: readers(&tx),
            writer: tx,
            shared,
        })
    }
}

/// A reader thread: jobs until every handle is gone.
fn read_loop(mut conn: Connection, jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, so the other reader runs jobs
        // meanwhile; a poisoned lock (a panicked job) leaves the receiver intact.
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            Ok(job) => job(&mut conn),
            Err(_) => return,
        }
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn get(&self, kind: Kind, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.readers.read(move |c| db::get(c, kind, &key)).await
    }

    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = prefix.to_string();
        self.readers.read(move |c| db::list(c, kind, &prefix)).await
    }

    async fn keys(&self, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_string();
        self.readers.read(move |c| db::keys(c, kind, &prefix)).await
    }

    async fn list_indexed(&self, index: Index) -> Result<Vec<(String, String)>, StoreError> {
        self.readers
            .read(move |c| db::list_indexed(c, &index))
            .await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriterMsg::Txn(writer::TxnRequest { ops, reply }))
            .map_err(|_| StoreError::closed())?;
        rx.await.map_err(|_| StoreError::closed())?
    }

    fn watch(&self, from: u64) -> Watch {
        // Subscribed before the first page is read, so no commit falls in between.
        watch::watch(self.readers.clone(), self.shared.live.subscribe(), from)
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let _ = tx.send(db::compact(conn, revision));
        });
        self.writer
            .send(WriterMsg::Job(job))
            .map_err(|_| StoreError::closed())?;
        rx.await.map_err(|_| StoreError::closed())?
    }
}
