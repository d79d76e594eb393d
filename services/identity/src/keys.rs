//! The signing key: from the configuration, from a file, or generated (and persisted).
//!
//! Key material never reaches a log: errors name the file, not its content, and
//! `TokenSigner`'s `Debug` hides the key.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use tideway_runtime::auth::TokenSigner;

use crate::config::Config;

/// The signer the configuration asks for.
pub fn load_signer(config: &Config) -> anyhow::Result<TokenSigner> {
    if let Some(pem) = &config.signing_key {
        let signer = TokenSigner::from_pkcs8_pem(pem.expose_secret()).map_err(|_| {
            anyhow::anyhow!("identity.signing_key is not a PKCS#8 PEM Ed25519 private key")
        })?;
        tracing::info!(key_id = signer.key_id(), "using the configured signing key");
        return Ok(signer);
    }
    match &config.signing_key_file {
        Some(path) if path.exists() => load_file(path),
        Some(path) if config.generate_signing_key => generate_into(path),
        Some(path) => bail!(
            "identity.signing_key_file {} does not exist and identity.generate_signing_key is false",
            path.display()
        ),
        None if config.generate_signing_key => {
            let signer = TokenSigner::generate().context("cannot generate a signing key")?;
            tracing::warn!(
                key_id = signer.key_id(),
                "generated an in-memory signing key; tokens will not survive a restart \
                 (set identity.signing_key_file to keep it)"
            );
            Ok(signer)
        }
        None => {
            bail!("identity.signing_key is required when identity.generate_signing_key is false")
        }
    }
}

fn load_file(path: &Path) -> anyhow::Result<TokenSigner> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read identity.signing_key_file {}", path.display()))?;
    let signer = TokenSigner::from_pkcs8_pem(&pem).map_err(|_| {
        anyhow::anyhow!(
            "identity.signing_key_file {} is not a PKCS#8 PEM Ed25519 private key",
            path.display()
        )
    })?;
    warn_if_readable_by_others(path);
    tracing::info!(key_id = signer.key_id(), path = %path.display(), "loaded the signing key");
    Ok(signer)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the signing key file is readable by others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Generates a key and writes it to `path` without ever replacing an existing file: the PEM
/// goes to a private temporary file that is then hard-linked into place, so a replica
/// starting at the same moment either wins or loads the winner's key.
fn generate_into(path: &Path) -> anyhow::Result<TokenSigner> {
    let signer = TokenSigner::generate().context("cannot generate a signing key")?;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    }
    let temp = temp_path(path);
    let result =
        write_private(&temp, signer.to_pkcs8_pem()).and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match result {
        Ok(()) => {
            tracing::info!(key_id = signer.key_id(), path = %path.display(), "generated and saved a signing key");
            Ok(signer)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => load_file(path),
        Err(err) => Err(err)
            .with_context(|| format!("cannot write identity.signing_key_file {}", path.display())),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    path.with_file_name(name)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_persisted_privately_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/identity.pem");
        let config = Config {
            signing_key_file: Some(path.clone()),
            ..Config::default()
        };
        let first = load_signer(&config).unwrap();
        let second = load_signer(&config).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_missing_file_without_generation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            signing_key_file: Some(dir.path().join("absent.pem")),
            generate_signing_key: false,
            ..Config::default()
        };
        let err = load_signer(&config).unwrap_err().to_string();
        assert!(err.contains("identity.signing_key_file"), "{err}");
    }

    #[test]
    fn a_bad_key_is_refused_without_echoing_it() {
        let config = Config {
            signing_key: Some("not a key but a secret".into()),
            ..Config::default()
        };
        let err = format!("{:#}", load_signer(&config).unwrap_err());
        assert!(err.contains("identity.signing_key"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn the_configured_key_wins_over_the_file() {
        let signer = TokenSigner::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            signing_key: Some(signer.to_pkcs8_pem().into()),
            signing_key_file: Some(dir.path().join("k.pem")),
            ..Config::default()
        };
        assert_eq!(load_signer(&config).unwrap().key_id(), signer.key_id());
        assert!(!dir.path().join("k.pem").exists());
    }
}
