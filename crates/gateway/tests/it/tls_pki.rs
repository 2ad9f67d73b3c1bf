//! A private CA and leaf certificates for the TLS tests (rcgen, in a temp dir), and clients
//! that trust only that CA: HTTPS (reqwest), gRPC (tonic), and a raw rustls client that reports
//! the certificate the server presented.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use whipgate::Config;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

use crate::harness::PATIENCE;

/// A private CA and the current leaf for `localhost` / 127.0.0.1, as PEM files in a temp dir.
pub struct TestPki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca_pem: String,
}

impl TestPki {
    /// A new CA, and a first leaf written to `cert.pem` / `key.pem`.
    pub fn new() -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "whipgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key)?;
        let pki = TestPki {
            dir: tempfile::tempdir()?,
            issuer: Issuer::new(params, ca_key),
            ca_pem: ca.pem(),
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem)?;
        pki.write_leaf()?;
        Ok(pki)
    }

    /// The temp dir the files are in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes a new leaf (fresh key, so a new certificate) over the files; returns its DER.
    pub fn write_leaf(&self) -> Result<Vec<u8>> {
        let (cert, key) = self.leaf()?;
        std::fs::write(self.cert_path(), cert.pem())?;
        std::fs::write(self.key_path(), key.serialize_pem())?;
        Ok(cert.der().to_vec())
    }

    /// A new leaf signed by the CA, not written anywhere.
    pub fn leaf(&self) -> Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "whipgate test");
        Ok((params.signed_by(&key, &self.issuer)?, key))
    }

    /// Points the gateway at the leaf files.
    pub fn configure(&self, config: &mut Config) {
        config.tls_cert = Some(self.cert_path());
        config.tls_key = Some(self.key_path());
    }

    /// An HTTPS client trusting only this CA.
    pub fn https(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?)
            .build()?)
    }

    /// A gRPC client over TLS trusting only this CA.
    pub async fn grpc(&self, addr: SocketAddr) -> Result<IngestControlClient<Channel>> {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        let channel = Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect()
            .await
            .context("connecting gRPC over TLS")?;
        Ok(IngestControlClient::new(channel))
    }

    /// A TLS connection to `addr` offering `alpn`, trusting only this CA.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes())?)?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost")?.to_owned();
        Ok(tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
            .await
            .context("TLS handshake timed out")??)
    }

    /// Handshakes with `addr` offering `alpn`; returns the leaf the server presented and the
    /// protocol ALPN chose.
    pub async fn presented(&self, addr: SocketAddr, alpn: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>)> {
        let tls = self.connect(addr, alpn).await?;
        let connection = tls.get_ref().1;
        let leaf = connection
            .peer_certificates()
            .and_then(|c| c.first())
            .context("no peer certificate")?
            .to_vec();
        Ok((
            leaf,
            connection.alpn_protocol().unwrap_or_default().to_vec(),
        ))
    }
}
