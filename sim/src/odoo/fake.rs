//! Generated field values for seeded and churned rows: deterministic by id, so emails are unique per model.

use serde_json::{Map, Value, json};

const FIRST: &[&str] = &[
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis", "Radia", "Niklaus",
];
const LAST: &[&str] = &[
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Ritchie",
    "Perlman", "Wirth",
];
const CITIES: &[&str] = &[
    "Brussels", "Lyon", "Porto", "Utrecht", "Graz", "Turin", "Aarhus", "Cork",
];

fn person(id: i64) -> (String, String) {
    let i = id.unsigned_abs() as usize;
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i / FIRST.len()) % LAST.len()];
    (
        format!("{first} {last} {id}"),
        format!("{}.{}", first.to_lowercase(), last.to_lowercase()),
    )
}

fn phone(id: i64) -> String {
    format!(
        "+32 470 {:02} {:02} {:02}",
        (id / 10_000) % 100,
        (id / 100) % 100,
        id % 100
    )
}

/// The fields of a generated row with this id.
pub(crate) fn generated(model: &str, id: i64) -> Map<String, Value> {
    let (name, handle) = person(id);
    let slug = model.replace('.', "-");
    let email = format!("{handle}.{id}@{slug}.example.com");
    let city = CITIES[id.unsigned_abs() as usize % CITIES.len()];
    let vals = match model {
        "res.partner" => json!({
            "name": name,
            "email": email,
            "phone": phone(id),
            "city": city,
            "is_company": false,
            "function": "Engineer",
        }),
        "crm.lead" => json!({
            "name": format!("Opportunity {id}"),
            "contact_name": name,
            "email_from": email,
            "phone": phone(id),
            "city": city,
            "type": "opportunity",
            "probability": (id % 10) as f64 * 10.0,
            "expected_revenue": (id % 50) * 1000,
        }),
        _ => json!({ "name": name, "email": email, "phone": phone(id) }),
    };
    match vals {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}

/// A small random change to a row of `model`, as a user editing it would make.
pub(crate) fn edit(model: &str, n: u32) -> Map<String, Value> {
    let vals = match (model, n % 3) {
        ("res.partner", 0) => json!({ "phone": phone(i64::from(n)) }),
        ("res.partner", 1) => json!({ "city": CITIES[n as usize % CITIES.len()] }),
        ("res.partner", _) => json!({ "function": format!("Role {n}") }),
        ("crm.lead", 0) => json!({ "probability": f64::from(n % 100) }),
        ("crm.lead", 1) => json!({ "expected_revenue": n * 100 }),
        ("crm.lead", _) => json!({ "phone": phone(i64::from(n)) }),
        _ => json!({ "phone": phone(i64::from(n)) }),
    };
    match vals {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}
