//! A managed resource as the watch delivers it (JSON written by the provider and, through names, labels and
//! condition messages, by tenants): any bytes parse into the reduced object or fail, never panic, and what is
//! kept is bounded.
#![no_main]

use klutch_health::checks::managed_resources::object::{Managed, MESSAGE_LIMIT};
use klutch_health::human::NAME_LIMIT;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &[u8]| {
    let Ok(m) = serde_json::from_slice::<Managed>(json) else {
        return;
    };
    let f = &m.facts;
    for kept in [
        m.name(),
        f.claim_namespace.as_deref(),
        f.provider_config.as_deref(),
        f.instance_name.as_deref(),
        f.backup_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(kept.len() <= NAME_LIMIT, "{} bytes", kept.len());
    }
    for c in [&f.ready, &f.synced].into_iter().flatten() {
        assert!(c.reason.len() <= NAME_LIMIT, "{} bytes", c.reason.len());
        assert!(
            c.message.len() <= MESSAGE_LIMIT,
            "{} bytes",
            c.message.len()
        );
    }
});
