//! The part of SOQL a sync client uses: `SELECT <fields | FIELDS(STANDARD)> FROM <object> [WHERE ...]
//! [ORDER BY <field> [ASC|DESC], ...] [LIMIT n]`, with `AND`, `OR`, `NOT`, parentheses, the comparison operators
//! and `IN (...)`, over strings, datetimes, numbers, booleans and null. Anything else is a `MALFORMED_QUERY`,
//! as Salesforce answers it.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::wire::parse_time;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The selected fields; empty for `FIELDS(STANDARD)` (every field).
    pub fields: Vec<String>,
    pub object: String,
    pub filter: Option<Expr>,
    /// `(field, ascending)`.
    pub order: Vec<(String, bool)>,
    pub limit: Option<usize>,
}

/// A WHERE clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(String, Op, Literal),
    In(String, Vec<Literal>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Time(DateTime<Utc>),
    Number(f64),
    Bool(bool),
    Null,
}

/// Why a query was refused: `MALFORMED_QUERY`, with Salesforce's kind of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Symbol(&'static str),
}

fn tokenize(q: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = q.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(SyntaxError("unterminated string literal".into())),
                    Some('\\') => {
                        let escaped = chars.get(i + 1).ok_or_else(|| SyntaxError("dangling escape".into()))?;
                        text.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
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
            tokens.push(Token::Text(text));
        } else if let Some(symbol) = ["<=", ">=", "!=", "<>", "=", "<", ">", "(", ")", ","]
            .into_iter()
            .find(|s| chars[i..].iter().take(s.len()).copied().eq(s.chars()))
        {
            tokens.push(Token::Symbol(if symbol == "<>" { "!=" } else { symbol }));
            i += symbol.len();
        } else {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | ':' | '-' | '+'))
            {
                i += 1;
            }
            if start == i {
                return Err(SyntaxError(format!("unexpected character {c:?}")));
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), SyntaxError> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(SyntaxError(format!("expected {word} at {:?}", self.peek())))
        }
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn identifier(&mut self) -> Result<String, SyntaxError> {
        match self.next() {
            Some(Token::Word(w)) if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') => Ok(w),
            other => Err(SyntaxError(format!("expected a field name, found {other:?}"))),
        }
    }

    fn fields(&mut self) -> Result<Vec<String>, SyntaxError> {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("FIELDS")) {
            self.at += 1;
            if !self.symbol("(") || !self.keyword("STANDARD") || !self.symbol(")") {
                return Err(SyntaxError("only FIELDS(STANDARD) is supported without a LIMIT".into()));
            }
            return Ok(Vec::new());
        }
        let mut fields = vec![self.identifier()?];
        while self.symbol(",") {
            fields.push(self.identifier()?);
        }
        Ok(fields)
    }

    fn expr(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.term()?;
        while self.keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.factor()?;
        while self.keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, SyntaxError> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.factor()?)));
        }
        if self.symbol("(") {
            let inner = self.expr()?;
            if !self.symbol(")") {
                return Err(SyntaxError("expected )".into()));
            }
            return Ok(inner);
        }
        let field = self.identifier()?;
        if self.keyword("IN") {
            if !self.symbol("(") {
                return Err(SyntaxError("expected ( after IN".into()));
            }
            let mut values = vec![self.literal()?];
            while self.symbol(",") {
                values.push(self.literal()?);
            }
            if !self.symbol(")") {
                return Err(SyntaxError("expected ) after the IN list".into()));
            }
            return Ok(Expr::In(field, values));
        }
        let op = match self.next() {
            Some(Token::Symbol("=")) => Op::Eq,
            Some(Token::Symbol("!=")) => Op::Ne,
            Some(Token::Symbol("<")) => Op::Lt,
            Some(Token::Symbol("<=")) => Op::Le,
            Some(Token::Symbol(">")) => Op::Gt,
            Some(Token::Symbol(">=")) => Op::Ge,
            other => {
                return Err(SyntaxError(format!(
                    "expected an operator after {field}, found {other:?}"
                )));
            }
        };
        Ok(Expr::Compare(field, op, self.literal()?))
    }

    fn literal(&mut self) -> Result<Literal, SyntaxError> {
        match self.next() {
            Some(Token::Text(s)) => Ok(Literal::Text(s)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Token::Word(w)) => {
                if w.contains('T') && w.contains(':') {
                    parse_time(&w)
                        .map(Literal::Time)
                        .ok_or_else(|| SyntaxError(format!("invalid datetime literal {w}")))
                } else {
                    w.parse()
                        .map(Literal::Number)
                        .map_err(|_| SyntaxError(format!("unexpected token {w}")))
                }
            }
            other => Err(SyntaxError(format!("expected a value, found {other:?}"))),
        }
    }
}

/// Parses one SOQL query.
pub fn parse(q: &str) -> Result<Query, SyntaxError> {
    let mut p = Parser {
        tokens: tokenize(q)?,
        at: 0,
    };
    p.expect_keyword("SELECT")?;
    let fields = p.fields()?;
    p.expect_keyword("FROM")?;
    let object = p.identifier()?;
    let filter = if p.keyword("WHERE") { Some(p.expr()?) } else { None };
    let mut order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let field = p.identifier()?;
            let ascending = if p.keyword("DESC") {
                false
            } else {
                p.keyword("ASC");
                true
            };
            order.push((field, ascending));
            if !p.symbol(",") {
                break;
            }
        }
    }
    let limit = if p.keyword("LIMIT") {
        match p.next() {
            Some(Token::Word(w)) => Some(
                w.parse()
                    .map_err(|_| SyntaxError(format!("LIMIT must be a number, found {w}")))?,
            ),
            other => return Err(SyntaxError(format!("LIMIT must be a number, found {other:?}"))),
        }
    } else {
        None
    };
    if let Some(extra) = p.peek() {
        return Err(SyntaxError(format!("unexpected token {extra:?}")));
    }
    Ok(Query {
        fields,
        object,
        filter,
        order,
        limit,
    })
}

impl Expr {
    /// Every field the clause names.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                let mut f = a.fields();
                f.extend(b.fields());
                f
            }
            Expr::Not(a) => a.fields(),
            Expr::Compare(f, ..) | Expr::In(f, _) => vec![f.as_str()],
        }
    }

    /// Whether a row (field name → JSON value as the API returns it) matches.
    pub fn matches(&self, row: &Map<String, Value>) -> bool {
        match self {
            Expr::And(a, b) => a.matches(row) && b.matches(row),
            Expr::Or(a, b) => a.matches(row) || b.matches(row),
            Expr::Not(a) => !a.matches(row),
            Expr::Compare(field, op, literal) => {
                let value = lookup(row, field);
                match (value, literal) {
                    (None | Some(Value::Null), Literal::Null) => matches!(op, Op::Eq),
                    (Some(v), Literal::Null) => !v.is_null() && matches!(op, Op::Ne),
                    (None | Some(Value::Null), _) => matches!(op, Op::Ne),
                    (Some(v), lit) => match compare(v, lit) {
                        Some(ord) => match op {
                            Op::Eq => ord == Ordering::Equal,
                            Op::Ne => ord != Ordering::Equal,
                            Op::Lt => ord == Ordering::Less,
                            Op::Le => ord != Ordering::Greater,
                            Op::Gt => ord == Ordering::Greater,
                            Op::Ge => ord != Ordering::Less,
                        },
                        None => false,
                    },
                }
            }
            Expr::In(field, values) => {
                lookup(row, field).is_some_and(|v| values.iter().any(|lit| compare(v, lit) == Some(Ordering::Equal)))
            }
        }
    }
}

/// A field of a row, by its name in any case (SOQL field names are case-insensitive).
pub fn lookup<'a>(row: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    row.get(field)
        .or_else(|| row.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)).map(|(_, v)| v))
}

/// Orders a stored value against a literal; None when they cannot be compared.
pub fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        (Value::String(s), Literal::Time(t)) => parse_time(s).map(|v| v.cmp(t)),
        (Value::String(s), Literal::Text(t)) => Some(s.as_str().cmp(t.as_str())),
        (Value::Number(n), Literal::Number(x)) => n.as_f64().and_then(|v| v.partial_cmp(x)),
        (Value::Bool(b), Literal::Bool(x)) => Some(b.cmp(x)),
        _ => None,
    }
}

/// Orders two stored values of one field (datetimes as times, numbers as numbers, the rest as text; nulls
/// first, as SOQL's default `NULLS FIRST` for ascending order).
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => match (parse_time(x), parse_time(y)) {
            (Some(tx), Some(ty)) => tx.cmp(&ty),
            _ => x.cmp(y),
        },
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_keyset_query_parses_and_filters() {
        let q = parse(
            "SELECT Id, Name, SystemModstamp FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00Z OR \
             (SystemModstamp = 2024-01-01T00:00:00.000+0000 AND Id > '001B') ORDER BY SystemModstamp ASC, Id LIMIT 5",
        )
        .unwrap();
        assert_eq!(q.object, "Account");
        assert_eq!(q.fields, ["Id", "Name", "SystemModstamp"]);
        assert_eq!(
            q.order,
            [("SystemModstamp".to_string(), true), ("Id".to_string(), true)]
        );
        assert_eq!(q.limit, Some(5));
        let filter = q.filter.unwrap();
        let at = |t: &str, id: &str| row(json!({"Id": id, "SystemModstamp": t}));
        assert!(filter.matches(&at("2024-01-01T00:00:01.000+0000", "001A")));
        assert!(filter.matches(&at("2024-01-01T00:00:00.000+0000", "001C")));
        assert!(!filter.matches(&at("2024-01-01T00:00:00.000+0000", "001A")));
        assert!(!filter.matches(&at("2023-12-31T23:59:59.000+0000", "001Z")));
    }

    #[test]
    fn in_lists_strings_with_escapes_and_fields_all() {
        let q = parse(r"SELECT FIELDS(STANDARD) FROM Contact WHERE Id IN ('a', 'b\'c') AND NOT Name = null").unwrap();
        assert!(q.fields.is_empty());
        let f = q.filter.unwrap();
        assert!(f.matches(&row(json!({"Id": "b'c", "Name": "x"}))));
        assert!(!f.matches(&row(json!({"Id": "a", "Name": null}))));
        assert!(!f.matches(&row(json!({"Id": "z", "Name": "x"}))));
    }

    #[test]
    fn malformed_queries_are_refused() {
        for q in [
            "SELECT FROM Account",
            "SELECT Id Account",
            "SELECT Id FROM Account WHERE",
            "SELECT Id FROM Account WHERE Name = 'open",
            "SELECT Id FROM Account LIMIT x",
            "SELECT FIELDS(ALL) FROM Account",
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
    }
}
