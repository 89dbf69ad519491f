//! The node's TLS (rustls through futures-rustls, over glommio's sockets): the configurations
//! of the client, peer and metrics ports, made once at start from the settings' PEM files, and
//! the stream a connection is served over, plaintext or TLS. A client port that serves both
//! tells them apart by a connection's first byte (docs/PROTOCOL.md, "TLS"). Certificates and
//! keys are never logged; a file that cannot be used stops the node naming the file. The peer
//! port reads a ClientHello's server name before the handshake ([`sni`], [`peek_server_name`])
//! to serve the connection on the shard it names.

pub mod sni;

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use wire::tls::{load_certs, load_key, load_roots, provider, TlsError, TLS_HANDSHAKE_RECORD};

use crate::config::ServerConfig;

/// The TLS of every port of a node, from its settings; `None` where a port is plaintext.
#[derive(Clone, Default)]
pub struct NodeTls {
    pub client: Option<ClientPortTls>,
    pub peer: Option<PeerTls>,
    /// The metrics endpoint's (`metrics_tls`: the client port's certificate, no client
    /// certificates asked).
    pub metrics: Option<TlsAcceptor>,
    /// The metrics endpoint's HTTP basic authentication (`metrics_basic_auth_file`).
    pub metrics_auth: Option<crate::metrics::http::BasicAuth>,
}

impl NodeTls {
    /// Reads the certificates, keys and CAs the settings name (the settings were validated:
    /// a certificate always comes with its key).
    pub fn load(config: &ServerConfig) -> Result<NodeTls, TlsError> {
        let client = match (&config.client_tls_cert, &config.client_tls_key) {
            (Some(cert), Some(key)) => Some(ClientPortTls {
                acceptor: TlsAcceptor::from(server_config(cert, key, config.client_tls_ca.as_deref())?),
                required: config.client_tls_required,
            }),
            _ => None,
        };
        let peer = match (&config.internode_tls_cert, &config.internode_tls_key, &config.internode_tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(PeerTls::load(cert, key, ca)?),
            _ => None,
        };
        let metrics = match (config.metrics_tls, &config.client_tls_cert, &config.client_tls_key) {
            (true, Some(cert), Some(key)) => Some(TlsAcceptor::from(server_config(cert, key, None)?)),
            _ => None,
        };
        let metrics_auth = match &config.metrics_basic_auth_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| TlsError::File { path: path.clone(), message: e.to_string() })?;
                let line = text.trim_end_matches(['\n', '\r']);
                let auth = crate::metrics::http::BasicAuth::new(line)
                    .map_err(|e| TlsError::File { path: path.clone(), message: e.to_owned() })?;
                Some(auth)
            }
        };
        Ok(NodeTls { client, peer, metrics, metrics_auth })
    }
}

/// A server's rustls configuration: its certificate chain and key, and with `client_ca` a
/// certificate asked of every client and checked against that CA (mutual TLS).
fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider())
                .build()
                .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(Arc::new(config))
}

/// The client port's TLS (the ordinary and the shard-aware port alike).
#[derive(Clone)]
pub struct ClientPortTls {
    pub acceptor: TlsAcceptor,
    /// A plaintext client is refused (`client_tls_required`); else both are served.
    pub required: bool,
}

/// Mutual TLS between nodes: each side presents its node certificate and checks the other's
/// against the cluster CA (`internode_tls_ca`).
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls { mutual, cluster CA }")
    }
}

impl PeerTls {
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let acceptor = TlsAcceptor::from(server_config(cert, key, Some(ca))?);
        let verifier = WebPkiServerVerifier::builder_with_provider(load_roots(ca)?, provider())
            .build()
            .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterCa(verifier)))
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?;
        Ok(PeerTls { acceptor, connector: TlsConnector::from(Arc::new(config)) })
    }

    /// Opens TLS on a connection to a peer, asking for the server name `name` (a DNS name the
    /// peer steers the connection by, `transport::shard_server_name`; never checked against
    /// the peer's certificate, see [`ClusterCa`]).
    pub async fn connect(&self, name: &str, stream: TcpStream) -> io::Result<Stream> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("server name {name:?}: {e}")))?;
        let tls = self.connector.connect(name, stream).await?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }
}

/// Checks a peer node's certificate against the cluster CA only, not against a host name:
/// the CA signs the cluster's nodes and nothing else (Cassandra's internode encryption
/// without `require_endpoint_verification`), and nodes reach each other by address, which a
/// node certificate need not name. The server name a node connects with names the callee's
/// shard (`shard-1.peer.enigmadb`), which no certificate names either.
#[derive(Debug)]
struct ClusterCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain to the CA first and the name last: a name error means the
        // chain was good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A connection's byte stream: plaintext, or TLS over the socket.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::TlsStream<TcpStream>>),
}

/// What a connection's first byte says it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A TLS handshake record (a ClientHello).
    Tls,
    /// Anything else: a plaintext frame starts with `FRAME_MAGIC`.
    Plain,
    /// Closed, reset or silent within the wait: nothing to serve.
    Nothing,
}

/// Peeks at the first byte of `stream` (leaving it to be read), waiting at most `wait`.
pub async fn opening(stream: &TcpStream, wait: Duration) -> Opening {
    let mut first = [0u8; 1];
    let peeked = futures_lite::future::or(async { Some(stream.peek(&mut first).await) }, async {
        glommio::timer::sleep(wait).await;
        None
    })
    .await;
    match peeked {
        Some(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => Opening::Tls,
        Some(Ok(1)) => Opening::Plain,
        _ => Opening::Nothing,
    }
}

/// First pause before peeking again at a ClientHello that has not all arrived; doubled up to
/// [`MAX_PEEK_PAUSE`]. (A peek answers at once while any byte is waiting: it cannot wait for
/// more.) A client sends its whole ClientHello at once: it is rarely split.
const FIRST_PEEK_PAUSE: Duration = Duration::from_millis(1);
const MAX_PEEK_PAUSE: Duration = Duration::from_millis(32);

/// The server name the ClientHello of an accepted connection asks for (see
/// [`sni::server_name`]), peeked at, leaving every byte to be read by the handshake; waits at
/// most `wait` for a whole ClientHello (`Err(Silent)`), reading at most
/// [`sni::MAX_PEEK_BYTES`].
pub async fn peek_server_name(stream: &TcpStream, wait: Duration) -> Result<Option<String>, sni::SniError> {
    let deadline = Instant::now() + wait;
    let mut bytes = vec![0u8; sni::MAX_PEEK_BYTES];
    let mut pause = FIRST_PEEK_PAUSE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let peeked = futures_lite::future::or(async { Some(stream.peek(&mut bytes).await) }, async {
            glommio::timer::sleep(left).await;
            None
        })
        .await;
        let n = match peeked {
            None => return Err(sni::SniError::Silent),
            Some(Ok(0) | Err(_)) => return Err(sni::SniError::Closed),
            Some(Ok(n)) => n,
        };
        match sni::server_name(&bytes[..n]) {
            Err(sni::SniError::Incomplete) => {
                let nap = pause.min(deadline.saturating_duration_since(Instant::now()));
                if nap.is_zero() {
                    return Err(sni::SniError::Silent);
                }
                glommio::timer::sleep(nap).await;
                pause = (pause * 2).min(MAX_PEEK_PAUSE);
            }
            answer => return answer,
        }
    }
}

/// The TLS handshake of an accepted connection, within `wait`; the error says why it failed.
pub async fn accept(acceptor: &TlsAcceptor, stream: TcpStream, wait: Duration) -> Result<Stream, String> {
    let handshake = async { Some(acceptor.accept(stream).await) };
    let timeout = async {
        glommio::timer::sleep(wait).await;
        None
    };
    match futures_lite::future::or(handshake, timeout).await {
        Some(Ok(tls)) => Ok(Stream::Tls(Box::new(tls.into()))),
        Some(Err(e)) => Err(e.to_string()),
        None => Err(format!("no TLS handshake within {wait:?}")),
    }
}

impl futures_lite::AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl futures_lite::AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
