//! `crmsyncd-faults storm|outage`: the long runs of the fault harnesses, with a line per trial and a summary.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use crmsyncd_faults::{outage, storm};

#[derive(Parser)]
#[command(about = "Fault harnesses for crmsyncd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CRM fault storms next to a healthy connection.
    Storm {
        /// How long each storm lasts.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        trials: u32,
        /// Connections in the storm.
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Run on PostgreSQL instead of SQLite.
        #[arg(long)]
        postgres: bool,
    },
    /// PostgreSQL unreachable under webhook and pull load.
    Outage {
        /// How long the database stays unreachable.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        trials: u32,
    },
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut failed = 0;
    match cli.command {
        Command::Storm {
            seconds,
            trials,
            connections,
            postgres,
        } => {
            let config = storm::StormConfig {
                storm: Duration::from_secs(seconds),
                baseline: Duration::from_secs((seconds / 4).clamp(3, 15)),
                storm_connections: connections,
                records: 300,
                postgres,
            };
            for trial in 1..=trials {
                let started = Instant::now();
                let report = storm::run(&config).await?;
                println!("storm trial {trial}/{trials} ({:.0?}): {report:#?}", started.elapsed());
                if !report.passed() {
                    failed += 1;
                }
            }
        }
        Command::Outage { seconds, trials } => {
            let config = outage::OutageConfig {
                outage: Duration::from_secs(seconds),
                records: 200,
            };
            for trial in 1..=trials {
                let started = Instant::now();
                let report = outage::run(&config).await?;
                println!("outage trial {trial}/{trials} ({:.0?}): {report:#?}", started.elapsed());
                if !report.passed() {
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} trial(s) failed");
    }
    println!("all trials passed");
    Ok(())
}
