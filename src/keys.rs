//! Ed25519 signing keys: generation, key ids, and PEM key files.
//!
//! The secret key is a PKCS#8 PEM file (mode 0600), the public key an SPKI
//! PEM file beside it (`<secret>.pub`): both open with OpenSSL and any other
//! standard tooling, so that an auditor can check seals independently.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::digest::{Digest, KEY_ID_TAG};
use crate::error::{Error, Result};

/// The key id of a public key: the first 8 bytes, in hex, of
/// `SHA-256(KEY_ID_TAG ‖ public key bytes)`.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = Digest::tagged(KEY_ID_TAG, &[key.as_bytes()]);
    hex::encode(&d.0[..8])
}

/// A new random signing key from the operating system's generator.
pub fn generate() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| Error::KeyFile {
        path: PathBuf::new(),
        reason: format!("no randomness from the operating system: {e}"),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public key file that goes with a secret key file: `<path>.pub`.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut s = secret.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn key_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Writes `key` to `secret` (PKCS#8 PEM, mode 0600) and its public key to
/// `<secret>.pub` (SPKI PEM). Refuses if either file exists.
pub fn write_key_pair(secret: &Path, key: &SigningKey) -> Result<PathBuf> {
    let public = public_key_path(secret);
    for p in [secret, public.as_path()] {
        if p.exists() {
            return Err(key_err(
                p,
                "already exists; refusing to overwrite a key file",
            ));
        }
    }
    // PKCS#8 v1 (RFC 8410: the private key alone), which OpenSSL and
    // Python's `cryptography` read; not v2 with the public key embedded.
    let pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| key_err(secret, format!("cannot encode: {e}")))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| key_err(&public, format!("cannot encode: {e}")))?;
    write_new(secret, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pub_pem.as_bytes(), 0o644) {
        let _ = fs::remove_file(secret);
        return Err(e);
    }
    Ok(public)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads a secret key file written by [`write_key_pair`] (or any PKCS#8 PEM
/// Ed25519 key). Refuses a file that others can read, as ssh does.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let meta = fs::metadata(path).map_err(|e| key_err(path, format!("cannot read: {e}")))?;
    if fs::read_to_string(path).is_ok_and(|pem| pem.contains("-----BEGIN PUBLIC KEY-----")) {
        return Err(key_err(
            path,
            "is a public key; signing needs the secret key (the file of the same name without .pub)",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(
                path,
                format!("permissions {mode:04o} are too open for a signing key; run chmod 600"),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let pem = fs::read_to_string(path).map_err(|e| key_err(path, format!("cannot read: {e}")))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| key_err(path, format!("not a PKCS#8 PEM Ed25519 private key: {e}")))
}

/// Reads a public key file (SPKI PEM).
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let pem = fs::read_to_string(path).map_err(|e| key_err(path, format!("cannot read: {e}")))?;
    if pem.contains("PRIVATE KEY-----") {
        return Err(key_err(
            path,
            "is a secret key; verifying needs the public key (its .pub file): \
             the secret key never leaves the writer",
        ));
    }
    VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| key_err(path, format!("not an SPKI PEM Ed25519 public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_key_where_a_public_one_belongs_and_back_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("audit.key");
        let public = write_key_pair(&secret, &generate().unwrap()).unwrap();
        let e = read_verifying_key(&secret).unwrap_err().to_string();
        assert!(
            e.contains("is a secret key; verifying needs the public key"),
            "{e}"
        );
        let e = read_signing_key(&public).unwrap_err().to_string();
        assert!(
            e.contains("is a public key; signing needs the secret key"),
            "{e}"
        );
    }

    #[test]
    fn a_pkcs8_v2_key_with_its_public_key_embedded_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("v2.key");
        let key = SigningKey::from_bytes(&[5; 32]);
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        write_new(&secret, v2.as_bytes(), 0o600).unwrap();
        assert_eq!(
            read_signing_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
    }

    #[test]
    fn key_pair_round_trip_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("audit.key");
        let key = generate().unwrap();
        let public = write_key_pair(&secret, &key).unwrap();
        assert_eq!(public, dir.path().join("audit.key.pub"));
        assert_eq!(
            read_signing_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let before = fs::read(&secret).unwrap();
        let err = write_key_pair(&secret, &generate().unwrap()).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(&secret).unwrap(), before);
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_secret_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("k");
        write_key_pair(&secret, &generate().unwrap()).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_signing_key(&secret).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn key_id_is_16_hex_digits() {
        let id = key_id(&SigningKey::from_bytes(&[7; 32]).verifying_key());
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
