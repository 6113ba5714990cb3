//! A collection query: `$filter`, `$orderby`, `$skip`, `$top`, `$select` and `$count`, checked against the entity
//! and run over its table. `$skip` is served as OData serves it — an offset into the current result — so a client
//! that pages with it loses rows when rows before its offset change between pages.

use std::cmp::Ordering;

use super::filter::Filter;
use super::store::{Row, Table};

/// One `$orderby` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderTerm {
    pub(crate) column: String,
    pub(crate) descending: bool,
}

/// A parsed collection query.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub(crate) filter: Option<Filter>,
    pub(crate) order: Vec<OrderTerm>,
    pub(crate) skip: usize,
    pub(crate) top: Option<usize>,
    pub(crate) select: Option<Vec<String>>,
    pub(crate) count: bool,
}

/// What was wrong with a query; Creatio answers it 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryError(pub(crate) String);

fn number(name: &str, value: &str) -> Result<usize, QueryError> {
    value
        .trim()
        .parse()
        .map_err(|_| QueryError(format!("Invalid value '{value}' for {name} query option found.")))
}

impl Query {
    /// Parses the query options of a GET against `table`. Unknown `$` options are refused, as OData refuses
    /// them; other parameters are ignored.
    pub(crate) fn parse(table: &Table, params: &[(String, String)]) -> Result<Query, QueryError> {
        let mut query = Query::default();
        for (name, value) in params {
            match name.as_str() {
                "$filter" => query.filter = Some(Filter::parse(value).map_err(|e| QueryError(e.0))?),
                "$orderby" => {
                    for term in value.split(',') {
                        let mut words = term.split_whitespace();
                        let column = words
                            .next()
                            .ok_or_else(|| QueryError(format!("Syntax error in $orderby '{value}'.")))?;
                        let descending = match words.next() {
                            None | Some("asc") => false,
                            Some("desc") => true,
                            Some(other) => return Err(QueryError(format!("Syntax error at '{other}' in $orderby."))),
                        };
                        query.order.push(OrderTerm {
                            column: column.to_owned(),
                            descending,
                        });
                    }
                }
                "$skip" => query.skip = number("$skip", value)?,
                "$top" => query.top = Some(number("$top", value)?),
                "$select" => {
                    query.select = Some(value.split(',').map(|c| c.trim().to_owned()).collect());
                }
                "$count" => {
                    query.count = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        other => return Err(QueryError(format!("Invalid value '{other}' for $count query option."))),
                    }
                }
                other if other.starts_with('$') => {
                    return Err(QueryError(format!("The query parameter '{other}' is not supported.")));
                }
                _ => {}
            }
        }
        let mut named: Vec<&str> = query.order.iter().map(|t| t.column.as_str()).collect();
        named.extend(query.select.iter().flatten().map(String::as_str));
        named.extend(query.filter.iter().flat_map(Filter::columns));
        if let Some(unknown) = named.into_iter().find(|c| !table.knows(c)) {
            return Err(QueryError(format!(
                "Could not find a property named '{unknown}' on type 'Terrasoft.Configuration.{}'.",
                table.name
            )));
        }
        Ok(query)
    }

    /// The ids the query returns, in order, and how many matched before `$skip`/`$top` (for `$count`).
    pub(crate) fn run(&self, table: &Table) -> (Vec<String>, usize) {
        let keep = |id: &str, row: &Row| self.filter.as_ref().is_none_or(|f| f.matches(id, row));
        let asc = |term: &OrderTerm, column: &str| term.column == column && !term.descending;
        let by_modified_then_id = match self.order.as_slice() {
            [m] => asc(m, "ModifiedOn"),
            [m, i] => asc(m, "ModifiedOn") && asc(i, "Id"),
            _ => false,
        };
        let mut hits: Vec<(&String, &Row)> = if by_modified_then_id {
            // The (ModifiedOn, Id) index, from the filter's lower bound: a keyset page reads only what it returns.
            let start = self.filter.as_ref().and_then(Filter::modified_lower_bound);
            let iter: Box<dyn Iterator<Item = &(chrono::DateTime<chrono::Utc>, String)>> = match start {
                Some(t) => Box::new(table.by_modified.range((t, String::new())..)),
                None => Box::new(table.by_modified.iter()),
            };
            iter.map(|(_, id)| (id, &table.rows[id]))
                .filter(|(id, row)| keep(id, row))
                .collect()
        } else {
            let mut hits: Vec<(&String, &Row)> = table.rows.iter().filter(|(id, row)| keep(id, row)).collect();
            if !self.order.is_empty() {
                hits.sort_by(|a, b| self.compare(a, b));
            }
            hits
        };
        let total = hits.len();
        let top = self.top.unwrap_or(usize::MAX);
        let ids = hits
            .drain(..)
            .skip(self.skip)
            .take(top)
            .map(|(id, _)| id.clone())
            .collect();
        (ids, total)
    }

    fn compare(&self, a: &(&String, &Row), b: &(&String, &Row)) -> Ordering {
        for term in &self.order {
            let ordering = match term.column.as_str() {
                "Id" => a.0.cmp(b.0),
                "ModifiedOn" => a.1.modified_on.cmp(&b.1.modified_on),
                "CreatedOn" => a.1.created_on.cmp(&b.1.created_on),
                column => compare_json(a.1.fields.get(column), b.1.fields.get(column)),
            };
            let ordering = if term.descending { ordering.reverse() } else { ordering };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }
}

/// SQL Server's order: NULL first, then by value.
fn compare_json(a: Option<&serde_json::Value>, b: Option<&serde_json::Value>) -> Ordering {
    use serde_json::Value;
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}
