//! Generated column values for seeded and churned rows: derived from the row's GUID, so emails are unique.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

const GIVEN: &[&str] = &[
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
];
const SURNAMES: &[&str] = &[
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Ritchie",
];
const CITIES: &[&str] = &["Kyiv", "Lviv", "Boston", "Leeds", "Lisbon", "Ghent", "Basel", "Tartu"];
const TITLES: &[&str] = &["Engineer", "Buyer", "CFO", "Office manager", "Founder"];

fn seed_of(id: &str) -> usize {
    usize::from_str_radix(&id[..8.min(id.len())], 16).unwrap_or(0)
}

/// The columns of a generated row of `entity` with this GUID.
pub(crate) fn generated(entity: &str, id: &str) -> Map<String, Value> {
    let n = seed_of(id);
    let given = GIVEN[n % GIVEN.len()];
    let surname = SURNAMES[(n / GIVEN.len()) % SURNAMES.len()];
    let short = &id[..8.min(id.len())];
    let values = match entity {
        "Contact" => json!({
            "Name": format!("{given} {surname}"),
            "GivenName": given,
            "Surname": surname,
            "Email": format!("{}.{}.{short}@example.com", given.to_lowercase(), surname.to_lowercase()),
            "MobilePhone": format!("+380 67 {:03} {:04}", n % 1000, (n / 1000) % 10_000),
            "JobTitle": TITLES[n % TITLES.len()],
            "City": CITIES[n % CITIES.len()],
        }),
        "Account" => json!({
            "Name": format!("{surname} & {given} {short}"),
            "Code": format!("ACC-{short}"),
            "Web": format!("https://{short}.example.com"),
            "City": CITIES[n % CITIES.len()],
        }),
        _ => json!({ "Name": format!("{entity} {short}") }),
    };
    match values {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}

/// A small random change to a row of `entity`, as a user editing it would make.
pub(crate) fn edit(entity: &str) -> Map<String, Value> {
    let mut rng = rand::rng();
    let n: u32 = rng.random_range(0..1_000_000);
    let values = match (entity, n % 3) {
        ("Contact", 0) => json!({ "JobTitle": TITLES.choose(&mut rng).copied().unwrap_or("Engineer") }),
        ("Contact", 1) => json!({ "City": CITIES.choose(&mut rng).copied().unwrap_or("Kyiv") }),
        ("Contact", _) => json!({ "MobilePhone": format!("+380 50 {n:06}") }),
        ("Account", 0) => json!({ "City": CITIES.choose(&mut rng).copied().unwrap_or("Kyiv") }),
        ("Account", _) => json!({ "Phone": format!("+380 44 {n:06}") }),
        _ => json!({ "Name": format!("{entity} {n}") }),
    };
    match values {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}
