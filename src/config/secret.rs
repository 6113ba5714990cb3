//! A string that must never reach a log line, a metric or an error message.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret from the config (a token, an API key, a webhook secret). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Secrets shorter than this are not redacted from text: replacing every `ab` in a message would garble it,
/// and a secret that short is no secret.
const MIN_REDACTED_LEN: usize = 6;

/// How many secret values [`redact`] remembers; the oldest go first (rotated access tokens pile up otherwise).
const MAX_KNOWN: usize = 1024;

/// Every secret value the process holds, so text from outside (a CRM's error answer that echoes our request)
/// can be scrubbed of them before it is logged or stored.
static KNOWN: LazyLock<RwLock<VecDeque<Arc<str>>>> = LazyLock::new(|| RwLock::new(VecDeque::new()));

fn remember(value: &str) {
    if value.len() < MIN_REDACTED_LEN {
        return;
    }
    let seen = |known: &VecDeque<Arc<str>>| known.iter().any(|k| &**k == value);
    if seen(&KNOWN.read().unwrap_or_else(|e| e.into_inner())) {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if seen(&known) {
        return;
    }
    if known.len() == MAX_KNOWN {
        known.pop_front();
    }
    known.push_back(Arc::from(value));
}

/// `text` with every secret value this process holds replaced by `***`. Error messages built from what a CRM
/// answered go through this: a CRM that echoes the request would otherwise put our token in the log.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(&**secret) {
            out = Cow::Owned(out.replace(&**secret, "***"));
        }
    }
    out
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        remember(&value);
        Self(value)
    }

    /// The secret itself, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time that depends neither on where they differ nor on the secret's length.
    /// `subtle`'s slice comparison returns early on a length mismatch, which would let a caller find the
    /// length by timing; comparing fixed-size digests does not.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        Sha256::digest(self.0.as_bytes())
            .ct_eq(&Sha256::digest(candidate))
            .into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        Ok(Self::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn secret_matches_only_the_exact_value() {
        let s = Secret::new("hunter2");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn redact_scrubs_every_secret_the_process_holds() {
        let _a = Secret::new("redact-me-please-1");
        let _b = Secret::new("redact-me-please-2");
        let _short = Secret::new("abc");
        assert_eq!(
            redact("Bearer redact-me-please-1, x=redact-me-please-2&abc"),
            "Bearer ***, x=***&abc"
        );
        assert!(matches!(redact("nothing secret here"), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_compare_is_by_digest_so_any_length_is_checked_the_same_way() {
        // A longer or shorter candidate, or one with the secret as a prefix, is simply a different digest.
        let s = Secret::new("hunter2");
        assert!(!s.matches(b"hunter22"));
        assert!(!s.matches(b"hunter2\0"));
        assert!(!s.matches(&[b'x'; 10_000]));
        assert!(Secret::new("h").matches(b"h"));
    }
}
