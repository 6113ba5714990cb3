//! `${VAR}` interpolation of every string in the config, from the environment, before the config is typed.
//! Secrets stay out of the file; a variable that is not set is reported with the key that named it.

use toml::Value;

/// A `${VAR}` that named a variable the environment does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unset {
    /// The dotted key whose value named it (`connection[0].access_token`).
    pub key: String,
    pub var: String,
}

/// Replaces `${VAR}` in every string of `value` with `lookup(VAR)`. A string naming a variable that `lookup`
/// does not have is removed from its table (so an optional key becomes unset) and reported in the result.
/// `$${` escapes a literal `${`.
pub fn interpolate(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Unset>, Vec<(String, String)>> {
    let mut unset = Vec::new();
    let mut errors = Vec::new();
    walk(value, String::new(), lookup, &mut unset, &mut errors);
    if errors.is_empty() { Ok(unset) } else { Err(errors) }
}

fn walk(
    value: &mut Value,
    path: String,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<Unset>,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        Value::Table(table) => {
            let mut remove = Vec::new();
            for (k, v) in table.iter_mut() {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Value::String(s) = v {
                    match substitute(s, lookup) {
                        Ok(Ok(new)) => *s = new,
                        Ok(Err(var)) => {
                            unset.push(Unset { key: child, var });
                            remove.push(k.clone());
                        }
                        Err(e) => errors.push((child, e)),
                    }
                } else {
                    walk(v, child, lookup, unset, errors);
                }
            }
            for k in remove {
                table.remove(&k);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let child = format!("{path}[{i}]");
                if let Value::String(s) = item {
                    match substitute(s, lookup) {
                        Ok(Ok(new)) => *s = new,
                        Ok(Err(var)) => errors.push((child, format!("environment variable {var} is not set"))),
                        Err(e) => errors.push((child, e)),
                    }
                } else {
                    walk(item, child, lookup, unset, errors);
                }
            }
        }
        _ => {}
    }
}

/// `Ok(Ok(text))` substituted, `Ok(Err(var))` names an unset variable, `Err` is a syntax error.
fn substitute(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Result<String, String>, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| "unterminated ${ in value".to_string())?;
            let var = &tail[..end];
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {var:?} in ${{...}}"));
            }
            match lookup(var) {
                Some(v) => out.push_str(&v),
                None => return Ok(Err(var.to_string())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("abc".into()),
            "HOST" => Some("db.local".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_substituted_everywhere() {
        let mut v: Value =
            toml::from_str("a = \"x${TOKEN}y\"\n[t]\nurl = \"postgres://${HOST}/db\"\nlist = [\"${TOKEN}\"]").unwrap();
        let unset = interpolate(&mut v, &env).unwrap();
        assert!(unset.is_empty());
        assert_eq!(v["a"].as_str(), Some("xabcy"));
        assert_eq!(v["t"]["url"].as_str(), Some("postgres://db.local/db"));
        assert_eq!(v["t"]["list"][0].as_str(), Some("abc"));
    }

    #[test]
    fn unset_variable_removes_the_key_and_names_it() {
        let mut v: Value = toml::from_str("[[connection]]\naccess_token = \"${NOPE}\"").unwrap();
        let unset = interpolate(&mut v, &env).unwrap();
        assert_eq!(
            unset,
            vec![Unset {
                key: "connection[0].access_token".into(),
                var: "NOPE".into()
            }]
        );
        assert!(v["connection"][0].get("access_token").is_none());
    }

    #[test]
    fn escaped_dollar_brace_is_literal() {
        let mut v: Value = toml::from_str("a = \"$${TOKEN} costs $5\"").unwrap();
        interpolate(&mut v, &env).unwrap();
        assert_eq!(v["a"].as_str(), Some("${TOKEN} costs $5"));
    }

    #[test]
    fn unterminated_reference_is_an_error_with_its_key() {
        let mut v: Value = toml::from_str("[http]\napi_token = \"${TOKEN\"").unwrap();
        let errors = interpolate(&mut v, &env).unwrap_err();
        assert_eq!(errors[0].0, "http.api_token");
    }
}
