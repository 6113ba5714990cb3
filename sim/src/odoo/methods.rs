//! The ORM methods `execute_kw` can call (`search_read`, `search`, `search_count`, `read`, `create`, `write`,
//! `unlink`, `fields_get`), with Python's argument binding: positional `args`, then keyword `kwargs`.

use serde_json::{Map, Value, json};

use super::domain::{Domain, parse_order};
use super::error::{OdooError, python_repr};
use super::store::{Model, Search, Store, truthy};

/// One `execute_kw` call after authentication.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub(crate) model: &'a str,
    pub(crate) method: &'a str,
    pub(crate) positional: &'a [Value],
    pub(crate) kwargs: &'a Map<String, Value>,
    /// The caller, for error messages.
    pub(crate) uid: i64,
}

/// Arguments bound to a signature, plus the `context` keyword every method takes.
struct Bound<'a, const N: usize> {
    args: [Option<&'a Value>; N],
    active_test: bool,
}

impl<'a> Call<'a> {
    /// Binds the arguments like Python would for `method(self, <params>, context=None)`.
    fn bind<const N: usize>(&self, params: [&str; N]) -> Result<Bound<'a, N>, OdooError> {
        if self.positional.len() > N {
            return Err(OdooError::type_error(format!(
                "{}() takes {} positional arguments but {} were given",
                self.method,
                N + 1,
                self.positional.len() + 1
            )));
        }
        let mut args: [Option<&'a Value>; N] = [None; N];
        for (slot, value) in args.iter_mut().zip(self.positional) {
            *slot = Some(value);
        }
        let mut active_test = true;
        for (key, value) in self.kwargs {
            if key == "context" {
                if let Some(test) = value.get("active_test") {
                    active_test = truthy(test);
                }
                continue;
            }
            let Some(index) = params.iter().position(|p| p == key) else {
                return Err(OdooError::type_error(format!(
                    "{}() got an unexpected keyword argument '{key}'",
                    self.method
                )));
            };
            if args[index].is_some() {
                return Err(OdooError::type_error(format!(
                    "{}() got multiple values for argument '{key}'",
                    self.method
                )));
            }
            args[index] = Some(value);
        }
        Ok(Bound { args, active_test })
    }
}

/// `None`, `false` and absent are all Python's falsy "not given".
fn given(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !matches!(v, Value::Null | Value::Bool(false)))
}

fn non_negative(v: Option<&Value>, name: &str) -> Result<Option<usize>, OdooError> {
    match given(v) {
        None => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            OdooError::type_error(format!("{name} must be a non-negative integer, not {}", python_repr(v)))
        }),
    }
}

/// Odoo treats a falsy limit (0, None, False) as "no limit".
fn limit(v: Option<&Value>) -> Result<Option<usize>, OdooError> {
    Ok(non_negative(v, "limit")?.filter(|n| *n > 0))
}

fn ids(v: Option<&Value>) -> Result<Vec<i64>, OdooError> {
    let bad = |v: &Value| OdooError::type_error(format!("Invalid record ids: {}", python_repr(v)));
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(Vec::new()),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|id| vec![id])
            .ok_or_else(|| bad(&Value::Number(n.clone()))),
        Some(Value::Array(items)) => items.iter().map(|i| i.as_i64().ok_or_else(|| bad(i))).collect(),
        Some(other) => Err(bad(other)),
    }
}

/// `fields`: absent or empty means every field.
fn fields(model: &Model, v: Option<&Value>) -> Result<Option<Vec<String>>, OdooError> {
    let Some(v) = given(v) else { return Ok(None) };
    let Value::Array(items) = v else {
        return Err(OdooError::type_error(format!(
            "fields must be a list, not {}",
            python_repr(v)
        )));
    };
    if items.is_empty() {
        return Ok(None);
    }
    items
        .iter()
        .map(|item| {
            let name = item
                .as_str()
                .ok_or_else(|| OdooError::type_error(format!("Invalid field name {}", python_repr(item))))?;
            if model.resolve(name).is_some() || name == "display_name" {
                Ok(name.to_owned())
            } else {
                Err(OdooError::value_error(format!(
                    "Invalid field '{name}' on model '{}'",
                    model.name
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn vals<'v>(model: &Model, v: &'v Value) -> Result<&'v Map<String, Value>, OdooError> {
    let Value::Object(vals) = v else {
        return Err(OdooError::type_error(format!(
            "values must be a dict, not {}",
            python_repr(v)
        )));
    };
    if let Some(bad) = vals.keys().find(|k| !model.accepts(k)) {
        return Err(OdooError::value_error(format!(
            "Invalid field '{bad}' on model '{}'",
            model.name
        )));
    }
    Ok(vals)
}

fn domain(model: &Model, v: Option<&Value>) -> Result<Domain, OdooError> {
    Domain::parse(v.unwrap_or(&Value::Null), &model.name, |f| model.resolve(f))
}

/// Runs one ORM method against the store.
pub(crate) fn call(store: &mut Store, call: &Call<'_>) -> Result<Value, OdooError> {
    if call.method.starts_with('_') {
        return Err(OdooError::access_error(format!(
            "Private methods (such as '{}.{}') cannot be called remotely.",
            call.model, call.method
        )));
    }
    let now = store.clock.now();
    let Some(model) = store.model(call.model) else {
        return Err(OdooError::user_error(format!("Object {} doesn't exist", call.model)));
    };
    match call.method {
        "search_read" => {
            let b = call.bind(["domain", "fields", "offset", "limit", "order", "load"])?;
            let [domain_arg, fields_arg, offset_arg, limit_arg, order_arg, _load] = b.args;
            let domain = domain(model, domain_arg)?;
            let fields = fields(model, fields_arg)?;
            let order = parse_order(given(order_arg).and_then(Value::as_str), |f| model.resolve(f))?;
            let ids = model.search(&Search {
                domain: &domain,
                active_test: b.active_test,
                order: &order,
                offset: non_negative(offset_arg, "offset")?.unwrap_or(0),
                limit: limit(limit_arg)?,
            });
            let records = ids
                .iter()
                .map(|id| model.record(*id, &model.rows[id], fields.as_deref()));
            Ok(Value::Array(records.collect()))
        }
        "search" => {
            let b = call.bind(["domain", "offset", "limit", "order"])?;
            let [domain_arg, offset_arg, limit_arg, order_arg] = b.args;
            let domain = domain(model, domain_arg)?;
            let order = parse_order(given(order_arg).and_then(Value::as_str), |f| model.resolve(f))?;
            let ids = model.search(&Search {
                domain: &domain,
                active_test: b.active_test,
                order: &order,
                offset: non_negative(offset_arg, "offset")?.unwrap_or(0),
                limit: limit(limit_arg)?,
            });
            Ok(json!(ids))
        }
        "search_count" => {
            let b = call.bind(["domain", "limit"])?;
            let [domain_arg, limit_arg] = b.args;
            let domain = domain(model, domain_arg)?;
            let order = parse_order(None, |f| model.resolve(f))?;
            let found = model.search(&Search {
                domain: &domain,
                active_test: b.active_test,
                order: &order,
                offset: 0,
                limit: limit(limit_arg)?,
            });
            Ok(json!(found.len()))
        }
        "read" => {
            let b = call.bind(["ids", "fields", "load"])?;
            let [ids_arg, fields_arg, _load] = b.args;
            let ids = ids(ids_arg)?;
            let fields = fields(model, fields_arg)?;
            let missing: Vec<i64> = ids.iter().copied().filter(|id| !model.rows.contains_key(id)).collect();
            if !missing.is_empty() {
                return Err(OdooError::missing(call.model, &missing, call.uid));
            }
            let records = ids
                .iter()
                .map(|id| model.record(*id, &model.rows[id], fields.as_deref()));
            Ok(Value::Array(records.collect()))
        }
        "create" => {
            let b = call.bind(["vals_list"])?;
            let [list_arg] = b.args;
            let list_arg = list_arg
                .ok_or_else(|| OdooError::type_error("create() missing 1 required positional argument: 'vals_list'"))?;
            let (single, items) = match list_arg {
                Value::Array(items) => (false, items.iter().collect::<Vec<_>>()),
                one => (true, vec![one]),
            };
            let all: Vec<Map<String, Value>> = items
                .into_iter()
                .map(|v| vals(model, v).cloned())
                .collect::<Result<_, _>>()?;
            let mut created = Vec::with_capacity(all.len());
            for vals in &all {
                let id = store.model_mut(call.model).expect("checked above").create(vals, now);
                store.count_rpc_create(call.model, vals);
                created.push(id);
            }
            Ok(if single { json!(created[0]) } else { json!(created) })
        }
        "write" => {
            let b = call.bind(["ids", "vals"])?;
            let [ids_arg, vals_arg] = b.args;
            let ids = ids(ids_arg)?;
            let vals = vals(model, vals_arg.unwrap_or(&Value::Null))?.clone();
            let missing: Vec<i64> = ids.iter().copied().filter(|id| !model.rows.contains_key(id)).collect();
            if !missing.is_empty() {
                return Err(OdooError::missing(call.model, &missing, call.uid));
            }
            let model = store.model_mut(call.model).expect("checked above");
            for id in ids {
                model.update(id, &vals, now);
            }
            Ok(Value::Bool(true))
        }
        "unlink" => {
            let b = call.bind(["ids"])?;
            let ids = ids(b.args[0])?;
            let missing: Vec<i64> = ids.iter().copied().filter(|id| !model.rows.contains_key(id)).collect();
            if !missing.is_empty() {
                return Err(OdooError::missing(call.model, &missing, call.uid));
            }
            let model = store.model_mut(call.model).expect("checked above");
            for id in ids {
                model.remove(id);
            }
            Ok(Value::Bool(true))
        }
        "fields_get" => {
            let b = call.bind(["allfields", "attributes"])?;
            let [allfields, attributes] = b.args;
            Ok(fields_get(model, given(allfields), given(attributes)))
        }
        _ => Err(OdooError::attribute_error(format!(
            "The method '{}.{}' does not exist",
            call.model, call.method
        ))),
    }
}

/// A guess at each field's type, enough for a client that maps types (Odoo's full metadata is much larger).
fn fields_get(model: &Model, allfields: Option<&Value>, attributes: Option<&Value>) -> Value {
    let mut names: Vec<&str> = vec!["id", "display_name", "write_date", "create_date"];
    if model.has_active {
        names.push("active");
    }
    names.extend(model.fields.iter().map(String::as_str));
    let wanted = |name: &str| match allfields {
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(name)),
        _ => true,
    };
    let mut out = Map::new();
    for name in names.into_iter().filter(|n| wanted(n)) {
        let sample = model
            .rows
            .values()
            .find_map(|row| row.fields.get(name).filter(|v| !v.is_null()));
        let kind = match name {
            "id" => "integer",
            "write_date" | "create_date" => "datetime",
            "active" => "boolean",
            n if n.ends_with("_ids") => "many2many",
            n if n.ends_with("_id") => "many2one",
            _ => match sample {
                Some(Value::Bool(_)) => "boolean",
                Some(Value::Number(n)) if n.is_i64() => "integer",
                Some(Value::Number(_)) => "float",
                _ => "char",
            },
        };
        let title = name
            .trim_start_matches("x_")
            .split('_')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        let readonly = matches!(name, "id" | "display_name" | "write_date" | "create_date");
        let mut description = Map::new();
        description.insert("type".to_owned(), json!(kind));
        description.insert("string".to_owned(), json!(title));
        description.insert("readonly".to_owned(), json!(readonly));
        description.insert("required".to_owned(), json!(name == "name"));
        description.insert("store".to_owned(), json!(name != "display_name"));
        if let Some(Value::Array(keep)) = attributes {
            description.retain(|k, _| keep.iter().any(|a| a.as_str() == Some(k)));
        }
        out.insert(name.to_owned(), Value::Object(description));
    }
    Value::Object(out)
}
