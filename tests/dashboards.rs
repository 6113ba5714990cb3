//! The Grafana dashboard and the Prometheus alert rules query only metrics the daemon exports, panels follow the
//! dashboard's connection picker, and every alert tells the on-call engineer how bad it is and what to do.

use crmsyncd::metrics::names::ALL;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../dashboards/crmsyncd.json");
const ALERTS: &str = include_str!("../dashboards/alerts.yml");
const ALERTS_TEST: &str = include_str!("../dashboards/alerts_test.yml");

/// Histogram families: queried as `<name>_bucket`, `<name>_sum` or `<name>_count`, never bare.
const HISTOGRAMS: &[&str] = &["crmsyncd_crm_request_duration_seconds"];
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Families without a `connection` label; every other family has one.
const WITHOUT_CONNECTION_LABEL: &[&str] = &[
    "crmsyncd_build_info",
    "crmsyncd_connection_actors",
    // Per provider and operation, so series stay bounded at thousands of connections.
    "crmsyncd_crm_request_duration_seconds",
];

/// The matcher every dashboard selector of a family with a `connection` label must carry.
const CONNECTION_MATCHER: &str = r#"connection=~"$connection""#;

/// One metric selector in a PromQL expression: `name` or `name{matchers}`.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    /// What stands between the braces, if there are braces.
    matchers: Option<String>,
}

/// Every selector of a `crmsyncd_` metric in `expr`. A small lexer rather than a regex: it skips string literals
/// and comments, so a label value or a legend that mentions a metric is not mistaken for a query of it.
fn crmsyncd_selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if !name.starts_with("crmsyncd_") {
                continue;
            }
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let matchers = if j < chars.len() && chars[j] == '{' {
                let open = j;
                j += 1;
                while j < chars.len() && chars[j] != '}' {
                    j = if matches!(chars[j], '"' | '\'' | '`') {
                        skip_string(&chars, j)
                    } else {
                        j + 1
                    };
                }
                i = (j + 1).min(chars.len());
                Some(chars[open + 1..j.min(chars.len())].iter().collect())
            } else {
                None
            };
            out.push(Selector { name, matchers });
        } else if c.is_ascii_digit() {
            // A number or a duration (`0.99`, `1e3`, `5m`): its letters must not start an identifier.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_')) {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The index just past the string literal that opens at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The metric family a series name belongs to (`x_bucket` of a histogram `x` is `x`).
fn family(name: &str) -> &str {
    for histogram in HISTOGRAMS {
        if let Some(suffix) = name.strip_prefix(histogram)
            && HISTOGRAM_SUFFIXES.contains(&suffix)
        {
            return histogram;
        }
    }
    name
}

/// Why `name` is not a series the daemon exports, if it is not.
fn unexported(name: &str) -> Option<String> {
    if HISTOGRAMS.contains(&name) {
        return Some(format!("{name} is a histogram: query {name}_bucket, _sum or _count"));
    }
    let family = family(name);
    (!ALL.contains(&family)).then(|| format!("{name} is not in crmsyncd::metrics::names::ALL"))
}

fn has_connection_label(family: &str) -> bool {
    !WITHOUT_CONNECTION_LABEL.contains(&family)
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("dashboards/crmsyncd.json is valid JSON")
}

fn yaml(text: &str, file: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(panel title, expr)` for every query of every panel.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("<untitled>").to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_string())))
        })
        .collect()
}

/// `(variable name, query)` for every query variable (Grafana stores the query as a string or an object).
fn variable_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("<unnamed>").to_string();
        for query in [&var["query"], &var["query"]["query"], &var["definition"]] {
            if let Some(q) = query.as_str() {
                out.push((name.clone(), q.to_string()));
            }
        }
    }
    out
}

/// Every alerting rule of every group.
fn alert_rules(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_array()
        .expect("alerts.yml has a list of groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("every group has a list of rules"))
        .filter(|r| r.get("alert").is_some())
        .collect()
}

/// Problems with the metric names of `(where, expr)` pairs: unexported names, and expressions that query no
/// crmsyncd metric at all (a typo in the prefix would otherwise pass unnoticed).
fn name_problems(queries: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, expr) in queries {
        let selectors = crmsyncd_selectors(expr);
        if selectors.is_empty() {
            problems.push(format!("{place}: queries no crmsyncd_ metric: {expr}"));
        }
        for s in selectors {
            if let Some(why) = unexported(&s.name) {
                problems.push(format!("{place}: {why}"));
            }
        }
    }
    problems
}

#[test]
fn every_metric_in_the_dashboard_is_exported() {
    let dashboard = dashboard();
    let mut queries = panel_queries(&dashboard);
    assert!(!queries.is_empty(), "the dashboard has no panel queries");
    queries.extend(variable_queries(&dashboard));

    let problems = name_problems(&queries);

    assert!(
        problems.is_empty(),
        "dashboard queries unknown metrics:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_metric_in_the_alert_rules_is_exported() {
    let rules = yaml(ALERTS, "alerts.yml");
    let queries: Vec<(String, String)> = alert_rules(&rules)
        .into_iter()
        .map(|r| {
            let name = r["alert"].as_str().unwrap_or("<unnamed>").to_string();
            (name, r["expr"].as_str().expect("every rule has an expr").to_string())
        })
        .collect();
    assert!(!queries.is_empty(), "alerts.yml has no alerting rules");

    let problems = name_problems(&queries);

    assert!(
        problems.is_empty(),
        "alert rules query unknown metrics:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_series_in_the_alert_tests_is_exported() {
    let tests = yaml(ALERTS_TEST, "alerts_test.yml");
    let mut problems = Vec::new();
    for test in tests["tests"].as_array().expect("alerts_test.yml has a list of tests") {
        for input in test["input_series"].as_array().into_iter().flatten() {
            let series = input["series"].as_str().expect("every input series has a name");
            for s in crmsyncd_selectors(series) {
                if let Some(why) = unexported(&s.name) {
                    problems.push(format!("{}: {why}", test["name"].as_str().unwrap_or("<unnamed test>")));
                }
            }
        }
    }

    assert!(
        problems.is_empty(),
        "alert tests feed series the daemon never exports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_exported_metric_appears_on_the_dashboard() {
    let dashboard = dashboard();
    let used: Vec<String> = panel_queries(&dashboard)
        .iter()
        .flat_map(|(_, expr)| crmsyncd_selectors(expr))
        .map(|s| family(&s.name).to_string())
        .collect();

    let missing: Vec<&&str> = ALL.iter().filter(|name| !used.iter().any(|u| u == **name)).collect();

    assert!(missing.is_empty(), "exported but on no panel (add one): {missing:?}");
}

#[test]
fn every_panel_query_follows_the_connection_picker() {
    let dashboard = dashboard();
    let mut problems = Vec::new();

    for (title, expr) in panel_queries(&dashboard) {
        for s in crmsyncd_selectors(&expr) {
            if !has_connection_label(family(&s.name)) {
                continue;
            }
            let matchers: String = s.matchers.unwrap_or_default().split_whitespace().collect();
            if !matchers.split(',').any(|m| m == CONNECTION_MATCHER) {
                problems.push(format!("{title}: {} lacks {CONNECTION_MATCHER}", s.name));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "panel queries ignore $connection:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_panel_uses_the_datasource_variable_and_explains_itself() {
    let dashboard = dashboard();
    let mut problems = Vec::new();

    for panel in panels(&dashboard).into_iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        if panel["description"].as_str().is_none_or(|d| d.trim().is_empty()) {
            problems.push(format!("{title}: no description saying what a bad value means"));
        }
        let mut datasources = vec![&panel["datasource"]];
        datasources.extend(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        );
        if datasources.iter().any(|d| d["uid"] != "${datasource}") {
            problems.push(format!("{title}: datasource is not ${{datasource}}"));
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description() {
    let rules = yaml(ALERTS, "alerts.yml");
    let mut problems = Vec::new();

    for rule in alert_rules(&rules) {
        let name = rule["alert"].as_str().unwrap_or("<unnamed>");
        if !matches!(rule["labels"]["severity"].as_str(), Some("critical" | "warning")) {
            problems.push(format!("{name}: severity label must be critical or warning"));
        }
        for annotation in ["summary", "description"] {
            if rule["annotations"][annotation]
                .as_str()
                .is_none_or(|a| a.trim().is_empty())
            {
                problems.push(format!("{name}: no {annotation} annotation"));
            }
        }
        // `$connection` belongs to Grafana; Prometheus would match it literally and never fire.
        if rule["expr"].as_str().is_some_and(|e| e.contains('$')) {
            problems.push(format!("{name}: expr contains a Grafana variable"));
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn selector_lexer_finds_metrics_but_not_mentions_in_strings() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(crmsyncd_crm_request_duration_seconds_bucket{connection=~"$connection", x="crmsyncd_nope"}[5m])))
        / crmsyncd_build_info # crmsyncd_in_a_comment
        + on (connection) crmsyncd_outbox_dead {connection=~"$connection"}"#;

    let found = crmsyncd_selectors(expr);

    assert_eq!(
        found,
        vec![
            Selector {
                name: "crmsyncd_crm_request_duration_seconds_bucket".into(),
                matchers: Some(r#"connection=~"$connection", x="crmsyncd_nope""#.into()),
            },
            Selector {
                name: "crmsyncd_build_info".into(),
                matchers: None
            },
            Selector {
                name: "crmsyncd_outbox_dead".into(),
                matchers: Some(r#"connection=~"$connection""#.into())
            },
        ]
    );
    assert_eq!(
        family("crmsyncd_crm_request_duration_seconds_bucket"),
        "crmsyncd_crm_request_duration_seconds"
    );
    assert!(
        unexported("crmsyncd_crm_request_duration_seconds").is_some(),
        "a bare histogram has no series"
    );
    assert!(
        unexported("crmsyncd_records_synced_total_bucket").is_some(),
        "only histograms have buckets"
    );
}
