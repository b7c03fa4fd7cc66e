//! provider-anynines' backend-health body, as the `backend-status` check reads it: any bytes parse into items or
//! fail as an invalid body, never panic; the items are bounded, sorted, unique and never the reserved item.
#![no_main]

use klutch_health::checks::backend_status::{item_name, parse_body, ENDPOINT_ITEM};
use klutch_health::human::MESSAGE_LIMIT;
use klutch_health::verdict::report::Status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match parse_body(body) {
        Ok(items) => {
            for pair in items.windows(2) {
                assert!(pair[0].0 < pair[1].0, "items sorted and unique");
            }
            for (name, status, message) in &items {
                assert_ne!(name, ENDPOINT_ITEM);
                assert!(
                    name.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"-.%ABCDEF".contains(&b)),
                    "an item name is a URL path segment: {name:?}"
                );
                // The cut message, plus at most the note on a repeated key.
                assert!(
                    message.len() <= MESSAGE_LIMIT + 80,
                    "{} bytes",
                    message.len()
                );
                // "ok" passes, with the note on a repeated key; nothing else does.
                if *status == Status::Pass {
                    assert!(
                        message == "ok" || message.starts_with("ok (the key appears "),
                        "{message:?}"
                    );
                } else {
                    assert_ne!(message, "ok");
                }
            }
        }
        Err(e) => assert_eq!(e.outcome(), "invalid_body", "{e}"),
    }
    // Two different keys (the input split at its first NUL) never share an item name.
    if let Some((a, b)) = std::str::from_utf8(body)
        .ok()
        .and_then(|t| t.split_once('\0'))
    {
        if a != b {
            assert_ne!(item_name(a), item_name(b), "{a:?} and {b:?}");
        }
    }
});
