//! Fault harnesses: a CRM fault storm ([`storm`]) and a database outage ([`outage`]). Each runs the daemon in
//! this process against simulators, checks what the issue asks, and returns a report; the `crmsyncd-faults`
//! command runs them for minutes, `tests/` runs short versions.

pub mod daemon;
pub mod outage;
pub mod proxy;
pub mod stats;
pub mod storm;
pub mod truth;
