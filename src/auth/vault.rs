//! Sealed storage for OAuth tokens: ChaCha20-Poly1305 with the daemon's credential key (from the environment,
//! never from the database), the connection id as associated data, a fresh random nonce per write.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Secret;
use crate::store::{Store, StoreError};

const NONCE_LEN: usize = 12;

/// The 32-byte key that seals stored tokens. `Debug` prints `***`.
#[derive(Clone)]
pub struct CredentialKey([u8; 32]);

/// Why a credential key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 32 random bytes written as base64 (44 characters) or hex (64); e.g. `openssl rand -base64 32`")]
pub struct KeyError;

impl CredentialKey {
    /// Reads a key written as base64 or hex.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| KeyError)?
        } else {
            STANDARD.decode(text).map_err(|_| KeyError)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError)?;
        Ok(Self(key))
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialKey(***)")
    }
}

/// A connection's tokens as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTokens {
    /// Which configured refresh token these descend from (a keyed fingerprint, not the token): when the operator
    /// puts a new one in the config, the stored chain is stale and the config wins.
    pub seed: String,
    pub refresh_token: Option<Secret>,
    pub access_token: Option<Secret>,
    pub expires_at: Option<DateTime<Utc>>,
    pub instance_url: Option<String>,
}

/// The sealed JSON; private so that plain token strings never leave this file.
#[derive(Serialize, Deserialize)]
struct Plain {
    seed: String,
    refresh_token: Option<String>,
    access_token: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    instance_url: Option<String>,
}

/// Why stored tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Wrong key, or a value tampered with or copied from another connection.
    #[error("stored tokens do not open with this credentials_key")]
    Unreadable,
}

/// Reads and writes sealed tokens.
#[derive(Clone)]
pub struct CredentialVault {
    store: Store,
    key: Arc<CredentialKey>,
}

impl fmt::Debug for CredentialVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialVault")
    }
}

impl CredentialVault {
    pub fn new(store: Store, key: CredentialKey) -> Self {
        Self {
            store,
            key: Arc::new(key),
        }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.key.0))
    }

    /// A keyed fingerprint of `secret`: stable for one key, useless to anyone without it.
    pub fn fingerprint(&self, secret: &Secret) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key.0).expect("HMAC takes any key length");
        mac.update(b"crmsyncd refresh-token seed\0");
        mac.update(secret.expose().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// base64(nonce || ciphertext) of `tokens`, bound to `connection`.
    pub fn seal(&self, connection: &str, tokens: &StoredTokens) -> String {
        let plain = Plain {
            seed: tokens.seed.clone(),
            refresh_token: tokens.refresh_token.as_ref().map(|s| s.expose().to_string()),
            access_token: tokens.access_token.as_ref().map(|s| s.expose().to_string()),
            expires_at: tokens.expires_at,
            instance_url: tokens.instance_url.clone(),
        };
        let json = serde_json::to_vec(&plain).expect("tokens serialise");
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &json,
                    aad: connection.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message of this size");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        STANDARD.encode(out)
    }

    /// Opens what [`CredentialVault::seal`] made for `connection`.
    pub fn open(&self, connection: &str, sealed: &str) -> Result<StoredTokens, VaultError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| VaultError::Unreadable)?;
        if bytes.len() < NONCE_LEN {
            return Err(VaultError::Unreadable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let json = self
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: connection.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Unreadable)?;
        let plain: Plain = serde_json::from_slice(&json).map_err(|_| VaultError::Unreadable)?;
        Ok(StoredTokens {
            seed: plain.seed,
            refresh_token: plain.refresh_token.map(Secret::new),
            access_token: plain.access_token.map(Secret::new),
            expires_at: plain.expires_at,
            instance_url: plain.instance_url,
        })
    }

    /// The connection's stored tokens, if any.
    pub async fn load(&self, connection: &str) -> Result<Option<StoredTokens>, VaultError> {
        match self.store.sealed_credentials(connection).await? {
            Some(sealed) => self.open(connection, &sealed).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces the connection's stored tokens.
    pub async fn save(&self, connection: &str, tokens: &StoredTokens) -> Result<(), StoreError> {
        self.store
            .save_sealed_credentials(connection, &self.seal(connection, tokens))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn vault() -> (crate::testing::TestDatabase, CredentialVault) {
        let db = crate::testing::TestDatabase::sqlite().await;
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        let key = CredentialKey::parse(&STANDARD.encode([7u8; 32])).unwrap();
        (db, CredentialVault::new(store, key))
    }

    fn tokens() -> StoredTokens {
        StoredTokens {
            seed: "seed".into(),
            refresh_token: Some(Secret::new("refresh-value-123")),
            access_token: Some(Secret::new("access-value-456")),
            expires_at: Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
            instance_url: Some("https://eu1.example.com".into()),
        }
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_nothing_else() {
        assert!(CredentialKey::parse(&STANDARD.encode([1u8; 32])).is_ok());
        assert!(CredentialKey::parse(&"ab".repeat(32)).is_ok());
        assert_eq!(CredentialKey::parse("short").unwrap_err(), KeyError);
        assert!(CredentialKey::parse(&STANDARD.encode([1u8; 16])).is_err());
        assert_eq!(
            format!("{:?}", CredentialKey::parse(&"ab".repeat(32)).unwrap()),
            "CredentialKey(***)"
        );
    }

    #[tokio::test]
    async fn sealed_tokens_round_trip_and_never_appear_in_the_clear() {
        let (_db, vault) = vault().await;
        vault.save("zoho", &tokens()).await.unwrap();
        assert_eq!(vault.load("zoho").await.unwrap(), Some(tokens()));
        let stored = vault.store.sealed_credentials("zoho").await.unwrap().unwrap();
        let raw = STANDARD.decode(&stored).unwrap();
        for secret in ["refresh-value-123", "access-value-456"] {
            assert!(!stored.contains(secret));
            assert!(!String::from_utf8_lossy(&raw).contains(secret));
        }
        assert_eq!(vault.load("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_sealed_value_opens_only_for_its_connection_and_key() {
        let (_db, vault) = vault().await;
        let sealed = vault.seal("zoho", &tokens());
        assert!(matches!(vault.open("salesforce", &sealed), Err(VaultError::Unreadable)));
        let other = CredentialVault::new(
            vault.store.clone(),
            CredentialKey::parse(&STANDARD.encode([8u8; 32])).unwrap(),
        );
        assert!(matches!(other.open("zoho", &sealed), Err(VaultError::Unreadable)));
        let mut tampered = STANDARD.decode(&sealed).unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            vault.open("zoho", &STANDARD.encode(tampered)),
            Err(VaultError::Unreadable)
        ));
        // Two seals of the same tokens differ (fresh nonces) and both open.
        let again = vault.seal("zoho", &tokens());
        assert_ne!(sealed, again);
        assert_eq!(vault.open("zoho", &again).unwrap(), tokens());
    }

    #[test]
    fn fingerprints_depend_on_the_key_and_hide_the_token() {
        let a = CredentialVault {
            store: Store::from_connection(sea_orm::DatabaseConnection::default()),
            key: Arc::new(CredentialKey([1; 32])),
        };
        let b = CredentialVault {
            store: Store::from_connection(sea_orm::DatabaseConnection::default()),
            key: Arc::new(CredentialKey([2; 32])),
        };
        let token = Secret::new("refresh-value-123");
        assert_eq!(a.fingerprint(&token), a.fingerprint(&token));
        assert_ne!(a.fingerprint(&token), b.fingerprint(&token));
        assert_ne!(a.fingerprint(&token), a.fingerprint(&Secret::new("refresh-value-124")));
        assert!(!a.fingerprint(&token).contains("refresh"));
    }
}
