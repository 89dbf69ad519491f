//! The user name and password of the client tools (`shell`, `admin`, `stress`): the
//! `-u/--username` and `-p/--password` flags, or a credentials file in cqlsh's format
//! (`~/.enigmadb/credentials` by default, like cqlsh's `~/.cassandra/credentials`):
//!
//! ```text
//! [PlainTextAuthProvider]
//! username = alice
//! password = s3cret
//! ```
//!
//! Flags win over the file. The password is never printed.
//!
//! Also the tools' TLS (`--tls-ca`, and `--tls-cert`/`--tls-key` for mutual TLS): whom they
//! trust, and the certificate they show a node that asks for one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use wire::protocol::PlainCredentials;
use wire::tls::ClientTls;

/// The section of the credentials file that holds them (cqlsh's).
const SECTION: &str = "PlainTextAuthProvider";
/// The default credentials file, under the home directory.
pub const DEFAULT_CREDENTIALS_FILE: &str = ".enigmadb/credentials";

#[derive(clap::Args, Debug, Default, Clone)]
pub struct CredentialArgs {
    /// Role to log in as, on a node with authentication on.
    #[arg(short = 'u', long, global = true)]
    pub username: Option<String>,
    /// The role's password (visible to other users of the machine in the process list:
    /// prefer the credentials file).
    #[arg(short = 'p', long, global = true)]
    pub password: Option<String>,
    /// File with the user name and password ([PlainTextAuthProvider] username = ...,
    /// password = ...) [default: ~/.enigmadb/credentials, when it exists].
    #[arg(long, global = true)]
    pub credentials: Option<PathBuf>,
}

impl CredentialArgs {
    /// The credentials to send when a node asks for them; `None` when none are given.
    pub fn resolve(&self) -> Result<Option<PlainCredentials>> {
        let file = match &self.credentials {
            Some(path) => Some(read_file(path)?),
            None => match std::env::var_os("HOME").map(|home| Path::new(&home).join(DEFAULT_CREDENTIALS_FILE)) {
                Some(path) if path.exists() => Some(read_file(&path)?),
                _ => None,
            },
        };
        let (file_user, file_password) = file.unwrap_or_default();
        let username = self.username.clone().or(file_user);
        let password = self.password.clone().or(file_password);
        match (username, password) {
            (Some(u), Some(p)) => Ok(Some(PlainCredentials::new(u, p))),
            (None, None) => Ok(None),
            (Some(u), None) => bail!("no password for {u}: give -p/--password or a credentials file"),
            (None, Some(_)) => bail!("a password without a user name: give -u/--username"),
        }
    }
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct TlsArgs {
    /// Connect with TLS, trusting node certificates signed by the CA in this PEM file.
    #[arg(long, value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for a node that asks for one (mutual TLS; with --tls-key).
    #[arg(long, value_name = "FILE", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS to connect with; `None` (plaintext) without --tls-ca.
    pub fn resolve(&self) -> Result<Option<ClientTls>> {
        let Some(ca) = &self.tls_ca else {
            if self.tls_cert.is_some() {
                bail!("--tls-cert needs --tls-ca (the CA that signed the node's certificate)");
            }
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        Ok(Some(ClientTls::from_files(ca, identity)?))
    }
}

fn read_file(path: &Path) -> Result<(Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("credentials file {}", path.display()))
}

/// The user name and password of the `[PlainTextAuthProvider]` section.
fn parse(text: &str) -> Result<(Option<String>, Option<String>)> {
    let (mut in_section, mut username, mut password) = (false, None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == SECTION;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expecting key = value", n + 1);
        };
        if !in_section {
            continue;
        }
        match key.trim() {
            "username" => username = Some(value.trim().to_owned()),
            "password" => password = Some(value.trim().to_owned()),
            other => bail!("line {}: unknown key '{other}' (username, password)", n + 1),
        }
    }
    Ok((username, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_section_gives_user_and_password_and_flags_win() {
        let text = "# mine\n[other]\nusername = x\n[PlainTextAuthProvider]\nusername = alice\npassword = s3 cret\n";
        assert_eq!(parse(text).unwrap(), (Some("alice".into()), Some("s3 cret".into())));
        assert!(parse("[PlainTextAuthProvider]\nuser = a\n").unwrap_err().to_string().contains("unknown key"));
        assert!(parse("[PlainTextAuthProvider]\nusername\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, text).unwrap();
        let args = CredentialArgs { credentials: Some(path.clone()), ..CredentialArgs::default() };
        assert_eq!(args.resolve().unwrap(), Some(PlainCredentials::new("alice", "s3 cret")));
        let args =
            CredentialArgs { username: Some("bob".into()), credentials: Some(path), ..CredentialArgs::default() };
        assert_eq!(args.resolve().unwrap(), Some(PlainCredentials::new("bob", "s3 cret")));
        let args = CredentialArgs {
            username: Some("bob".into()),
            credentials: Some(dir.path().join("none")),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
    }
}
