//! The server name (SNI) a TLS ClientHello asks for, read from the bytes of its record(s)
//! before any handshake: the peer port steers a TLS connection to the shard its server name
//! names while the socket can still move (docs/PROTOCOL.md, "TLS"). A small, bounded parser of
//! the ClientHello's layout (RFC 8446 4.1.2, RFC 6066 3); it never panics, whatever the bytes,
//! and allocates at most one ClientHello's worth.

use wire::tls::TLS_HANDSHAKE_RECORD;

/// Longest ClientHello (handshake message body) read for its server name. A TLS client sends
/// a few hundred bytes; one claiming more is not steered.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

/// Most bytes of a connection looked at for its ClientHello (its records with their headers).
pub const MAX_PEEK_BYTES: usize = 20 * 1024;

/// Largest record fragment TLS allows (2^14 bytes).
const MAX_FRAGMENT_BYTES: usize = 1 << 14;

/// TLS handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// TLS extension type `server_name`.
const SERVER_NAME_EXTENSION: u16 = 0;

/// `NameType` of a host name in the `server_name` extension.
const HOST_NAME: u8 = 0;

/// Why no server name was read from a connection's first bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The bytes so far are the start of a ClientHello: more are needed.
    #[error("the ClientHello is not complete")]
    Incomplete,
    /// A record that is not a handshake record.
    #[error("a record of content type {0:#04x}, not a handshake")]
    NotHandshake(u8),
    /// The first handshake message is not a ClientHello.
    #[error("a handshake message of type {0}, not a ClientHello")]
    NotClientHello(u8),
    /// The ClientHello claims more than [`MAX_CLIENT_HELLO_BYTES`], or its records take more
    /// than [`MAX_PEEK_BYTES`].
    #[error("the ClientHello exceeds {MAX_CLIENT_HELLO_BYTES} bytes, or its records {MAX_PEEK_BYTES} bytes")]
    TooLarge,
    /// Bytes that do not follow the ClientHello's layout (what was wrong).
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// (Peeking at a socket) no whole ClientHello arrived within the wait.
    #[error("no whole ClientHello within the wait")]
    Silent,
    /// (Peeking at a socket) it closed or failed before a whole ClientHello.
    #[error("the connection ended before a whole ClientHello")]
    Closed,
}

/// The host name the ClientHello at the start of `bytes` asks for: `Ok(None)` if it sends
/// none (no `server_name` extension, as for a name that is an IP address), `Err(Incomplete)`
/// if `bytes` hold only its start. Looks at most at the first [`MAX_PEEK_BYTES`] of `bytes`.
pub fn server_name(bytes: &[u8]) -> Result<Option<String>, SniError> {
    let bytes = &bytes[..bytes.len().min(MAX_PEEK_BYTES)];
    // Running out of bytes: more may come, unless the bound is reached.
    let short = if bytes.len() == MAX_PEEK_BYTES { SniError::TooLarge } else { SniError::Incomplete };
    let mut records = Reader(bytes);
    // The handshake message, from the fragments of the records carrying it.
    let mut message: Vec<u8> = Vec::new();
    loop {
        if message.len() >= 4 {
            let len = usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]);
            if len > MAX_CLIENT_HELLO_BYTES {
                return Err(SniError::TooLarge);
            }
            if message.len() >= 4 + len {
                return client_hello_server_name(&message[4..4 + len]);
            }
        }
        let Some(header) = records.take(5) else { return Err(short) };
        if header[0] != TLS_HANDSHAKE_RECORD {
            return Err(SniError::NotHandshake(header[0]));
        }
        if header[1] != 3 {
            return Err(SniError::Malformed("the record's protocol version is not 3.x"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniError::Malformed("an empty handshake record"));
        }
        if len > MAX_FRAGMENT_BYTES {
            return Err(SniError::Malformed("a record longer than 2^14 bytes"));
        }
        let Some(fragment) = records.take(len) else { return Err(short) };
        message.extend_from_slice(fragment);
        if message[0] != CLIENT_HELLO {
            return Err(SniError::NotClientHello(message[0]));
        }
    }
}

/// The host name in a whole ClientHello body (after its 4-byte handshake header).
fn client_hello_server_name(body: &[u8]) -> Result<Option<String>, SniError> {
    let malformed = SniError::Malformed;
    let mut hello = Reader(body);
    hello.take(2 + 32).ok_or(malformed("it ends in its version or random"))?;
    let session_id = hello.vec8().ok_or(malformed("it ends in its session id"))?;
    if session_id.len() > 32 {
        return Err(malformed("a session id longer than 32 bytes"));
    }
    hello.vec16().ok_or(malformed("it ends in its cipher suites"))?;
    hello.vec8().ok_or(malformed("it ends in its compression methods"))?;
    if hello.0.is_empty() {
        // A TLS 1.2 ClientHello may end here, without extensions.
        return Ok(None);
    }
    let mut extensions = Reader(hello.vec16().ok_or(malformed("it ends in its extensions"))?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16().ok_or(malformed("it ends in an extension's type"))?;
        let data = extensions.vec16().ok_or(malformed("it ends in an extension"))?;
        if kind == SERVER_NAME_EXTENSION {
            return server_name_extension(data);
        }
    }
    Ok(None)
}

/// The host name of a `server_name` extension's data (RFC 6066 3): the first entry of type
/// `host_name`.
fn server_name_extension(data: &[u8]) -> Result<Option<String>, SniError> {
    let malformed = SniError::Malformed;
    let mut data = Reader(data);
    let mut names = Reader(data.vec16().ok_or(malformed("a server_name extension without its list"))?);
    if !data.0.is_empty() || names.0.is_empty() {
        return Err(malformed("a server_name extension that is not one non-empty list"));
    }
    while !names.0.is_empty() {
        let kind = names.u8().ok_or(malformed("it ends in a server name's type"))?;
        let name = names.vec16().ok_or(malformed("it ends in a server name"))?;
        if kind == HOST_NAME {
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return Err(malformed("a host name that is empty or not printable ASCII"));
            }
            return Ok(Some(name.iter().map(|&b| char::from(b)).collect()));
        }
    }
    Ok(None)
}

/// Reads fields off the front of a byte slice; `None` when it is too short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

    use super::*;

    /// Trusts every certificate: only the ClientHello matters here.
    #[derive(Debug)]
    struct AnyServer;

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ED25519]
        }
    }

    /// The bytes a rustls client sends first when connecting to `name`: its ClientHello.
    fn client_hello(name: &str) -> Vec<u8> {
        let config = ClientConfig::builder_with_provider(wire::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer))
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).expect("a server name");
        let mut client = ClientConnection::new(Arc::new(config), name).expect("a client");
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).expect("writing to a Vec");
        }
        bytes
    }

    /// `hello` (one record) re-sent as records of at most `step` bytes of fragment each.
    fn refragmented(hello: &[u8], step: usize) -> Vec<u8> {
        let message = &hello[5..];
        let mut bytes = Vec::new();
        for fragment in message.chunks(step) {
            bytes.extend_from_slice(&[0x16, 3, 1]);
            bytes.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            bytes.extend_from_slice(fragment);
        }
        bytes
    }

    #[test]
    fn a_client_hello_gives_its_host_name() {
        let hello = client_hello("shard-1.peer.enigmadb");
        assert_eq!(hello[0], TLS_HANDSHAKE_RECORD);
        assert_eq!(server_name(&hello), Ok(Some("shard-1.peer.enigmadb".to_owned())));
        // Bytes after the ClientHello (none come before the server answers) change nothing.
        let longer = [&hello[..], &[0x17, 3, 3, 0, 1, 0][..]].concat();
        assert_eq!(server_name(&longer), Ok(Some("shard-1.peer.enigmadb".to_owned())));
        // The same message in many small records.
        for step in [1, 7, 100] {
            assert_eq!(server_name(&refragmented(&hello, step)), Ok(Some("shard-1.peer.enigmadb".to_owned())));
        }
    }

    #[test]
    fn a_client_hello_for_an_ip_address_has_no_host_name() {
        assert_eq!(server_name(&client_hello("127.0.0.1")), Ok(None));
        assert_eq!(server_name(&client_hello("::1")), Ok(None));
    }

    #[test]
    fn every_truncated_client_hello_is_incomplete() {
        let hello = client_hello("shard-12.peer.enigmadb");
        for end in 0..hello.len() {
            assert_eq!(server_name(&hello[..end]), Err(SniError::Incomplete), "the first {end} bytes");
        }
        let split = refragmented(&hello, 50);
        for end in 0..split.len() {
            assert_eq!(server_name(&split[..end]), Err(SniError::Incomplete), "the first {end} bytes");
        }
    }

    #[test]
    fn other_bytes_are_typed_errors() {
        let hello = client_hello("shard-1.peer.enigmadb");
        // A plaintext peer frame (ENGP...).
        assert_eq!(server_name(b"ENGP\x01\x7e\0\0"), Err(SniError::NotHandshake(b'E')));
        // An alert record.
        assert_eq!(server_name(&[0x15, 3, 3, 0, 2, 2, 40]), Err(SniError::NotHandshake(0x15)));
        // A handshake record holding a ServerHello.
        let mut server_hello = hello.clone();
        server_hello[5] = 2;
        assert_eq!(server_name(&server_hello), Err(SniError::NotClientHello(2)));
        // Record version 2.x, an empty record, an oversized record.
        assert!(matches!(server_name(&[0x16, 2, 0, 0, 4, 1, 0, 0, 0]), Err(SniError::Malformed(_))));
        assert!(matches!(server_name(&[0x16, 3, 1, 0, 0]), Err(SniError::Malformed(_))));
        assert!(matches!(server_name(&[0x16, 3, 1, 0x40, 1]), Err(SniError::Malformed(_))));
        // A ClientHello claiming more than the bound.
        assert_eq!(server_name(&[0x16, 3, 1, 0, 4, 1, 0, 0x40, 1]), Err(SniError::TooLarge));
        // Records that never finish a (legal-sized) ClientHello within the bytes looked at.
        let mut endless = vec![0x16, 3, 1, 0, 4, 1, 0, 0x40, 0];
        while endless.len() < MAX_PEEK_BYTES + 10 {
            endless.extend_from_slice(&[0x16, 3, 1, 0, 1, 0]);
        }
        assert_eq!(server_name(&endless), Err(SniError::TooLarge));
        // A ClientHello whose length ends before its fields do.
        let mut short = hello.clone();
        let len = 40u32;
        short[6..9].copy_from_slice(&len.to_be_bytes()[1..]);
        assert!(matches!(server_name(&short), Err(SniError::Malformed(_))), "{:?}", server_name(&short));
        // A host name with a byte that is not printable ASCII.
        let name_at = hello.windows(7).position(|w| w == b"shard-1").expect("the name is in the hello");
        let mut control = hello.clone();
        control[name_at] = 0;
        assert!(matches!(server_name(&control), Err(SniError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = server_name(&bytes);
            // Behind a well-formed record header too, so the parser gets past the first checks.
            let len = (bytes.len() as u16).to_be_bytes();
            let framed = [&[0x16, 3, 1, len[0], len[1], 1][..], &bytes[..]].concat();
            let _ = server_name(&framed);
        }

        #[test]
        fn a_client_hello_with_bytes_flipped_never_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            static HELLO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let mut hello = HELLO.get_or_init(|| client_hello("shard-3.peer.enigmadb")).clone();
            for (at, byte) in flips {
                let at = at.index(hello.len());
                hello[at] = byte;
            }
            let _ = server_name(&hello);
        }
    }
}
