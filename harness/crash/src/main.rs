//! `cargo run -p crmsyncd-crash --release -- --db sqlite|postgres --kills 50`: builds the `crmsyncd` binary with
//! the same profile, runs the crash harness, prints the report, and exits non-zero if anything was lost.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use crmsyncd_crash::{Backend, Options, run};

#[derive(Parser)]
#[command(
    name = "crmsyncd-crash",
    about = "SIGKILL the real daemon under load, again and again; then compare."
)]
struct Cli {
    /// sqlite or postgres (a fresh database per run; PostgreSQL at $CRMSYNCD_TEST_POSTGRES_URL or 127.0.0.1:5432).
    #[arg(long, default_value = "sqlite")]
    db: Backend,
    /// How many times to kill the daemon.
    #[arg(long, default_value_t = 50)]
    kills: u32,
    /// The crmsyncd binary (default: built now, next to this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Records per simulator object at the start.
    #[arg(long, default_value_t = 1_000)]
    seed: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let binary = match cli.binary {
        Some(b) => b,
        None => match build_daemon() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("crash: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut options = Options::full(cli.db, cli.kills, binary);
    options.seed = cli.seed;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(&options)) {
        Ok(report) => {
            print!("{report}");
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crash: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo build --bin crmsyncd` in this binary's profile; the result sits next to this binary.
fn build_daemon() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "crmsyncd", "--bin", "crmsyncd"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    anyhow::ensure!(build.status()?.success(), "building crmsyncd failed");
    let dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("this binary has no directory"))?;
    Ok(dir.join("crmsyncd"))
}
