//! How an API server lists: a streaming list (a WATCH with `sendInitialEvents=true`, served from the server's
//! watch cache and ended by a BOOKMARK) where it serves them, else LIST in pages. Decided once per server: the
//! first watch to try learns it for every watch of its connection, and it is logged once.
//!
//! kube-apiserver serves streaming lists when its `WatchList` feature gate is on (the default of v1.32 and of
//! v1.34 on, off in v1.33) and refuses them with `422 Invalid` otherwise: that refusal is the only answer that
//! turns a server to pages.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kube::runtime::watcher::{self, InitialListStrategy};

const UNKNOWN: u8 = 0;
const STREAMING: u8 = 1;
const PAGES: u8 = 2;

/// One server's way of listing, shared by the watches of its connection. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lists(Arc<AtomicU8>);

/// What the server is known to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Nothing yet: the next list tries streaming.
    Unknown,
    Streaming,
    Pages,
}

impl Lists {
    /// How the next list of a watch on this server starts.
    pub(crate) fn strategy(&self) -> InitialListStrategy {
        match self.known() {
            Known::Pages => InitialListStrategy::ListWatch,
            Known::Unknown | Known::Streaming => InitialListStrategy::StreamingList,
        }
    }

    pub(crate) fn known(&self) -> Known {
        match self.0.load(Ordering::Relaxed) {
            STREAMING => Known::Streaming,
            PAGES => Known::Pages,
            _ => Known::Unknown,
        }
    }

    /// A streaming list completed on this server (`cluster`: its name, for the log).
    pub(crate) fn served(&self, cluster: &str) {
        if self
            .0
            .compare_exchange(UNKNOWN, STREAMING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::info!(
                cluster,
                "the API server serves streaming lists: watches list from its watch cache"
            );
        }
    }

    /// The server refused a streaming list (`why`: its words): every later list of this connection goes in
    /// pages. Logged once.
    pub(crate) fn refused(&self, cluster: &str, why: &str) {
        if self.0.swap(PAGES, Ordering::Relaxed) != PAGES {
            tracing::info!(cluster, answer = why,
                "the API server does not serve streaming lists (its WatchList feature gate is off): listing in pages");
        }
    }
}

/// Whether `e` is a server's refusal of a streaming list: `422 Invalid` (or `400`) naming `sendInitialEvents`,
/// as kube-apiserver answers a WATCH that asks for initial events while its `WatchList` gate is off.
pub(crate) fn refuses_streaming(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(status))
        if (status.code == 422 || status.code == 400) && status.message.contains("sendInitialEvents"))
}

/// What kube-apiserver answers a streaming list while its `WatchList` gate is off: for the tests' fakes.
#[cfg(test)]
pub(crate) const WATCH_LIST_OFF: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled","reason":"Invalid","code":422}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: u16, message: &str) -> watcher::Error {
        let mut status = kube::core::Status::failure(message, "Invalid");
        status.code = code;
        watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn a_server_starts_unknown_turns_to_pages_once_refused_and_stays_there() {
        let lists = Lists::default();
        assert_eq!(lists.strategy(), InitialListStrategy::StreamingList);
        let shared = lists.clone();
        shared.refused("default", "sendInitialEvents is forbidden");
        assert_eq!(lists.known(), Known::Pages);
        assert_eq!(lists.strategy(), InitialListStrategy::ListWatch);
        // A streaming list that completed before the refusal was seen changes nothing now.
        lists.served("default");
        assert_eq!(lists.known(), Known::Pages);
    }

    #[test]
    fn a_served_streaming_list_makes_the_server_known_to_stream() {
        let lists = Lists::default();
        lists.served("default");
        assert_eq!(lists.known(), Known::Streaming);
        assert_eq!(lists.strategy(), InitialListStrategy::StreamingList);
    }

    #[test]
    fn only_a_refusal_naming_send_initial_events_is_one() {
        let gate_off = "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: \
                        sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled";
        assert!(refuses_streaming(&refusal(422, gate_off)));
        assert!(!refuses_streaming(&refusal(
            422,
            "something else is invalid"
        )));
        assert!(!refuses_streaming(&refusal(403, gate_off)));
        let list = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(
            kube::core::Status::failure(gate_off, "Invalid"),
        )));
        assert!(!refuses_streaming(&list));
    }
}
