//! Property tests over what the outside world controls: provider-anynines' body, the query string, the
//! configuration file. Failing cases are kept in `proptest-regressions/` (the corpus) and replayed first.

use klutch_health::config::Config;
use klutch_health::report::Status;
use klutch_health::server::parse_query;
use klutch_health::signals::backend_status::parse_body;
use proptest::prelude::*;

const SHIPPED: &str = include_str!("../config.toml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_body_parses_or_fails_cleanly(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_body(&body);
    }

    #[test]
    fn an_object_of_strings_gives_one_item_per_key(
        entries in proptest::collection::btree_map("[a-z0-9-]{1,20}", prop_oneof!["ok", "degraded", ".{0,10}"], 0..20)
    ) {
        let body = serde_json::to_vec(&entries).expect("JSON");
        let items = parse_body(&body).expect("an object parses");
        prop_assert_eq!(items.len(), entries.len());
        for (name, status, message) in items {
            let value = &entries[&name];
            prop_assert_eq!(status == Status::Pass, value == "ok");
            prop_assert_eq!(&message, value);
        }
    }

    #[test]
    fn any_query_string_is_read_without_error(q in ".{0,200}") {
        let parsed = parse_query(Some(&q));
        prop_assert!(parsed.exclude.len() <= q.matches("exclude").count());
    }

    #[test]
    fn exclusions_survive_percent_encoding(names in proptest::collection::vec("[a-z/ &=%-]{1,30}", 1..5)) {
        let q: String = names
            .iter()
            .map(|n| format!("exclude={}", url::form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()))
            .collect::<Vec<_>>()
            .join("&");
        prop_assert_eq!(parse_query(Some(&q)).exclude, names);
    }

    #[test]
    fn any_text_as_configuration_never_panics(text in ".{0,400}") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn the_shipped_configuration_with_a_line_mangled_is_accepted_or_named(line in 0usize..200, junk in "[a-z_\"= 0-9.\\[\\]]{0,20}") {
        let mut lines: Vec<&str> = SHIPPED.lines().collect();
        let at = line % lines.len();
        lines[at] = &junk;
        match Config::from_toml(&lines.join("\n")) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.to_string().starts_with("invalid configuration: "), "{}", e),
        }
    }
}

/// Bodies that broke or nearly broke parsers elsewhere; each must parse or fail with a reason, never panic.
#[test]
fn the_corpus_parses_or_fails_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/backend-health");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let body = std::fs::read(&path).expect("corpus file");
        match parse_body(&body) {
            Ok(items) => assert!(items
                .iter()
                .all(|(name, ..)| !name.is_empty() || body.len() < 64)),
            Err(e) => assert!(!e.to_string().is_empty(), "{}", path.display()),
        }
        seen += 1;
    }
    assert!(seen >= 8, "the corpus is in place ({seen} files)");
    let degraded = parse_body(include_bytes!(
        "corpus/backend-health/backend-health-degraded.json"
    ))
    .expect("fixture");
    assert!(degraded
        .iter()
        .any(|(n, s, _)| n == "postgresql-backup-manager" && *s == Status::Fail));
}
