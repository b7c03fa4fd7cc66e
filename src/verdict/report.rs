//! The report: what every probe, page and metric is served from. Built by the engine after each evaluation,
//! shared read-only as an `Arc`, never recomputed per request.

use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;

use crate::clock::Moment;
use serde::Serialize;

/// An item's status. Signals report all four; endpoints count `unknown` as their policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Unknown,
}

impl Status {
    pub(crate) const ALL: [Status; 4] = [Status::Pass, Status::Warn, Status::Fail, Status::Unknown];

    /// How bad it is, for putting the worst first or combining parts: fail, unknown, warn, pass.
    pub(crate) fn severity(self) -> u8 {
        match self {
            Status::Fail => 3,
            Status::Unknown => 2,
            Status::Warn => 1,
            Status::Pass => 0,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two health endpoints, each with its own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Healthz,
    Readyz,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 2] = [Endpoint::Healthz, Endpoint::Readyz];

    /// Position in per-endpoint arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
        }
    }
}

/// `CHECK/ITEM`, the name patterns, routes, metric labels and JSON keys use. Both parts are kept, so nothing
/// joins and splits the text again; clones share one allocation.
#[derive(Debug, Clone)]
pub struct ItemName {
    full: Arc<str>,
    check_len: usize,
}

impl ItemName {
    pub(crate) fn new(check: &str, item: &str) -> ItemName {
        ItemName {
            full: format!("{check}/{item}").into(),
            check_len: check.len(),
        }
    }

    /// The check it belongs to.
    pub fn check(&self) -> &str {
        &self.full[..self.check_len]
    }

    /// The part after `CHECK/`.
    pub(crate) fn item(&self) -> &str {
        &self.full[self.check_len + 1..]
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.full
    }
}

impl std::ops::Deref for ItemName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.full
    }
}

impl std::borrow::Borrow<str> for ItemName {
    fn borrow(&self) -> &str {
        &self.full
    }
}

impl PartialEq for ItemName {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for ItemName {}

impl std::hash::Hash for ItemName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state)
    }
}

impl std::fmt::Display for ItemName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

/// The objects behind one item, counted by state (`("ready", 412)`, …), in a fixed order of states.
pub type StateCounts = Arc<[(&'static str, u64)]>;

/// A managed-resource kind counted as crossplane-runtime's `statemetrics` counts it, for its
/// `crossplane_managed_resource_{exists,ready,synced}{gvk}` gauges: every resource held, and those whose
/// `Ready`, and whose `Synced`, condition is `True`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossplaneCounts {
    /// The kind as Kubernetes' Go `GroupVersionKind.String()` writes it, the label's value:
    /// `dataservices.anynines.com/v1, Kind=ServiceInstance`.
    pub gvk: Arc<str>,
    pub exists: u64,
    pub ready: u64,
    pub synced: u64,
}

/// One item as its signal last saw it, before any endpoint policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The check's type (`backend-status`, `deployment`, …).
    pub check_type: &'static str,
    pub name: ItemName,
    pub status: Status,
    pub message: String,
    /// When the signal last observed it.
    pub observed: Timestamp,
    /// When its status last changed.
    pub since: Timestamp,
    /// What JSON `output` and the status page show instead of `message`, even while it passes
    /// ([`crate::signals::Observation::detail`]).
    pub detail: Option<String>,
    /// The objects behind it by state, exported as `klutch_health_managed_resources{check,kind,state}`.
    pub counts: Option<StateCounts>,
    /// The same objects under Crossplane's names, exported as `crossplane_managed_resource_*{gvk}`.
    pub crossplane: Option<CrossplaneCounts>,
    /// Which bad item (or cluster) explains this bad item, by the root-cause rules; `None` when nothing
    /// does (then, while bad, it is a root cause itself).
    pub cause: Option<Explained>,
}

/// How a bad item is explained: the root of its chain of causes, and its direct cause.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The root cause: the deepest bad item of the chain, or `cluster/NAME`.
    pub root: ItemName,
    /// The direct cause, by the rule that links the two.
    pub via: ItemName,
}

/// A root cause: a bad item nothing else explains, or a cluster whose silent (or not ready) API server
/// explains items of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct RootCause {
    /// `CHECK/ITEM`, or `cluster/NAME`.
    pub name: ItemName,
    /// Its index in [`Report::items`]; `None` for `cluster/NAME`, which is a cause, never an item.
    pub item: Option<usize>,
    /// Its observed status (`fail` for a cluster).
    pub status: Status,
    pub message: String,
    /// Since when it is so (for a cluster: since it went silent or not ready).
    pub since: Timestamp,
    /// The items it explains, directly or through others (indices into [`Report::items`], report order).
    pub explains: Vec<usize>,
}

/// Every root cause of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Causes {
    /// Clusters first, then items in report order.
    pub roots: Vec<RootCause>,
    /// `cluster/NAME` of every cluster the checks watch, whether it explains anything or not, so that its
    /// `klutch_health_root_cause` series is exported from the start.
    pub clusters: Vec<ItemName>,
}

/// An item as one endpoint counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    /// Index into [`Report::items`], or `None` for an item the policy added (an unmet `require`).
    pub item: Option<usize>,
    pub name: ItemName,
    /// `pass`, `warn` or `fail`: never `unknown`, which the policy has mapped.
    pub status: Status,
    /// What the item says, as observed.
    pub message: String,
    /// Why the endpoint counts it otherwise than observed.
    pub notes: Notes,
    /// When this endpoint's status for the item last changed.
    pub since: Timestamp,
}

/// The policy's words on how an endpoint counts an item, kept apart from the item's message so that each
/// renderer places them itself (the text and JSON around the message, the status page on their own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notes {
    /// Flap damping: `failing for 3s, counts as failed after 30s`.
    pub damping: Option<String>,
    /// An excused failure: `1 of 2 pass, 1 required`.
    pub require: Option<String>,
    /// A silence or maintenance window an operator declared: shown even when details are withheld, since
    /// it is the operator's word, not the item's.
    pub operator: Option<OperatorNote>,
}

/// What an operator declared about an item, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorNote {
    pub kind: OperatorKind,
    pub until: Timestamp,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKind {
    /// A failing item counted as `warn` by a `[[silence]]`.
    Silenced,
    /// The `/readyz` item `[maintenance]` adds.
    Maintenance,
}

impl OperatorNote {
    pub(crate) fn kind_str(&self) -> &'static str {
        match self.kind {
            OperatorKind::Silenced => "silenced",
            OperatorKind::Maintenance => "maintenance",
        }
    }

    /// Wrapped around the rest of the item's text: `silenced until T (REASON): REST`,
    /// `maintenance until T: REASON`.
    fn around(&self, rest: &str) -> String {
        match self.kind {
            OperatorKind::Silenced => {
                format!("silenced until {} ({}): {rest}", self.until, self.reason)
            }
            OperatorKind::Maintenance => {
                format!("maintenance until {}: {}", self.until, self.reason)
            }
        }
    }
}

impl Notes {
    /// The notes alone, as the status page shows them.
    pub(crate) fn text(&self) -> Option<String> {
        let policy = self.policy_text();
        match (&self.operator, policy) {
            (None, p) => p,
            (Some(o), None) => Some(o.around("").trim_end_matches([':', ' ']).to_string()),
            (Some(o), Some(p)) => Some(o.around(&p)),
        }
    }

    fn policy_text(&self) -> Option<String> {
        match (&self.damping, &self.require) {
            (None, None) => None,
            (Some(d), None) => Some(d.clone()),
            (None, Some(r)) => Some(format!("({r})")),
            (Some(d), Some(r)) => Some(format!("{d} ({r})")),
        }
    }
}

impl Counted {
    /// The item a maintenance window adds to `/readyz`.
    pub(crate) fn is_maintenance(&self) -> bool {
        self.notes
            .operator
            .as_ref()
            .is_some_and(|o| o.kind == OperatorKind::Maintenance)
    }

    /// The message with the policy's notes around it, as the text and JSON forms show it.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        self.text_of(&self.message)
    }

    /// `message` (the item's own, or its fuller account) with the policy's notes around it.
    pub fn text_of<'a>(&'a self, message: &'a str) -> std::borrow::Cow<'a, str> {
        let Notes {
            damping,
            require,
            operator,
        } = &self.notes;
        if let Some(o) = operator {
            let rest = Counted {
                notes: Notes {
                    operator: None,
                    ..self.notes.clone()
                },
                ..self.clone()
            };
            return o.around(&rest.text_of(message)).into();
        }
        if damping.is_none() && require.is_none() {
            return message.into();
        }
        let mut out = match damping {
            Some(d) if message.is_empty() => d.clone(),
            Some(d) => format!("{d}: {message}"),
            None => message.to_string(),
        };
        if let Some(r) = require {
            out = format!("{out} ({r})");
        }
        out.into()
    }
}

/// One endpoint's verdict and the items it counts.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReport {
    pub endpoint: Endpoint,
    pub items: Vec<Counted>,
}

impl EndpointReport {
    /// The endpoint passes when no counted item fails.
    pub fn passed(&self) -> bool {
        passed(self.items.iter())
    }

    /// `fail` if any item fails, else `warn` if any warns, else `pass`.
    pub fn status(&self) -> Status {
        overall(self.items.iter())
    }
}

/// The part of an endpoint's report that one request asks for: `/readyz/NAME` and `?exclude=NAME`.
#[derive(Debug, Default)]
pub struct Selection<'a> {
    pub items: Vec<&'a Counted>,
    pub excluded: Vec<&'a Counted>,
    /// Exclusions that matched nothing.
    pub unmatched: Vec<&'a str>,
}

impl Selection<'_> {
    pub(crate) fn passed(&self) -> bool {
        passed(self.items.iter().copied())
    }
}

impl EndpointReport {
    /// Every item, none excluded.
    pub(crate) fn all(&self) -> Selection<'_> {
        Selection {
            items: self.items.iter().collect(),
            excluded: Vec::new(),
            unmatched: Vec::new(),
        }
    }

    /// Items of check or item `only` (all when `None`), less the exclusions; `None` when `only` names nothing.
    /// A maintenance window is in every selection and cannot be excluded: it drains load balancers whatever
    /// a caller asks for (an exclusion of it is listed as one that matched nothing).
    pub(crate) fn select<'a>(
        &'a self,
        only: Option<&str>,
        exclude: &'a [String],
    ) -> Option<Selection<'a>> {
        let named = |c: &Counted, n: &str| c.name.check() == n || c.name.as_str() == n;
        let mut selection = Selection::default();
        let mut matched = false;
        for c in &self.items {
            if c.is_maintenance() {
                selection.items.push(c);
                continue;
            }
            if only.is_some_and(|o| !named(c, o)) {
                continue;
            }
            matched = true;
            if exclude.iter().any(|x| named(c, x)) {
                selection.excluded.push(c);
            } else {
                selection.items.push(c);
            }
        }
        if only.is_some_and(|o| !matched && !self.items.iter().any(|c| named(c, o))) {
            return None;
        }
        selection.unmatched = exclude
            .iter()
            .filter(|x| {
                !self
                    .items
                    .iter()
                    .any(|c| !c.is_maintenance() && named(c, x))
            })
            .map(String::as_str)
            .collect();
        Some(selection)
    }
}

pub fn passed<'a>(items: impl IntoIterator<Item = &'a Counted>) -> bool {
    items.into_iter().all(|c| c.status != Status::Fail)
}

pub fn overall<'a>(items: impl IntoIterator<Item = &'a Counted>) -> Status {
    items
        .into_iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Pass)
}

/// The last poll's outcome, served again at `/backend-health`: what provider-anynines answered (a `500`
/// stays `500`), or `502`/`504` with a one-line reason when it gave no usable answer. Never an older answer:
/// a monitor reading the passthrough must see what it would see upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Passthrough {
    pub status: u16,
    pub body: Bytes,
    /// The body parses as JSON. Decides the content type: upstream's own header is never served, so its
    /// bytes can never become HTML of this origin.
    pub json: bool,
    /// When this outcome was observed; the `Age` header is measured from its monotonic instant.
    pub at: Moment,
    /// When the last good answer came, for the status page; `None` before the first one.
    pub last_good: Option<Timestamp>,
}

/// The `backend-status` check whose poll `/backend-health` serves (the first one configured, or the one
/// `server.passthrough` names), and its last outcome (`None`: it has not polled yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub check: Arc<str>,
    pub last: Option<Passthrough>,
}

/// Everything the server shows, as of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// When it was evaluated, on both clocks: answers derive ages from its monotonic instant.
    pub evaluated: Moment,
    /// Every item of every check, in configuration order, items sorted by name.
    pub items: Vec<Item>,
    pub healthz: EndpointReport,
    pub readyz: EndpointReport,
    /// What `/backend-health` serves; `None`: no `backend-status` check is configured.
    pub backend: Option<Served>,
    /// Silences (expired ones too) and the maintenance window, as of `evaluated`.
    pub operating: Operating,
    /// The root causes of the bad items (each item's own is [`Item::cause`]).
    pub causes: Causes,
}

impl Report {
    pub fn endpoint(&self, e: Endpoint) -> &EndpointReport {
        match e {
            Endpoint::Healthz => &self.healthz,
            Endpoint::Readyz => &self.readyz,
        }
    }
}

/// Every silence and the maintenance window, as the policy applies them and the page lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operating {
    pub silences: Vec<SilenceState>,
    pub maintenance: Option<MaintenanceState>,
}

/// A silence as of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceState {
    pub pattern: String,
    pub until: Timestamp,
    pub reason: String,
    /// `until` has passed: it silences nothing any more.
    pub expired: bool,
}

/// The maintenance window as of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceState {
    pub from: Option<Timestamp>,
    pub until: Timestamp,
    pub reason: String,
    pub active: bool,
}
