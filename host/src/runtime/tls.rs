//! TLS for plugins, done by the host: the standard `wasi:tls` interface
//! (wasmtime-wasi-tls) over a socket the plugin opened through
//! `sandbox.sockets`, and plugin HTTPS. Both trust the webpki roots plus
//! the pump's `sandbox.tls_ca_files`, and always verify the certificate
//! and the name, so a plugin can neither skip verification nor carry a
//! TLS stack of its own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use wasmtime_wasi_tls::{TlsProvider, TlsStream, TlsTransport, WasiTlsCtx, WasiTlsCtxBuilder};

/// The certificates a pump's plugins trust.
#[derive(Debug, Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    /// The config `wasi:tls` handshakes with, made once per pump.
    plain: Arc<rustls::ClientConfig>,
}

/// Why `sandbox.tls_ca_files` could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("sandbox.tls_ca_files: {path}: {why}")]
pub struct TrustError {
    /// The file at fault.
    pub path: PathBuf,
    /// What was wrong with it.
    pub why: String,
}

impl Default for Trust {
    /// The webpki roots alone.
    fn default() -> Self {
        static WEBPKI: OnceLock<Trust> = OnceLock::new();
        WEBPKI
            .get_or_init(|| {
                Trust::new(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.into(),
                })
            })
            .clone()
    }
}

impl Trust {
    /// The webpki roots plus every certificate in the PEM files `ca_files`.
    /// A file that cannot be read, holds no certificate or holds one rustls
    /// refuses is an error naming it.
    pub fn load(ca_files: &[PathBuf]) -> Result<Trust, TrustError> {
        if ca_files.is_empty() {
            return Ok(Trust::default());
        }
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        for path in ca_files {
            let fail = |why: String| TrustError {
                path: path.clone(),
                why,
            };
            let certs = read_certs(path).map_err(fail)?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
            }
        }
        Ok(Trust::new(roots))
    }

    fn new(roots: RootCertStore) -> Trust {
        let roots = Arc::new(roots);
        Trust {
            plain: config(&roots, &[]),
            roots,
        }
    }

    /// A client config over these roots with the ring provider, offering
    /// `alpn` (empty for none).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        config(&self.roots, alpn)
    }

    /// A `wasi:tls` context that handshakes with these roots.
    pub fn wasi_ctx(&self) -> WasiTlsCtx {
        WasiTlsCtxBuilder::new()
            .provider(Box::new(Provider {
                config: self.plain.clone(),
            }))
            .build()
    }
}

fn config(roots: &Arc<RootCertStore>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports rustls' default protocol versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// rustls behind `wasi:tls`, with the pump's roots.
struct Provider {
    config: Arc<rustls::ClientConfig>,
}

type Handshake =
    Pin<Box<dyn Future<Output = Result<Box<dyn TlsStream>, wasmtime_wasi_tls::Error>> + Send>>;

impl TlsProvider for Provider {
    fn connect(&self, server_name: String, transport: Box<dyn TlsTransport>) -> Handshake {
        let config = self.config.clone();
        Box::pin(async move {
            let name = ServerName::try_from(server_name.clone()).map_err(|_| {
                wasmtime_wasi_tls::Error::msg(format!("{server_name:?} is not a server name"))
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, transport)
                .await
                .map_err(|e| wasmtime_wasi_tls::Error::msg(e.to_string()))?;
            Ok(Box::new(stream) as Box<dyn TlsStream>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Trust::load(std::slice::from_ref(&missing)).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = Trust::load(std::slice::from_ref(&empty)).unwrap_err();
        assert!(e.why.contains("no CERTIFICATE"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(Trust::load(&[garbage]).is_err());
    }

    #[test]
    fn no_files_means_the_webpki_roots() {
        let trust = Trust::load(&[]).unwrap();
        assert_eq!(trust.roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
    }
}
