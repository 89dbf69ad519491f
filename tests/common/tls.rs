//! Test certificate authorities and certificates, made with rcgen when a test runs and
//! written to its scratch directory as PEM files: no private key is ever checked in.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority of its own for a test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA's certificate (PEM), as `--tls-ca` and the `*_tls_ca` settings take it.
    pub cert: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    pub fn cert(&self) -> &str {
        self.cert.to_str().expect("a UTF-8 path")
    }

    pub fn key(&self) -> &str {
        self.key.to_str().expect("a UTF-8 path")
    }
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/name-ca.crt`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("creating the certificates' directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("EnigmaDB test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA certificate");
        let cert = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&cert, issuer.pem()).expect("writing the CA certificate");
        TestCa { issuer, dir: dir.to_owned(), cert }
    }

    pub fn cert(&self) -> &str {
        self.cert.to_str().expect("a UTF-8 path")
    }

    /// A certificate for `name`, valid for the addresses `ips` and the name `localhost`, usable
    /// by a server and a client alike (a node's, or a client's for mutual TLS), signed by this CA.
    pub fn issue(&self, name: &str, ips: &[IpAddr]) -> Identity {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("certificate parameters");
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing a certificate");
        let identity =
            Identity { cert: self.dir.join(format!("{name}.crt")), key: self.dir.join(format!("{name}.key")) };
        std::fs::write(&identity.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&identity.key, key.serialize_pem()).expect("writing a key");
        identity
    }
}
