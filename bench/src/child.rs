//! The daemon under test as a child process of the bench: the release binary beside the bench's, spawned on a
//! config file, and what the kernel says about it (`/proc`). Scenarios that need the daemon's own memory and CPU
//! (pull, many, latency) run it this way; the simulators stay in the bench process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;

/// The crmsyncd release binary beside this one (`cargo build --release` puts both in `target/release`).
pub fn daemon_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("crmsyncd");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `cargo build --release --bin crmsyncd` first",
        path.display()
    );
    Ok(path)
}

/// `crmsyncd run --config <config>`, logging warnings to the bench's stderr, killed if the bench drops it.
pub fn spawn_daemon(binary: &Path, config: &Path) -> anyhow::Result<Child> {
    Ok(tokio::process::Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?)
}

/// The child's pid, or an error when it has already exited.
pub fn pid_of(child: &Child) -> anyhow::Result<u32> {
    child.id().ok_or_else(|| anyhow::anyhow!("the daemon exited at once"))
}

/// Stops the daemon as systemd would (SIGTERM, then SIGKILL after 10 s), so that a profiler wrapped around it
/// (`valgrind --tool=callgrind`) writes its output.
pub async fn stop_gracefully(child: &mut Child, pid: u32) -> anyhow::Result<()> {
    // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        child.start_kill()?;
        child.wait().await?;
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 for the daemon to listen on.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A process's resident set size now (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// A process's peak resident set size (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

/// A process's CPU time so far (user + system, `/proc/PID/stat` fields 14 and 15), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are its 12th and 13th.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / per_second)
}

/// The sum of every series of `family` in a metrics text (not of longer names that start with it, such as
/// `family_bucket`).
pub fn sum_of(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_family_but_not_its_longer_namesakes() {
        let text = "# TYPE x counter\nx{a=\"1\"} 2\nx{a=\"2\"} 3\nx_bucket{le=\"1\"} 100\nx 1\n";
        assert_eq!(sum_of(text, "x"), 6.0);
    }

    #[test]
    fn reads_this_process_cpu_and_memory() {
        let pid = std::process::id();
        assert!(rss(pid).unwrap() > 0);
        assert!(peak_rss(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
