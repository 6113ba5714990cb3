//! Incremental pull through HubSpot's search API: one query per window, paged with `after`, re-anchored before
//! the 10,000-result cap, and walked by `hs_object_id` through a block of equal timestamps larger than the cap.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where a pass stands, carried between pages as the opaque page token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchState {
    /// The window's lower bound on the modified property, epoch ms.
    pub anchor_ms: i64,
    /// `GT` instead of `GTE` the anchor: set after walking a block at exactly the anchor.
    pub strict: bool,
    /// Walking the block of records modified exactly at `anchor_ms`, by id, after this id.
    pub block_after_id: Option<u64>,
    /// How many results of the current query were already read (HubSpot's `after`).
    pub offset: u32,
}

impl SearchState {
    pub fn start(anchor_ms: i64) -> Self {
        Self {
            anchor_ms,
            strict: false,
            block_after_id: None,
            offset: 0,
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
        let mut body = json!({
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": props,
            "limit": limit,
        });
        if self.offset > 0 {
            body["after"] = json!(self.offset.to_string());
        }
        body
    }

    /// The state after a page of `returned` results whose largest modified time is `last_ms` and largest id
    /// `last_id`; `more` says whether HubSpot offered a next page. None when the pass is complete.
    pub fn next(
        &self,
        returned: u32,
        more: bool,
        last_ms: Option<i64>,
        last_id: Option<u64>,
        limit: u32,
        cap: u32,
    ) -> Option<Self> {
        if !more || returned == 0 {
            // A finished block continues with everything strictly after its timestamp.
            return self.block_after_id.map(|_| Self {
                anchor_ms: self.anchor_ms,
                strict: true,
                block_after_id: None,
                offset: 0,
            });
        }
        let offset = self.offset + returned;
        if offset + limit <= cap {
            return Some(Self { offset, ..self.clone() });
        }
        // The next page would pass the cap: start a new query from where this one got to.
        if self.block_after_id.is_some() {
            return Some(Self {
                block_after_id: Some(last_id.unwrap_or(0)),
                offset: 0,
                ..self.clone()
            });
        }
        let last_ms = last_ms.unwrap_or(self.anchor_ms);
        if last_ms > self.anchor_ms {
            Some(Self::start(last_ms))
        } else {
            // The whole window shares one timestamp: walk that block by id.
            Some(Self {
                anchor_ms: self.anchor_ms,
                strict: false,
                block_after_id: Some(0),
                offset: 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_advance_by_offset_below_the_cap() {
        let s = SearchState::start(1000);
        let n = s.next(200, true, Some(1500), Some(9), 200, 10_000).unwrap();
        assert_eq!(n.offset, 200);
        assert_eq!(n.anchor_ms, 1000);
    }

    #[test]
    fn reaching_the_cap_reanchors_on_the_last_timestamp() {
        let s = SearchState {
            offset: 9_800,
            ..SearchState::start(1000)
        };
        let n = s.next(200, true, Some(5000), Some(77), 200, 10_000).unwrap();
        assert_eq!(n, SearchState::start(5000));
    }

    #[test]
    fn a_capped_window_of_one_timestamp_walks_the_block_by_id() {
        let s = SearchState {
            offset: 9_800,
            ..SearchState::start(1000)
        };
        let block = s.next(200, true, Some(1000), Some(77), 200, 10_000).unwrap();
        assert_eq!(block.block_after_id, Some(0));
        let body = block.request("hs_lastmodifieddate", &[], 200);
        assert_eq!(body["sorts"][0]["propertyName"], "hs_object_id");
        assert_eq!(body["filterGroups"][0]["filters"][0]["operator"], "EQ");
        // Past the cap inside the block, continue after the last id.
        let capped = SearchState {
            offset: 9_800,
            ..block.clone()
        };
        let next = capped.next(200, true, Some(1000), Some(12_345), 200, 10_000).unwrap();
        assert_eq!(next.block_after_id, Some(12_345));
        assert_eq!(next.offset, 0);
        // The end of the block continues strictly after its timestamp.
        let after = next.next(50, false, Some(1000), Some(20_000), 200, 10_000).unwrap();
        assert!(after.strict && after.block_after_id.is_none() && after.anchor_ms == 1000);
        assert_eq!(
            after.request("hs_lastmodifieddate", &[], 200)["filterGroups"][0]["filters"][0]["operator"],
            "GT"
        );
    }

    #[test]
    fn last_page_ends_the_pass() {
        assert_eq!(
            SearchState::start(1).next(10, false, Some(5), Some(1), 200, 10_000),
            None
        );
    }
}
