//! The profile endpoints: `GET /api/profiles` (filter, sort, sparse fieldsets, cursor pages of at most 100),
//! `GET /api/profiles/{id}`, `POST /api/profile-import` (create or update, matched on external_id, email or
//! phone number) and `POST /api/data-privacy-deletion-jobs` (deletes a profile for good).

use std::time::Instant;

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::cursor::{Cursor, SortKey, fingerprint};
use super::filter::{self, Filter};
use super::store::{IDENTIFIERS, Profile, Store, Version};
use super::wire::{self, ApiError, PROFILE_ATTRIBUTES, WRITABLE_ATTRIBUTES};
use crate::server::SimRequest;

/// The largest `page[size]` of the profiles endpoint.
pub const MAX_PAGE_SIZE: usize = 100;
/// The page size when none is asked for.
const DEFAULT_PAGE_SIZE: usize = 20;

/// The sort orders the profiles endpoint allows.
const SORTABLE: &[&str] = &["id", "created", "updated", "email"];

/// A parsed list request.
pub(crate) struct ListQuery {
    filter_text: String,
    filter: Filter,
    sort_field: String,
    descending: bool,
    size: usize,
    cursor: Option<Cursor>,
    fields: Option<Vec<String>>,
    /// Every parameter as received, to build `links`.
    params: Vec<(String, String)>,
}

impl ListQuery {
    pub fn parse(request: &SimRequest) -> Result<Self, ApiError> {
        let params: Vec<(String, String)> = request
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let filter_text = get("filter").unwrap_or_default();
        let filter = if filter_text.is_empty() {
            Vec::new()
        } else {
            filter::parse(&filter_text).map_err(|detail| ApiError::parameter("filter", detail))?
        };
        let sort = get("sort").unwrap_or_else(|| "id".into());
        let (descending, sort_field) = match sort.strip_prefix('-') {
            Some(field) => (true, field.to_string()),
            None => (false, sort.clone()),
        };
        if !SORTABLE.contains(&sort_field.as_str()) {
            return Err(ApiError::parameter(
                "sort",
                format!("'{sort}' is not a valid sort for this endpoint."),
            ));
        }
        let size = match get("page[size]") {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return Err(ApiError::parameter(
                        "page[size]",
                        format!("Page size must be an integer between 1 and {MAX_PAGE_SIZE}."),
                    ));
                }
            },
        };
        let query = fingerprint(&filter_text, &sort);
        let cursor = match get("page[cursor]") {
            None => None,
            Some(text) => match Cursor::decode(&text) {
                Some(c) if c.query == query => Some(c),
                _ => return Err(ApiError::parameter("page[cursor]", "Invalid page cursor.")),
            },
        };
        let fields = match get("fields[profile]") {
            None => None,
            Some(list) => {
                let fields: Vec<String> = list.split(',').map(|f| f.trim().to_string()).collect();
                if let Some(bad) = fields.iter().find(|f| !PROFILE_ATTRIBUTES.contains(&f.as_str())) {
                    return Err(ApiError::parameter(
                        "fields[profile]",
                        format!("'{bad}' is not a valid field for the resource 'profile'."),
                    ));
                }
                Some(fields)
            }
        };
        Ok(Self {
            filter_text,
            filter,
            sort_field,
            descending,
            size,
            cursor,
            fields,
            params,
        })
    }

    fn key(&self, profile: &Profile, version: &Version) -> SortKey {
        match self.sort_field.as_str() {
            "updated" => SortKey::Time(version.updated.timestamp()),
            "created" => SortKey::Time(profile.created.timestamp()),
            "email" => SortKey::Text(
                version
                    .attributes
                    .get("email")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => SortKey::Text(profile.id.clone()),
        }
    }

    /// This query's URL with `page[cursor]` set to `cursor` (or removed).
    fn link(&self, base: &str, cursor: Option<&str>) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.params.iter().filter(|(k, _)| k != "page[cursor]") {
            out.append_pair(k, v);
        }
        if let Some(cursor) = cursor {
            out.append_pair("page[cursor]", cursor);
        }
        format!("{base}/api/profiles/?{}", out.finish())
    }
}

fn string_field(profile: &Profile, version: &Version, name: &str) -> Option<String> {
    if name == "id" {
        return Some(profile.id.clone());
    }
    version.attributes.get(name).and_then(Value::as_str).map(str::to_string)
}

fn time_field(profile: &Profile, version: &Version, name: &str) -> DateTime<Utc> {
    if name == "created" {
        profile.created
    } else {
        version.updated
    }
}

/// `GET /api/profiles`: one page, as a reader at `now` sees the account.
pub(crate) fn list(store: &Store, base: &str, query: &ListQuery, now: Instant) -> Value {
    let mut rows: Vec<((SortKey, String), &Profile, &Version)> = store
        .profiles()
        .filter_map(|p| p.visible(now).filter(|v| !v.deleted).map(|v| (p, v)))
        .filter(|(p, v)| {
            query
                .filter
                .iter()
                .all(|c| c.matches(|name| string_field(p, v, name), |name| time_field(p, v, name)))
        })
        .map(|(p, v)| ((query.key(p, v), p.id.clone()), p, v))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if query.descending {
        rows.reverse();
    }
    if let Some(cursor) = &query.cursor {
        rows.retain(|(position, _, _)| {
            if query.descending {
                *position < cursor.after
            } else {
                *position > cursor.after
            }
        });
    }
    let more = rows.len() > query.size;
    rows.truncate(query.size);
    let next = match rows.last() {
        Some((position, _, _)) if more => Some(
            Cursor {
                after: position.clone(),
                query: fingerprint(&query.filter_text, &sort_param(query)),
            }
            .encode(),
        ),
        _ => None,
    };
    let data: Vec<Value> = rows
        .iter()
        .map(|(_, p, v)| wire::profile_resource(base, p, v, query.fields.as_deref()))
        .collect();
    json!({
        "data": data,
        "links": {
            "self": query.link(base, query.cursor.as_ref().map(Cursor::encode).as_deref()),
            "next": next.as_deref().map(|c| query.link(base, Some(c))),
            "prev": Value::Null,
        },
    })
}

fn sort_param(query: &ListQuery) -> String {
    if query.descending {
        format!("-{}", query.sort_field)
    } else {
        query.sort_field.clone()
    }
}

/// `GET /api/profiles/{id}`.
pub(crate) fn get(store: &Store, base: &str, id: &str, now: Instant) -> Result<Value, ApiError> {
    let found = store
        .get(id)
        .and_then(|p| p.visible(now).filter(|v| !v.deleted).map(|v| (p, v)));
    let Some((profile, version)) = found else {
        return Err(ApiError::not_found(format!("A profile with id {id} does not exist.")));
    };
    Ok(json!({
        "data": wire::profile_resource(base, profile, version, None),
        "links": {"self": format!("{base}/api/profiles/{id}/")},
    }))
}

/// `POST /api/profile-import`: 201 with the new profile, or 200 with the updated one.
pub(crate) fn import(
    store: &mut Store,
    base: &str,
    body: &[u8],
    at: DateTime<Utc>,
    now: Instant,
) -> Result<(StatusCode, Value), ApiError> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::pointer("/data", format!("The request body is not valid JSON: {e}")))?;
    let data = document
        .get("data")
        .ok_or_else(|| ApiError::pointer("/data", "'data' is a required field."))?;
    if data.get("type").and_then(Value::as_str) != Some("profile") {
        return Err(ApiError::pointer("/data/type", "The type must be 'profile'."));
    }
    let attributes = data
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::pointer("/data/attributes", "'attributes' is a required object."))?;
    if let Some(bad) = attributes.keys().find(|k| !WRITABLE_ATTRIBUTES.contains(&k.as_str())) {
        return Err(ApiError::pointer(
            &format!("/data/attributes/{bad}"),
            format!("'{bad}' is not a valid field for the resource 'profile'."),
        ));
    }
    for identifier in IDENTIFIERS {
        match attributes.get(*identifier) {
            None | Some(Value::String(_)) | Some(Value::Null) => {}
            Some(_) => {
                return Err(ApiError::pointer(
                    &format!("/data/attributes/{identifier}"),
                    format!("'{identifier}' must be a string."),
                ));
            }
        }
    }
    if let Some(email) = attributes.get("email").and_then(Value::as_str)
        && !valid_email(email)
    {
        return Err(ApiError::pointer(
            "/data/attributes/email",
            format!("Invalid email address: {email}"),
        ));
    }
    let id = data.get("id").and_then(Value::as_str);
    let identifiers: Vec<(&str, &str)> = IDENTIFIERS
        .iter()
        .filter_map(|name| attributes.get(*name).and_then(Value::as_str).map(|v| (*name, v)))
        .collect();
    if id.is_none() && identifiers.is_empty() {
        return Err(ApiError::pointer(
            "/data/attributes",
            "A profile needs at least one identifier: email, phone_number or external_id.",
        ));
    }
    let target = match id {
        Some(id) => {
            let live = store.get(id).is_some_and(|p| !p.current().deleted);
            if !live {
                return Err(ApiError::not_found(format!("A profile with id {id} does not exist.")));
            }
            Some(id.to_string())
        }
        None => {
            let mut matched: Vec<&str> = identifiers
                .iter()
                .filter_map(|(name, value)| store.find_live(name, value))
                .collect();
            matched.dedup();
            if matched.len() > 1 {
                return Err(ApiError {
                    status: StatusCode::CONFLICT,
                    code: "duplicate_profile",
                    title: "Conflict.",
                    detail: "A profile already exists with one of these identifiers.".into(),
                    source: Box::new(json!({"pointer": "/data/attributes"})),
                    meta: Box::new(json!({"duplicate_profile_id": matched[1]})),
                });
            }
            matched.first().map(|s| s.to_string())
        }
    };
    let (status, id) = match target {
        Some(id) => {
            store.update(&id, attributes, at, now);
            (StatusCode::OK, id)
        }
        None => {
            let id = store.allocate_id(at);
            let mut fresh = Map::new();
            super::store::merge_attributes(&mut fresh, attributes);
            store.insert(id.clone(), fresh, at, now, false);
            for (name, value) in &identifiers {
                store.count_create(name, value);
            }
            (StatusCode::CREATED, id)
        }
    };
    let profile = store.get(&id).expect("just written");
    Ok((
        status,
        json!({
            "data": wire::profile_resource(base, profile, profile.current(), None),
            "links": {"self": format!("{base}/api/profile-import/")},
        }),
    ))
}

/// `POST /api/data-privacy-deletion-jobs`: deletes the profile named by id, email or phone number. Klaviyo runs
/// the job later; the simulator deletes at once (the list still shows the profile until its lag has passed).
pub(crate) fn deletion_job(store: &mut Store, body: &[u8], at: DateTime<Utc>, now: Instant) -> Result<(), ApiError> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::pointer("/data", format!("The request body is not valid JSON: {e}")))?;
    let profile = document.pointer("/data/attributes/profile/data");
    let Some(profile) = profile else {
        return Err(ApiError::pointer(
            "/data/attributes/profile",
            "'profile' is a required field.",
        ));
    };
    let id = match profile.get("id").and_then(Value::as_str) {
        Some(id) => Some(id.to_string()),
        None => ["email", "phone_number"].iter().find_map(|name| {
            let value = profile.pointer(&format!("/attributes/{name}"))?.as_str()?;
            store.find_live(name, value).map(str::to_string)
        }),
    };
    if let Some(id) = id {
        store.delete(&id, at, now);
    }
    Ok(())
}

fn valid_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !domain.starts_with('.'),
        None => false,
    }
}
