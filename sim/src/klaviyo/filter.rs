//! Klaviyo's `filter` query parameter for profiles, as its API parses it: `greater-than(updated,2024-01-01T00:00:00Z)`,
//! `equals(email,"a@b.c")`, `any(id,["01H…","01J…"])`, several of them joined by commas or inside `and(…)`.
//! Each field allows only some operators (`updated` only `greater-than` and `less-than`); anything else is a 400.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// One condition of a filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    Equals(String, String),
    Any(String, Vec<String>),
    GreaterThan(String, DateTime<Utc>),
    LessThan(String, DateTime<Utc>),
}

/// Conditions that must all hold.
pub(crate) type Filter = Vec<Condition>;

/// Fields compared as strings, with the operators Klaviyo allows on them.
const STRING_FIELDS: &[&str] = &["id", "email", "phone_number", "external_id"];
/// Fields compared as times.
const TIME_FIELDS: &[&str] = &["created", "updated"];

impl Condition {
    /// Whether a profile with these string identifiers and times passes.
    pub fn matches(
        &self,
        string_field: impl Fn(&str) -> Option<String>,
        time_field: impl Fn(&str) -> DateTime<Utc>,
    ) -> bool {
        match self {
            Condition::Equals(field, value) => string_field(field).as_deref() == Some(value.as_str()),
            Condition::Any(field, values) => string_field(field).is_some_and(|v| values.contains(&v)),
            Condition::GreaterThan(field, at) => time_field(field) > *at,
            Condition::LessThan(field, at) => time_field(field) < *at,
        }
    }
}

/// Parses a whole `filter` parameter; the error is the `detail` of Klaviyo's 400.
pub(crate) fn parse(text: &str) -> Result<Filter, String> {
    let mut parser = Parser { text, pos: 0 };
    let mut conditions = Vec::new();
    loop {
        parser.expression(&mut conditions)?;
        parser.skip_spaces();
        if parser.eat(',') {
            continue;
        }
        if parser.pos == text.len() {
            return Ok(conditions);
        }
        return Err(format!(
            "Invalid filter provided: unexpected input at position {}.",
            parser.pos
        ));
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_spaces(&mut self) {
        while self.rest().starts_with(' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "Invalid filter provided: expected '{c}' at position {}.",
                self.pos
            ))
        }
    }

    /// An operator or field name: letters, digits, `-`, `_`, `.`.
    fn word(&mut self) -> Result<&str, String> {
        self.skip_spaces();
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(format!("Invalid filter provided: expected a name at position {start}."));
        }
        self.pos += len;
        Ok(&self.text[start..self.pos])
    }

    fn expression(&mut self, out: &mut Filter) -> Result<(), String> {
        let operator = self.word()?.to_string();
        self.expect('(')?;
        if operator == "and" {
            loop {
                self.expression(out)?;
                if !self.eat(',') {
                    break;
                }
            }
            return self.expect(')');
        }
        let field = self.word()?.to_string();
        self.expect(',')?;
        let value = self.value()?;
        self.expect(')')?;
        out.push(condition(&operator, field, value)?);
        Ok(())
    }

    /// A literal: a quoted string, a list of them, a datetime, a number, true/false/null.
    fn value(&mut self) -> Result<Value, String> {
        self.skip_spaces();
        if self.rest().starts_with('"') {
            return self.string().map(Value::String);
        }
        if self.eat('[') {
            let mut items = Vec::new();
            if !self.eat(']') {
                loop {
                    items.push(self.value()?);
                    if self.eat(']') {
                        break;
                    }
                    self.expect(',')?;
                }
            }
            return Ok(Value::Array(items));
        }
        let start = self.pos;
        let len = self.rest().find([',', ')', ']']).unwrap_or(self.rest().len());
        self.pos += len;
        let bare = self.text[start..self.pos].trim();
        Ok(match bare {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => Value::String(bare.to_string()),
        })
    }

    fn string(&mut self) -> Result<String, String> {
        // Past the opening quote; `\"` and `\\` escape.
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err("Invalid filter provided: unterminated string.".into())
    }
}

fn condition(operator: &str, field: String, value: Value) -> Result<Condition, String> {
    let unsupported =
        || format!("Invalid filter provided: operator '{operator}' is not supported for field '{field}'.");
    if STRING_FIELDS.contains(&field.as_str()) {
        return match (operator, value) {
            ("equals", Value::String(s)) => Ok(Condition::Equals(field, s)),
            ("any", Value::Array(items)) => {
                let values = items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(format!("Invalid filter provided: '{field}' values must be strings.")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if values.len() > 100 {
                    return Err("Invalid filter provided: 'any' takes at most 100 values.".into());
                }
                Ok(Condition::Any(field, values))
            }
            ("equals" | "any", _) => Err(format!("Invalid filter provided: bad value for '{field}'.")),
            _ => Err(unsupported()),
        };
    }
    if TIME_FIELDS.contains(&field.as_str()) {
        let Value::String(text) = &value else {
            return Err(format!("Invalid filter provided: '{field}' takes a datetime."));
        };
        let at = parse_datetime(text).ok_or_else(|| format!("Invalid filter provided: '{text}' is not a datetime."))?;
        return match operator {
            "greater-than" => Ok(Condition::GreaterThan(field, at)),
            "less-than" => Ok(Condition::LessThan(field, at)),
            _ => Err(unsupported()),
        };
    }
    Err(format!("Invalid filter provided: '{field}' is not a filterable field."))
}

/// `2024-01-01T00:00:00Z`, `2024-01-01T00:00:00+00:00` or `2024-01-01`.
pub(crate) fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn updated_greater_than_parses_with_either_offset_form() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            parse("greater-than(updated,2024-01-01T00:00:00Z)").unwrap(),
            vec![Condition::GreaterThan("updated".into(), t)]
        );
        assert_eq!(
            parse("greater-than(updated,2024-01-01T00:00:00+00:00)").unwrap(),
            vec![Condition::GreaterThan("updated".into(), t)]
        );
    }

    #[test]
    fn any_equals_and_and_combine() {
        let f = parse(r#"and(any(id,["A","B"]),equals(email,"x@y.z")),less-than(created,2024-01-01)"#).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], Condition::Any("id".into(), vec!["A".into(), "B".into()]));
        assert_eq!(f[1], Condition::Equals("email".into(), "x@y.z".into()));
    }

    #[test]
    fn operators_klaviyo_does_not_allow_are_refused() {
        for bad in [
            "greater-or-equal(updated,2024-01-01T00:00:00Z)",
            "equals(updated,2024-01-01T00:00:00Z)",
            "greater-than(email,\"a\")",
            "greater-than(updated,yesterday)",
            "equals(first_name,\"A\")",
            "greater-than(updated,2024-01-01T00:00:00Z",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
