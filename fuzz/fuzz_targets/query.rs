//! The query string of a health request (`?verbose`, `?exclude=NAME`, `?format=json`): anything parses, nothing
//! is an error, and what is read renders back to a query that parses to the same.
#![no_main]

use klutch_health::http::server::{parse_query, Query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    let q = parse_query(Some(query));
    assert!(q.exclude.len() <= query.split('&').count());
    let mut again = url::form_urlencoded::Serializer::new(String::new());
    if q.verbose {
        again.append_pair("verbose", "");
    }
    if q.json {
        again.append_pair("format", "json");
    }
    for x in &q.exclude {
        again.append_pair("exclude", x);
    }
    let again = again.finish();
    assert_eq!(parse_query(Some(&again)), q, "{again:?}");
    assert_eq!(parse_query(None), Query::default());
});
