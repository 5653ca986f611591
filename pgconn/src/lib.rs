//! Connecting to PostgreSQL the way `libpq` users expect from a URL: `sslmode=disable`,
//! `prefer` (the default: TLS when the server offers it), `require` (encrypted, certificate not
//! checked), `verify-ca` and `verify-full` (encrypted, the certificate checked against
//! `sslrootcert=FILE` or the public web roots, and the host name always checked: rustls does
//! not skip it, so `verify-ca` is as strict as `verify-full`). tokio-postgres itself knows only
//! disable/prefer/require and no `sslrootcert`, so those parameters are taken off the URL here.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector type every connection uses (TLS or not, by the config's ssl mode).
pub type Tls = MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database URL is not valid: {0}")]
    Url(String),
    #[error("sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("sslrootcert {path}: {why}")]
    RootCert { path: String, why: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// A parsed target: tokio-postgres config plus the matching TLS connector.
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    pub tls: Tls,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("ssl_mode", &self.config.get_ssl_mode())
            .finish()
    }
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
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
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Explicit: the process may link more than one provider, and then no default is chosen.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verify: Option<RootCertStore>) -> Result<ClientConfig, Error> {
    let p = provider();
    let builder = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(match verify {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
            .with_no_client_auth(),
    })
}

fn roots(file: Option<&str>) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match file {
        Some(path) => {
            let bad = |why: String| Error::RootCert {
                path: path.to_owned(),
                why,
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                store
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

/// Parses a `postgres://` URL (or key=value string without TLS parameters).
pub fn target(url: &str) -> Result<Target, Error> {
    let (rest, mode, rootcert) = match url::Url::parse(url) {
        Ok(mut u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            let mut mode = None;
            let mut rootcert = None;
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter_map(|(k, v)| match k.as_ref() {
                    "sslmode" => {
                        mode = Some(v.into_owned());
                        None
                    }
                    "sslrootcert" => {
                        rootcert = Some(v.into_owned());
                        None
                    }
                    _ => Some((k.into_owned(), v.into_owned())),
                })
                .collect();
            u.set_query(None);
            if !kept.is_empty() {
                u.query_pairs_mut().extend_pairs(kept);
            }
            (u.to_string(), mode, rootcert)
        }
        _ => (url.to_owned(), None, None),
    };
    let mut config: Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::Url(e.to_string()))?;
    let (ssl, verify) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, None),
        "prefer" | "allow" => (SslMode::Prefer, None),
        "require" => (SslMode::Require, None),
        "verify-ca" | "verify-full" => (SslMode::Require, Some(roots(rootcert.as_deref())?)),
        other => return Err(Error::SslMode(other.to_owned())),
    };
    config.ssl_mode(ssl);
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(client_config(verify)?),
    })
}

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Result<(Client, tokio::task::JoinHandle<()>), Error> {
    let t = target(url)?;
    let (client, conn) = t.config.connect(t.tls).await?;
    let handle = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    Ok((client, handle))
}

/// A bb8 connection manager for the URL.
pub fn manager(url: &str) -> Result<bb8_postgres::PostgresConnectionManager<Tls>, Error> {
    let t = target(url)?;
    Ok(bb8_postgres::PostgresConnectionManager::new(
        t.config, t.tls,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_understood_and_removed() {
        let t =
            target("postgres://u:p@db.example:25060/defaultdb?sslmode=require&application_name=x")
                .expect("parse");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(
            target("postgres://u@h/d")
                .expect("parse")
                .config
                .get_ssl_mode(),
            SslMode::Prefer
        );
        assert_eq!(
            target("postgres://u@h/d?sslmode=disable")
                .expect("parse")
                .config
                .get_ssl_mode(),
            SslMode::Disable
        );
        assert_eq!(
            target("postgres://u@h/d?sslmode=verify-full")
                .expect("web roots")
                .config
                .get_ssl_mode(),
            SslMode::Require
        );
        assert!(matches!(
            target("postgres://u@h/d?sslmode=sometimes"),
            Err(Error::SslMode(_))
        ));
        assert!(matches!(
            target("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent.pem"),
            Err(Error::RootCert { .. })
        ));
        assert!(matches!(target("nonsense://"), Err(Error::Url(_))));
    }
}
