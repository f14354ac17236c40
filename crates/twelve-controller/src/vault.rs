//! Secrets at rest: XChaCha20-Poly1305 with a 256-bit key kept in `TWELVE_HOME/secret.key`
//! (0600) or given as `TWELVE_SECRET_KEY` (base64). Every stored value carries its own
//! random 192-bit nonce; tampering or the wrong key is an error, never garbage.

use std::fmt;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const PREFIX: &str = "v1:";

/// Text that must not be shown: `Debug` and `Display` print a marker.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Sensitive(pub String);

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Sensitive {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

pub struct Vault {
    cipher: XChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read the secrets key {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot write the secrets key {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("the secrets key must be 32 bytes, base64-encoded ({0})")]
    BadKey(String),
    #[error("a stored secret cannot be decrypted: wrong secrets key, or the store was altered")]
    Decrypt,
}

impl Vault {
    /// Opens the vault: `TWELVE_SECRET_KEY`, else the key file (created on first use).
    pub fn open(key_file: &Path) -> Result<Vault, VaultError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        if let Some(k) = std::env::var_os("TWELVE_SECRET_KEY").filter(|k| !k.is_empty()) {
            let bytes = Zeroizing::new(
                b64.decode(k.to_string_lossy().trim())
                    .map_err(|e| VaultError::BadKey(e.to_string()))?,
            );
            return Vault::from_key(&bytes);
        }
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                let bytes = Zeroizing::new(
                    b64.decode(text.trim())
                        .map_err(|e| VaultError::BadKey(e.to_string()))?,
                );
                Vault::from_key(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
                write_private(key_file, &b64.encode(*key)).map_err(|error| VaultError::Write {
                    path: key_file.display().to_string(),
                    error,
                })?;
                Vault::from_key(&*key)
            }
            Err(error) => Err(VaultError::Read {
                path: key_file.display().to_string(),
                error,
            }),
        }
    }

    pub fn from_key(bytes: &[u8]) -> Result<Vault, VaultError> {
        if bytes.len() != 32 {
            return Err(VaultError::BadKey(format!("got {} bytes", bytes.len())));
        }
        Ok(Vault {
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        })
    }

    /// The cipher itself, for data sealed in a stream of chunks (backups on S3).
    pub(crate) fn cipher(&self) -> &XChaCha20Poly1305 {
        &self.cipher
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce: [u8; 24] = rand::random();
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    pub fn open_sealed(&self, sealed: &str) -> Result<Sensitive, VaultError> {
        let b64 = sealed.strip_prefix(PREFIX).ok_or(VaultError::Decrypt)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| VaultError::Decrypt)?;
        if blob.len() < 24 {
            return Err(VaultError::Decrypt);
        }
        let (nonce, ct) = blob.split_at(24);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| VaultError::Decrypt)?;
        String::from_utf8(pt)
            .map(Sensitive)
            .map_err(|_| VaultError::Decrypt)
    }
}

/// Writes a file readable by its owner only, atomically.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_round_trip_and_hide_the_plaintext() {
        let v = Vault::from_key(&[7u8; 32]).unwrap();
        let sealed = v.seal("hunter2-password");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            v.seal("hunter2-password"),
            "a fresh nonce each time"
        );
        assert_eq!(v.open_sealed(&sealed).unwrap().0, "hunter2-password");
        assert_eq!(
            format!("{:?}", v.open_sealed(&sealed).unwrap()),
            "<redacted>"
        );
    }

    #[test]
    fn the_wrong_key_or_a_changed_byte_is_an_error() {
        let v = Vault::from_key(&[7u8; 32]).unwrap();
        let sealed = v.seal("x");
        assert!(Vault::from_key(&[8u8; 32])
            .unwrap()
            .open_sealed(&sealed)
            .is_err());
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(v.open_sealed(&String::from_utf8(bytes).unwrap()).is_err());
    }

    #[test]
    fn the_key_file_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let a = Vault::open(&path).unwrap().seal("v");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Vault::open(&path).unwrap().open_sealed(&a).unwrap().0, "v");
    }
}
