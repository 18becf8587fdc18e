//! Secrets: the server key, keyed hashes of bearer tokens, authenticated encryption of stored
//! secrets, and generation of new tokens.
//!
//! One configured key (`NEXUS_SECRET_KEY`) is never used directly: two independent keys are
//! derived from it with HMAC-SHA256 under fixed labels, one peppering token hashes and one
//! encrypting stored secrets (AES-256-GCM, random 96-bit nonce stored in front of the
//! ciphertext, the owning row's id as associated data so ciphertexts cannot be swapped between
//! rows).

use aes_gcm::{
    Aes256Gcm, Key, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use hmac::Mac as _;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The configured 32-byte server key.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

/// Stands in for a secret in `Debug` output: types that hold a token, key or secret in
/// plaintext show this instead, so no log line or panic message can carry one.
pub struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `Redacted` for a secret that is present, `None` for one that is not.
#[must_use]
pub fn redacted<T>(secret: Option<&T>) -> Option<Redacted> {
    secret.map(|_| Redacted)
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// Parses standard base64 of exactly 32 bytes.
    ///
    /// # Errors
    /// A sentence describing what a valid key looks like.
    pub fn from_base64(value: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "base64 of exactly 32 bytes (e.g. `openssl rand -base64 32`)";
        let bytes = STANDARD.decode(value.trim()).map_err(|_| EXPECTED)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| EXPECTED)
    }

    /// A fresh random key.
    ///
    /// # Panics
    /// If the operating system has no randomness to give.
    #[must_use]
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    /// The key as standard base64, the format [`SecretKey::from_base64`] reads.
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }
}

/// Hashes bearer tokens for storage and lookup: HMAC-SHA256 under a key derived from the server
/// key, so a stolen table is useless without the configuration.
#[derive(Clone)]
pub struct TokenHasher {
    pepper: [u8; 32],
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher(<redacted>)")
    }
}

impl TokenHasher {
    /// The hasher of `key`.
    #[must_use]
    pub fn new(key: &SecretKey) -> Self {
        Self {
            pepper: key.derive(b"nexus/token-pepper/v1"),
        }
    }

    /// The stored form of `token`.
    #[must_use]
    pub fn hash(&self, token: &str) -> Vec<u8> {
        let mut mac =
            HmacSha256::new_from_slice(&self.pepper).expect("HMAC takes keys of any length");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Authenticated encryption of secrets kept in the database.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

/// A stored secret that could not be decrypted: wrong key or tampered data.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (was NEXUS_SECRET_KEY changed?)")]
pub struct DecryptError;

const NONCE_LEN: usize = 12;

impl SecretBox {
    /// The box of `key`.
    #[must_use]
    pub fn new(key: &SecretKey) -> Self {
        let key = Key::<Aes256Gcm>::from(key.derive(b"nexus/secret-encryption/v1"));
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// Encrypts `plaintext`, bound to `owner` (the id of the row that stores it).
    ///
    /// # Panics
    /// Never for inputs below 64 GiB; AES-GCM only fails on larger ones.
    #[must_use]
    pub fn seal(&self, owner: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: owner,
                },
            )
            .expect("AES-GCM encrypts any secret of sane size");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts what [`SecretBox::seal`] produced for the same `owner`.
    ///
    /// # Errors
    /// The data was sealed under another key or owner, or was altered.
    pub fn open(&self, owner: &[u8], sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: owner,
                },
            )
            .map_err(|_| DecryptError)
    }
}

/// `N` bytes from the operating system's random source.
///
/// # Panics
/// If the operating system has no randomness to give (nothing secure could be done then).
#[must_use]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes
}

/// A new bearer token: `prefix` followed by 256 random bits, URL-safe base64.
#[must_use]
pub fn generate_token(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A new Standard Webhooks signing secret: `whsec_` followed by base64 of 32 random bytes.
#[must_use]
pub fn generate_standard_webhooks_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes::<32>()))
}

/// Standard base64 (with padding) of `bytes`.
#[must_use]
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Standard base64 (with padding) decoded; `None` when it is not.
#[must_use]
pub fn decode_base64(value: &str) -> Option<Vec<u8>> {
    STANDARD.decode(value).ok()
}

/// The HMAC key of a Standard Webhooks secret: the bytes `whsec_<base64>` encodes; `None` for
/// a secret of another form.
#[must_use]
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    secret
        .strip_prefix("whsec_")
        .and_then(|key| STANDARD.decode(key).ok())
}

/// HMAC-SHA256 keyed with `key` of `parts`, concatenated.
#[must_use]
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::KeyInit as _;
    // HMAC takes a key of any length.
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The Standard Webhooks signature of a message: HMAC-SHA256, keyed with `key`, of
/// `{id}.{timestamp}.{body}` (the `v1,` entry of `webhook-signature` is its base64).
#[must_use]
pub fn standard_webhooks_mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// Prefix of board tokens.
pub const BOARD_TOKEN_PREFIX: &str = "nxb_";
/// Prefix of agent API keys.
pub const AGENT_KEY_PREFIX: &str = "nxa_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_owner_and_key() {
        let key = SecretKey::generate();
        let sealed = SecretBox::new(&key).seal(b"row-1", b"whsec_abc");
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "plaintext visible"
        );
        assert_eq!(
            SecretBox::new(&key).open(b"row-1", &sealed).expect("opens"),
            b"whsec_abc"
        );
        assert!(SecretBox::new(&key).open(b"row-2", &sealed).is_err());
        assert!(
            SecretBox::new(&SecretKey::generate())
                .open(b"row-1", &sealed)
                .is_err()
        );
        let mut tampered = sealed;
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(SecretBox::new(&key).open(b"row-1", &tampered).is_err());
        assert!(SecretBox::new(&key).open(b"row-1", b"short").is_err());
    }

    #[test]
    fn token_hashes_depend_on_the_key() {
        let a = TokenHasher::new(&SecretKey::generate());
        let b = TokenHasher::new(&SecretKey::generate());
        assert_eq!(a.hash("nxb_x"), a.hash("nxb_x"));
        assert_ne!(a.hash("nxb_x"), a.hash("nxb_y"));
        assert_ne!(a.hash("nxb_x"), b.hash("nxb_x"));
    }

    #[test]
    fn keys_round_trip_through_base64_and_reject_other_lengths() {
        let key = SecretKey::generate();
        let parsed = SecretKey::from_base64(&key.to_base64()).expect("round trip");
        assert_eq!(parsed.0, key.0);
        assert!(SecretKey::from_base64(&STANDARD.encode([0u8; 31])).is_err());
        assert!(SecretKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn generated_tokens_are_distinct_and_prefixed() {
        let a = generate_token(BOARD_TOKEN_PREFIX);
        assert!(a.starts_with("nxb_") && a.len() == 4 + 43);
        assert_ne!(a, generate_token(BOARD_TOKEN_PREFIX));
        let secret = generate_standard_webhooks_secret();
        let raw = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .expect("base64");
        assert_eq!(raw.len(), 32);
    }
}

#[cfg(test)]
mod redaction_tests {
    use crate::store::{BoardToken, IssuedKey, SecretMaterial};

    #[test]
    fn types_holding_secrets_never_show_them_in_debug_output() {
        let id = uuid::Uuid::nil();
        let shown = [
            format!(
                "{:?}",
                BoardToken {
                    id,
                    token: "nxb_SECRET-1".to_owned()
                }
            ),
            format!(
                "{:?}",
                IssuedKey {
                    id,
                    api_key: "nxa_SECRET-2".to_owned()
                }
            ),
            format!(
                "{:?}",
                SecretMaterial {
                    webhook_url: "https://x/fire".to_owned(),
                    webhook_secret: "whs_SECRET-3".to_owned(),
                }
            ),
            format!("{:?}", super::SecretKey::generate()),
        ];
        for line in &shown {
            assert!(!line.contains("SECRET"), "{line}");
        }
        assert!(shown[0].contains("<redacted>") && shown[2].contains("https://x/fire"));
    }
}
