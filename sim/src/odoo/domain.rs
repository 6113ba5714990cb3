//! Odoo search domains and `order` clauses: parsing the Polish-notation list, evaluating it against a row, and
//! deriving a lower bound on `(write_date, id)` and on `id` so a keyset query can start in the middle of an index
//! instead of scanning every row for every page.

use std::borrow::Cow;
use std::cmp::Ordering;

use chrono::{NaiveDateTime, TimeDelta};
use serde_json::Value;

use super::clock::{format_odoo_datetime, parse_odoo_datetime};
use super::error::{OdooError, leaf_repr, python_repr};
use super::store::Row;

/// A field a leaf or an order term refers to, resolved against the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    Id,
    WriteDate,
    CreateDate,
    Active,
    Named(String),
}

impl FieldRef {
    /// The field's value on a row; unset fields are `null`.
    pub(crate) fn value<'r>(&self, id: i64, row: &'r Row) -> Cow<'r, Value> {
        match self {
            FieldRef::Id => Cow::Owned(Value::from(id)),
            FieldRef::WriteDate => Cow::Owned(Value::String(format_odoo_datetime(row.write_date))),
            FieldRef::CreateDate => Cow::Owned(Value::String(format_odoo_datetime(row.create_date))),
            FieldRef::Active => Cow::Owned(Value::Bool(row.active)),
            FieldRef::Named(name) => row.fields.get(name).map_or(Cow::Owned(Value::Null), Cow::Borrowed),
        }
    }

    fn datetime(&self, row: &Row) -> Option<NaiveDateTime> {
        match self {
            FieldRef::WriteDate => Some(row.write_date),
            FieldRef::CreateDate => Some(row.create_date),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Like,
    NotLike,
    ILike,
    NotILike,
    EqLike,
    EqILike,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" | "<>" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "in" => Op::In,
            "not in" => Op::NotIn,
            "like" => Op::Like,
            "not like" => Op::NotLike,
            "ilike" => Op::ILike,
            "not ilike" => Op::NotILike,
            "=like" => Op::EqLike,
            "=ilike" => Op::EqILike,
            _ => return None,
        })
    }
}

/// One `[field, operator, value]` term.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    field: FieldRef,
    op: Op,
    value: Value,
    /// The value as a datetime when the field is a datetime and the value is in Odoo's canonical format: then
    /// comparing datetimes is the same as comparing the strings, and much cheaper.
    at: Option<NaiveDateTime>,
}

/// A parsed domain.
#[derive(Debug, Clone)]
pub(crate) enum Domain {
    /// `[]`, `(1, '=', 1)` or `(0, '=', 1)`.
    Const(bool),
    Leaf(Leaf),
    Not(Box<Domain>),
    And(Vec<Domain>),
    Or(Vec<Domain>),
}

/// Lower bounds every row matching a domain respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LowerBound {
    /// No matching row has a smaller write_date.
    pub(crate) write_date: NaiveDateTime,
    /// No matching row has a smaller id.
    pub(crate) id: i64,
    /// No matching row has a lexicographically smaller `(write_date, id)`.
    pub(crate) key: (NaiveDateTime, i64),
}

impl LowerBound {
    pub(crate) const NONE: LowerBound = LowerBound {
        write_date: NaiveDateTime::MIN,
        id: i64::MIN,
        key: (NaiveDateTime::MIN, i64::MIN),
    };

    /// The bound of a box `write_date >= w AND id >= i`: its smallest `(write_date, id)` is `(w, i)`.
    fn of_box(write_date: NaiveDateTime, id: i64) -> Self {
        Self {
            write_date,
            id,
            key: (write_date, id),
        }
    }
}

impl Domain {
    /// Parses a domain; `resolve` maps a field name to the model's field, or `None` when the model has no such field.
    pub(crate) fn parse(
        raw: &Value,
        model: &str,
        resolve: impl Fn(&str) -> Option<FieldRef>,
    ) -> Result<Domain, OdooError> {
        let items = match raw {
            Value::Null | Value::Bool(false) => return Ok(Domain::Const(true)),
            Value::Array(items) => items,
            other => {
                return Err(OdooError::value_error(format!(
                    "Invalid domain: {}",
                    python_repr(other)
                )));
            }
        };
        let malformed = || OdooError::value_error(format!("Domain {} is syntactically not correct.", python_repr(raw)));
        // Polish notation read backwards: operands are on the stack when their operator arrives.
        let mut stack: Vec<Domain> = Vec::new();
        for item in items.iter().rev() {
            match item {
                Value::String(s) if s == "!" => {
                    let operand = stack.pop().ok_or_else(malformed)?;
                    stack.push(Domain::Not(Box::new(operand)));
                }
                Value::String(s) if s == "&" || s == "|" => {
                    let first = stack.pop().ok_or_else(malformed)?;
                    let second = stack.pop().ok_or_else(malformed)?;
                    stack.push(if s == "&" {
                        Domain::And(vec![first, second])
                    } else {
                        Domain::Or(vec![first, second])
                    });
                }
                Value::Array(parts) => stack.push(parse_leaf(parts, model, &resolve)?),
                _ => return Err(malformed()),
            }
        }
        // Whatever is left is AND-ed, as Odoo prefixes the missing '&' operators.
        stack.reverse();
        Ok(match stack.len() {
            0 => Domain::Const(true),
            1 => stack.pop().expect("one element"),
            _ => Domain::And(stack),
        })
    }

    pub(crate) fn matches(&self, id: i64, row: &Row) -> bool {
        match self {
            Domain::Const(b) => *b,
            Domain::Leaf(leaf) => leaf.matches(id, row),
            Domain::Not(inner) => !inner.matches(id, row),
            Domain::And(all) => all.iter().all(|d| d.matches(id, row)),
            Domain::Or(any) => any.iter().any(|d| d.matches(id, row)),
        }
    }

    /// Whether any leaf, however deep, is on `field` (Odoo skips its implicit `active = True` filter then).
    pub(crate) fn mentions(&self, field: &FieldRef) -> bool {
        match self {
            Domain::Const(_) => false,
            Domain::Leaf(leaf) => leaf.field == *field,
            Domain::Not(inner) => inner.mentions(field),
            Domain::And(parts) | Domain::Or(parts) => parts.iter().any(|d| d.mentions(field)),
        }
    }

    /// Bounds that every matching row respects (conservative: `NONE` when nothing is known).
    pub(crate) fn lower_bound(&self) -> LowerBound {
        match self {
            Domain::Const(_) | Domain::Not(_) => LowerBound::NONE,
            Domain::Leaf(leaf) => leaf.lower_bound(),
            Domain::And(parts) => parts.iter().map(Domain::lower_bound).fold(LowerBound::NONE, |acc, b| {
                let write_date = acc.write_date.max(b.write_date);
                let id = acc.id.max(b.id);
                // Each coordinate's bound also bounds the pair, which is what makes `write_date = t AND id > n`
                // start exactly at (t, n + 1).
                let key = acc.key.max(b.key).max((write_date, id));
                LowerBound { write_date, id, key }
            }),
            Domain::Or(parts) => parts
                .iter()
                .map(Domain::lower_bound)
                .reduce(|acc, b| LowerBound {
                    write_date: acc.write_date.min(b.write_date),
                    id: acc.id.min(b.id),
                    key: acc.key.min(b.key),
                })
                .unwrap_or(LowerBound::NONE),
        }
    }
}

fn parse_leaf(parts: &[Value], model: &str, resolve: &impl Fn(&str) -> Option<FieldRef>) -> Result<Domain, OdooError> {
    let invalid = || OdooError::value_error(format!("Invalid leaf {}", leaf_repr(parts)));
    let [left, op, value] = parts else {
        return Err(invalid());
    };
    let op_name = op.as_str().ok_or_else(invalid)?;
    if let Some(n) = left.as_i64() {
        // TRUE_LEAF (1, '=', 1) and FALSE_LEAF (0, '=', 1).
        return match (n, op_name, value.as_i64()) {
            (1, "=", Some(1)) => Ok(Domain::Const(true)),
            (0, "=", Some(1)) => Ok(Domain::Const(false)),
            _ => Err(invalid()),
        };
    }
    let name = left.as_str().ok_or_else(invalid)?;
    let op = Op::parse(op_name).ok_or_else(invalid)?;
    let field = resolve(name)
        .ok_or_else(|| OdooError::value_error(format!("Invalid field {model}.{name} in leaf {}", leaf_repr(parts))))?;
    let at = match (&field, value) {
        (FieldRef::WriteDate | FieldRef::CreateDate, Value::String(s)) => parse_odoo_datetime(s),
        _ => None,
    };
    Ok(Domain::Leaf(Leaf {
        field,
        op,
        value: value.clone(),
        at,
    }))
}

impl Leaf {
    fn matches(&self, id: i64, row: &Row) -> bool {
        if let (Some(at), Some(t)) = (self.at, self.field.datetime(row)) {
            match self.op {
                Op::Eq => return t == at,
                Op::Ne => return t != at,
                Op::Gt => return t > at,
                Op::Ge => return t >= at,
                Op::Lt => return t < at,
                Op::Le => return t <= at,
                _ => {}
            }
        }
        compare(&self.field.value(id, row), self.op, &self.value)
    }

    fn lower_bound(&self) -> LowerBound {
        let min = NaiveDateTime::MIN;
        match (&self.field, self.op) {
            // Stored write_dates are whole seconds, so "> t" is ">= t + 1 s".
            (FieldRef::WriteDate, Op::Gt) => self
                .at
                .and_then(|t| t.checked_add_signed(TimeDelta::seconds(1)))
                .map_or(LowerBound::NONE, |t| LowerBound::of_box(t, i64::MIN)),
            (FieldRef::WriteDate, Op::Ge | Op::Eq) => {
                self.at.map_or(LowerBound::NONE, |t| LowerBound::of_box(t, i64::MIN))
            }
            (FieldRef::Id, Op::Gt) => self
                .value
                .as_i64()
                .and_then(|n| n.checked_add(1))
                .map_or(LowerBound::NONE, |n| LowerBound::of_box(min, n)),
            (FieldRef::Id, Op::Ge | Op::Eq) => self
                .value
                .as_i64()
                .map_or(LowerBound::NONE, |n| LowerBound::of_box(min, n)),
            (FieldRef::Id, Op::In) => match &self.value {
                Value::Array(ids) if !ids.is_empty() && ids.iter().all(|v| v.as_i64().is_some()) => {
                    let smallest = ids.iter().filter_map(Value::as_i64).min().expect("non-empty");
                    LowerBound::of_box(min, smallest)
                }
                _ => LowerBound::NONE,
            },
            _ => LowerBound::NONE,
        }
    }
}

/// Odoo's `False`/SQL NULL: an unset field reads as `false`.
fn is_unset(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
}

fn text_of(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Bool(x), Value::Number(n)) | (Value::Number(n), Value::Bool(x)) => n.as_f64() == Some(f64::from(*x)),
        _ => text_of(a) == text_of(b),
    }
}

fn ordering(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => text_of(a).cmp(&text_of(b)),
    }
}

/// One leaf's test, with SQL's NULL rules as Odoo applies them: `= False` matches unset fields, negative
/// operators (`!=`, `not in`, `not like`...) also match unset fields, ordering operators never do.
fn compare(actual: &Value, op: Op, expected: &Value) -> bool {
    let unset = is_unset(actual);
    match op {
        Op::Eq if is_unset(expected) => unset,
        Op::Eq => !unset && same(actual, expected),
        Op::Ne if is_unset(expected) => !unset,
        Op::Ne => unset || !same(actual, expected),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            if unset || is_unset(expected) {
                return false;
            }
            let o = ordering(actual, expected);
            match op {
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Lt => o == Ordering::Less,
                _ => o != Ordering::Greater,
            }
        }
        Op::In | Op::NotIn => {
            let list = match expected {
                Value::Array(items) => items.as_slice(),
                single => std::slice::from_ref(single),
            };
            let hit = if unset {
                list.iter().any(is_unset)
            } else {
                list.iter().any(|e| !is_unset(e) && same(actual, e))
            };
            (op == Op::In) == hit
        }
        Op::Like | Op::NotLike | Op::ILike | Op::NotILike | Op::EqLike | Op::EqILike => {
            let positive = !matches!(op, Op::NotLike | Op::NotILike);
            if unset {
                return !positive;
            }
            let raw = if is_unset(expected) {
                Cow::Borrowed("")
            } else {
                text_of(expected)
            };
            let pattern = match op {
                Op::EqLike | Op::EqILike => raw.into_owned(),
                // `like` wraps the value in %...%; its own % and _ stay wildcards, as in Odoo.
                _ => format!("%{raw}%"),
            };
            let fold = matches!(op, Op::ILike | Op::NotILike | Op::EqILike);
            positive == like(&text_of(actual), &pattern, fold)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Any,
    One,
    Literal(char),
}

/// SQL LIKE: `%` is any run of characters, `_` exactly one, `\` escapes the next character.
fn like(text: &str, pattern: &str, fold: bool) -> bool {
    let norm = |s: &str| -> Vec<char> {
        if fold {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let text = norm(text);
    let mut tokens = Vec::new();
    let mut chars = norm(pattern).into_iter();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            c => Token::Literal(c),
        });
    }
    // Greedy matching with backtracking to the last `%`: linear in practice, never exponential.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Literal(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|tok| *tok == Token::Any)
}

/// One `field [asc|desc]` term of an `order` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderTerm {
    pub(crate) field: FieldRef,
    pub(crate) descending: bool,
}

/// Parses `order` (`None` or blank means `id asc`).
pub(crate) fn parse_order(
    raw: Option<&str>,
    resolve: impl Fn(&str) -> Option<FieldRef>,
) -> Result<Vec<OrderTerm>, OdooError> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("id");
    let invalid = || {
        OdooError::value_error(format!(
            "Invalid \"order\" specified ({raw}). A valid \"order\" specification is a comma-separated list of \
             valid field names (optionally followed by asc/desc for the direction)"
        ))
    };
    let mut terms = Vec::new();
    for part in raw.split(',') {
        let words: Vec<String> = part.split_whitespace().map(str::to_ascii_lowercase).collect();
        let Some((name, rest)) = words.split_first() else {
            return Err(invalid());
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        // NULLS FIRST/LAST is accepted; the simulator keeps PostgreSQL's default placement.
        let descending = match rest.as_slice() {
            [] | ["asc"] | ["nulls", "first" | "last"] | ["asc", "nulls", "first" | "last"] => false,
            ["desc"] | ["desc", "nulls", "first" | "last"] => true,
            _ => return Err(invalid()),
        };
        let field = resolve(name.trim_matches('"')).ok_or_else(invalid)?;
        terms.push(OrderTerm { field, descending });
    }
    Ok(terms)
}

/// Sorts like PostgreSQL (NULLs last ascending, first descending), then by id so pages are stable.
pub(crate) fn compare_rows(order: &[OrderTerm], a: (i64, &Row), b: (i64, &Row)) -> Ordering {
    for term in order {
        let o = match (term.field.datetime(a.1), term.field.datetime(b.1)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (term.field.value(a.0, a.1), term.field.value(b.0, b.1));
                match (is_unset(&x), is_unset(&y)) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => ordering(&x, &y),
                }
            }
        };
        let o = if term.descending { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.0.cmp(&b.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn resolve(name: &str) -> Option<FieldRef> {
        match name {
            "id" => Some(FieldRef::Id),
            "write_date" => Some(FieldRef::WriteDate),
            "create_date" => Some(FieldRef::CreateDate),
            "active" => Some(FieldRef::Active),
            "name" | "email" | "score" => Some(FieldRef::Named(name.to_owned())),
            _ => None,
        }
    }

    fn parse(raw: Value) -> Domain {
        Domain::parse(&raw, "res.partner", resolve).unwrap()
    }

    fn at(s: &str) -> NaiveDateTime {
        parse_odoo_datetime(s).unwrap()
    }

    fn row(write_date: &str, fields: Value) -> Row {
        let fields: Map<String, Value> = serde_json::from_value(fields).unwrap();
        Row {
            fields,
            write_date: at(write_date),
            create_date: at(write_date),
            active: true,
        }
    }

    fn keyset(ts: &str, id: i64) -> Domain {
        parse(json!([
            "|",
            ["write_date", ">", ts],
            "&",
            ["write_date", "=", ts],
            ["id", ">", id]
        ]))
    }

    #[test]
    fn keyset_domain_selects_rows_strictly_after_the_cursor() {
        let d = keyset("2024-01-01 00:00:05", 10);
        let same_second = row("2024-01-01 00:00:05", json!({}));
        let later = row("2024-01-01 00:00:06", json!({}));
        let earlier = row("2024-01-01 00:00:04", json!({}));
        assert!(!d.matches(10, &same_second));
        assert!(d.matches(11, &same_second));
        assert!(d.matches(1, &later));
        assert!(!d.matches(99, &earlier));
    }

    #[test]
    fn keyset_domain_bound_starts_at_the_cursor() {
        let bound = keyset("2024-01-01 00:00:05", 10).lower_bound();
        assert_eq!(bound.key, (at("2024-01-01 00:00:05"), 11));
        assert_eq!(bound.write_date, at("2024-01-01 00:00:05"));
    }

    #[test]
    fn terms_without_operators_are_anded() {
        let d = parse(json!([["name", "=", "a"], ["email", "!=", false]]));
        assert!(d.matches(1, &row("2024-01-01 00:00:00", json!({"name": "a", "email": "x@y"}))));
        assert!(!d.matches(1, &row("2024-01-01 00:00:00", json!({"name": "a"}))));
        assert!(!d.matches(1, &row("2024-01-01 00:00:00", json!({"name": "b", "email": "x@y"}))));
    }

    #[test]
    fn not_negates_the_next_term_only() {
        let d = parse(json!(["!", ["name", "=", "a"], ["email", "=", "e"]]));
        assert!(d.matches(1, &row("2024-01-01 00:00:00", json!({"name": "b", "email": "e"}))));
        assert!(!d.matches(1, &row("2024-01-01 00:00:00", json!({"name": "a", "email": "e"}))));
    }

    #[test]
    fn false_matches_unset_fields_and_negative_operators_include_them() {
        let unset = row("2024-01-01 00:00:00", json!({}));
        assert!(parse(json!([["email", "=", false]])).matches(1, &unset));
        assert!(parse(json!([["email", "!=", "x"]])).matches(1, &unset));
        assert!(parse(json!([["email", "not in", ["x"]]])).matches(1, &unset));
        assert!(!parse(json!([["score", ">", 0]])).matches(1, &unset));
        assert!(!parse(json!([["email", "ilike", "x"]])).matches(1, &unset));
    }

    #[test]
    fn comparison_operators_follow_the_value_type() {
        let r = row("2024-01-01 00:00:00", json!({"score": 10, "name": "Bravo"}));
        assert!(parse(json!([["score", ">", 9]])).matches(1, &r));
        assert!(parse(json!([["score", "<=", 10]])).matches(1, &r));
        assert!(!parse(json!([["score", "<", 10]])).matches(1, &r));
        assert!(parse(json!([["name", ">=", "Alpha"]])).matches(1, &r));
        assert!(parse(json!([["id", "in", [1, 2]]])).matches(1, &r));
        assert!(!parse(json!([["id", "in", [2, 3]]])).matches(1, &r));
        assert!(parse(json!([["write_date", "<", "2024-01-01 00:00:01"]])).matches(1, &r));
        assert!(
            parse(json!([["write_date", ">=", "2024-01-01"]])).matches(1, &r),
            "string comparison"
        );
    }

    #[test]
    fn like_operators_match_patterns() {
        let r = row("2024-01-01 00:00:00", json!({"name": "Ada Lovelace"}));
        assert!(parse(json!([["name", "ilike", "lovel"]])).matches(1, &r));
        assert!(!parse(json!([["name", "like", "lovel"]])).matches(1, &r));
        assert!(parse(json!([["name", "=like", "Ada%"]])).matches(1, &r));
        assert!(parse(json!([["name", "=ilike", "ada_lovelace"]])).matches(1, &r));
        assert!(!parse(json!([["name", "=like", "Ada"]])).matches(1, &r));
        assert!(parse(json!([["name", "not ilike", "babbage"]])).matches(1, &r));
    }

    #[test]
    fn true_and_false_leaves_are_constants() {
        let r = row("2024-01-01 00:00:00", json!({}));
        assert!(parse(json!([[1, "=", 1]])).matches(1, &r));
        assert!(!parse(json!([[0, "=", 1]])).matches(1, &r));
    }

    #[test]
    fn unknown_fields_and_operators_are_value_errors() {
        let err = Domain::parse(&json!([["nope", "=", 1]]), "res.partner", resolve).unwrap_err();
        assert_eq!(err.name, "builtins.ValueError");
        assert_eq!(err.message, "Invalid field res.partner.nope in leaf ('nope', '=', 1)");
        let err = Domain::parse(&json!([["name", "~", 1]]), "res.partner", resolve).unwrap_err();
        assert_eq!(err.message, "Invalid leaf ('name', '~', 1)");
        assert!(Domain::parse(&json!(["&", ["name", "=", 1]]), "res.partner", resolve).is_err());
    }

    #[test]
    fn active_is_noticed_anywhere_in_the_domain() {
        assert!(parse(json!(["|", ["name", "=", "a"], ["active", "=", false]])).mentions(&FieldRef::Active));
        assert!(!parse(json!([["name", "=", "a"]])).mentions(&FieldRef::Active));
    }

    #[test]
    fn order_defaults_to_id_and_rejects_unknown_fields() {
        assert_eq!(
            parse_order(None, resolve).unwrap(),
            vec![OrderTerm {
                field: FieldRef::Id,
                descending: false
            }]
        );
        let terms = parse_order(Some("write_date asc, id DESC"), resolve).unwrap();
        assert_eq!(terms[0].field, FieldRef::WriteDate);
        assert!(terms[1].descending);
        assert!(parse_order(Some("nope asc"), resolve).is_err());
        assert!(parse_order(Some("id sideways"), resolve).is_err());
    }

    #[test]
    fn unset_values_sort_last_ascending() {
        let order = parse_order(Some("name"), resolve).unwrap();
        let named = row("2024-01-01 00:00:00", json!({"name": "a"}));
        let unnamed = row("2024-01-01 00:00:00", json!({}));
        assert_eq!(compare_rows(&order, (2, &named), (1, &unnamed)), Ordering::Less);
    }
}
