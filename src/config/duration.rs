//! Human durations in the config ("500ms", "30s", "5m").

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserialises a human duration string with `humantime`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write e.g. \"500ms\", \"30s\", \"5m\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        d: Duration,
    }

    #[test]
    fn human_durations_parse() {
        let h: Holder = toml::from_str("d = \"1m 30s\"").unwrap();
        assert_eq!(h.d, Duration::from_secs(90));
        let h: Holder = toml::from_str("d = \"500ms\"").unwrap();
        assert_eq!(h.d, Duration::from_millis(500));
    }

    #[test]
    fn bad_duration_says_what_to_write() {
        let err = toml::from_str::<Holder>("d = \"10 parsecs\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }
}
