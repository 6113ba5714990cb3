//! The simulator's clock and Odoo's datetime format.
//!
//! write_date has second precision in Odoo, so a test that needs two distinct write_dates would otherwise have to
//! sleep past a second boundary. Instead the simulator reads time from this clock, which follows UTC by default
//! and can be frozen at a moment ([`Clock::set`]) or moved forward ([`Clock::advance`]).

use chrono::{NaiveDateTime, TimeDelta, Timelike, Utc};

/// Naive UTC time, second precision, as Odoo stores write_date and create_date.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    frozen: Option<NaiveDateTime>,
    offset: TimeDelta,
}

impl Clock {
    /// The current time, truncated to the second.
    pub(crate) fn now(&self) -> NaiveDateTime {
        let t = self.frozen.unwrap_or_else(|| Utc::now().naive_utc() + self.offset);
        t.with_nanosecond(0).expect("zero nanoseconds is valid")
    }

    /// Freezes the clock at `at`: it then moves only through [`Clock::advance`].
    pub(crate) fn set(&mut self, at: NaiveDateTime) {
        self.frozen = Some(at);
    }

    /// Moves the clock forward (frozen or not).
    pub(crate) fn advance(&mut self, by: TimeDelta) {
        match &mut self.frozen {
            Some(t) => *t += by,
            None => self.offset += by,
        }
    }
}

const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Odoo's datetime wire format, `YYYY-MM-DD HH:MM:SS` (naive UTC).
pub fn format_odoo_datetime(t: NaiveDateTime) -> String {
    t.format(FORMAT).to_string()
}

/// Parses exactly the format [`format_odoo_datetime`] writes, nothing looser.
pub(crate) fn parse_odoo_datetime(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, FORMAT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let at = parse_odoo_datetime("2024-05-01 10:00:00").unwrap();
        let mut clock = Clock::default();
        clock.set(at);
        assert_eq!(clock.now(), at);
        clock.advance(TimeDelta::seconds(3));
        assert_eq!(format_odoo_datetime(clock.now()), "2024-05-01 10:00:03");
    }

    #[test]
    fn the_parser_accepts_only_the_canonical_format() {
        assert!(parse_odoo_datetime("2024-05-01 10:00:00").is_some());
        assert!(parse_odoo_datetime("2024-05-01T10:00:00").is_none());
        assert!(parse_odoo_datetime("2024-05-01 10:00:00.5").is_none());
        assert!(parse_odoo_datetime("2024-05-01").is_none());
    }
}
