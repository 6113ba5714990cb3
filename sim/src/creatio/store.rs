//! The simulated database: one table per entity (Contact, Account, ...), each row keyed by its lowercase GUID and
//! indexed by `(ModifiedOn, Id)`, which is the order OData's `$orderby=ModifiedOn asc,Id asc` returns. GUIDs order
//! as lowercase strings here, as `crmsyncd::model::compare_ids` orders them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration as TimeDelta, Timelike, Utc};
use serde_json::{Map, Value};

/// Columns Creatio maintains itself: a write to them is ignored, as Creatio's ORM ignores it.
pub(crate) const SYSTEM_COLUMNS: &[&str] = &["Id", "CreatedOn", "ModifiedOn", "CreatedById", "ModifiedById"];

/// Columns of a stock Contact (a subset: those a sync is likely to touch).
const CONTACT_COLUMNS: &[&str] = &[
    "Name",
    "Surname",
    "GivenName",
    "Email",
    "MobilePhone",
    "Phone",
    "JobTitle",
    "City",
    "AccountId",
    "Notes",
];

/// Columns of a stock Account (a subset).
const ACCOUNT_COLUMNS: &[&str] = &["Name", "Code", "Web", "Phone", "City", "Notes"];

/// One stored row: its own columns, and the system dates beside them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) fields: Map<String, Value>,
    pub(crate) created_on: DateTime<Utc>,
    pub(crate) modified_on: DateTime<Utc>,
}

/// One entity's table.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) name: String,
    /// Declared columns: the stock ones, plus every custom (`Usr...`) column a row was given.
    pub(crate) columns: BTreeSet<String>,
    pub(crate) rows: BTreeMap<String, Row>,
    pub(crate) by_modified: BTreeSet<(DateTime<Utc>, String)>,
}

impl Table {
    fn new(name: &str, columns: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: BTreeMap::new(),
            by_modified: BTreeSet::new(),
        }
    }

    /// Whether OData may read, filter or write `column`: declared ones, system ones, and any custom `Usr` column
    /// (as if added in the Object designer beforehand).
    pub(crate) fn knows(&self, column: &str) -> bool {
        SYSTEM_COLUMNS.contains(&column) || self.columns.contains(column) || column.starts_with("Usr")
    }

    fn declare(&mut self, fields: &Map<String, Value>) {
        for name in fields.keys() {
            if !SYSTEM_COLUMNS.contains(&name.as_str()) {
                self.columns.insert(name.clone());
            }
        }
    }

    /// Inserts a new row under `id` at `at`.
    pub(crate) fn insert(&mut self, id: &str, fields: &Map<String, Value>, at: DateTime<Utc>) {
        self.declare(fields);
        let mut row = Row {
            fields: Map::new(),
            created_on: at,
            modified_on: at,
        };
        apply(&mut row, fields);
        if let Some(old) = self.rows.insert(id.to_owned(), row) {
            self.by_modified.remove(&(old.modified_on, id.to_owned()));
        }
        self.by_modified.insert((at, id.to_owned()));
    }

    /// Writes `fields` and sets ModifiedOn to `at`; false when there is no such row.
    pub(crate) fn update(&mut self, id: &str, fields: &Map<String, Value>, at: DateTime<Utc>) -> bool {
        self.declare(fields);
        let Some(row) = self.rows.get_mut(id) else {
            return false;
        };
        self.by_modified.remove(&(row.modified_on, id.to_owned()));
        apply(row, fields);
        row.modified_on = at;
        self.by_modified.insert((at, id.to_owned()));
        true
    }

    /// A hard delete: Creatio keeps no tombstone that OData shows.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self.rows.remove(id) {
            Some(row) => {
                self.by_modified.remove(&(row.modified_on, id.to_owned()));
                true
            }
            None => false,
        }
    }
}

fn apply(row: &mut Row, fields: &Map<String, Value>) {
    for (name, value) in fields {
        if !SYSTEM_COLUMNS.contains(&name.as_str()) {
            row.fields.insert(name.clone(), value.clone());
        }
    }
}

/// The simulator's clock: UTC truncated to milliseconds (Creatio's precision on the wire), which a test can freeze
/// or move forward so that equal and out-of-order timestamps are made on purpose, not by luck.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    frozen: Option<DateTime<Utc>>,
    offset: TimeDelta,
}

impl Clock {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        truncate_ms(self.frozen.unwrap_or_else(|| Utc::now() + self.offset))
    }

    pub(crate) fn set(&mut self, at: DateTime<Utc>) {
        self.frozen = Some(truncate_ms(at));
    }

    pub(crate) fn advance(&mut self, by: TimeDelta) {
        match &mut self.frozen {
            Some(t) => *t += by,
            None => self.offset += by,
        }
    }
}

/// `t` without its sub-millisecond part.
pub(crate) fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond() % 1_000_000_000;
    t.with_nanosecond(nanos - nanos % 1_000_000)
        .expect("a smaller nanosecond is valid")
}

/// Every table, the clock, and the counters tests read.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) clock: Clock,
    tables: HashMap<String, Table>,
    /// (entity, column, value as text) -> how many OData POSTs created a row with it.
    creates: HashMap<(String, String, String), usize>,
}

impl Default for Store {
    fn default() -> Self {
        let mut tables = HashMap::new();
        tables.insert("Contact".to_owned(), Table::new("Contact", CONTACT_COLUMNS));
        tables.insert("Account".to_owned(), Table::new("Account", ACCOUNT_COLUMNS));
        Self {
            clock: Clock::default(),
            tables,
            creates: HashMap::new(),
        }
    }
}

/// A value's text for [`Store::creates_with`]: strings as they are, anything else as JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Store {
    pub(crate) fn table(&self, entity: &str) -> Option<&Table> {
        self.tables.get(entity)
    }

    pub(crate) fn table_mut(&mut self, entity: &str) -> Option<&mut Table> {
        self.tables.get_mut(entity)
    }

    /// The table, created with only a `Name` column on first use (the test's stand-in for a custom entity).
    pub(crate) fn table_or_create(&mut self, entity: &str) -> &mut Table {
        self.tables
            .entry(entity.to_owned())
            .or_insert_with(|| Table::new(entity, &["Name"]))
    }

    pub(crate) fn count_create(&mut self, entity: &str, fields: &Map<String, Value>) {
        for (column, value) in fields {
            let key = (entity.to_owned(), column.clone(), value_text(value));
            *self.creates.entry(key).or_default() += 1;
        }
    }

    pub(crate) fn creates_with(&self, entity: &str, column: &str, value: &str) -> usize {
        let key = (entity.to_owned(), column.to_owned(), value.to_owned());
        self.creates.get(&key).copied().unwrap_or(0)
    }
}

/// A new lowercase GUID, as Creatio gives every row.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_update_moves_the_row_in_the_modified_index_and_ignores_system_columns() {
        let t0 = Utc::now();
        let t1 = t0 + TimeDelta::seconds(5);
        let mut table = Table::new("Contact", CONTACT_COLUMNS);
        table.insert("b", &fields(json!({"Name": "B"})), t0);
        table.insert(
            "a",
            &fields(json!({"Name": "A", "ModifiedOn": "1999-01-01T00:00:00Z"})),
            t0,
        );
        assert_eq!(
            table.by_modified.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
            ["a", "b"],
            "equal timestamps order by id"
        );
        assert!(table.update("a", &fields(json!({"Name": "A2"})), t1));
        assert_eq!(
            table.by_modified.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(table.rows["a"].fields, fields(json!({"Name": "A2"})));
        assert!(table.remove("a") && !table.remove("a"));
        assert_eq!(table.by_modified.len(), 1);
    }

    #[test]
    fn the_clock_truncates_to_milliseconds_and_can_be_frozen() {
        let mut clock = Clock::default();
        assert_eq!(clock.now().nanosecond() % 1_000_000, 0);
        let at = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        clock.set(at);
        assert_eq!(clock.now().to_rfc3339(), "2024-05-01T10:00:00.123+00:00");
        clock.advance(TimeDelta::milliseconds(2));
        assert_eq!(clock.now().to_rfc3339(), "2024-05-01T10:00:00.125+00:00");
    }
}
