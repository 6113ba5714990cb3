//! Smoke runs of every benchmark scenario, a second or two each, so CI keeps the harness compiling and working.
//! They check that each scenario runs to its report with sane figures, not how fast anything is: the figures
//! themselves belong in docs/BENCHMARKS.md, measured with the release build.

use std::path::PathBuf;
use std::process::Command;

fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_crmsyncd-bench"))
        .args(args)
        .output()
        .expect("crmsyncd-bench starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "crmsyncd-bench {args:?} failed:\n{stderr}");
    String::from_utf8(output.stdout).expect("the report is UTF-8")
}

/// The table's rows (lines starting with `|` after the header and its rule).
fn rows(report: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The debug daemon the pull scenario starts, beside the bench binary; built here when this package is tested alone.
fn ensure_daemon_binary() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_crmsyncd-bench"));
    if bench.with_file_name("crmsyncd").exists() {
        return;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--bin", "crmsyncd", "-p", "crmsyncd"])
        .status()
        .expect("cargo starts");
    assert!(status.success(), "cargo build --bin crmsyncd failed");
}

#[test]
fn the_ingest_benchmark_reports_every_target_with_no_errors() {
    let report = bench(&[
        "ingest",
        "--db",
        "sqlite",
        "--connections",
        "8",
        "--runs",
        "1",
        "--seconds",
        "1",
        "--warmup",
        "0",
    ]);
    let rows = rows(&report);
    let targets: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(targets, ["raw hyper 200", "bare group commit", "crmsyncd"], "{report}");
    for row in &rows {
        let rate: f64 = row[3].parse().unwrap_or_else(|_| panic!("a rate in {row:?}"));
        assert!(rate > 0.0, "{report}");
        assert_eq!(row[7], "0", "no request may fail: {report}");
    }
    assert!(rows[2][8].contains("% of bare group commit"), "{report}");
}

#[test]
fn the_pull_benchmark_stores_every_record_and_measures_its_ceiling() {
    ensure_daemon_binary();
    let report = bench(&[
        "pull",
        "--crm",
        "hubspot,odoo",
        "--db",
        "sqlite",
        "--records",
        "2000",
        "--runs",
        "1",
    ]);
    let rows = rows(&report);
    assert_eq!(rows.len(), 2, "{report}");
    for row in &rows {
        assert!(
            row.iter().any(|c| c.ends_with('%')),
            "a share of the ceiling in {row:?}"
        );
    }
}

#[test]
fn the_quota_benchmark_keeps_every_limit() {
    let report = bench(&[
        "quota",
        "--db",
        "sqlite",
        "--runs",
        "1",
        "--seconds",
        "3",
        "--warmup",
        "1",
    ]);
    let rows = rows(&report);
    assert_eq!(rows.len(), 2, "the shared HubSpot limit and Odoo's own: {report}");
    for row in &rows {
        assert_eq!(row[5], "0", "no 429s: {report}");
        let (busiest, limit) = row[6].split_once(" / ").expect("busiest / limit");
        let busiest: u32 = busiest.parse().expect("a count");
        let limit: u32 = limit.parse().expect("a limit");
        assert!(busiest > 0 && busiest <= limit, "no window over the limit: {report}");
    }
}

#[test]
fn the_latency_benchmark_sees_every_answered_webhook_become_a_record() {
    ensure_daemon_binary();
    let report = bench(&[
        "latency",
        "--db",
        "sqlite",
        "--rate",
        "100",
        "--seconds",
        "1",
        "--warmup",
        "0",
        "--runs",
        "1",
    ]);
    let rows = rows(&report);
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    let number = |column: usize| -> f64 {
        let cell = row[column].split_whitespace().next().unwrap_or_default();
        cell.trim_end_matches('×')
            .parse()
            .unwrap_or_else(|_| panic!("a number in column {column} of {row:?}"))
    };
    assert!(number(3) > 0.0, "webhooks were sent: {report}");
    let (p50, p90, p99, max) = (number(4), number(5), number(6), number(7));
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "ordered percentiles: {report}"
    );
    assert!(number(10) > 0.0, "the ceiling was measured: {report}");
    assert_eq!(row[12], "0", "every webhook answered 200: {report}");
    assert_eq!(row[13], "0", "every answered change became visible: {report}");
    assert!(
        number(15) > 0.0,
        "the daemon read the records the events named: {report}"
    );
}

#[test]
fn the_many_connections_benchmark_starts_every_actor_and_keeps_series_per_connection_bounded() {
    ensure_daemon_binary();
    let report = bench(&[
        "many",
        "--connections",
        "200",
        "--db",
        "sqlite",
        "--runs",
        "1",
        "--poll-interval",
        "2",
        "--window",
        "2",
        "--scrapes",
        "2",
    ]);
    let rows = rows(&report);
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    let first = |cell: &str| -> f64 {
        cell.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a number in {cell:?}: {report}"))
    };
    assert_eq!(row[1], "200", "{report}");
    let startup = first(&row[3]);
    assert!(startup > 0.0 && startup < 120.0, "all 200 actors up: {report}");
    assert!(first(&row[4]) > 1.0, "the daemon's RSS: {report}");
    assert!(first(&row[7]) > 0.0, "the bare actors' size: {report}");
    let cpu = first(&row[8]);
    assert!((0.0..=400.0).contains(&cpu), "CPU share: {report}");
    let series: f64 = row[10].parse().unwrap_or_else(|_| panic!("series/conn in {report}"));
    // One object each: at least the always-present series, never more than the bound.
    assert!(series >= 12.0, "{report}");
    assert!(series <= crmsyncd::metrics::max_series(1) as f64, "{report}");
}
