//! Renderers: the report as Kubernetes-style text, IETF health+json and an HTML page (metrics are encoded
//! by [`crate::metrics`]). Each is a plain function of the report, so the server only picks one.

pub(crate) mod history;
pub(crate) mod html;
pub(crate) mod json;
pub(crate) mod text;

use std::sync::OnceLock;

use bytes::Bytes;

use crate::verdict::report::{Endpoint, Report};

/// Whether messages are shown or replaced by [`WITHHELD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Details {
    Shown,
    Withheld,
}

/// What every message reads when the caller may not see details.
pub(crate) const WITHHELD: &str = "reason withheld";

impl Details {
    fn index(self) -> usize {
        self as usize
    }

    /// The message as this caller may see it, on one line.
    /// A counted item's message with the policy's notes, or the placeholder.
    pub(crate) fn counted(self, c: &crate::verdict::report::Counted) -> std::borrow::Cow<'_, str> {
        self.counted_of(c, &c.message)
    }

    /// [`Details::counted`] with `message` in place of the item's own (its fuller account).
    pub(crate) fn counted_of<'a>(
        self,
        c: &'a crate::verdict::report::Counted,
        message: &'a str,
    ) -> std::borrow::Cow<'a, str> {
        match (self, c.text_of(message)) {
            (Details::Withheld, _) => match &c.notes.operator {
                // What an operator declared is no secret of the item's; only the reason is withheld.
                Some(o) => format!("{} until {}: {WITHHELD}", o.kind_str(), o.until).into(),
                None => WITHHELD.into(),
            },
            (Details::Shown, std::borrow::Cow::Borrowed(m)) => one_line(m),
            (Details::Shown, std::borrow::Cow::Owned(m)) => one_line(&m).into_owned().into(),
        }
    }

    pub(crate) fn message(self, message: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Details::Withheld => WITHHELD.into(),
            Details::Shown => one_line(message),
        }
    }
}

/// Text from outside (messages, and names taken from upstream keys) with control characters made spaces,
/// so that it can never add a line of its own, such as a forged `readyz check passed`.
pub(crate) fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(char::is_control) {
        text.replace(char::is_control, " ").into()
    } else {
        text.into()
    }
}

/// Service identity shown in JSON and on the status page.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service_id: String,
    pub description: String,
}

impl Identity {
    /// The identity `[server]` configures.
    pub fn of(config: &crate::config::Config) -> Identity {
        Identity {
            service_id: config.server.service_id.clone(),
            description: config.server.description.clone(),
        }
    }
}

/// The answers most probes ask for, rendered at most once per evaluation — on the first request that asks,
/// so that an evaluation nobody reads (a burst of changes between two probes) renders nothing — and only in
/// the detail levels callers can get (`server.details`).
#[derive(Debug)]
pub struct Bodies {
    identity: Identity,
    /// `[details]`: whether callers can be served this level.
    levels: [bool; 2],
    /// `[endpoint][details]`: the verbose text.
    verbose: [[OnceLock<Bytes>; 2]; 2],
    /// `[endpoint][details]`: the health+json document.
    json: [[OnceLock<Bytes>; 2]; 2],
}

impl Bodies {
    pub(crate) fn new(identity: &Identity, levels: &[Details]) -> Bodies {
        Bodies {
            identity: identity.clone(),
            levels: [Details::Shown, Details::Withheld].map(|d| levels.contains(&d)),
            verbose: Default::default(),
            json: Default::default(),
        }
    }

    /// The verbose text of `report` (the one these bodies were made for) at `e` and `d`; `None` when `d` is
    /// no level callers can get.
    pub(crate) fn verbose(&self, report: &Report, e: Endpoint, d: Details) -> Option<Bytes> {
        self.levels[d.index()].then(|| {
            self.verbose[e.index()][d.index()]
                .get_or_init(|| {
                    let selection = report.endpoint(e).all();
                    text::verbose(report, e, &selection, d).into()
                })
                .clone()
        })
    }

    /// The health+json document, as [`Bodies::verbose`].
    pub(crate) fn json(&self, report: &Report, e: Endpoint, d: Details) -> Option<Bytes> {
        self.levels[d.index()].then(|| {
            self.json[e.index()][d.index()]
                .get_or_init(|| {
                    let selection = report.endpoint(e).all();
                    json::document(report, &self.identity, &selection, d, None).into()
                })
                .clone()
        })
    }
}
