//! The real binary under systemd's notify protocol, with the test playing systemd: `READY=1` once it listens,
//! watchdog pings while its supervisor answers, `STOPPING=1` on SIGTERM, and exit status 0.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next notification, as text.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification before the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn under_systemd_it_reports_ready_pings_the_watchdog_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = free_port();
    let config = dir.path().join("crmsyncd.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n",
            dir.path().join("crmsyncd.db").display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_crmsyncd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        // Pings every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let first = next(&socket);
    assert!(
        first.contains("READY=1"),
        "the first notification is readiness: {first:?}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "ready means the listener is bound"
    );
    let started = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        if next(&socket).contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "five pings at a 200 ms period took {:?}",
        started.elapsed()
    );

    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    loop {
        let message = next(&socket);
        if message.contains("STOPPING=1") {
            break;
        }
        assert!(message.contains("WATCHDOG=1"), "unexpected notification {message:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "SIGTERM ends the daemon with status 0, got {status:?}"
    );
}
