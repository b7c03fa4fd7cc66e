//! The open connections of one listener, each with what it is doing and when it was last active. At the
//! limit, a connection that is idle (kept alive between requests) or still silent (nothing received yet) is
//! asked to close so that a new one is admitted at once, the least recently active first; one that has sent
//! part of a request only when there is no such one. A connection whose request has arrived and is being
//! answered is never cut off; with every slot answering, the newcomer is refused. A pool that made
//! newcomers wait for a free slot would let idle or slowly busy keep-alive clients lock out every probe,
//! kubelet's included (and kubelet then restarts a healthy pod); evicting whatever was least recently active
//! let clients that only connect and close cut off probes in the middle of their answer. Before choosing,
//! the table peeks (without reading) at the oldest candidates' sockets: one whose peer has already closed
//! goes first, one whose request bytes have arrived is treated as sending its request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

impl Table {
    /// The connection to ask to close (see the module's documentation), or `None`: all are answering.
    fn evictable(&self) -> Option<u64> {
        let mut ranked: Vec<((bool, u64), u64)> = self
            .open
            .iter()
            .filter_map(|(id, a)| a.eviction_rank().map(|rank| (rank, *id)))
            .collect();
        ranked.sort_unstable();
        let (mut silent, mut sending) = (None, None);
        for &(_, id) in ranked.iter().take(PEEK_AT_MOST) {
            let a = &self.open[&id];
            match a.peer.as_ref().map(Peer::seen) {
                Some(Seen::Closed) => return Some(id),
                Some(Seen::Sent) => {
                    sending.get_or_insert(id);
                }
                Some(Seen::Silent) | None if a.reading() => {
                    sending.get_or_insert(id);
                }
                Some(Seen::Silent) | None => {
                    silent.get_or_insert(id);
                }
            }
        }
        silent
            .or(sending)
            .or_else(|| ranked.get(PEEK_AT_MOST).map(|&(_, id)| id))
    }
}

/// What the table knows of one connection and how it asks it to close.
#[derive(Debug)]
pub struct Activity {
    /// The table's clock at the connection's last activity (accept, first bytes, a request, an answer).
    last: AtomicU64,
    /// Requests whose headers have arrived and whose answer is not sent yet.
    answering: AtomicUsize,
    /// Since when bytes of a request have been arriving whose headers are not complete yet (`None`: no
    /// such request): what ranks it for eviction and what the header read timeout counts from.
    reading_since: Mutex<Option<tokio::time::Instant>>,
    started_reading: Notify,
    /// It speaks HTTP/2, whose frames between requests (pings, window updates) begin no request.
    http2: AtomicBool,
    /// Another handle on the socket, to see without reading whether the peer sent or closed anything.
    peer: Option<Peer>,
    close: Notify,
}

/// A second handle on a connection's socket (a duplicated descriptor, closed with it), only ever peeked at.
#[derive(Debug)]
pub struct Peer(std::net::TcpStream);

/// What a peek at a socket shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The peer closed (or the socket failed): the connection is gone already.
    Closed,
    /// Bytes are waiting to be read: a request is arriving.
    Sent,
    /// Nothing.
    Silent,
}

impl Peer {
    /// A handle on `stream`'s socket, where the platform can duplicate one.
    pub fn of(stream: &tokio::net::TcpStream) -> Option<Peer> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let fd = stream.as_fd().try_clone_to_owned().ok()?;
            Some(Peer(std::net::TcpStream::from(fd)))
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            None
        }
    }

    /// Peeks without waiting (the socket is non-blocking, as tokio made it) and without consuming.
    fn seen(&self) -> Seen {
        match self.0.peek(&mut [0u8; 1]) {
            Ok(0) => Seen::Closed,
            Ok(_) => Seen::Sent,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Seen::Silent,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Seen::Silent,
            Err(_) => Seen::Closed,
        }
    }
}

/// How many of the oldest candidates a full table peeks at before choosing: bounded work per newcomer.
const PEEK_AT_MOST: usize = 64;

impl Activity {
    fn reading(&self) -> bool {
        self.reading_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The order in which connections are asked to close at the limit: idle and silent ones first, then
    /// ones still sending a request, each the least recently active first; `None`: never (answering).
    fn eviction_rank(&self) -> Option<(bool, u64)> {
        (self.answering.load(Ordering::SeqCst) == 0)
            .then(|| (self.reading(), self.last.load(Ordering::SeqCst)))
    }
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

    /// Admits a new connection, asking another to close when the table is full (see the module's
    /// documentation for which); `None` when every slot is answering a request: the newcomer is to be
    /// closed at once. The closing one leaves the table at once, so it never counts against newcomers
    /// while it finishes.
    pub fn admit(self: &Arc<Self>, peer: Option<Peer>) -> Option<Admitted> {
        let activity = Arc::new(Activity {
            last: AtomicU64::new(self.now()),
            answering: AtomicUsize::new(0),
            reading_since: Mutex::new(None),
            started_reading: Notify::new(),
            http2: AtomicBool::new(false),
            peer,
            close: Notify::new(),
        });
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        while table.open.len() >= self.limit {
            match table.evictable().and_then(|id| table.open.remove(&id)) {
                Some(evicted) => evicted.close.notify_one(),
                None => return None,
            }
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(id, activity.clone());
        Some(Admitted {
            id,
            activity,
            connections: self.clone(),
        })
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

    /// The first bytes of a request have arrived: the connection is no longer silent, and goes after the
    /// idle and silent ones.
    pub fn arrived(&self) {
        self.activity().arrived();
    }

    /// Resolves once a request's headers have been arriving for `timeout` without completing: the time
    /// between requests (idle keep-alive) does not count, only a request begun and not finished.
    pub async fn headers_overdue(&self, timeout: std::time::Duration) {
        let activity = &self.activity;
        loop {
            let since = *activity
                .reading_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match since {
                None => activity.started_reading.notified().await,
                Some(at) => {
                    // A timeout of centuries would overflow the clock: that is never.
                    let Some(deadline) = at.checked_add(timeout) else {
                        return std::future::pending().await;
                    };
                    tokio::time::sleep_until(deadline).await;
                    let now = *activity
                        .reading_since
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if now == Some(at) {
                        return;
                    }
                }
            }
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

/// Marks a connection active: cheap (a few atomic operations), so every request can.
#[derive(Clone)]
pub struct Toucher {
    activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Toucher {
    /// Bytes arrived on the connection: a new request's first ones when it was neither answering nor
    /// reading one (bytes that arrive during an answer are a pipelined request, read once it is sent).
    pub fn arrived(&self) {
        let a = &self.activity;
        if a.http2.load(Ordering::Relaxed) {
            return;
        }
        if a.answering.load(Ordering::SeqCst) != 0 {
            return;
        }
        let mut since = a
            .reading_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.is_none() {
            *since = Some(tokio::time::Instant::now());
            drop(since);
            a.started_reading.notify_one();
            self.touch();
        }
    }

    pub fn touch(&self) {
        self.activity
            .last
            .store(self.connections.now(), Ordering::SeqCst);
    }

    /// A request's headers have arrived (over HTTP/2 when `http2`): the connection is answering until the
    /// returned guard is dropped (with the answer's body, once it is sent).
    pub fn answering(&self, http2: bool) -> Answering {
        if http2 {
            self.activity.http2.store(true, Ordering::Relaxed);
        }
        self.activity.answering.fetch_add(1, Ordering::SeqCst);
        *self
            .activity
            .reading_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.touch();
        Answering(self.clone())
    }
}

/// A request being answered; the connection is idle again once every one is dropped.
pub struct Answering(Toucher);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.activity.answering.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_least_recently_active_connection_is_asked_to_close() {
        let table = Connections::new(2);
        let first = table.admit(None).expect("room");
        let second = table.admit(None).expect("room");
        // The first is busier than the second: the second is the one to go.
        first.activity().touch();
        let third = table.admit(None).expect("the second is idle");
        assert_eq!(table.len(), 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), second.closing())
            .await
            .expect("the least recently active connection is asked to close");
        drop(second);
        assert_eq!(table.len(), 2, "the evicted one had already left");
        drop((first, third));
        assert!(table.is_empty());
    }

    /// A connection answering a request is never asked to close; silent and idle ones go before one still
    /// sending its request; with every slot answering, the newcomer is refused.
    #[tokio::test]
    async fn answering_connections_stay_silent_and_idle_ones_go_first_and_a_full_table_refuses() {
        let table = Connections::new(3);
        let answering = table.admit(None).expect("room");
        let reading = table.admit(None).expect("room");
        let idle = table.admit(None).expect("room");
        // The answering one is the least recently active, the reading one the next.
        let busy = answering.activity().answering(false);
        reading.arrived();
        idle.activity().touch();
        let first = table.admit(None).expect("the idle one makes room");
        async fn asked(a: &Admitted) -> bool {
            tokio::time::timeout(std::time::Duration::from_millis(100), a.closing())
                .await
                .is_ok()
        }
        assert!(asked(&idle).await, "idle before reading");
        let _busy_first = first.activity().answering(false);
        let second = table.admit(None).expect("the reading one makes room");
        assert!(asked(&reading).await);
        let _busy_second = second.activity().answering(false);
        assert!(table.admit(None).is_none(), "every slot answering: refused");
        assert!(!asked(&answering).await, "never cut off while answering");
        drop(busy);
        assert!(
            table.admit(None).is_some(),
            "answered: idle again, and evictable"
        );
        assert!(asked(&answering).await);
    }

    /// A peek at the sockets tells a peer that closed already (it goes first, though younger) and one whose
    /// request is arriving (it goes last) from one that is silent.
    #[tokio::test]
    async fn a_peek_finds_connections_closed_by_their_peer_and_requests_arriving() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = async || listener.accept().await.expect("accept").0;
        let table = Connections::new(3);
        let mut sending_client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let sending = accept().await;
        let _silent_client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let silent = accept().await;
        let closing_client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let closed = accept().await;
        let peers = [&sending, &silent, &closed].map(|s| Peer::of(s).expect("a peer"));
        sending_client
            .write_all(b"GET /livez HTTP/1.1\r\n")
            .await
            .expect("write");
        drop(closing_client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while peers[0].seen() != Seen::Sent || peers[2].seen() != Seen::Closed {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                peers.map(|p| p.seen())
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(peers[1].seen(), Seen::Silent);
        let [p0, p1, p2] = peers;
        let admitted: Vec<Admitted> = [p0, p1, p2]
            .into_iter()
            .map(|p| table.admit(Some(p)).expect("room"))
            .collect();
        async fn asked(a: &Admitted) -> bool {
            tokio::time::timeout(std::time::Duration::from_millis(100), a.closing())
                .await
                .is_ok()
        }
        let _newcomer = table.admit(None).expect("room");
        assert!(
            asked(&admitted[2]).await,
            "the closed one, though the youngest"
        );
        let _another = table.admit(None).expect("room");
        assert!(asked(&admitted[1]).await, "then the silent one");
        assert!(
            !asked(&admitted[0]).await,
            "the one sending its request stays"
        );
    }

    #[tokio::test]
    async fn close_all_asks_every_connection() {
        let table = Connections::new(4);
        let all: Vec<Admitted> = (0..3).filter_map(|_| table.admit(None)).collect();
        table.close_all();
        for a in &all {
            tokio::time::timeout(std::time::Duration::from_secs(1), a.closing())
                .await
                .expect("asked to close");
        }
    }
}
