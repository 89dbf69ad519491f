//! The credentials of the authentication step (protocol version 3): SASL PLAIN (RFC 4616), as
//! Cassandra's PasswordAuthenticator takes them in AUTH_RESPONSE. Pure encode/decode; the
//! server decides whether the credentials are good. A password is never printed (`Debug`
//! hides it) and never part of an error message.

use std::fmt;

use super::MAX_NAME_BYTES;

/// The authenticator a server names in AUTHENTICATE when it asks for a password (Cassandra's
/// class name, which drivers recognize).
pub const PASSWORD_AUTHENTICATOR: &str = "org.apache.cassandra.auth.PasswordAuthenticator";

/// Longest password accepted (argon2 takes any length; this bounds the work of a login).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Largest AUTH_RESPONSE token: an authorization identity and a user name of at most
/// [`MAX_NAME_BYTES`] each, a password and the two separators.
pub const MAX_AUTH_TOKEN_BYTES: usize = 2 * MAX_NAME_BYTES + MAX_PASSWORD_BYTES + 2;

/// A user name and password, as sent in a SASL PLAIN token.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

/// Why an AUTH_RESPONSE token is not SASL PLAIN credentials. The server answers it with a
/// `BadCredentials` error and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("the SASL PLAIN token is {len} bytes, over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("a SASL PLAIN token is authzid NUL authcid NUL password: found {separators} NUL separator(s)")]
    Separators { separators: usize },
    #[error("the SASL PLAIN {what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("the SASL PLAIN {what} is empty")]
    Empty { what: &'static str },
    #[error("the SASL PLAIN {what} is {len} bytes, over the limit of {limit}")]
    FieldTooLong { what: &'static str, len: usize, limit: usize },
    #[error("an authorization identity other than the user name is not supported")]
    Authzid,
}

impl PlainCredentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> PlainCredentials {
        PlainCredentials { username: username.into(), password: password.into() }
    }

    /// The token: an empty authorization identity, NUL, the user name, NUL, the password.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.username.len() + self.password.len());
        out.push(0);
        out.extend_from_slice(self.username.as_bytes());
        out.push(0);
        out.extend_from_slice(self.password.as_bytes());
        out
    }

    /// Decodes a token. The authorization identity may be empty or the user name itself (a
    /// role acting as another is not supported); user name and password must be non-empty
    /// UTF-8 within their bounds.
    pub fn decode(token: &[u8]) -> Result<PlainCredentials, SaslError> {
        if token.len() > MAX_AUTH_TOKEN_BYTES {
            return Err(SaslError::TooLong { len: token.len(), limit: MAX_AUTH_TOKEN_BYTES });
        }
        let separators = token.iter().filter(|&&b| b == 0).count();
        if separators != 2 {
            return Err(SaslError::Separators { separators });
        }
        let mut parts = token.splitn(3, |&b| b == 0);
        // Exactly two separators: three parts, each present.
        let (authzid, user, password) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(u), Some(p)) => (a, u, p),
            _ => return Err(SaslError::Separators { separators }),
        };
        let text = |what: &'static str, raw: &[u8], limit: usize| -> Result<String, SaslError> {
            if raw.len() > limit {
                return Err(SaslError::FieldTooLong { what, len: raw.len(), limit });
            }
            String::from_utf8(raw.to_vec()).map_err(|_| SaslError::NotUtf8 { what })
        };
        let authzid = text("authorization identity", authzid, MAX_NAME_BYTES)?;
        let username = text("user name", user, MAX_NAME_BYTES)?;
        let password = text("password", password, MAX_PASSWORD_BYTES)?;
        if username.is_empty() {
            return Err(SaslError::Empty { what: "user name" });
        }
        if password.is_empty() {
            return Err(SaslError::Empty { what: "password" });
        }
        if !authzid.is_empty() && authzid != username {
            return Err(SaslError::Authzid);
        }
        Ok(PlainCredentials { username, password })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_tokens_decode_to_their_credentials() {
        let c = PlainCredentials::decode(b"\0alice\0s3cret").unwrap();
        assert_eq!(c, PlainCredentials::new("alice", "s3cret"));
        assert_eq!(PlainCredentials::decode(b"alice\0alice\0pw").unwrap(), PlainCredentials::new("alice", "pw"));
        assert_eq!(PlainCredentials::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn malformed_tokens_are_typed_errors() {
        assert_eq!(PlainCredentials::decode(b""), Err(SaslError::Separators { separators: 0 }));
        assert_eq!(PlainCredentials::decode(b"\0alice"), Err(SaslError::Separators { separators: 1 }));
        assert_eq!(PlainCredentials::decode(b"\0a\0b\0c"), Err(SaslError::Separators { separators: 3 }));
        assert_eq!(PlainCredentials::decode(b"\0\0pw"), Err(SaslError::Empty { what: "user name" }));
        assert_eq!(PlainCredentials::decode(b"\0alice\0"), Err(SaslError::Empty { what: "password" }));
        assert_eq!(PlainCredentials::decode(b"bob\0alice\0pw"), Err(SaslError::Authzid));
        assert_eq!(PlainCredentials::decode(b"\0al\xffice\0pw"), Err(SaslError::NotUtf8 { what: "user name" }));
        let long = [vec![0u8], vec![b'u'; MAX_NAME_BYTES + 1], vec![0u8], b"pw".to_vec()].concat();
        assert!(matches!(PlainCredentials::decode(&long), Err(SaslError::FieldTooLong { what: "user name", .. })));
        let huge = vec![b'x'; MAX_AUTH_TOKEN_BYTES + 1];
        assert!(matches!(PlainCredentials::decode(&huge), Err(SaslError::TooLong { .. })));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let shown = format!("{:?}", PlainCredentials::new("alice", "hunter2"));
        assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_typed(token in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(c) = PlainCredentials::decode(&token) {
                prop_assert!(!c.username.is_empty() && !c.password.is_empty());
                prop_assert!(!c.username.contains('\0') && !c.password.contains('\0'));
            }
        }

        #[test]
        fn credentials_round_trip(user in "[^\0]{1,20}", password in "[^\0]{1,20}") {
            let c = PlainCredentials::new(user, password);
            prop_assert_eq!(PlainCredentials::decode(&c.encode()), Ok(c));
        }
    }
}
