//! TLS for the REST API (rustls with the ring provider): `api.tls_cert_file` (PEM, the
//! server certificate first, then any intermediates) and `api.tls_key_file` (PEM, PKCS#8,
//! PKCS#1 or SEC1). Both set = HTTPS only on `api.listen`; neither = plain HTTP.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Read and check the pair; every error names the file and what is wrong with it.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("api.tls_cert_file {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("api.tls_cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "api.tls_cert_file {}: no PEM certificate in it",
            cert_file.display()
        ));
    }
    // The key's contents never appear in an error.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "api.tls_key_file {}: no usable PEM private key ({})",
            key_file.display(),
            match e {
                rustls::pki_types::pem::Error::Io(io) => io.to_string(),
                _ => "not a PKCS#8, PKCS#1 or SEC1 key".into(),
            }
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "api.tls_cert_file {} and api.tls_key_file {} do not make a usable pair: {e}",
                cert_file.display(),
                key_file.display()
            )
        })
}
