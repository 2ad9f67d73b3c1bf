//! TLS for the HTTP edge and the gRPC control plane (rustls with the `ring` provider).
//!
//! Each certificate/key pair lives in a [`CertSource`], a rustls certificate resolver whose
//! current certificate sits behind an `ArcSwap`: [`TlsReload::reload`] (SIGHUP in the binary)
//! re-reads the PEM files and swaps it, so new handshakes get the new certificate while open
//! connections, gRPC streams and WebRTC sessions are untouched. A file that does not load
//! keeps the old certificate. Handshakes run per connection with a timeout
//! ([`incoming`]), never on an accept loop.

pub(crate) mod incoming;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::app::config::Config;
use crate::error::Error;

/// PEM files larger than this are refused (a chain of a few certificates is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// ALPN protocols of the HTTP listener.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// ALPN protocols of the gRPC listener.
const GRPC_ALPN: [&[u8]; 1] = [b"h2"];

/// Checks that each certificate comes with its key (and the other way round).
pub(crate) fn validate_pairs(config: &Config) -> Result<(), Error> {
    let pairs = [
        ("tls_cert", &config.tls_cert, "tls_key", &config.tls_key),
        (
            "grpc_tls_cert",
            &config.grpc_tls_cert,
            "grpc_tls_key",
            &config.grpc_tls_key,
        ),
    ];
    for (cert_name, cert, key_name, key) in pairs {
        match (cert, key) {
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "{cert_name} is set but {key_name} is not: TLS needs both the certificate \
                     and its private key (PEM files)"
                )));
            }
            (None, Some(_)) => {
                return Err(Error::Config(format!(
                    "{key_name} is set but {cert_name} is not: TLS needs both the certificate \
                     and its private key (PEM files)"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(Error::Config(format!(
            "{}: larger than {MAX_PEM_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Reads a PEM certificate chain and its private key and checks that they belong together.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let cert_pem = read_pem(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "{}: not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "{}: no CERTIFICATE block",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read_pem(key)?)
        .map_err(|e| Error::Config(format!("{}: not a PEM private key: {e}", key.display())))?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        Error::Config(format!(
            "{} with {}: unusable certificate and key: {e}",
            cert.display(),
            key.display()
        ))
    })
}

/// One certificate/key pair on disk and the certificate served from it now.
pub struct CertSource {
    /// `http` or `grpc`, for logs.
    name: &'static str,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSource")
            .field("name", &self.name)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertSource {
    fn open(
        name: &'static str,
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, Error> {
        let loaded = load_pair(cert, key, &provider)?;
        Ok(CertSource {
            name,
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Re-reads the files; on success new handshakes get the new certificate, on failure the
    /// current one stays.
    fn reload(&self) -> Result<(), Error> {
        let loaded = load_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }
}

impl ResolvesServerCert for CertSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Re-reads every configured certificate; cheap to clone (the binary calls it on SIGHUP).
#[derive(Clone, Debug, Default)]
pub struct TlsReload {
    sources: Vec<Arc<CertSource>>,
}

impl TlsReload {
    /// Re-reads each certificate/key pair. A pair that fails to load is logged and keeps its
    /// old certificate; the others are still swapped. Returns the failures, joined.
    pub fn reload(&self) -> Result<(), Error> {
        if self.sources.is_empty() {
            tracing::info!("reload: no TLS certificate configured, nothing to reload");
            return Ok(());
        }
        let mut failures = Vec::new();
        for source in &self.sources {
            match source.reload() {
                Ok(()) => {
                    tracing::info!(listener = source.name, cert = %source.cert.display(), "TLS certificate reloaded");
                }
                Err(err) => {
                    tracing::error!(listener = source.name, %err, "TLS certificate reload failed: keeping the current certificate");
                    failures.push(format!("{}: {err}", source.name));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(failures.join("; ")))
        }
    }
}

/// The acceptors of a gateway's listeners (`None`: that listener is plaintext).
pub(crate) struct TlsSetup {
    /// The HTTP listener's (and the metrics listener's).
    pub(crate) http: Option<TlsAcceptor>,
    /// The gRPC listener's.
    pub(crate) grpc: Option<TlsAcceptor>,
    /// Bound on each handshake.
    pub(crate) handshake_timeout: Duration,
    /// The reload handle over both pairs.
    pub(crate) reload: TlsReload,
}

impl TlsSetup {
    /// TLS for the HTTP and the gRPC listener, each counting its handshake failures under its
    /// own label (both series exist from the start).
    pub(crate) fn listeners(
        &self,
        metrics: &crate::metrics::Metrics,
    ) -> (Option<incoming::TlsOn>, Option<incoming::TlsOn>) {
        let on = |acceptor: &Option<TlsAcceptor>, listener: &str| {
            let failures = metrics
                .tls_handshake_failures
                .with_label_values(&[listener]);
            acceptor.clone().map(|acceptor| incoming::TlsOn {
                acceptor,
                timeout: self.handshake_timeout,
                failures,
            })
        };
        (on(&self.http, "http"), on(&self.grpc, "grpc"))
    }

    /// Loads the configured pairs (a load error is a startup error).
    pub(crate) fn from_config(config: &Config) -> Result<Self, Error> {
        validate_pairs(config)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut sources = Vec::new();
        let http_source = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let source = Arc::new(CertSource::open("http", cert, key, Arc::clone(&provider))?);
                sources.push(Arc::clone(&source));
                Some(source)
            }
            _ => None,
        };
        let grpc_source = match (&config.grpc_tls_cert, &config.grpc_tls_key) {
            (Some(cert), Some(key)) => {
                let source = Arc::new(CertSource::open("grpc", cert, key, Arc::clone(&provider))?);
                sources.push(Arc::clone(&source));
                Some(source)
            }
            _ => http_source.clone(),
        };
        if let Some(source) = &http_source {
            tracing::info!(cert = %source.cert.display(), "TLS: the HTTP listener serves HTTPS only");
        }
        if let Some(source) = &grpc_source {
            tracing::info!(cert = %source.cert.display(), "TLS: gRPC over TLS");
        }
        let acceptor = |source: Option<Arc<CertSource>>, alpn: &[&[u8]]| {
            source
                .map(|s| server_config(&provider, s, alpn).map(|c| TlsAcceptor::from(Arc::new(c))))
                .transpose()
        };
        Ok(TlsSetup {
            http: acceptor(http_source, &HTTP_ALPN)?,
            grpc: acceptor(grpc_source, &GRPC_ALPN)?,
            handshake_timeout: config.http_header_timeout,
            reload: TlsReload { sources },
        })
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    source: Arc<CertSource>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(source);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
