//! Property tests over what the outside world controls: provider-anynines' body, the query string, the
//! configuration file. Failing cases are kept in `proptest-regressions/` (the corpus) and replayed first.

use klutch_health::checks::backend_status::parse_body;
use klutch_health::config::Config;
use klutch_health::http::server::{parse_query, Query};
use klutch_health::verdict::report::Status;
use proptest::prelude::*;

const SHIPPED: &str = include_str!("../../config.toml");

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
    fn exclusions_are_exactly_the_decoded_exclude_parameters(
        parts in proptest::collection::vec(prop_oneof!["exclude=[a-z%/+]{0,8}", "%65xclude=[a-z]{0,4}", "excl%75de", "[a-z%=+]{0,12}", "verbose"], 0..8)
    ) {
        let q = parts.join("&");
        let expected: Vec<String> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .filter(|(k, _)| form_decode(k) == "exclude")
            .map(|(_, v)| form_decode(v))
            .collect();
        prop_assert_eq!(parse_query(Some(&q)).exclude, expected);
    }

    #[test]
    fn a_query_renders_and_parses_back_to_itself(
        verbose in any::<bool>(),
        json in any::<bool>(),
        exclude in proptest::collection::vec(".{0,20}", 0..5),
    ) {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if verbose {
            q.append_pair("verbose", "");
        }
        if json {
            q.append_pair("format", "json");
        }
        for x in &exclude {
            q.append_pair("exclude", x);
        }
        let parsed = parse_query(Some(&q.finish()));
        prop_assert_eq!(parsed, Query { verbose, exclude, json });
    }

    #[test]
    fn any_text_as_configuration_never_panics(text in ".{0,400}") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn a_mangled_shipped_configuration_that_is_accepted_prints_and_reads_back_the_same(line in 0usize..200, junk in "[a-z_\"= 0-9.\\[\\]]{0,20}") {
        let mut lines: Vec<&str> = SHIPPED.lines().collect();
        let at = line % lines.len();
        lines[at] = &junk;
        // Whatever is accepted prints as a configuration that reads back the same.
        if let Ok(config) = Config::from_toml(&lines.join("\n")) {
            let printed = config.to_toml();
            let again = Config::from_toml(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
            prop_assert_eq!(again.to_toml(), printed);
        }
    }
}

/// Bodies that broke or nearly broke parsers elsewhere; each must parse or fail with a reason, never panic.
#[test]
fn the_corpus_parses_or_fails_cleanly() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fast/corpus/backend-health"
    );
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let body = std::fs::read(&path).expect("corpus file");
        match parse_body(&body) {
            Ok(items) => assert!(items
                .iter()
                .all(|(name, ..)| !name.is_empty() || body.len() < 64)),
            // A body that does not parse is counted as `invalid_body`, never as a transport failure.
            Err(e) => assert_eq!(e.outcome(), "invalid_body", "{}: {e}", path.display()),
        }
        seen += 1;
    }
    assert!(seen >= 8, "the corpus is in place ({seen} files)");
    // The provider's own degraded body (tests/fixtures/) parses, its failing entry named.
    let degraded =
        parse_body(include_bytes!("../fixtures/backend-health-degraded.json")).expect("fixture");
    assert!(degraded
        .iter()
        .any(|(n, s, _)| n == "postgresql-backup-manager" && *s == Status::Fail));
}

/// `application/x-www-form-urlencoded` decoding, written out here so that the property does not check the
/// parser against itself: `+` is a space, `%XX` a byte, anything else as is.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
