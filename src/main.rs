//! The `crmsyncd` command: parse the CLI, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crmsyncd::config::{CONFIG_PATH_ENV, Config, DEFAULT_CONFIG_PATH, ProviderKind};
use crmsyncd::demo::CrmSelection;
use crmsyncd::{AppHandle, Application, telemetry};

// Every record a pull or a webhook brings is parsed into a tree of small allocations and freed a page later; with
// glibc's malloc that churn was ~40% of the daemon's instructions on a pull (docs/BENCHMARKS.md, "Pull throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the Rust binding names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps freed pages for a second by default; a pull frees a page's worth of records every few
/// milliseconds, so the daemon's peak memory grew by ~30 MB over glibc's. A tenth of a second keeps most of the
/// speed and the peak under the 100 MB budget (docs/BENCHMARKS.md, "Pull throughput").
fn tune_allocator() {
    // SAFETY: mi_option_set only stores the value; mimalloc reads it at its next purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
}

#[derive(Parser)]
#[command(
    name = "crmsyncd",
    version,
    about = "Keeps your database in step with the CRMs you use."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file (default config/crmsyncd.toml, or $CRMSYNCD_CONFIG).
        #[arg(long, env = CONFIG_PATH_ENV, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run against local simulators of every CRM (or those --crm names), with nothing to configure.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Which CRMs to simulate: "all", or names separated by commas (hubspot,odoo,...).
        #[arg(long)]
        crm: Option<CrmSelection>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, env = CONFIG_PATH_ENV, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate the config, print every problem, and exit non-zero if there is any.
    CheckConfig {
        #[arg(long, env = CONFIG_PATH_ENV, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Command::CheckConfig { config } = &cli.command {
        return match Config::load(config) {
            Ok(c) => {
                println!("{}: OK ({} connections)", config.display(), c.connections.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        };
    }
    telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crmsyncd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crmsyncd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config: path } => {
            let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let app = Application::build(config).await?;
            let reloader = tokio::spawn(reload_on_sighup(app.handle(), path));
            let result = app.run_until_stopped(shutdown_signal()).await;
            reloader.abort();
            result
        }
        Command::Demo { seconds, crm } => {
            let crms = crm.map_or_else(|| ProviderKind::ALL.to_vec(), |c| c.0);
            crmsyncd::demo::run(&crms, seconds).await
        }
        Command::Migrate { config } => {
            let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = crmsyncd::store::Store::connect(&config.database.url)
                .await
                .context("connecting to the database")?;
            store.migrate().await.context("running migrations")?;
            println!("Migrations applied to {}", redact_url(&config.database.url));
            Ok(())
        }
        Command::CheckConfig { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Reloads the config file on every SIGHUP. A file with problems is refused whole (each problem logged with its
/// key) and the daemon carries on with what it runs.
async fn reload_on_sighup(handle: AppHandle, path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("Cannot listen for SIGHUP; config reload is off.");
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!(path = %path.display(), "SIGHUP received; reloading the config.");
            match Config::load(&path) {
                Err(e) => tracing::error!(problems = %e, "The config has problems; nothing was reloaded."),
                Ok(config) => {
                    if let Err(e) = handle.reload(config).await {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "The reload failed; the connections that ran still run."
                        );
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (handle, path);
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down."),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down."),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The database URL without its password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_constant_names_mimallocs_purge_delay_option() {
        // Only purge_delay and guarded_sample_rate (index 33) default to 1000: a renumbered header fails here
        // instead of tuning the wrong knob.
        // SAFETY: reading an option has no preconditions.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mimalloc's purge_delay defaults to 1000 ms");
        tune_allocator();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 100);
    }
}
