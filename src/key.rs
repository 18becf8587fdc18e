//! The secret key of the single-process mode: `NEXUS_SECRET_KEY` when set, otherwise a key
//! generated on first start and kept in `NEXUS_DATA_DIR/secret.key` (mode 0600).

use std::{fs, io::Write as _, path::Path};

use anyhow::Context as _;
use nexus_shared::{Config, crypto::SecretKey};

pub(crate) fn resolve(config: &Config) -> anyhow::Result<SecretKey> {
    if let Some(key) = &config.secret_key {
        return Ok(key.clone());
    }
    let path = config.data_dir.join("secret.key");
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return SecretKey::from_base64(&text)
            .map_err(|expected| anyhow::anyhow!("{} must hold {expected}", path.display()));
    }
    let key = SecretKey::generate();
    write_private(&path, &key.to_base64())?;
    tracing::warn!(path = %path.display(), "NEXUS_SECRET_KEY is not set; generated a key and stored it there");
    Ok(key)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}
