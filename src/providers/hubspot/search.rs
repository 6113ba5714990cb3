//! Incremental pull through HubSpot's search API, paged by keyset rather than by `after`.
//!
//! `after` is an offset into the result set: when a record earlier in the order is modified between two pages it
//! leaves its place, every later record shifts back by one, and the next page silently skips one record whose
//! timestamp is already behind the cursor — lost for good. So every page is a fresh query from the last position
//! read: `modified >= last timestamp` (re-reading the few records that share it), and when a whole page shares
//! one timestamp, a walk of that block by `hs_object_id`. No query ever pages deep, so the 10,000-result cap of a
//! search is never reached either.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where a pass stands, carried between pages as the opaque page token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchState {
    /// The lower bound on the modified property, epoch ms.
    pub anchor_ms: i64,
    /// `GT` instead of `GTE` the anchor: set after walking the block at exactly the anchor.
    pub strict: bool,
    /// Walking the block of records modified exactly at `anchor_ms`, by id, after this id.
    pub block_after_id: Option<u64>,
}

impl SearchState {
    pub fn start(anchor_ms: i64) -> Self {
        Self {
            anchor_ms,
            strict: false,
            block_after_id: None,
        }
    }

    /// The search request body for this state.
    pub fn request(&self, modified_property: &str, properties: &[String], limit: u32) -> Value {
        let (filters, sort) = match self.block_after_id {
            Some(after_id) => (
                json!([
                    {"propertyName": modified_property, "operator": "EQ", "value": self.anchor_ms.to_string()},
                    {"propertyName": "hs_object_id", "operator": "GT", "value": after_id.to_string()},
                ]),
                "hs_object_id",
            ),
            None => (
                json!([{
                    "propertyName": modified_property,
                    "operator": if self.strict { "GT" } else { "GTE" },
                    "value": self.anchor_ms.to_string(),
                }]),
                modified_property,
            ),
        };
        let mut props: Vec<&str> = properties.iter().map(String::as_str).collect();
        for always in ["hs_object_id", modified_property] {
            if !props.contains(&always) {
                props.push(always);
            }
        }
        json!({
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": props,
            "limit": limit,
        })
    }

    /// The state after a page of `returned` results (out of `limit` asked) whose largest modified time is
    /// `last_ms` and largest id `last_id`. None when the pass is complete.
    pub fn next(&self, returned: u32, limit: u32, last_ms: Option<i64>, last_id: Option<u64>) -> Option<Self> {
        let full = returned >= limit;
        if self.block_after_id.is_some() {
            return Some(if full {
                // More of the block: continue after the largest id read.
                Self {
                    block_after_id: Some(last_id.unwrap_or(0)),
                    ..self.clone()
                }
            } else {
                // The block is done: everything strictly after its timestamp.
                Self {
                    anchor_ms: self.anchor_ms,
                    strict: true,
                    block_after_id: None,
                }
            });
        }
        if !full {
            return None;
        }
        let last_ms = last_ms.unwrap_or(self.anchor_ms);
        if last_ms > self.anchor_ms {
            // Re-read from the last timestamp: records sharing it may continue on the next page.
            Some(Self::start(last_ms))
        } else {
            // A full page of one timestamp: walk that block by id.
            Some(Self {
                anchor_ms: self.anchor_ms,
                strict: false,
                block_after_id: Some(0),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_continues_from_its_last_timestamp_inclusive() {
        let next = SearchState::start(1000).next(200, 200, Some(1500), Some(9)).unwrap();
        assert_eq!(next, SearchState::start(1500));
        let body = next.request("hs_lastmodifieddate", &[], 200);
        assert_eq!(body["filterGroups"][0]["filters"][0]["operator"], "GTE");
        assert!(body.get("after").is_none(), "keyset pages never use offsets");
    }

    #[test]
    fn a_full_page_of_one_timestamp_walks_the_block_by_id() {
        let block = SearchState::start(1000).next(200, 200, Some(1000), Some(77)).unwrap();
        assert_eq!(block.block_after_id, Some(0));
        let body = block.request("hs_lastmodifieddate", &[], 200);
        assert_eq!(body["sorts"][0]["propertyName"], "hs_object_id");
        assert_eq!(body["filterGroups"][0]["filters"][0]["operator"], "EQ");
        // More of the block continues after the last id.
        let more = block.next(200, 200, Some(1000), Some(12_345)).unwrap();
        assert_eq!(more.block_after_id, Some(12_345));
        assert_eq!(
            more.request("hs_lastmodifieddate", &[], 200)["filterGroups"][0]["filters"][1]["value"],
            "12345"
        );
        // The end of the block continues strictly after its timestamp.
        let after = more.next(50, 200, Some(1000), Some(20_000)).unwrap();
        assert!(after.strict && after.block_after_id.is_none() && after.anchor_ms == 1000);
        assert_eq!(
            after.request("hs_lastmodifieddate", &[], 200)["filterGroups"][0]["filters"][0]["operator"],
            "GT"
        );
    }

    #[test]
    fn a_short_page_ends_the_pass() {
        assert_eq!(SearchState::start(1).next(10, 200, Some(5), Some(1)), None);
        assert_eq!(SearchState::start(1).next(0, 200, None, None), None);
    }
}
