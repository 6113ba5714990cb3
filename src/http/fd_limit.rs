//! The process's open-file limit: raised to the hard limit at start, and the ceiling under which the listener
//! caps its connections, so a flood of connections cannot take the descriptors the database and the CRM
//! clients need (an `accept` that fails with EMFILE would spin, and so would every other part of the daemon).

/// Descriptors kept out of the connection cap for everything else: the database pool, SQLite's files, the CRM
/// clients' connections, the metrics listener, logs.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force afterwards (None when it
/// cannot be read, or is unlimited).
pub fn raise_to_hard_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "Could not raise the open-file limit."
            );
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The most connections a listener may hold open: `configured`, but never closer than [`RESERVED_FDS`] to the
/// soft limit `fd_limit` (and at least 1).
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        None => configured,
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            configured.min(room).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_stays_below_the_fd_limit() {
        assert_eq!(connection_cap(1024, Some(1024)), 768);
        assert_eq!(connection_cap(1024, Some(65_536)), 1024);
        assert_eq!(connection_cap(100_000, Some(20_000)), 20_000 - 256);
        assert_eq!(connection_cap(1024, Some(10)), 1);
        assert_eq!(connection_cap(1024, None), 1024);
    }

    #[test]
    fn raising_the_limit_leaves_soft_equal_to_hard() {
        let soft = raise_to_hard_limit();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        if limit.rlim_cur != libc::RLIM_INFINITY {
            assert_eq!(soft, Some(limit.rlim_cur));
        }
    }
}
