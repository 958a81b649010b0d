//! The credential vault: seals a connector's secret fields with AES-256-GCM
//! under the current master key and opens them under any configured one.
//!
//! Format of a [`Sealed`] blob:
//! - `key_id`: the id (`kid`) of the master key it was sealed under;
//! - `nonce`: 96 random bits, fresh for every seal;
//! - `ciphertext`: AES-256-GCM of the secrets as a JSON object, tag appended.
//!
//! The connector uuid is the associated data, so a blob copied onto another
//! connector row does not open. Rotation (`ferry keys rotate`): put the new
//! key first in `FERRY_MASTER_KEY`, keep the old ones after it, and reseal
//! every blob for which [`Vault::needs_rotation`] is true (see
//! [`Vault::rotate`]); then the old keys can go.
//!
//! Opened secrets are a [`Secrets`]: redacted in `Debug`, overwritten when
//! dropped, and read only through [`Secrets::expose_secret`].
//!
//! Errors never carry key material, plaintext or ciphertext: only the key id.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::ExposeSecret;
use secrecy::zeroize::{Zeroize, Zeroizing};
use serde_json::{Map, Value};

use crate::config::MasterKeys;
use crate::domain::connector::Sealed;
use crate::{Error, Result};

/// Length of an AES-GCM nonce in bytes (96 bits).
const NONCE_LEN: usize = 12;

/// A connector's secret fields, opened. `Debug` shows none of them, every
/// string in them (names and values) is overwritten with zeros when they
/// are dropped, and they are read only through an explicit
/// [`expose_secret`](Secrets::expose_secret).
pub struct Secrets(Map<String, Value>);

impl Secrets {
    /// The secret fields, for the moment they are used. Do not keep, log or
    /// return what this gives.
    pub fn expose_secret(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([REDACTED])")
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        zeroize_map(&mut self.0);
    }
}

/// Overwrites every string of `map` (keys and values, nested ones too)
/// with zeros and leaves the map empty. Numbers and booleans are left as
/// they are: no secret field holds one.
fn zeroize_map(map: &mut Map<String, Value>) {
    for (mut key, mut value) in std::mem::take(map) {
        key.zeroize();
        zeroize_value(&mut value);
    }
}

fn zeroize_value(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_value),
        Value::Object(map) => zeroize_map(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Why sealing or opening failed, kept as the source of the internal error:
/// the cipher's refusal, or where the decrypted bytes stop being a JSON
/// object. The JSON parser's own message is not kept, since it may quote
/// the decrypted text.
#[derive(Debug)]
enum Cause {
    /// AES-GCM refused: the blob was tampered with, sealed under another
    /// key with the same id, or sealed for another connector.
    Cipher(aes_gcm::Error),
    /// The decrypted bytes do not parse as a JSON object.
    NotAnObject {
        category: serde_json::error::Category,
        line: usize,
        column: usize,
    },
}

impl Cause {
    fn not_an_object(error: &serde_json::Error) -> Self {
        Cause::NotAnObject {
            category: error.classify(),
            line: error.line(),
            column: error.column(),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Cipher(error) => write!(f, "AES-GCM refused the blob ({error})"),
            Cause::NotAnObject {
                category,
                line,
                column,
            } => write!(
                f,
                "{category:?} error at line {line}, column {column} of the decrypted JSON"
            ),
        }
    }
}

impl std::error::Error for Cause {}

/// Seals and opens connector secrets. Cheap to clone; its `Debug` output
/// names the key ids only.
#[derive(Clone)]
pub struct Vault {
    /// `(kid, cipher)`, the first one encrypts.
    ciphers: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.ciphers.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("Vault")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault over `keys`: the first key seals, every key opens. With no
    /// key at all (which [`MasterKeys::parse`] never produces) every seal
    /// and open fails with an internal error.
    pub fn new(keys: MasterKeys) -> Self {
        let ciphers = keys
            .keys
            .iter()
            .map(|(kid, key)| {
                (
                    kid.clone(),
                    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.expose_secret())),
                )
            })
            .collect();
        Vault { ciphers }
    }

    /// The id of the key new seals use (`""` when there is no key).
    pub fn current_key_id(&self) -> &str {
        self.ciphers.first().map(|(kid, _)| kid.as_str()).unwrap_or("")
    }

    /// Encrypts `secrets` (as a JSON object) under the current key, with
    /// `connector_uuid` as associated data and a fresh random nonce.
    pub fn seal(&self, connector_uuid: &str, secrets: &Map<String, Value>) -> Result<Sealed> {
        let (kid, cipher) = self
            .ciphers
            .first()
            .ok_or_else(|| Error::internal("credential vault: no master key is configured"))?;
        let plaintext = serde_json::to_vec(secrets).map(Zeroizing::new).map_err(|error| {
            Error::internal_with_source(
                format!("credential vault: cannot encode secrets for key {kid}"),
                error,
            )
        })?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: connector_uuid.as_bytes(),
                },
            )
            .map_err(|error| {
                Error::internal_with_source(
                    format!("credential vault: sealing under key {kid} failed"),
                    Cause::Cipher(error),
                )
            })?;
        Ok(Sealed {
            key_id: kid.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts a blob sealed for `connector_uuid` under any configured key.
    /// The decrypted bytes are overwritten once parsed.
    ///
    /// An unknown key id, a malformed nonce, a tampered blob or one sealed
    /// for another connector is an [`Error::Internal`] whose message names
    /// only the key id.
    pub fn open(&self, connector_uuid: &str, sealed: &Sealed) -> Result<Secrets> {
        let kid = sealed.key_id.as_str();
        let cipher = self
            .ciphers
            .iter()
            .find(|(id, _)| id == kid)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| {
                Error::internal(format!(
                    "credential vault: secrets are sealed under unknown key {kid}"
                ))
            })?;
        let nonce: [u8; NONCE_LEN] = sealed.nonce.as_slice().try_into().map_err(|error| {
            Error::internal_with_source(
                format!("credential vault: secrets sealed under key {kid} have a malformed nonce"),
                error,
            )
        })?;
        let plaintext = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: connector_uuid.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|error| {
                Error::internal_with_source(
                    format!(
                        "credential vault: secrets sealed under key {kid} do not open (tampered, or sealed for another connector)"
                    ),
                    Cause::Cipher(error),
                )
            })?;
        serde_json::from_slice::<Map<String, Value>>(&plaintext)
            .map(Secrets)
            .map_err(|error| {
                Error::internal_with_source(
                    format!("credential vault: secrets sealed under key {kid} are not a JSON object"),
                    Cause::not_an_object(&error),
                )
            })
    }

    /// True when `sealed` was sealed under a key other than the current one.
    pub fn needs_rotation(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current_key_id()
    }

    /// Reseals `sealed` under the current key when it needs rotation;
    /// `Ok(None)` when it is already current.
    pub fn rotate(&self, connector_uuid: &str, sealed: &Sealed) -> Result<Option<Sealed>> {
        if !self.needs_rotation(sealed) {
            return Ok(None);
        }
        let secrets = self.open(connector_uuid, sealed)?;
        self.seal(connector_uuid, secrets.expose_secret()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(entries: &[(&str, u8)]) -> MasterKeys {
        MasterKeys::new(entries.iter().map(|(kid, byte)| ((*kid).to_owned(), [*byte; 32])))
    }

    fn secrets() -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("password".into(), json!("s3cret"));
        map.insert("auth_token".into(), json!("sk_live_abc"));
        map
    }

    fn assert_internal_naming_only_kid(error: Error, kid: &str) {
        match error {
            Error::Internal { message, .. } => {
                assert!(message.contains(kid), "{message}");
                assert!(!message.contains("s3cret"), "{message}");
            }
            other => panic!("expected an internal error, got {other:?}"),
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(
            vault.open("conn_1", &sealed).expect("open").expose_secret(),
            &secrets()
        );
        assert!(!vault.needs_rotation(&sealed));
    }

    #[test]
    fn empty_secrets_round_trip() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &Map::new()).expect("seal");
        assert!(
            vault
                .open("conn_1", &sealed)
                .expect("open")
                .expose_secret()
                .is_empty()
        );
    }

    #[test]
    fn ciphertext_does_not_contain_the_plaintext() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        let text = String::from_utf8_lossy(&sealed.ciphertext);
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn opening_with_another_connector_uuid_fails() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        let error = vault.open("conn_2", &sealed).expect_err("wrong aad");
        assert_internal_naming_only_kid(error, "k1");
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let mut sealed = vault.seal("conn_1", &secrets()).expect("seal");
        sealed.ciphertext[0] ^= 0x01;
        assert_internal_naming_only_kid(vault.open("conn_1", &sealed).expect_err("tampered"), "k1");
    }

    #[test]
    fn tampered_nonce_and_truncated_blob_fail() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        let mut nonce = sealed.clone();
        nonce.nonce[3] ^= 0x80;
        assert!(vault.open("conn_1", &nonce).is_err());
        let mut short = sealed.clone();
        short.nonce.truncate(8);
        assert_internal_naming_only_kid(vault.open("conn_1", &short).expect_err("short nonce"), "k1");
        let mut truncated = sealed;
        truncated.ciphertext.truncate(4);
        assert!(vault.open("conn_1", &truncated).is_err());
    }

    #[test]
    fn relabelled_key_id_fails() {
        let vault = Vault::new(keys(&[("new", 2), ("old", 1)]));
        let mut sealed = vault.seal("conn_1", &secrets()).expect("seal");
        sealed.key_id = "old".into();
        assert_internal_naming_only_kid(vault.open("conn_1", &sealed).expect_err("wrong key"), "old");
    }

    #[test]
    fn old_key_blob_opens_after_rotation_config_and_reseals_under_the_new_key() {
        let old = Vault::new(keys(&[("old", 1)]));
        let sealed = old.seal("conn_1", &secrets()).expect("seal");

        let rotated = Vault::new(keys(&[("new", 2), ("old", 1)]));
        assert_eq!(rotated.current_key_id(), "new");
        assert!(rotated.needs_rotation(&sealed));
        assert_eq!(
            rotated.open("conn_1", &sealed).expect("open").expose_secret(),
            &secrets()
        );

        let resealed = rotated
            .rotate("conn_1", &sealed)
            .expect("rotate")
            .expect("needed rotation");
        assert_eq!(resealed.key_id, "new");
        assert!(!rotated.needs_rotation(&resealed));
        assert_eq!(rotated.rotate("conn_1", &resealed).expect("rotate"), None);

        let only_new = Vault::new(keys(&[("new", 2)]));
        assert_eq!(
            only_new.open("conn_1", &resealed).expect("open").expose_secret(),
            &secrets()
        );
        assert_internal_naming_only_kid(only_new.open("conn_1", &sealed).expect_err("old key gone"), "old");
    }

    #[test]
    fn two_seals_of_the_same_secrets_use_different_nonces() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let first = vault.seal("conn_1", &secrets()).expect("seal");
        let second = vault.seal("conn_1", &secrets()).expect("seal");
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
    }

    #[test]
    fn sealed_blob_survives_json_storage() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        let text = serde_json::to_string(&sealed).expect("encode");
        let back: Sealed = serde_json::from_str(&text).expect("decode");
        assert_eq!(
            vault.open("conn_1", &back).expect("open").expose_secret(),
            &secrets()
        );
    }

    #[test]
    fn debug_output_names_key_ids_only() {
        let vault = Vault::new(keys(&[("k1", 0x41)]));
        let text = format!("{vault:?}");
        assert!(text.contains("k1"), "{text}");
        assert!(
            !text.contains("65") && !text.contains("AAAA") && !text.contains("0x41"),
            "{text}"
        );
    }

    /// The source of an internal error, as `std::error::Error` reaches it.
    fn source_of(error: &Error) -> String {
        std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_else(|| panic!("{error:?} has no source"))
    }

    #[test]
    fn a_blob_that_does_not_open_keeps_the_cipher_refusal_as_its_source() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        let error = vault
            .open("conn_2", &sealed)
            .expect_err("another connector's blob");
        assert_eq!(source_of(&error), "AES-GCM refused the blob (aead::Error)");
    }

    #[test]
    fn a_malformed_nonce_keeps_the_length_error_as_its_source() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let mut sealed = vault.seal("conn_1", &secrets()).expect("seal");
        sealed.nonce.truncate(8);
        let error = vault.open("conn_1", &sealed).expect_err("short nonce");
        let source = std::error::Error::source(&error).expect("a source");
        assert!(source.is::<std::array::TryFromSliceError>(), "{source:?}");
    }

    #[test]
    fn decrypted_bytes_that_are_not_an_object_keep_where_parsing_stopped_but_not_the_text() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let (_, cipher) = &vault.ciphers[0];
        let nonce = [7u8; NONCE_LEN];
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: br#""s3cret""#,
                    aad: b"conn_1",
                },
            )
            .expect("encrypt");
        let sealed = Sealed {
            key_id: "k1".into(),
            nonce: nonce.to_vec(),
            ciphertext,
        };
        let error = vault.open("conn_1", &sealed).expect_err("a JSON string");
        assert_internal_naming_only_kid(error, "k1");
        let error = vault.open("conn_1", &sealed).expect_err("a JSON string");
        let source = source_of(&error);
        assert_eq!(source, "Data error at line 1, column 8 of the decrypted JSON");
        assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
    }

    #[test]
    fn opened_secrets_show_nothing_in_debug_and_are_read_through_expose_secret() {
        let vault = Vault::new(keys(&[("k1", 1)]));
        let sealed = vault.seal("conn_1", &secrets()).expect("seal");
        let opened = vault.open("conn_1", &sealed).expect("open");
        let text = format!("{opened:?} {:?}", Ok::<_, Error>(&opened));
        assert!(!text.contains("s3cret") && !text.contains("sk_live"), "{text}");
        assert!(
            !text.contains("password") && !text.contains("auth_token"),
            "{text}"
        );
        assert_eq!(opened.expose_secret()["password"], "s3cret");
    }

    #[test]
    fn dropping_secrets_overwrites_every_string_in_them() {
        let mut map = secrets();
        map.insert(
            "nested".into(),
            json!({"private_key": "-----BEGIN KEY-----", "list": ["tok_1", 7, true]}),
        );
        zeroize_map(&mut map);
        assert!(map.is_empty(), "the map is left empty");

        let mut value = json!({"a": ["pw", {"b": "key"}], "n": 5});
        zeroize_value(&mut value);
        assert_eq!(value, json!({}), "nested objects are emptied");

        let mut list = json!(["pw", ["token"], null]);
        zeroize_value(&mut list);
        assert_eq!(list, json!(["", [""], null]), "strings are zeroed and cleared");
    }

    #[test]
    fn a_vault_without_keys_refuses_to_seal() {
        let vault = Vault::new(MasterKeys { keys: Vec::new() });
        assert_eq!(vault.current_key_id(), "");
        assert!(matches!(
            vault.seal("conn_1", &secrets()),
            Err(Error::Internal { .. })
        ));
    }
}
