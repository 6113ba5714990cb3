//! The opaque `page[cursor]` of Klaviyo's list endpoints. It holds the sort key and id of the last profile of the
//! page, so the next page starts strictly after it whatever changed in between (a keyset, not an offset), and a
//! fingerprint of the query it belongs to, so it cannot be replayed against another filter or sort.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// A profile's position in one sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum SortKey {
    /// Seconds since the epoch (`updated`, `created`).
    Time(i64),
    /// A string (`id`, `email`).
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The last profile's sort key and id.
    pub after: (SortKey, String),
    /// The fingerprint of the filter and sort the cursor was made for.
    pub query: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }

    /// None for anything this simulator did not hand out.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A stable fingerprint of a query's filter and sort (FNV-1a).
pub(crate) fn fingerprint(filter: &str, sort: &str) -> u64 {
    format!("{filter}\u{0}{sort}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            after: (SortKey::Time(1_700_000_000), "01HZZ".into()),
            query: fingerprint("greater-than(updated,2024-01-01T00:00:00Z)", "updated"),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_ne!(fingerprint("a", "updated"), fingerprint("a", "-updated"));
    }
}
