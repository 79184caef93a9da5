//! How a secret key (a server token, a device key, the status token) is written:
//! the secret itself, `{ file = "…" }` (a file relative to the config's folder),
//! or `{ credential = "name" }` (`$CREDENTIALS_DIRECTORY/name`, which systemd's
//! `LoadCredential=` fills). The last two keep the secret out of the config file,
//! which may then be readable by more users than the secret should be. A file's
//! trailing newline is not part of the secret.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::{Config, ConfigError};

/// The environment variable systemd sets for a service with `LoadCredential=`.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// A secret key's value as written. `Debug` never shows a literal secret.
#[derive(Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, { file = \"path\" } or { credential = \"name\" }"
)]
pub(crate) enum SecretValue {
    Literal(String),
    File(FileRef),
    Credential(CredentialRef),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRef {
    file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialRef {
    credential: String,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::Literal(_) => f.write_str("***"),
            SecretValue::File(r) => r.fmt(f),
            SecretValue::Credential(r) => r.fmt(f),
        }
    }
}

/// Which secret keys were written as literals, in file order (for the warning
/// about a config that others can read).
#[derive(Debug, Default)]
pub(crate) struct LiteralSecrets(RefCell<Vec<String>>);

impl LiteralSecrets {
    pub fn names(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

impl Checker<'_> {
    /// The secret `value` of `key` (named `name` in messages, e.g.
    /// `source.access_token`), read from its file or credential when it refers to
    /// one, with the span of the reference so that later checks report its line.
    /// Messages name the file or credential, never the secret.
    pub fn secret(
        &self,
        value: &Spanned<SecretValue>,
        key: &str,
        name: &str,
    ) -> Result<Spanned<String>, ConfigError> {
        let read = |path: PathBuf, what: String| {
            std::fs::read_to_string(&path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| self.at(value, key, format!("{name}: {what}: {e}")))
        };
        let secret = match value.get_ref() {
            SecretValue::Literal(s) => {
                self.literal_secrets().0.borrow_mut().push(name.to_string());
                s.clone()
            }
            SecretValue::File(r) => {
                if r.file.is_empty() {
                    return Err(self.at(value, key, format!("{name}: file: must not be empty")));
                }
                let path = self.base().join(&r.file);
                read(path.clone(), format!("cannot read {}", path.display()))?
            }
            SecretValue::Credential(r) => {
                let c = &r.credential;
                if c.is_empty() || c.contains('/') || c == "." || c == ".." {
                    let msg = format!("{name}: credential {c:?} is not a credential name");
                    return Err(self.at(value, key, msg));
                }
                let Some(dir) = std::env::var_os(CREDENTIALS_DIRECTORY) else {
                    let msg = format!(
                        "{name}: credential {c:?}: ${CREDENTIALS_DIRECTORY} is not set \
                         (systemd sets it for LoadCredential=)"
                    );
                    return Err(self.at(value, key, msg));
                };
                read(Path::new(&dir).join(c), format!("credential {c:?}"))?
            }
        };
        Ok(Spanned::new(value.span(), secret))
    }

    /// An optional secret (see [`Checker::secret`]).
    pub fn opt_secret(
        &self,
        value: &Option<Spanned<SecretValue>>,
        key: &str,
        name: &str,
    ) -> Result<Option<Spanned<String>>, ConfigError> {
        value
            .as_ref()
            .map(|v| self.secret(v, key, name))
            .transpose()
    }
}

impl Config {
    /// A warning when the config file holds a literal secret and every user may
    /// read it (mode `o+r`); `None` otherwise, or when the file cannot be looked at.
    pub fn exposed_secrets_warning(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let first = self.literal_secrets.first()?;
        let mode = std::fs::metadata(&self.path).ok()?.permissions().mode();
        (mode & 0o004 != 0).then(|| {
            format!(
                "{}: readable by every user (mode {:04o}) and holds the secret {first} \
                 as text: chmod o-r it (the package installs it 0640 root:fota-agent), \
                 or write {{ file = \"…\" }} or {{ credential = \"…\" }} instead",
                self.path.display(),
                mode & 0o7777
            )
        })
    }
}
