//! The simulated database: one table per model, each row keyed by id and indexed by `(write_date, id)` so the
//! keyset query the daemon pages with reads only the rows it returns (plus the ones its domain rejects).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::clock::{Clock, format_odoo_datetime};
use super::domain::{Domain, FieldRef, OrderTerm, compare_rows};

/// Columns Odoo maintains itself: writes to them are ignored, as Odoo's ORM ignores them.
const MAGIC_FIELDS: &[&str] = &[
    "id",
    "write_date",
    "create_date",
    "write_uid",
    "create_uid",
    "display_name",
    "__last_update",
];

/// Stored fields of `res.partner` in a stock Odoo 17 (a subset: the ones a sync is likely to touch).
const PARTNER_FIELDS: &[&str] = &[
    "name",
    "email",
    "email_normalized",
    "phone",
    "mobile",
    "street",
    "street2",
    "city",
    "zip",
    "state_id",
    "country_id",
    "company_id",
    "company_name",
    "commercial_company_name",
    "parent_id",
    "is_company",
    "function",
    "title",
    "website",
    "comment",
    "ref",
    "lang",
    "tz",
    "vat",
    "user_id",
    "type",
    "category_id",
    "color",
];

/// Stored fields of `crm.lead` in a stock Odoo 17 (a subset).
const LEAD_FIELDS: &[&str] = &[
    "name",
    "partner_id",
    "partner_name",
    "contact_name",
    "email_from",
    "email_normalized",
    "phone",
    "mobile",
    "website",
    "street",
    "city",
    "zip",
    "country_id",
    "user_id",
    "team_id",
    "stage_id",
    "type",
    "priority",
    "probability",
    "expected_revenue",
    "description",
    "date_deadline",
    "date_closed",
    "tag_ids",
    "company_id",
    "lost_reason_id",
    "referred",
];

/// One stored row. `fields` holds the model's own fields; id, dates and `active` live beside them.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) fields: Map<String, Value>,
    pub(crate) write_date: NaiveDateTime,
    pub(crate) create_date: NaiveDateTime,
    pub(crate) active: bool,
}

/// A row as the test sees it: the truth, whatever the RPC would show.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRow {
    pub id: i64,
    /// The model's own fields (not `id`, the dates or `active`, which have their own members).
    pub fields: Map<String, Value>,
    pub write_date: NaiveDateTime,
    pub create_date: NaiveDateTime,
    /// `true` for models without an `active` field.
    pub active: bool,
}

fn is_magic(name: &str) -> bool {
    MAGIC_FIELDS.contains(&name)
}

/// Python truthiness, which is how Odoo reads a boolean it is given.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl Row {
    fn apply(&mut self, vals: &Map<String, Value>) {
        for (name, value) in vals {
            if is_magic(name) {
                continue;
            }
            if name == "active" {
                self.active = truthy(value);
            } else {
                self.fields.insert(name.clone(), value.clone());
            }
        }
    }
}

/// A search's parameters after parsing.
#[derive(Debug)]
pub(crate) struct Search<'a> {
    pub(crate) domain: &'a Domain,
    /// Odoo's `context.active_test`: hide archived rows unless the domain itself mentions `active`.
    pub(crate) active_test: bool,
    pub(crate) order: &'a [OrderTerm],
    pub(crate) offset: usize,
    pub(crate) limit: Option<usize>,
}

/// How an order clause can be served.
enum Plan {
    /// Walk the `(write_date, id)` index from the domain's lower bound.
    WriteDateThenId,
    /// Walk the rows by id from the domain's lower bound.
    Id,
    /// Collect every match and sort it (any other order).
    Sort,
}

fn plan(order: &[OrderTerm]) -> Plan {
    let asc = |field: FieldRef| OrderTerm {
        field,
        descending: false,
    };
    match order {
        [first, ..] if *first == asc(FieldRef::Id) => Plan::Id,
        [first] if *first == asc(FieldRef::WriteDate) => Plan::WriteDateThenId,
        [first, second, ..] if *first == asc(FieldRef::WriteDate) && *second == asc(FieldRef::Id) => {
            Plan::WriteDateThenId
        }
        _ => Plan::Sort,
    }
}

/// One model's table.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) name: String,
    pub(crate) has_active: bool,
    /// Declared fields: the stock ones, plus every field a row was ever given.
    pub(crate) fields: BTreeSet<String>,
    pub(crate) rows: BTreeMap<i64, Row>,
    by_write_date: BTreeSet<(NaiveDateTime, i64)>,
    next_id: i64,
}

impl Model {
    fn new(name: &str, has_active: bool, fields: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            has_active,
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            rows: BTreeMap::new(),
            by_write_date: BTreeSet::new(),
            next_id: 1,
        }
    }

    /// Takes the next id from the table's sequence (like PostgreSQL, a rolled-back transaction leaves a gap).
    pub(crate) fn allocate_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The sequence's next value, for picking random existing ids.
    pub(crate) fn id_ceiling(&self) -> i64 {
        self.next_id
    }

    /// Declares the fields `vals` sets (the simulator's stand-in for defining custom fields).
    fn declare(&mut self, vals: &Map<String, Value>) {
        for name in vals.keys() {
            if name == "active" {
                self.has_active = true;
            } else if !is_magic(name) && !self.fields.contains(name) {
                self.fields.insert(name.clone());
            }
        }
    }

    /// Whether RPC `create`/`write` may set `name`: declared fields, Odoo's own columns, and any custom `x_`
    /// field (as if created in Studio beforehand).
    pub(crate) fn accepts(&self, name: &str) -> bool {
        is_magic(name) || (name == "active" && self.has_active) || self.fields.contains(name) || name.starts_with("x_")
    }

    /// Resolves a field name used in a domain, `fields` or `order`.
    pub(crate) fn resolve(&self, name: &str) -> Option<FieldRef> {
        match name {
            "id" => Some(FieldRef::Id),
            "write_date" => Some(FieldRef::WriteDate),
            "create_date" => Some(FieldRef::CreateDate),
            "active" if self.has_active => Some(FieldRef::Active),
            "display_name" if self.fields.contains("name") => Some(FieldRef::Named("name".to_owned())),
            _ if self.fields.contains(name) || name.starts_with("x_") => Some(FieldRef::Named(name.to_owned())),
            _ => None,
        }
    }

    pub(crate) fn create(&mut self, vals: &Map<String, Value>, at: NaiveDateTime) -> i64 {
        let id = self.allocate_id();
        self.insert(id, vals, at);
        id
    }

    /// Inserts a row under an id taken earlier with [`Model::allocate_id`].
    pub(crate) fn insert(&mut self, id: i64, vals: &Map<String, Value>, at: NaiveDateTime) {
        self.declare(vals);
        let mut row = Row {
            fields: Map::new(),
            write_date: at,
            create_date: at,
            active: true,
        };
        row.apply(vals);
        self.by_write_date.insert((at, id));
        self.rows.insert(id, row);
    }

    /// Writes `vals` and sets write_date to `at`; `false` when the row does not exist.
    pub(crate) fn update(&mut self, id: i64, vals: &Map<String, Value>, at: NaiveDateTime) -> bool {
        self.declare(vals);
        let Some(row) = self.rows.get_mut(&id) else {
            return false;
        };
        self.by_write_date.remove(&(row.write_date, id));
        row.apply(vals);
        row.write_date = at;
        self.by_write_date.insert((at, id));
        true
    }

    /// Hard delete: no tombstone, the row is just gone.
    pub(crate) fn remove(&mut self, id: i64) -> bool {
        match self.rows.remove(&id) {
            Some(row) => {
                self.by_write_date.remove(&(row.write_date, id));
                true
            }
            None => false,
        }
    }

    /// The ids a search returns, in order.
    pub(crate) fn search(&self, q: &Search<'_>) -> Vec<i64> {
        self.search_examining(q).0
    }

    /// [`Model::search`], plus how many rows it had to look at (the proof that paging does not scan the table).
    pub(crate) fn search_examining(&self, q: &Search<'_>) -> (Vec<i64>, usize) {
        let hide_archived = self.has_active && q.active_test && !q.domain.mentions(&FieldRef::Active);
        let mut examined = 0usize;
        let mut keep = |id: i64, row: &Row| {
            examined += 1;
            (row.active || !hide_archived) && q.domain.matches(id, row)
        };
        let limit = q.limit.unwrap_or(usize::MAX);
        let bound = q.domain.lower_bound();
        let ids = match plan(q.order) {
            Plan::WriteDateThenId => self
                .by_write_date
                .range(bound.key..)
                .map(|&(_, id)| (id, &self.rows[&id]))
                .filter(|(id, row)| keep(*id, row))
                .skip(q.offset)
                .take(limit)
                .map(|(id, _)| id)
                .collect(),
            Plan::Id => self
                .rows
                .range(bound.id..)
                .filter(|(id, row)| keep(**id, row))
                .skip(q.offset)
                .take(limit)
                .map(|(id, _)| *id)
                .collect(),
            Plan::Sort => {
                let mut hits: Vec<(i64, &Row)> = self
                    .by_write_date
                    .range(bound.key..)
                    .map(|&(_, id)| (id, &self.rows[&id]))
                    .filter(|(id, row)| keep(*id, row))
                    .collect();
                hits.sort_by(|a, b| compare_rows(q.order, *a, *b));
                hits.into_iter().skip(q.offset).take(limit).map(|(id, _)| id).collect()
            }
        };
        (ids, examined)
    }

    /// One field as RPC `read` returns it: unset is `false`.
    pub(crate) fn read_field(&self, id: i64, row: &Row, name: &str) -> Value {
        match name {
            "id" => Value::from(id),
            "write_date" => Value::String(format_odoo_datetime(row.write_date)),
            "create_date" => Value::String(format_odoo_datetime(row.create_date)),
            "active" if self.has_active => Value::Bool(row.active),
            "display_name" => match row.fields.get("name") {
                Some(Value::String(s)) => Value::String(s.clone()),
                _ => Value::String(format!("{},{id}", self.name)),
            },
            _ => match row.fields.get(name) {
                None | Some(Value::Null) => Value::Bool(false),
                Some(v) => v.clone(),
            },
        }
    }

    /// A record as `read`/`search_read` return it: `id`, the requested fields (all when `None`), and always the
    /// dates and `active` (when the model has it).
    pub(crate) fn record(&self, id: i64, row: &Row, fields: Option<&[String]>) -> Value {
        let mut out = Map::new();
        out.insert("id".to_owned(), Value::from(id));
        match fields {
            Some(names) => {
                for name in names {
                    out.insert(name.clone(), self.read_field(id, row, name));
                }
            }
            None => {
                for name in &self.fields {
                    out.insert(name.clone(), self.read_field(id, row, name));
                }
                out.insert("display_name".to_owned(), self.read_field(id, row, "display_name"));
            }
        }
        for meta in ["write_date", "create_date", "active"] {
            if meta != "active" || self.has_active {
                out.insert(meta.to_owned(), self.read_field(id, row, meta));
            }
        }
        Value::Object(out)
    }

    pub(crate) fn sim_row(&self, id: i64, row: &Row) -> SimRow {
        SimRow {
            id,
            fields: row.fields.clone(),
            write_date: row.write_date,
            create_date: row.create_date,
            active: row.active,
        }
    }
}

/// Every model, the clock, and the counters tests read.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) clock: Clock,
    models: HashMap<String, Model>,
    /// (model, field, value as text) -> how many RPC `create` calls set it.
    rpc_creates: HashMap<(String, String, String), usize>,
    /// The id of each model's "Send Webhook Notification" server action.
    webhook_actions: HashMap<String, i64>,
}

impl Default for Store {
    fn default() -> Self {
        let mut models = HashMap::new();
        models.insert(
            "res.partner".to_owned(),
            Model::new("res.partner", true, PARTNER_FIELDS),
        );
        models.insert("crm.lead".to_owned(), Model::new("crm.lead", true, LEAD_FIELDS));
        Self {
            clock: Clock::default(),
            models,
            rpc_creates: HashMap::new(),
            webhook_actions: HashMap::new(),
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
    pub(crate) fn model(&self, name: &str) -> Option<&Model> {
        self.models.get(name)
    }

    pub(crate) fn model_mut(&mut self, name: &str) -> Option<&mut Model> {
        self.models.get_mut(name)
    }

    /// The model, created empty (with only a `name` field) on first use.
    pub(crate) fn model_or_create(&mut self, name: &str) -> &mut Model {
        self.models
            .entry(name.to_owned())
            .or_insert_with(|| Model::new(name, false, &["name"]))
    }

    pub(crate) fn count_rpc_create(&mut self, model: &str, vals: &Map<String, Value>) {
        for (field, value) in vals {
            let key = (model.to_owned(), field.clone(), value_text(value));
            *self.rpc_creates.entry(key).or_default() += 1;
        }
    }

    pub(crate) fn creates_with(&self, model: &str, field: &str, value: &str) -> usize {
        let key = (model.to_owned(), field.to_owned(), value.to_owned());
        self.rpc_creates.get(&key).copied().unwrap_or(0)
    }

    pub(crate) fn webhook_action_id(&mut self, model: &str) -> i64 {
        let next = self.webhook_actions.len() as i64 + 1;
        *self.webhook_actions.entry(model.to_owned()).or_insert(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odoo::clock::parse_odoo_datetime;
    use serde_json::json;

    fn vals(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    fn keyset(model: &Model, ts: NaiveDateTime, id: i64) -> Domain {
        let ts = format_odoo_datetime(ts);
        let raw = json!([
            "|",
            ["write_date", ">", ts],
            "&",
            ["write_date", "=", ts],
            ["id", ">", id]
        ]);
        Domain::parse(&raw, &model.name, |f| model.resolve(f)).unwrap()
    }

    #[test]
    fn keyset_pages_examine_only_the_rows_they_return() {
        let t = parse_odoo_datetime("2024-03-01 12:00:00").unwrap();
        let mut model = Model::new("res.partner", true, PARTNER_FIELDS);
        for i in 0..20_000 {
            model.create(&vals(json!({"name": format!("p{i}")})), t);
        }
        let order = crate::odoo::domain::parse_order(Some("write_date asc, id asc"), |f| model.resolve(f)).unwrap();
        let domain = keyset(&model, t, 10_000);
        let q = Search {
            domain: &domain,
            active_test: true,
            order: &order,
            offset: 0,
            limit: Some(500),
        };
        let (ids, examined) = model.search_examining(&q);
        assert_eq!(ids, (10_001..=10_500).collect::<Vec<_>>());
        assert_eq!(
            examined, 500,
            "a page in the middle of an equal-timestamp block starts at its cursor"
        );
    }

    #[test]
    fn a_write_moves_the_row_in_the_write_date_index() {
        let t0 = parse_odoo_datetime("2024-03-01 12:00:00").unwrap();
        let t1 = parse_odoo_datetime("2024-03-01 12:00:09").unwrap();
        let mut model = Model::new("res.partner", true, PARTNER_FIELDS);
        let a = model.create(&vals(json!({"name": "a"})), t0);
        let b = model.create(&vals(json!({"name": "b"})), t0);
        model.update(a, &vals(json!({"name": "a2"})), t1);
        let order = crate::odoo::domain::parse_order(Some("write_date, id"), |f| model.resolve(f)).unwrap();
        let q = Search {
            domain: &Domain::Const(true),
            active_test: true,
            order: &order,
            offset: 0,
            limit: None,
        };
        assert_eq!(model.search(&q), vec![b, a]);
        assert!(model.remove(a));
        assert_eq!(model.search(&q), vec![b]);
    }

    #[test]
    fn magic_fields_in_vals_are_ignored_and_active_is_kept_apart() {
        let t = parse_odoo_datetime("2024-03-01 12:00:00").unwrap();
        let mut model = Model::new("x.thing", false, &["name"]);
        let id = model.create(
            &vals(json!({"name": "a", "id": 99, "write_date": "1999-01-01 00:00:00", "active": false})),
            t,
        );
        let row = &model.rows[&id];
        assert_eq!(id, 1);
        assert_eq!(row.write_date, t);
        assert!(!row.active);
        assert!(model.has_active, "setting active declares the field");
        assert_eq!(row.fields, vals(json!({"name": "a"})));
    }
}
