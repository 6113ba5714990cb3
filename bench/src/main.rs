//! `crmsyncd-bench`: benchmark scenarios, each measured beside the ceilings of the machine it runs on, in the
//! same run, so the ratio holds on a noisy machine. See `docs/BENCHMARKS.md`.
//!
//! `cargo run --release -p crmsyncd-bench -- ingest --db sqlite,postgres --connections 64,256 --runs 3`

mod ceiling;
mod db;
mod ingest;
mod loadgen;
mod many;
mod pull;
mod quota;
mod report;

use std::time::Duration;

use clap::{Parser, Subcommand};

use db::Db;
use ingest::{Setting, Target};

#[derive(Parser)]
#[command(name = "crmsyncd-bench", about = "crmsyncd against the ceilings of this machine.")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Webhook ingest: signed HubSpot webhooks, each answered once committed, against the raw-HTTP and
    /// group-commit ceilings.
    Ingest {
        /// Databases, separated by commas: sqlite, postgres (TCP), postgres-socket (the Unix socket).
        #[arg(long, default_value = "sqlite,postgres", value_delimiter = ',')]
        db: Vec<String>,
        /// Concurrent client connections, one measurement per value.
        #[arg(long, default_value = "64,256", value_delimiter = ',')]
        connections: Vec<usize>,
        /// Runs per setting (the report gives the median and the spread).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds measured per run, after a warm-up of `--warmup` seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        warmup: u64,
    },
    /// Pull throughput: one connection syncing `--records` records from the HubSpot or Odoo simulator with its
    /// rate limit off, beside the store's bare bulk upsert of the same records. Needs the release daemon binary
    /// (`cargo build --release --bin crmsyncd`).
    Pull {
        #[arg(long, default_value = "hubspot,odoo", value_delimiter = ',')]
        crm: Vec<String>,
        #[arg(long, default_value = "sqlite,postgres", value_delimiter = ',')]
        db: Vec<String>,
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Quota use: five HubSpot connections sharing 100 requests per 10 s and one Odoo connection with its own
    /// limit, with work always waiting; the share of each limit used and the simulators' count of excess.
    Quota {
        #[arg(long, default_value = "sqlite", value_delimiter = ',')]
        db: Vec<String>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds measured per run, after a warm-up of `--warmup` seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 10)]
        warmup: u64,
    },
    /// Many connections: N HubSpot connections polling one simulator every `--poll-interval`; start-up time, RSS
    /// (and per connection, over the daemon with none), idle CPU, `/metrics` scrape time and series per
    /// connection, beside N bare ractor+governor actors in this process. Needs the release daemon binary.
    Many {
        #[arg(long, default_value = "10000", value_delimiter = ',')]
        connections: Vec<usize>,
        #[arg(long, default_value = "sqlite")]
        db: String,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds between two polls of one connection.
        #[arg(long, default_value_t = 60)]
        poll_interval: u64,
        /// Seconds of CPU measured once all actors are up (default: one poll interval).
        #[arg(long)]
        window: Option<u64>,
        #[arg(long, default_value_t = 5)]
        scrapes: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Ingest {
                db,
                connections,
                runs,
                seconds,
                warmup,
            } => {
                let mut rows = Vec::new();
                for db in &db {
                    let kind = Db::parse(db)?;
                    for &connections in &connections {
                        for target in [Target::Raw, Target::GroupCommit, Target::Daemon] {
                            let mut loads = Vec::new();
                            for run in 1..=runs {
                                let load = ingest::measure(Setting {
                                    target,
                                    db: kind,
                                    connections,
                                    warmup: Duration::from_secs(warmup),
                                    measure: Duration::from_secs(seconds),
                                })
                                .await?;
                                eprintln!(
                                    "{db:<8} {connections:>4} conns  {:<18} run {run}: {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  errors {}",
                                    target.name(),
                                    load.rate(),
                                    load.percentile_ms(0.5),
                                    load.percentile_ms(0.99),
                                    load.errors
                                );
                                loads.push(load);
                            }
                            rows.push(report::Row::new(db, connections, target.name(), &loads));
                        }
                    }
                }
                print!("{}", report::table(&rows));
                Ok(())
            }
            Scenario::Pull { crm, db, records, runs } => {
                let mut rows = Vec::new();
                for name in &crm {
                    let crm = match name.as_str() {
                        "hubspot" => pull::Crm::HubSpot,
                        "odoo" => pull::Crm::Odoo,
                        other => anyhow::bail!("--crm: unknown CRM {other:?}; expected hubspot or odoo"),
                    };
                    for db in &db {
                        let kind = Db::parse(db)?;
                        let mut figures = Vec::new();
                        for run in 1..=runs {
                            let f = pull::measure(crm, kind, records).await?;
                            eprintln!(
                                "{:<8} {db:<8} run {run}: {:>8.0} records/s, bare upsert {:>8.0} rows/s ({:.0}%), peak RSS {:.1} MB",
                                crm.name(),
                                f.daemon_rate,
                                f.ceiling_rate,
                                100.0 * f.daemon_rate / f.ceiling_rate,
                                f.peak_rss as f64 / 1e6
                            );
                            figures.push(f);
                        }
                        rows.push((crm.name(), db.clone(), figures));
                    }
                }
                print!("{}", report::pull_table(&rows));
                Ok(())
            }
            Scenario::Many {
                connections,
                db,
                runs,
                poll_interval,
                window,
                scrapes,
            } => {
                let kind = Db::parse(&db)?;
                let mut rows = Vec::new();
                for &n in &connections {
                    let bare = many::bare_actor_bytes(n).await?;
                    eprintln!("{n:>6} bare ractor+governor actors: {bare:.0} bytes each");
                    let mut figures = Vec::new();
                    for run in 1..=runs {
                        let f = many::measure(many::Setting {
                            connections: n,
                            db: kind,
                            poll_interval: Duration::from_secs(poll_interval),
                            window: Duration::from_secs(window.unwrap_or(poll_interval)),
                            scrapes,
                        })
                        .await?;
                        eprintln!(
                            "{n:>6} conns run {run}: up in {:.2} s, RSS {:.1} MB up / {:.1} MB after {:.0} s (peak {:.1}, empty daemon {:.1}) = {:.0} B/conn, CPU {:.2}% of a core ({:.0} requests), scrape median {:.1} ms max {:.1} ms, {} series ({:.2}/conn), {:.1} MB",
                            f.startup.as_secs_f64(),
                            f.rss_started as f64 / 1e6,
                            f.rss_after_window as f64 / 1e6,
                            f.window.as_secs_f64(),
                            f.peak_rss as f64 / 1e6,
                            f.baseline_rss as f64 / 1e6,
                            f.bytes_per_connection(),
                            f.cpu_percent,
                            f.requests_in_window,
                            report::median(&f.scrape_ms),
                            f.scrape_ms.iter().copied().fold(0.0, f64::max),
                            f.series,
                            f.series_per_connection,
                            f.body_bytes as f64 / 1e6,
                        );
                        figures.push(f);
                    }
                    rows.push((db.clone(), bare, figures));
                }
                print!("{}", report::many_table(&rows));
                Ok(())
            }
            Scenario::Quota {
                db,
                runs,
                seconds,
                warmup,
            } => {
                let mut rows = Vec::new();
                for db in &db {
                    let kind = Db::parse(db)?;
                    for run in 1..=runs {
                        let figures =
                            quota::measure(kind, Duration::from_secs(warmup), Duration::from_secs(seconds)).await?;
                        for f in &figures {
                            eprintln!(
                                "{db:<8} run {run}: {:<36} {:>5} requests of {:>7.1} allowed = {:>5.1}%  429s {}  busiest window {}/{}",
                                f.name,
                                f.requests,
                                f.allowed,
                                100.0 * f.share(),
                                f.refused,
                                f.busiest_window,
                                f.limit
                            );
                        }
                        rows.push((db.clone(), figures));
                    }
                }
                print!("{}", report::quota_table(&rows));
                Ok(())
            }
        }
    })
}
