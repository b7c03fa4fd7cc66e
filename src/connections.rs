//! The open connections of one listener, each with when it was last active. At the limit, the least recently
//! active one is asked to close so that a new one is admitted at once: a pool that makes newcomers wait for a
//! free slot lets idle or slowly busy keep-alive clients lock out every probe, kubelet's included, and then
//! kubelet restarts a healthy pod.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The connection table of one listener.
pub struct Connections {
    limit: usize,
    /// A logical clock: only the order of activity matters, and a counter orders even events within one
    /// clock tick.
    clock: AtomicU64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Arc<Activity>>,
}

/// What the table knows of one connection and how it asks it to close.
#[derive(Debug)]
pub struct Activity {
    /// The table's clock at the connection's last request (or its accept).
    last: AtomicU64,
    close: Notify,
}

/// One admitted connection; leaving the table when dropped.
pub struct Admitted {
    id: u64,
    activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Connections {
    /// A table of at most `limit` (at least 1) connections.
    pub fn new(limit: usize) -> Arc<Connections> {
        Arc::new(Connections {
            limit: limit.max(1),
            clock: AtomicU64::new(0),
            table: Mutex::default(),
        })
    }

    fn now(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits a new connection, asking the least recently active one to close when the table is full. The
    /// closing one leaves the table at once, so it never counts against newcomers while it finishes.
    pub fn admit(self: &Arc<Self>) -> Admitted {
        let activity = Arc::new(Activity {
            last: AtomicU64::new(self.now()),
            close: Notify::new(),
        });
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        while table.open.len() >= self.limit {
            let oldest = table
                .open
                .iter()
                .min_by_key(|(_, a)| a.last.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            match oldest.and_then(|id| table.open.remove(&id)) {
                Some(evicted) => evicted.close.notify_one(),
                None => break,
            }
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(id, activity.clone());
        Admitted {
            id,
            activity,
            connections: self.clone(),
        }
    }

    /// Asks every open connection to close (graceful shutdown).
    pub fn close_all(&self) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        for activity in table.open.values() {
            activity.close.notify_one();
        }
    }

    /// How many connections hold a slot.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .len()
    }

    /// Whether no connection holds a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Admitted {
    /// A handle for the connection's request handler to mark activity with.
    pub fn activity(&self) -> Toucher {
        Toucher {
            activity: self.activity.clone(),
            connections: self.connections.clone(),
        }
    }

    /// Resolves once the table asks this connection to close (evicted, or shutting down).
    pub async fn closing(&self) {
        self.activity.close.notified().await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self
            .connections
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if table
            .open
            .get(&self.id)
            .is_some_and(|a| Arc::ptr_eq(a, &self.activity))
        {
            table.open.remove(&self.id);
        }
    }
}

/// Marks a connection active: cheap (two atomic operations), so every request can.
#[derive(Clone)]
pub struct Toucher {
    activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Toucher {
    pub fn touch(&self) {
        self.activity
            .last
            .store(self.connections.now(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_least_recently_active_connection_is_asked_to_close() {
        let table = Connections::new(2);
        let first = table.admit();
        let second = table.admit();
        // The first is busier than the second: the second is the one to go.
        first.activity().touch();
        let third = table.admit();
        assert_eq!(table.len(), 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.closing())
            .await
            .expect("the least recently active connection is asked to close");
        drop(second);
        assert_eq!(table.len(), 2, "the evicted one had already left");
        drop((first, third));
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn close_all_asks_every_connection() {
        let table = Connections::new(4);
        let all: Vec<Admitted> = (0..3).map(|_| table.admit()).collect();
        table.close_all();
        for a in &all {
            tokio::time::timeout(std::time::Duration::from_secs(1), a.closing())
                .await
                .expect("asked to close");
        }
    }
}
