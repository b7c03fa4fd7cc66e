//! Renderers: the report as Kubernetes-style text, IETF health+json and an HTML page (metrics are encoded
//! by [`crate::metrics`]). Each is a plain function of the report, so the server only picks one.

pub(crate) mod history;
pub(crate) mod html;
pub(crate) mod json;
pub(crate) mod text;

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

/// The answers most probes ask for, rendered once per evaluation instead of once per request — only in
/// the detail levels callers can get (`server.details`), to keep memory small with many items.
#[derive(Debug, Clone)]
pub struct Bodies {
    /// `[endpoint][details]`: the verbose text.
    verbose: [[Option<Bytes>; 2]; 2],
    /// `[endpoint][details]`: the health+json document.
    json: [[Option<Bytes>; 2]; 2],
}

impl Bodies {
    pub(crate) fn new(report: &Report, identity: &Identity, levels: &[Details]) -> Bodies {
        let each = |f: &dyn Fn(Endpoint, Details) -> Bytes| {
            Endpoint::ALL.map(|e| {
                [Details::Shown, Details::Withheld].map(|d| levels.contains(&d).then(|| f(e, d)))
            })
        };
        Bodies {
            verbose: each(&|e, d| {
                let selection = report.endpoint(e).all();
                text::verbose(report, e, &selection, d).into()
            }),
            json: each(&|e, d| {
                let selection = report.endpoint(e).all();
                json::document(report, identity, &selection, d, None).into()
            }),
        }
    }

    pub(crate) fn verbose(&self, e: Endpoint, d: Details) -> Option<Bytes> {
        self.verbose[e.index()][d.index()].clone()
    }

    pub(crate) fn json(&self, e: Endpoint, d: Details) -> Option<Bytes> {
        self.json[e.index()][d.index()].clone()
    }
}
