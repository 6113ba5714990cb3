//! Incremental pull through `GET /api/profiles`, sorted by `updated` and paged by Klaviyo's own cursor.
//!
//! Two facts shape it. The `updated` filter only takes a strict `greater-than`, and times have whole seconds:
//! so a pass asks for `greater-than(updated, S - 1s)`, where S is the pass's start floored to the second, which
//! returns every profile updated at or after S; what that re-reads, the store recognises as unchanged. And the
//! filter cannot express "same second, larger id", so a block of equal `updated` times bigger than a page can
//! only be walked with Klaviyo's `page[cursor]`: a keyset position inside one query, not an offset, so a profile
//! that changes while the pass runs moves behind the position and is read again instead of shifting others past
//! it. The page token carries that cursor and the filter's bound, so every page of a pass runs the same query.
//!
//! Only the `page[cursor]` value is taken from `links.next`: the next request is built against the configured
//! base URL, so a link to another host can never receive the API key.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Where a pass stands: the filter's exclusive lower bound and Klaviyo's cursor for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageState {
    /// `greater-than(updated, after)`.
    pub after: DateTime<Utc>,
    /// The `page[cursor]` of the next page; None on a pass's first page.
    pub cursor: Option<String>,
}

impl PageState {
    /// The first page of a pass that must see every profile updated at or after `since`.
    pub fn start(since: DateTime<Utc>) -> Self {
        let floored = DateTime::from_timestamp(since.timestamp(), 0).unwrap_or(since);
        Self {
            after: floored - Duration::seconds(1),
            cursor: None,
        }
    }

    /// The `filter` parameter.
    pub fn filter(&self) -> String {
        format!("greater-than(updated,{})", self.after.format("%Y-%m-%dT%H:%M:%SZ"))
    }

    /// The query parameters of this page.
    pub fn query(&self, page_size: u32, fields: &[String]) -> Vec<(String, String)> {
        let mut query = vec![
            ("filter".to_string(), self.filter()),
            ("sort".to_string(), "updated".to_string()),
            ("page[size]".to_string(), page_size.to_string()),
        ];
        if let Some(fields) = sparse_fieldset(fields) {
            query.push(("fields[profile]".to_string(), fields));
        }
        if let Some(cursor) = &self.cursor {
            query.push(("page[cursor]".to_string(), cursor.clone()));
        }
        query
    }

    /// The state for the page after this one, from the answer's `links.next`; None when the pass is complete.
    pub fn next(&self, next_link: Option<&str>) -> Result<Option<Self>, String> {
        let Some(link) = next_link else {
            return Ok(None);
        };
        let cursor = cursor_of(link)?;
        Ok(Some(Self {
            after: self.after,
            cursor: Some(cursor),
        }))
    }
}

/// `fields[profile]` for a configured list (always with `updated`, which the cursor needs); None for all.
pub fn sparse_fieldset(fields: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let mut list: Vec<&str> = fields.iter().map(String::as_str).collect();
    if !list.contains(&"updated") {
        list.push("updated");
    }
    Some(list.join(","))
}

/// The `page[cursor]` value of a `links.next` URL.
pub fn cursor_of(link: &str) -> Result<String, String> {
    let url = url::Url::parse(link).map_err(|e| format!("links.next is not a URL ({e})"))?;
    url.query_pairs()
        .find(|(k, _)| k == "page[cursor]")
        .map(|(_, v)| v.into_owned())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| "links.next has no page[cursor]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_pass_asks_from_one_second_before_its_floored_start() {
        let since = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 7).unwrap() + Duration::milliseconds(650);
        let state = PageState::start(since);
        assert_eq!(state.filter(), "greater-than(updated,2024-05-01T12:00:06Z)");
        let q = state.query(100, &[]);
        assert!(q.contains(&("sort".into(), "updated".into())));
        assert!(q.contains(&("page[size]".into(), "100".into())));
        assert!(!q.iter().any(|(k, _)| k == "page[cursor]" || k == "fields[profile]"));
    }

    #[test]
    fn the_next_page_keeps_the_filter_and_takes_only_the_cursor_from_the_link() {
        let state = PageState::start(Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap());
        let next = state
            .next(Some(
                "https://evil.example/api/profiles/?filter=x&page%5Bcursor%5D=bmV4dDo6MTIz&sort=-updated",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(next.cursor.as_deref(), Some("bmV4dDo6MTIz"));
        assert_eq!(next.after, state.after);
        let q = next.query(50, &[]);
        assert!(
            q.contains(&("filter".into(), state.filter())),
            "our filter, not the link's"
        );
        assert!(q.contains(&("sort".into(), "updated".into())));
        assert_eq!(state.next(None).unwrap(), None, "no link: the pass is complete");
        assert!(
            state
                .next(Some("https://a.klaviyo.com/api/profiles/?sort=updated"))
                .is_err()
        );
    }

    #[test]
    fn sparse_fieldsets_always_include_updated() {
        assert_eq!(sparse_fieldset(&[]), None);
        assert_eq!(sparse_fieldset(&["email".into()]).as_deref(), Some("email,updated"));
        assert_eq!(
            sparse_fieldset(&["updated".into(), "email".into()]).as_deref(),
            Some("updated,email")
        );
    }

    #[test]
    fn page_states_survive_the_page_token_round_trip() {
        let state = PageState {
            after: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(),
            cursor: Some("abc".into()),
        };
        let token = serde_json::to_value(&state).unwrap();
        assert_eq!(serde_json::from_value::<PageState>(token).unwrap(), state);
    }
}
