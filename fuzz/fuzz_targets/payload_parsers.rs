//! Every payload parser on arbitrary bytes (what a verified sender could still send): no panic, whatever it is.
#![no_main]

use crmsyncd::providers::hubspot::webhook as hubspot;
use crmsyncd::providers::{pipedrive, salesforce, zoho};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = hubspot::parse_events(data, serde_json::json!({})) {
        for e in events {
            let _ = hubspot::interpret(&e.body, &["contacts".to_string()]);
        }
    }
    if let Ok(events) = pipedrive::webhook::parse_event(data) {
        for e in events {
            let _ = pipedrive::webhook::interpret(&e.body, &["persons".to_string()]);
        }
    }
    if let Ok(message) = salesforce::outbound::parse(data) {
        let _ = salesforce::outbound::events(message, Some("00D000000000001AAA"));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = zoho::webhook::interpret(&value, &["Leads".to_string()]);
    }
});
