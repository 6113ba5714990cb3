//! The table a benchmark prints: median and spread of each setting's runs, and the ratio of crmsyncd to the
//! ceilings measured in the same run.

use crate::latency::LatencyRun;
use crate::loadgen::Load;
use crate::many::ManyRun;
use crate::pull::PullRun;
use crate::quota::QuotaUse;

/// One setting's runs.
pub struct Row {
    pub db: String,
    pub connections: usize,
    pub target: &'static str,
    /// Requests per second of each run.
    pub rates: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub errors: u64,
}

impl Row {
    pub fn new(db: &str, connections: usize, target: &'static str, loads: &[Load]) -> Self {
        Self {
            db: db.to_string(),
            connections,
            target,
            rates: loads.iter().map(Load::rate).collect(),
            p50_ms: loads.iter().map(|l| l.percentile_ms(0.5)).collect(),
            p99_ms: loads.iter().map(|l| l.percentile_ms(0.99)).collect(),
            errors: loads.iter().map(|l| l.errors).sum(),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// A Markdown table of `rows`, with crmsyncd's median as a share of each ceiling's median of the same database and
/// connection count.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| db | conns | target | req/s median | req/s min–max | p50 ms | p99 ms | errors | share of ceiling |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let (lo, hi) = spread(&row.rates);
        let share = if row.target == "crmsyncd" {
            rows.iter()
                .filter(|r| r.db == row.db && r.connections == row.connections && r.target != "crmsyncd")
                .map(|c| format!("{:.0}% of {}", 100.0 * median(&row.rates) / median(&c.rates), c.target))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} | {} | {} |\n",
            row.db,
            row.connections,
            row.target,
            median(&row.rates),
            lo,
            hi,
            median(&row.p50_ms),
            median(&row.p99_ms),
            row.errors,
            share
        ));
    }
    out
}

/// A Markdown table of pull runs: per CRM and database, the medians and spreads of the daemon's rate and of its two
/// ceilings (the bare upsert, and the provider reading the simulator with nothing stored), the daemon's share of
/// each and of the lower one, its CPU and its peak memory.
pub fn pull_table(rows: &[(&str, String, Vec<PullRun>)]) -> String {
    let mut out = String::from(
        "| crm | db | records | runs | crmsyncd records/s median (min–max) | bare upsert rows/s median (min–max) | share of upsert | fetch only records/s median (min–max) | share of the lower ceiling | daemon CPU, % of a core | peak RSS MB (max) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (crm, db, runs) in rows {
        let daemon: Vec<f64> = runs.iter().map(|r| r.daemon_rate).collect();
        let ceiling: Vec<f64> = runs.iter().map(|r| r.ceiling_rate).collect();
        let fetch: Vec<f64> = runs.iter().map(|r| r.fetch_rate).collect();
        let shares: Vec<f64> = runs.iter().map(|r| 100.0 * r.daemon_rate / r.ceiling_rate).collect();
        let lower: Vec<f64> = runs
            .iter()
            .map(|r| 100.0 * r.daemon_rate / r.ceiling_rate.min(r.fetch_rate))
            .collect();
        let cpu: Vec<f64> = runs.iter().map(|r| 100.0 * r.daemon_cpu / r.elapsed).collect();
        let (dlo, dhi) = spread(&daemon);
        let (clo, chi) = spread(&ceiling);
        let (flo, fhi) = spread(&fetch);
        out.push_str(&format!(
            "| {crm} | {db} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.0}% | {:.0} ({:.0}–{:.0}) | {:.0}% | {:.0}% | {:.1} |\n",
            runs.first().map(|r| r.records).unwrap_or(0),
            runs.len(),
            median(&daemon),
            dlo,
            dhi,
            median(&ceiling),
            clo,
            chi,
            median(&shares),
            median(&fetch),
            flo,
            fhi,
            median(&lower),
            median(&cpu),
            runs.iter().map(|r| r.peak_rss).max().unwrap_or(0) as f64 / 1e6,
        ));
    }
    out
}

/// A Markdown table of quota runs: per database and limit, the median share of the limit used (and its spread),
/// the 429s and the busiest window over all runs.
pub fn quota_table(runs: &[(String, Vec<QuotaUse>)]) -> String {
    let mut out = String::from(
        "| db | limit | runs | share used median | share min–max | 429s | busiest window / limit |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for (db, figures) in runs {
        for f in figures {
            if !keys.contains(&(db.as_str(), f.name)) {
                keys.push((db.as_str(), f.name));
            }
        }
    }
    for (db, name) in keys {
        let figures: Vec<&QuotaUse> = runs
            .iter()
            .filter(|(d, _)| d == db)
            .flat_map(|(_, fs)| fs.iter().filter(|f| f.name == name))
            .collect();
        let shares: Vec<f64> = figures.iter().map(|f| 100.0 * f.share()).collect();
        let (lo, hi) = spread(&shares);
        out.push_str(&format!(
            "| {db} | {name} | {} | {:.1}% | {:.1}–{:.1}% | {} | {} / {} |\n",
            figures.len(),
            median(&shares),
            lo,
            hi,
            figures.iter().map(|f| f.refused).sum::<usize>(),
            figures.iter().map(|f| f.busiest_window).max().unwrap_or(0),
            figures.first().map(|f| f.limit).unwrap_or(0),
        ));
    }
    out
}

/// A Markdown table of latency runs: per database, the medians (and the p99's spread) of visible − 200, the
/// same from the scheduled send, the bare `apply_page` ceiling and the ratio of the p99s, with every error and
/// unseen event of all runs.
pub fn latency_table(rate: u32, rows: &[(String, Vec<LatencyRun>)]) -> String {
    let mut out = String::from(
        "| db | rate | runs | sent/s median | after 200 p50 ms | p90 ms | p99 ms median (min–max) | max ms | after schedule p99 ms | ceiling p50 ms | ceiling p99 ms | p99 / ceiling p99 | errors | unseen | observer poll ms | batch reads per webhook | batch read mean ms |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let ms = LatencyRun::ms;
    for (db, runs) in rows {
        let of = |f: &dyn Fn(&LatencyRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let p99 = of(&|r| ms(&r.after_answer, 0.99));
        let ceiling_p99 = of(&|r| ms(&r.ceiling, 0.99));
        let ratios = of(&|r| ms(&r.after_answer, 0.99) / ms(&r.ceiling, 0.99));
        let (lo, hi) = spread(&p99);
        out.push_str(&format!(
            "| {db} | {rate}/s | {} | {:.0} | {:.2} | {:.2} | {:.2} ({:.2}–{:.2}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}× | {} | {} | {:.2} | {:.3} | {:.2} |\n",
            runs.len(),
            median(&of(&|r| r.send_rate)),
            median(&of(&|r| ms(&r.after_answer, 0.5))),
            median(&of(&|r| ms(&r.after_answer, 0.9))),
            median(&p99),
            lo,
            hi,
            median(&of(&|r| ms(&r.after_answer, 1.0))),
            median(&of(&|r| ms(&r.after_schedule, 0.99))),
            median(&of(&|r| ms(&r.ceiling, 0.5))),
            median(&ceiling_p99),
            median(&ratios),
            runs.iter().map(|r| r.errors).sum::<u64>(),
            runs.iter().map(|r| r.unseen + r.ceiling_unseen).sum::<u64>(),
            median(&of(&|r| r.poll_period_ms)),
            median(&of(&|r| r.reads_per_webhook)),
            median(&of(&|r| r.fetch_mean_ms)),
        ));
    }
    out
}

/// A Markdown table of many-connection runs: per connection count, the medians (and min–max) of each figure, and
/// the bare ractor+governor actor measured in the same process.
pub fn many_table(rows: &[(String, f64, Vec<ManyRun>)]) -> String {
    let mut out = String::from(
        "| db | conns | runs | all actors up s | RSS MB after window | RSS MB peak | bytes/conn over empty daemon | bare actor bytes | idle CPU % of a core | scrape ms median (max) | series/conn | body MB |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let fmt = |values: Vec<f64>, scale: f64, digits: usize| {
        let (lo, hi) = spread(&values);
        format!(
            "{:.*} ({:.*}–{:.*})",
            digits,
            median(&values) / scale,
            digits,
            lo / scale,
            digits,
            hi / scale
        )
    };
    for (db, bare, runs) in rows {
        let all_scrapes: Vec<f64> = runs.iter().flat_map(|r| r.scrape_ms.iter().copied()).collect();
        out.push_str(&format!(
            "| {db} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.1} ({:.1}) | {:.2} | {:.1} |\n",
            runs.first().map(|r| r.connections).unwrap_or(0),
            runs.len(),
            fmt(runs.iter().map(|r| r.startup.as_secs_f64()).collect(), 1.0, 2),
            fmt(runs.iter().map(|r| r.rss_after_window as f64).collect(), 1e6, 1),
            fmt(runs.iter().map(|r| r.peak_rss as f64).collect(), 1e6, 1),
            fmt(runs.iter().map(ManyRun::bytes_per_connection).collect(), 1.0, 0),
            bare,
            fmt(runs.iter().map(|r| r.cpu_percent).collect(), 1.0, 2),
            median(&all_scrapes),
            all_scrapes.iter().copied().fold(0.0, f64::max),
            median(&runs.iter().map(|r| r.series_per_connection).collect::<Vec<_>>()),
            median(&runs.iter().map(|r| r.body_bytes as f64).collect::<Vec<_>>()) / 1e6,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
