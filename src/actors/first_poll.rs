//! When a connection polls first after the daemon starts. Started together, ten thousand connections with the
//! same interval would all poll at t=0 and again together every interval after; instead each one's first poll
//! comes at an offset hashed from its id, so the polls spread evenly and stay spread (each next poll is one
//! interval after the end of the last). The spread window grows with the number of connections,
//! [`SPACING`] per connection, up to the poll interval: a handful of connections still poll at once, as an
//! operator starting a daemon expects, and many never burst more than about one poll per [`SPACING`].

use std::time::Duration;

/// The average time between two connections' first polls while the window is below the poll interval.
pub const SPACING: Duration = Duration::from_millis(10);

/// The delay of connection `id`'s first poll, one of `connections` started together with `poll_interval`.
pub fn first_poll_delay(id: &str, poll_interval: Duration, connections: usize) -> Duration {
    let window = SPACING
        .saturating_mul(u32::try_from(connections).unwrap_or(u32::MAX))
        .min(poll_interval);
    window.mul_f64(unit_hash(id))
}

/// A stable hash of `id` in [0, 1): FNV-1a, so an id keeps its slot across restarts and builds.
fn unit_hash(id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys differing in the last byte: finish with a multiply-xorshift.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_of_many_connections_are_spread_over_the_interval() {
        let interval = Duration::from_secs(60);
        let n = 10_000;
        let mut buckets = [0usize; 60];
        for i in 0..n {
            let delay = first_poll_delay(&format!("hubspot-{i:05}"), interval, n);
            assert!(delay < interval, "{delay:?}");
            buckets[delay.as_secs() as usize] += 1;
        }
        // Even would be 167 a second; a burst at the start (or anywhere) would show as a full bucket.
        let (least, most) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*least >= 100 && *most <= 250, "first polls per second: {buckets:?}");
    }

    #[test]
    fn a_few_connections_poll_at_once() {
        for i in 0..5 {
            let delay = first_poll_delay(&format!("c{i}"), Duration::from_secs(60), 5);
            assert!(delay < Duration::from_millis(50), "{delay:?}");
        }
    }

    #[test]
    fn a_connection_keeps_its_offset() {
        let a = first_poll_delay("acme", Duration::from_secs(60), 10_000);
        assert_eq!(a, first_poll_delay("acme", Duration::from_secs(60), 10_000));
        assert_ne!(a, first_poll_delay("acme2", Duration::from_secs(60), 10_000));
    }
}
