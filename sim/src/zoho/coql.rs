//! The part of COQL (Zoho's SQL-like query language, `POST /crm/v8/coql`) a sync client uses: `select` columns
//! `from` a module, a `where` of comparisons joined by `and`/`or` in brackets, `order by` several fields, `limit`
//! and `offset`. Datetimes in criteria carry an offset and compare as instants; `id` compares as a number.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::time::parse_time;

/// Most rows one query may return (Zoho: 2,000).
pub const MAX_LIMIT: u32 = 2_000;
/// How far `offset + limit` may reach (Zoho: 100,000): keyset paging, not offsets, reads more.
pub const MAX_REACH: u32 = 100_000;
/// Most columns a `select` may name (Zoho: 50).
pub const MAX_COLUMNS: usize = 50;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub columns: Vec<String>,
    pub module: String,
    pub filter: Option<Expr>,
    /// (field, ascending).
    pub order: Vec<(String, bool)>,
    pub limit: u32,
    pub offset: u32,
}

impl Query {
    /// API credits the query costs (Zoho charges COQL by its LIMIT).
    pub fn credits(&self) -> u32 {
        match self.limit {
            0..=200 => 1,
            201..=1000 => 2,
            _ => 3,
        }
    }
}

/// A `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp {
        field: String,
        op: Op,
        value: Literal,
    },
    IsNull {
        field: String,
        negated: bool,
    },
    In {
        field: String,
        values: Vec<Literal>,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    /// A number as written: ids have 19 digits, more than an f64 holds exactly.
    Num(String),
    Bool(bool),
}

/// Why a query was refused: Zoho's error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub code: &'static str,
    pub message: String,
}

fn syntax(message: impl Into<String>) -> QueryError {
    QueryError {
        code: "SYNTAX_ERROR",
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> QueryError {
    QueryError {
        code: "INVALID_QUERY",
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(syntax("unterminated string")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        s.push(*other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Str(s));
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token::Num(
                text.parse().map_err(|_| syntax(format!("bad number {text}")))?,
            ));
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '$')) {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                ">=" => Some(">="),
                "<=" => Some("<="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(sym) = sym {
                tokens.push(Token::Sym(sym));
                i += 2;
                continue;
            }
            let sym = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '=' => "=",
                '>' => ">",
                '<' => "<",
                '*' => "*",
                other => return Err(syntax(format!("unexpected character {other:?}"))),
            };
            tokens.push(Token::Sym(sym));
            i += 1;
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
        match self.peek() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), QueryError> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(syntax(format!("expected {word}")))
        }
    }

    fn symbol(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(s)) if *s == sym) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn identifier(&mut self) -> Result<String, QueryError> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            other => Err(syntax(format!("expected a field name, found {other:?}"))),
        }
    }

    fn number(&mut self) -> Result<u32, QueryError> {
        match self.next() {
            Some(Token::Num(n)) => n
                .parse()
                .map_err(|_| syntax(format!("expected a whole number, found {n}"))),
            other => Err(syntax(format!("expected a whole number, found {other:?}"))),
        }
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Num(n)) => Ok(Literal::Num(n)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            other => Err(syntax(format!("expected a value, found {other:?}"))),
        }
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.conjunction()?;
        while self.keyword("or") {
            let right = self.conjunction()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.term()?;
        while self.keyword("and") {
            let right = self.term()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, QueryError> {
        if self.symbol("(") {
            let inner = self.expr()?;
            if !self.symbol(")") {
                return Err(syntax("expected )"));
            }
            return Ok(inner);
        }
        let field = self.identifier()?;
        if self.keyword("is") {
            let negated = self.keyword("not");
            self.expect_keyword("null")?;
            return Ok(Expr::IsNull { field, negated });
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            if !self.symbol("(") {
                return Err(syntax("expected ( after in"));
            }
            let mut values = vec![self.literal()?];
            while self.symbol(",") {
                values.push(self.literal()?);
            }
            if !self.symbol(")") {
                return Err(syntax("expected )"));
            }
            return Ok(Expr::In { field, values, negated });
        }
        if self.keyword("like") {
            let op = if negated { Op::NotLike } else { Op::Like };
            return Ok(Expr::Cmp {
                field,
                op,
                value: self.literal()?,
            });
        }
        if negated {
            return Err(syntax("expected in or like after not"));
        }
        let op = match self.next() {
            Some(Token::Sym("=")) => Op::Eq,
            Some(Token::Sym("!=")) => Op::Ne,
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            other => return Err(syntax(format!("expected a comparator, found {other:?}"))),
        };
        Ok(Expr::Cmp {
            field,
            op,
            value: self.literal()?,
        })
    }
}

/// Parses a `select_query`.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let mut p = Parser {
        tokens: tokenize(text)?,
        at: 0,
    };
    p.expect_keyword("select")?;
    if p.symbol("*") {
        return Err(invalid("select * is not supported; name the columns"));
    }
    let mut columns = vec![p.identifier()?];
    while p.symbol(",") {
        columns.push(p.identifier()?);
    }
    if columns.len() > MAX_COLUMNS {
        return Err(QueryError {
            code: "LIMIT_EXCEEDED",
            message: format!("at most {MAX_COLUMNS} columns may be selected"),
        });
    }
    p.expect_keyword("from")?;
    let module = p.identifier()?;
    let filter = if p.keyword("where") { Some(p.expr()?) } else { None };
    let mut order = Vec::new();
    if p.keyword("order") {
        p.expect_keyword("by")?;
        loop {
            let field = p.identifier()?;
            let ascending = if p.keyword("desc") {
                false
            } else {
                p.keyword("asc");
                true
            };
            if order
                .iter()
                .any(|(f, _): &(String, bool)| f.eq_ignore_ascii_case(&field))
            {
                return Err(QueryError {
                    code: "DUPLICATE_DATA",
                    message: format!("{field} appears twice in order by"),
                });
            }
            order.push((field, ascending));
            if !p.symbol(",") {
                break;
            }
        }
    }
    let mut limit = 200;
    let mut offset = 0;
    if p.keyword("limit") {
        let first = p.number()?;
        if p.symbol(",") {
            // `limit offset, count`, as in MySQL.
            offset = first;
            limit = p.number()?;
        } else {
            limit = first;
        }
    }
    if p.keyword("offset") {
        offset = p.number()?;
    }
    if let Some(extra) = p.peek() {
        return Err(syntax(format!("unexpected {extra:?} at the end of the query")));
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError {
            code: "LIMIT_EXCEEDED",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    if offset.saturating_add(limit) > MAX_REACH {
        return Err(QueryError {
            code: "LIMIT_EXCEEDED",
            message: format!("offset + limit must not exceed {MAX_REACH}"),
        });
    }
    Ok(Query {
        columns,
        module,
        filter,
        order,
        limit,
        offset,
    })
}

/// One field's value in a form that compares the way Zoho compares it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Id(u64),
    Time(DateTime<Utc>),
    Num(f64),
    Str(String),
    Bool(bool),
}

impl Cell {
    /// Orders two cells of one column; null sorts first.
    pub fn order(&self, other: &Cell) -> Ordering {
        match (self, other) {
            (Cell::Null, Cell::Null) => Ordering::Equal,
            (Cell::Null, _) => Ordering::Less,
            (_, Cell::Null) => Ordering::Greater,
            _ => self.partial_cmp_cell(other).unwrap_or(Ordering::Equal),
        }
    }

    fn partial_cmp_cell(&self, other: &Cell) -> Option<Ordering> {
        match (self, other) {
            (Cell::Id(a), Cell::Id(b)) => Some(a.cmp(b)),
            (Cell::Time(a), Cell::Time(b)) => Some(a.cmp(b)),
            (Cell::Num(a), Cell::Num(b)) => a.partial_cmp(b),
            (Cell::Str(a), Cell::Str(b)) => Some(a.cmp(b)),
            (Cell::Bool(a), Cell::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A JSON field value as a cell.
    pub fn from_json(value: Option<&Value>) -> Cell {
        match value {
            None | Some(Value::Null) => Cell::Null,
            Some(Value::String(s)) => Cell::Str(s.clone()),
            Some(Value::Number(n)) => n.as_f64().map_or(Cell::Null, Cell::Num),
            Some(Value::Bool(b)) => Cell::Bool(*b),
            Some(other) => Cell::Str(other.to_string()),
        }
    }
}

/// A literal as a cell of the same kind as `like`, or an error when it cannot be one (a datetime criterion that
/// is not a datetime).
fn literal_as(like: &Cell, field: &str, literal: &Literal) -> Result<Cell, QueryError> {
    Ok(match (like, literal) {
        (Cell::Id(_), Literal::Num(s) | Literal::Str(s)) => Cell::Id(
            s.parse()
                .map_err(|_| invalid(format!("{field} takes a record id, not {s:?}")))?,
        ),
        (Cell::Time(_), Literal::Str(s)) => Cell::Time(
            parse_time(s).ok_or_else(|| invalid(format!("{field} takes a datetime with an offset, not {s:?}")))?,
        ),
        (Cell::Time(_), _) => return Err(invalid(format!("{field} takes a datetime in quotes"))),
        (_, Literal::Str(s)) => Cell::Str(s.clone()),
        (_, Literal::Num(n)) => Cell::Num(n.parse().map_err(|_| invalid(format!("{n} is not a number")))?),
        (_, Literal::Bool(b)) => Cell::Bool(*b),
    })
}

fn like(value: &str, pattern: &str) -> bool {
    match (pattern.strip_prefix('%'), pattern.strip_suffix('%')) {
        (Some(rest), _) if rest.ends_with('%') => value.contains(&rest[..rest.len() - 1]),
        (Some(rest), _) => value.ends_with(rest),
        (None, Some(rest)) => value.starts_with(rest),
        (None, None) => value == pattern,
    }
}

/// Whether a record, whose fields `cell` reads, matches `expr`.
pub fn matches(expr: &Expr, cell: &dyn Fn(&str) -> Cell) -> Result<bool, QueryError> {
    Ok(match expr {
        Expr::And(a, b) => matches(a, cell)? && matches(b, cell)?,
        Expr::Or(a, b) => matches(a, cell)? || matches(b, cell)?,
        Expr::IsNull { field, negated } => (cell(field) == Cell::Null) != *negated,
        Expr::In { field, values, negated } => {
            let value = cell(field);
            let mut found = false;
            for literal in values {
                if value != Cell::Null && literal_as(&value, field, literal)? == value {
                    found = true;
                }
            }
            found != *negated
        }
        Expr::Cmp {
            field,
            op,
            value: literal,
        } => {
            let value = cell(field);
            if value == Cell::Null {
                return Ok(false);
            }
            let wanted = literal_as(&value, field, literal)?;
            match op {
                Op::Like | Op::NotLike => {
                    let (Cell::Str(v), Cell::Str(p)) = (&value, &wanted) else {
                        return Err(invalid(format!("like needs a text field and a text pattern ({field})")));
                    };
                    like(v, p) == (*op == Op::Like)
                }
                _ => {
                    let Some(ordering) = value.partial_cmp_cell(&wanted) else {
                        return Ok(false);
                    };
                    match op {
                        Op::Eq => ordering == Ordering::Equal,
                        Op::Ne => ordering != Ordering::Equal,
                        Op::Gt => ordering == Ordering::Greater,
                        Op::Ge => ordering != Ordering::Less,
                        Op::Lt => ordering == Ordering::Less,
                        Op::Le => ordering != Ordering::Greater,
                        Op::Like | Op::NotLike => unreachable!("handled above"),
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyset_query_parses_with_brackets_order_and_limit() {
        let q = parse(
            "select Last_Name, Email, Modified_Time from Leads where ((Modified_Time > '2024-01-01T00:00:00+00:00') \
             or ((Modified_Time = '2024-01-01T00:00:00+00:00') and (id > 5725767000000100001))) \
             order by Modified_Time asc, id asc limit 200",
        )
        .unwrap();
        assert_eq!(q.module, "Leads");
        assert_eq!(q.columns, ["Last_Name", "Email", "Modified_Time"]);
        assert_eq!(q.order, [("Modified_Time".to_string(), true), ("id".to_string(), true)]);
        assert_eq!((q.limit, q.offset, q.credits()), (200, 0, 1));
        assert!(matches!(q.filter, Some(Expr::Or(..))));
    }

    #[test]
    fn limits_and_bad_syntax_are_refused_with_zohos_codes() {
        assert_eq!(
            parse("select id from Leads limit 2001").unwrap_err().code,
            "LIMIT_EXCEEDED"
        );
        assert_eq!(
            parse("select id from Leads limit 1000 offset 99500").unwrap_err().code,
            "LIMIT_EXCEEDED"
        );
        assert_eq!(parse("select id from Leads where").unwrap_err().code, "SYNTAX_ERROR");
        assert_eq!(parse("select * from Leads").unwrap_err().code, "INVALID_QUERY");
        assert_eq!(
            parse("select id from Leads order by id, id").unwrap_err().code,
            "DUPLICATE_DATA"
        );
        assert_eq!(parse("select id from Leads limit 1500").unwrap().credits(), 3);
        assert_eq!(parse("select id from Leads limit 10, 20").unwrap().offset, 10);
    }

    #[test]
    fn datetimes_compare_as_instants_whatever_their_offset() {
        let q = parse("select id from Leads where Modified_Time >= '2024-01-01T05:30:00+05:30'").unwrap();
        let at = parse_time("2024-01-01T00:00:00Z").unwrap();
        let cell = |f: &str| match f {
            "Modified_Time" => Cell::Time(at),
            _ => Cell::Null,
        };
        assert!(matches(q.filter.as_ref().unwrap(), &cell).unwrap());
        let bad = parse("select id from Leads where Modified_Time > 'yesterday'").unwrap();
        assert_eq!(
            matches(bad.filter.as_ref().unwrap(), &cell).unwrap_err().code,
            "INVALID_QUERY"
        );
    }

    #[test]
    fn ids_compare_exactly_even_beyond_f64_precision() {
        let q = parse("select id from Leads where id > 5725767000000100001").unwrap();
        let next = |f: &str| {
            if f == "id" {
                Cell::Id(5_725_767_000_000_100_002)
            } else {
                Cell::Null
            }
        };
        let same = |f: &str| {
            if f == "id" {
                Cell::Id(5_725_767_000_000_100_001)
            } else {
                Cell::Null
            }
        };
        assert!(matches(q.filter.as_ref().unwrap(), &next).unwrap());
        assert!(!matches(q.filter.as_ref().unwrap(), &same).unwrap());
    }

    #[test]
    fn ids_compare_as_numbers_and_like_matches_patterns() {
        let q = parse("select id from Leads where id > 99 and Email like '%@example.com'").unwrap();
        let cell = |f: &str| match f {
            "id" => Cell::Id(100),
            "Email" => Cell::Str("a@example.com".into()),
            _ => Cell::Null,
        };
        assert!(matches(q.filter.as_ref().unwrap(), &cell).unwrap());
        let q = parse("select id from Leads where Phone is null and id not in (1, 2)").unwrap();
        assert!(matches(q.filter.as_ref().unwrap(), &cell).unwrap());
    }
}
