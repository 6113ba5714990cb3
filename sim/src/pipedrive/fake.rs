//! What each entity's records look like: the standard fields the API accepts and returns, the ones a create
//! needs, and plausible generated values for seeding and churn.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];

/// The standard fields a write may set, per entity (Pipedrive answers 400 for anything else).
pub(crate) fn writable_fields(entity: &str) -> &'static [&'static str] {
    match entity {
        "persons" => &[
            "name",
            "first_name",
            "last_name",
            "owner_id",
            "org_id",
            "emails",
            "phones",
            "visible_to",
            "label_ids",
            "marketing_status",
        ],
        "organizations" => &["name", "owner_id", "address", "visible_to", "label_ids"],
        "deals" => &[
            "title",
            "owner_id",
            "person_id",
            "org_id",
            "pipeline_id",
            "stage_id",
            "value",
            "currency",
            "status",
            "probability",
            "lost_reason",
            "visible_to",
            "expected_close_date",
            "label_ids",
        ],
        _ => &[],
    }
}

/// The field a create cannot do without.
pub(crate) fn required_field(entity: &str) -> &'static str {
    if entity == "deals" { "title" } else { "name" }
}

/// The name-like field an entity is displayed and searched by.
pub(crate) fn title_field(entity: &str) -> &'static str {
    required_field(entity)
}

/// The standard fields of a new record, every one present (null where unset), with `given` applied.
pub(crate) fn with_defaults(entity: &str, given: Map<String, Value>) -> Map<String, Value> {
    let defaults = match entity {
        "persons" => json!({
            "name": null, "first_name": null, "last_name": null, "owner_id": 1, "org_id": null,
            "emails": [], "phones": [], "visible_to": 3, "label_ids": [], "picture_id": null,
        }),
        "organizations" => json!({
            "name": null, "owner_id": 1, "address": null, "visible_to": 3, "label_ids": [], "picture_id": null,
        }),
        "deals" => json!({
            "title": null, "owner_id": 1, "creator_user_id": 1, "person_id": null, "org_id": null,
            "pipeline_id": 1, "stage_id": 1, "value": 0, "currency": "USD", "status": "open",
            "probability": null, "lost_reason": null, "visible_to": 3, "expected_close_date": null,
            "label_ids": [],
        }),
        _ => json!({}),
    };
    let mut fields = into_map(defaults);
    fields.extend(given);
    fields
}

/// Plausible standard fields for record `id` of `entity`.
pub(crate) fn generated(entity: &str, id: u64) -> Map<String, Value> {
    let pick = |list: &[&str]| list[id as usize % list.len()].to_string();
    let given = match entity {
        "persons" => {
            let (first, last) = (pick(FIRST_NAMES), pick(LAST_NAMES));
            json!({
                "name": format!("{first} {last}"),
                "first_name": first,
                "last_name": last,
                "emails": [{"value": format!("person{id}@example.com"), "primary": true, "label": "work"}],
                "phones": [{"value": format!("+1555{:07}", id % 10_000_000), "primary": true, "label": "work"}],
            })
        }
        "organizations" => json!({"name": format!("Organization {id}"), "address": format!("{id} Main Street")}),
        "deals" => json!({"title": format!("Deal {id}"), "value": (id * 37) % 100_000}),
        _ => json!({}),
    };
    with_defaults(entity, into_map(given))
}

/// One random change to a record of `entity`: the fields to merge.
pub(crate) fn random_change(entity: &str, rng: &mut impl Rng) -> Map<String, Value> {
    let n: u32 = rng.random_range(0..1_000_000);
    let change = match entity {
        "persons" => match n % 3 {
            0 => json!({"name": format!("{} {n}", FIRST_NAMES.choose(rng).expect("not empty"))}),
            1 => json!({"phones": [{"value": format!("+1555{n:07}"), "primary": true, "label": "mobile"}]}),
            _ => json!({"label_ids": [n % 7]}),
        },
        "organizations" => match n % 2 {
            0 => json!({"name": format!("Organization {n}")}),
            _ => json!({"address": format!("{n} High Street")}),
        },
        "deals" => match n % 3 {
            0 => json!({"value": n % 100_000}),
            1 => json!({"stage_id": 1 + n % 5}),
            _ => json!({"status": (["open", "won", "lost"][n as usize % 3])}),
        },
        _ => json!({}),
    };
    into_map(change)
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("the literals above are objects"),
    }
}
