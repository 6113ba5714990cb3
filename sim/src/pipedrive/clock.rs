//! The simulator's clock. Pipedrive stamps `add_time` and `update_time` to the second, so whole bulk edits share
//! one timestamp; tests that need distinct seconds freeze or move this clock instead of sleeping.

use chrono::{DateTime, Duration as TimeDelta, SubsecRound, Utc};

/// UTC at second precision, optionally frozen or shifted.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    frozen: Option<DateTime<Utc>>,
    offset: TimeDelta,
}

impl Clock {
    /// The current time, truncated to the second (Pipedrive's precision).
    pub fn now(&self) -> DateTime<Utc> {
        self.frozen.unwrap_or_else(|| Utc::now() + self.offset).trunc_subsecs(0)
    }

    /// Freezes the clock at `at`; it then moves only through [`Clock::advance`].
    pub fn set(&mut self, at: DateTime<Utc>) {
        self.frozen = Some(at.trunc_subsecs(0));
    }

    /// Moves the clock forward, frozen or not.
    pub fn advance(&mut self, by: TimeDelta) {
        match &mut self.frozen {
            Some(t) => *t += by,
            None => self.offset += by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_frozen_clock_moves_only_when_advanced_and_keeps_whole_seconds() {
        let mut clock = Clock::default();
        let at = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap() + TimeDelta::milliseconds(700);
        clock.set(at);
        assert_eq!(clock.now(), Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap());
        clock.advance(TimeDelta::seconds(2));
        assert_eq!(clock.now(), Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 2).unwrap());
    }
}
