//! A string that must never reach a log line, a metric or an error message.

use std::fmt;

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret from the config (a token, an API key, a webhook secret). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
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
        Ok(Self(value))
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
    fn secret_compare_is_by_digest_so_any_length_is_checked_the_same_way() {
        // A longer or shorter candidate, or one with the secret as a prefix, is simply a different digest.
        let s = Secret::new("hunter2");
        assert!(!s.matches(b"hunter22"));
        assert!(!s.matches(b"hunter2\0"));
        assert!(!s.matches(&[b'x'; 10_000]));
        assert!(Secret::new("h").matches(b"h"));
    }
}
