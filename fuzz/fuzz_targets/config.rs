//! The configuration file (TOML through figment, as `Config::load` reads it without the environment): any text
//! is accepted or refused with a reason, never a panic, and an accepted one prints (`--check-config`) as a
//! configuration that reads back and prints the same.
#![no_main]

use klutch_health::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let printed = config.to_toml();
    let again = Config::from_toml(&printed)
        .unwrap_or_else(|e| panic!("the printed configuration is refused: {e}\n{printed}"));
    assert_eq!(again.to_toml(), printed);
});
