//! The part of OData 4's `$filter` language Creatio clients use: comparisons (`eq ne gt ge lt le`) of a column with
//! a literal, joined by `and`, `or`, `not` and parentheses. Literals are typed the OData way: `'text'` (a quote
//! doubled inside), unquoted `2024-01-01T00:00:00.000Z` date-times, unquoted GUIDs, numbers, `true`, `false` and
//! `null`. Comparing a typed column with a literal of another type is a 400, as Creatio answers it: sending a
//! date-time or a GUID in quotes is the classic mistake this catches.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::store::Row;

/// A column's OData type, for the columns whose type is not plain text or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Guid,
    DateTime,
    Other,
}

/// The type of a column, by Creatio's naming: `Id` is the key, `CreatedOn`/`ModifiedOn` are the system dates.
pub(crate) fn column_type(name: &str) -> ColumnType {
    match name {
        "Id" => ColumnType::Guid,
        "CreatedOn" | "ModifiedOn" => ColumnType::DateTime,
        _ => ColumnType::Other,
    }
}

/// A literal of the filter language.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Text(String),
    DateTime(DateTime<Utc>),
    Guid(String),
    Number(f64),
    Bool(bool),
    Null,
}

impl Literal {
    fn edm_type(&self) -> &'static str {
        match self {
            Literal::Text(_) => "Edm.String",
            Literal::DateTime(_) => "Edm.DateTimeOffset",
            Literal::Guid(_) => "Edm.Guid",
            Literal::Number(_) => "Edm.Decimal",
            Literal::Bool(_) => "Edm.Boolean",
            Literal::Null => "null",
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Op> {
        Some(match word {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
        }
    }
}

/// A parsed `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Compare { column: String, op: Op, literal: Literal },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

/// Why a `$filter` was refused; the message is Creatio's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError(pub(crate) String);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Text(String),
    /// Anything unquoted: a keyword, a column, or a bare literal (number, date-time, GUID, true/false/null).
    Word(String),
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                tokens.push((i, Token::Open));
                i += 1;
            }
            ')' => {
                tokens.push((i, Token::Close));
                i += 1;
            }
            '\'' => {
                let start = i;
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError(format!(
                                "Unterminated string literal at {start} in '{input}'."
                            )));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            text.push(*other);
                            i += 1;
                        }
                    }
                }
                tokens.push((start, Token::Text(text)));
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-') => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | ':' | '+' | '-'))
                {
                    i += 1;
                }
                tokens.push((start, Token::Word(chars[start..i].iter().collect())));
            }
            other => {
                return Err(FilterError(format!(
                    "Syntax error: character '{other}' is not valid at position {i} in '{input}'."
                )));
            }
        }
    }
    Ok(tokens)
}

fn is_guid(word: &str) -> bool {
    let groups: Vec<&str> = word.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn bare_literal(word: &str) -> Option<Literal> {
    match word {
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        "null" => return Some(Literal::Null),
        _ => {}
    }
    if is_guid(word) {
        return Some(Literal::Guid(word.to_ascii_lowercase()));
    }
    if word.contains('T')
        && let Ok(t) = DateTime::parse_from_rfc3339(word)
    {
        return Some(Literal::DateTime(t.with_timezone(&Utc)));
    }
    if word.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && let Ok(n) = word.parse::<f64>()
    {
        return Some(Literal::Number(n));
    }
    None
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(usize, Token)>,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> FilterError {
        let position = self.tokens.get(self.at).map_or(self.input.len(), |(p, _)| *p);
        FilterError(format!(
            "Syntax error at position {position} in '{}': {what}.",
            self.input
        ))
    }

    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.at) {
            Some((_, Token::Word(w))) => Some(w.as_str()),
            _ => None,
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.peek_word() == Some("or") {
            self.at += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word() == Some("and") {
            self.at += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.peek_word() == Some("not") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        match self.tokens.get(self.at).cloned() {
            Some((_, Token::Open)) => {
                self.at += 1;
                let inner = self.or()?;
                match self.tokens.get(self.at) {
                    Some((_, Token::Close)) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err(self.error("')' expected")),
                }
            }
            Some((_, Token::Word(column))) if bare_literal(&column).is_none() && Op::parse(&column).is_none() => {
                self.at += 1;
                let op = self
                    .peek_word()
                    .and_then(Op::parse)
                    .ok_or_else(|| self.error("a comparison operator (eq, ne, gt, ge, lt, le) expected"))?;
                self.at += 1;
                let literal = match self.tokens.get(self.at).cloned() {
                    Some((_, Token::Text(text))) => Literal::Text(text),
                    Some((_, Token::Word(word))) => {
                        bare_literal(&word).ok_or_else(|| self.error("a literal expected"))?
                    }
                    _ => return Err(self.error("a literal expected")),
                };
                self.at += 1;
                check_types(&column, op, &literal)?;
                Ok(Filter::Compare { column, op, literal })
            }
            _ => Err(self.error("a column name expected")),
        }
    }
}

/// Refuses a comparison of a typed column with a literal of another type, as OData's binder does.
fn check_types(column: &str, op: Op, literal: &Literal) -> Result<(), FilterError> {
    let expected = match column_type(column) {
        ColumnType::Guid => "Edm.Guid",
        ColumnType::DateTime => "Edm.DateTimeOffset",
        ColumnType::Other => return Ok(()),
    };
    if *literal == Literal::Null || literal.edm_type() == expected {
        return Ok(());
    }
    Err(FilterError(format!(
        "A binary operator with incompatible types was detected. Found operand types '{expected}' and '{}' for operator kind '{op:?}'.",
        literal.edm_type()
    )))
}

impl Filter {
    /// Parses a whole `$filter` value.
    pub(crate) fn parse(input: &str) -> Result<Filter, FilterError> {
        let mut parser = Parser {
            input,
            tokens: tokenize(input)?,
            at: 0,
        };
        let filter = parser.or()?;
        if parser.at != parser.tokens.len() {
            return Err(parser.error("end of expression expected"));
        }
        Ok(filter)
    }

    /// Every column the filter names, to check them against the entity.
    pub(crate) fn columns(&self) -> Vec<&str> {
        match self {
            Filter::Compare { column, .. } => vec![column.as_str()],
            Filter::And(a, b) | Filter::Or(a, b) => {
                let mut all = a.columns();
                all.extend(b.columns());
                all
            }
            Filter::Not(inner) => inner.columns(),
        }
    }

    /// Whether the row with this id matches.
    pub(crate) fn matches(&self, id: &str, row: &Row) -> bool {
        match self {
            Filter::Compare { column, op, literal } => compare(id, row, column, *op, literal),
            Filter::And(a, b) => a.matches(id, row) && b.matches(id, row),
            Filter::Or(a, b) => a.matches(id, row) || b.matches(id, row),
            Filter::Not(inner) => !inner.matches(id, row),
        }
    }

    /// The earliest `ModifiedOn` a matching row can have, when the filter bounds it from below: lets a query
    /// ordered by (ModifiedOn, Id) start its walk there instead of at the first row.
    pub(crate) fn modified_lower_bound(&self) -> Option<DateTime<Utc>> {
        match self {
            Filter::Compare {
                column,
                op: Op::Gt | Op::Ge | Op::Eq,
                literal: Literal::DateTime(t),
            } if column == "ModifiedOn" => Some(*t),
            Filter::Compare { .. } | Filter::Not(_) => None,
            Filter::And(a, b) => match (a.modified_lower_bound(), b.modified_lower_bound()) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            },
            Filter::Or(a, b) => Some(a.modified_lower_bound()?.min(b.modified_lower_bound()?)),
        }
    }
}

fn compare(id: &str, row: &Row, column: &str, op: Op, literal: &Literal) -> bool {
    let ordering = match (column, literal) {
        ("Id", Literal::Guid(g)) => Some(id.cmp(g.as_str())),
        ("ModifiedOn", Literal::DateTime(t)) => Some(row.modified_on.cmp(t)),
        ("CreatedOn", Literal::DateTime(t)) => Some(row.created_on.cmp(t)),
        (_, Literal::Null) => {
            let is_null = matches!(row.fields.get(column), None | Some(Value::Null));
            return match op {
                Op::Eq => is_null,
                Op::Ne => !is_null,
                _ => false,
            };
        }
        (_, literal) => match (row.fields.get(column), literal) {
            (Some(Value::String(s)), Literal::Text(t)) => Some(s.as_str().cmp(t.as_str())),
            (Some(Value::String(s)), Literal::Guid(g)) => Some(s.to_ascii_lowercase().cmp(g)),
            (Some(Value::Number(n)), Literal::Number(x)) => n.as_f64().and_then(|n| n.partial_cmp(x)),
            (Some(Value::Bool(b)), Literal::Bool(x)) => Some(b.cmp(x)),
            _ => None,
        },
    };
    // SQL semantics: a comparison with a missing value is false, whatever the operator.
    ordering.is_some_and(|o| op.holds(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn row(modified: &str, fields: Value) -> Row {
        let t = DateTime::parse_from_rfc3339(modified).unwrap().with_timezone(&Utc);
        let fields: Map<String, Value> = serde_json::from_value(fields).unwrap();
        Row {
            fields,
            created_on: t,
            modified_on: t,
        }
    }

    #[test]
    fn the_keyset_filter_parses_and_selects_rows_after_the_position() {
        let f = Filter::parse(
            "ModifiedOn gt 2024-01-01T00:00:00.000Z or (ModifiedOn eq 2024-01-01T00:00:00.000Z and Id gt 00000000-0000-0000-0000-00000000000b)",
        )
        .unwrap();
        let same = row("2024-01-01T00:00:00Z", json!({}));
        assert!(!f.matches("00000000-0000-0000-0000-00000000000a", &same));
        assert!(!f.matches("00000000-0000-0000-0000-00000000000b", &same));
        assert!(f.matches("00000000-0000-0000-0000-00000000000c", &same));
        assert!(f.matches(
            "00000000-0000-0000-0000-000000000001",
            &row("2024-01-01T00:00:00.001Z", json!({}))
        ));
        assert_eq!(
            f.modified_lower_bound(),
            Some(
                DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
    }

    #[test]
    fn quoted_dates_and_guids_are_type_errors() {
        let e = Filter::parse("ModifiedOn gt '2024-01-01T00:00:00Z'").unwrap_err();
        assert!(e.0.contains("incompatible types"), "{e:?}");
        assert!(Filter::parse("Id eq 'not-a-guid'").is_err());
        assert!(Filter::parse("Id eq null").is_ok());
    }

    #[test]
    fn strings_unescape_doubled_quotes_and_compare_exactly() {
        let f = Filter::parse("UsrKey eq 'O''Brien'").unwrap();
        assert!(f.matches("x", &row("2024-01-01T00:00:00Z", json!({"UsrKey": "O'Brien"}))));
        assert!(!f.matches("x", &row("2024-01-01T00:00:00Z", json!({"UsrKey": "o'brien"}))));
        assert!(
            !f.matches("x", &row("2024-01-01T00:00:00Z", json!({}))),
            "missing is never equal"
        );
    }

    #[test]
    fn syntax_errors_are_refused() {
        for bad in [
            "",
            "ModifiedOn",
            "ModifiedOn gt",
            "(Name eq 'a'",
            "Name eq 'a' Name",
            "Name eq 'a",
            "Name ~ 'a'",
            "eq eq 'a'",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn not_and_precedence_follow_odata() {
        // `and` binds tighter than `or`.
        let f = Filter::parse("Name eq 'a' or Name eq 'b' and Age gt 5").unwrap();
        assert!(f.matches("x", &row("2024-01-01T00:00:00Z", json!({"Name": "a", "Age": 1}))));
        assert!(!f.matches("x", &row("2024-01-01T00:00:00Z", json!({"Name": "b", "Age": 1}))));
        let f = Filter::parse("not (Name eq 'a')").unwrap();
        assert!(f.matches("x", &row("2024-01-01T00:00:00Z", json!({"Name": "b"}))));
        assert_eq!(f.modified_lower_bound(), None);
    }
}
