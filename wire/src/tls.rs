//! TLS for EnigmaDB's connections (rustls, its ring provider): reading certificates and keys
//! from PEM files, the client library's rustls configuration, and the blocking stream a
//! [`Client`](crate::client::Client) speaks over. The server builds its own configurations
//! from the same readers. No certificate or key is ever logged.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

pub use rustls;

/// The first byte of a TLS connection (a handshake record: the ClientHello). EnigmaDB's frames
/// start with `FRAME_MAGIC` ("ENGP"), so a server can tell the two apart from the first byte.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why TLS settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file that cannot be read or holds nothing usable.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// Files that do not make a TLS configuration together (a key that is not the
    /// certificate's, an unusable CA).
    #[error("TLS settings: {0}")]
    Config(String),
    /// A server name the certificate could be checked against cannot be made of this.
    #[error("'{0}' is not a server name a certificate can be checked against")]
    ServerName(String),
}

/// The cryptography every EnigmaDB TLS configuration uses: rustls' ring provider (TLS 1.3 and
/// 1.2, X25519/P-256/P-384 key exchange). rustls 0.23.48 marks it deprecated for lacking
/// post-quantum key exchange, which only its aws-lc-rs provider has; that one needs a much
/// longer C build (and cmake on some systems), so ring it is until post-quantum is wanted.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), message: message.to_string() }
}

/// Every certificate of a PEM file (a certificate and the chain up to its CA), at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    match certs.is_empty() {
        true => Err(file_error(path, "no certificate (-----BEGIN CERTIFICATE-----) in the file")),
        false => Ok(certs),
    }
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no usable private key: {e}")))
}

/// The certificate authorities of a PEM file, to check the other side's certificate against.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A client's TLS: the CA the server's certificate must be signed by, and for mutual TLS the
/// client's own certificate and key.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(load_roots(ca)?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?,
    };
    Ok(Arc::new(config))
}

/// How a client connects with TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; `None`: the IP address connected to.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// TLS trusting the CA in the PEM file `ca`, with the client certificate and key of
    /// `identity` for servers that ask for one.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        Ok(ClientTls { config: client_config(ca, identity)?, server_name: None })
    }

    /// The same TLS for a server reached as `host` (`name:port`, `name`, or an address): a
    /// name is what its certificate must carry; an address leaves the check to the IP.
    pub fn for_host(&self, host: &str) -> ClientTls {
        let name = match host.rsplit_once(':') {
            // "[::1]:9470", "::1" and "127.0.0.1:9470" are addresses.
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') => name,
            _ => host,
        };
        let is_address = name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() || name.contains(':');
        ClientTls { server_name: (!is_address).then(|| name.to_owned()), ..self.clone() }
    }

    /// The name checked against the certificate of the server at `ip`.
    pub fn server_name_for(&self, ip: IpAddr) -> Result<ServerName<'static>, TlsError> {
        match &self.server_name {
            None => Ok(ServerName::IpAddress(ip.into())),
            Some(name) => ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone())),
        }
    }
}

/// A client's socket: plaintext, or TLS over it.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// Performs the TLS handshake on `socket` (bounded by the socket's timeouts). The error
    /// says why the handshake failed (an untrusted certificate, a server that does not speak TLS).
    pub fn handshake(socket: TcpStream, tls: &ClientTls) -> Result<ClientStream, io::Error> {
        let ip = socket.peer_addr()?.ip();
        let name = tls.server_name_for(ip).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(tls.config.clone(), name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, socket);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(ClientStream::Tls(Box::new(stream)))
    }

    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(socket) => socket,
            ClientStream::Tls(stream) => &stream.sock,
        }
    }

    /// Whether answer bytes were received and decrypted but not read yet: a `poll` on the
    /// socket would not see them.
    pub fn has_buffered_input(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            // rustls wants no more bytes from the socket while it holds plaintext not read yet
            // (or the server's close_notify, which a read then returns at once).
            ClientStream::Tls(stream) => !stream.conn.is_handshaking() && !stream.conn.wants_read(),
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(socket) => socket.read(buf),
            ClientStream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(socket) => socket.write(buf),
            ClientStream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(socket) => socket.flush(),
            ClientStream::Tls(stream) => stream.flush(),
        }
    }
}

/// The rustls error an I/O error of a TLS stream carries, if any: why a handshake failed.
pub fn tls_failure(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
