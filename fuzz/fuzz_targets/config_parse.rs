//! The config loader on arbitrary text: every input is either a config or a list of problems, never a panic.
#![no_main]

use crmsyncd::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, std::path::Path::new("fuzz.toml"), &|_| Some("x".to_string()));
    }
});
