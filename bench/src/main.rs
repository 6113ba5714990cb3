//! `crmsyncd-bench`: benchmark scenarios, each measured beside the ceilings of the machine it runs on, in the
//! same run, so the ratio holds on a noisy machine. See `docs/BENCHMARKS.md`.
//!
//! `cargo run --release -p crmsyncd-bench -- ingest --db sqlite,postgres --connections 64,256 --runs 3`
//! `cargo run --release -p crmsyncd-bench -- latency --db sqlite,postgres --rate 1000 --seconds 30 --runs 3`

mod ceiling;
mod child;
mod db;
mod ingest;
mod latency;
mod loadgen;
mod many;
mod pull;
mod quota;
mod report;

use std::time::Duration;

use clap::{Parser, Subcommand};

// The allocator the crmsyncd binary ships with (src/main.rs): the ingest scenario runs the daemon in this process,
// and every ceiling is measured with the same allocator as the daemon it is compared with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Webhook to record: a steady open-loop rate of signed HubSpot webhooks, each naming a contact just changed
    /// in the simulator; the time from each 200 until the new version is visible in `records`, beside a bare
    /// `apply_page` of one record seen by the same observer. Needs the release daemon binary.
    Latency {
        #[arg(long, default_value = "sqlite,postgres", value_delimiter = ',')]
        db: Vec<String>,
        /// Webhooks per second, sent on schedule whatever the answers.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds measured per run, after a warm-up of `--warmup` seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The connection's poll interval in seconds: its pull passes run during the measurement.
        #[arg(long, default_value_t = 30)]
        poll_interval: u64,
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
                                "{:<8} {db:<8} run {run}: {:>8.0} records/s, bare upsert {:>8.0} rows/s ({:.0}%), fetch only {:>8.0} records/s ({:.0}%), peak RSS {:.1} MB, daemon CPU {:.0}% of one core",
                                crm.name(),
                                f.daemon_rate,
                                f.ceiling_rate,
                                100.0 * f.daemon_rate / f.ceiling_rate,
                                f.fetch_rate,
                                100.0 * f.daemon_rate / f.fetch_rate,
                                f.peak_rss as f64 / 1e6,
                                100.0 * f.daemon_cpu / f.elapsed
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
            Scenario::Latency {
                db,
                rate,
                seconds,
                warmup,
                runs,
                poll_interval,
            } => {
                let mut rows = Vec::new();
                for db in &db {
                    let kind = Db::parse(db)?;
                    let mut figures = Vec::new();
                    for run in 1..=runs {
                        let f = latency::measure(latency::Setting {
                            db: kind,
                            rate,
                            warmup: Duration::from_secs(warmup),
                            measure: Duration::from_secs(seconds),
                            poll_interval: Duration::from_secs(poll_interval),
                        })
                        .await?;
                        let ms = latency::LatencyRun::ms;
                        eprintln!(
                            "{db:<8} run {run}: {} sent, {:>6.0}/s  after 200: p50 {:>6.2} p90 {:>6.2} p99 {:>7.2} max {:>7.2} ms  \
                             after schedule p99 {:>7.2} ms  ceiling p50 {:>5.2} p99 {:>6.2} ms  errors {} unseen {} \
                             (ceiling {})  observer poll {:.2} ms  batch reads/webhook {:.3}  batch read mean {:.2} ms",
                            f.sent,
                            f.send_rate,
                            ms(&f.after_answer, 0.5),
                            ms(&f.after_answer, 0.9),
                            ms(&f.after_answer, 0.99),
                            ms(&f.after_answer, 1.0),
                            ms(&f.after_schedule, 0.99),
                            ms(&f.ceiling, 0.5),
                            ms(&f.ceiling, 0.99),
                            f.errors,
                            f.unseen,
                            f.ceiling_unseen,
                            f.poll_period_ms,
                            f.reads_per_webhook,
                            f.fetch_mean_ms,
                        );
                        figures.push(f);
                    }
                    rows.push((db.clone(), figures));
                }
                print!("{}", report::latency_table(rate, &rows));
                Ok(())
            }
        }
    })
}
