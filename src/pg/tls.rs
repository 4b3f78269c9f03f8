//! TLS to PostgreSQL: the store URL's `sslmode` (libpq's six values) and `sslrootcert`,
//! read as libpq reads them, turned into what tokio-postgres understands and a rustls
//! connector that verifies the server as the mode asks.
//!
//! - `disable`: plain TCP. `allow`, `prefer` (the default): TLS when the server offers it.
//! - `require` (and `allow`, `prefer` when TLS is used): the certificate is checked only
//!   when `sslrootcert` names a file (then as `verify-ca`), as libpq does; `require`
//!   refuses a plain connection.
//! - `verify-ca`: the certificate chains to the `sslrootcert` file (required: any public
//!   CA would do otherwise).
//! - `verify-full`: it chains to `sslrootcert` (the system's roots without one) and names
//!   the host connected to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> anyhow::Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => bail!(
                "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
        })
    }

    /// The nearest mode tokio-postgres knows (it leaves verification to the connector).
    fn for_client(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// None named: `verify-ca` and `verify-full` use the system's.
    Unset,
    /// `sslrootcert=system`: the system's roots.
    System,
    /// `sslrootcert=FILE`: the PEM certificates in it.
    File(PathBuf),
}

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    pub roots: Roots,
}

/// `url` without what tokio-postgres cannot read (`sslrootcert`, libpq's `verify-*` and
/// `allow` modes), and what those asked for. Other parameters are kept byte for byte.
/// Errors never repeat the URL: it may hold a password.
pub fn split_url(url: &str) -> anyhow::Result<(String, Tls)> {
    let mut tls = Tls {
        mode: SslMode::Prefer,
        roots: Roots::Unset,
    };
    // The query starts after the credentials (a `?` in a password is not one).
    let credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(at) = url[credentials..].find('?').map(|i| credentials + i) else {
        return Ok((url.to_string(), tls));
    };
    let (base, query) = (&url[..at], &url[at + 1..]);
    let (mut kept, mut mode) = (Vec::new(), None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value)
            .decode_utf8()
            .context("the store URL's query is not UTF-8")?;
        match key {
            "sslmode" => mode = Some(SslMode::parse(&value)?),
            "sslrootcert" if value == "system" => tls.roots = Roots::System,
            "sslrootcert" => tls.roots = Roots::File(PathBuf::from(value.as_ref())),
            _ => kept.push(pair),
        }
    }
    // As libpq 16: the system's roots mean verify-full, and nothing weaker.
    tls.mode = match (mode, &tls.roots) {
        (None | Some(SslMode::VerifyFull), Roots::System) => SslMode::VerifyFull,
        (Some(_), Roots::System) => bail!("sslrootcert=system needs sslmode=verify-full"),
        // Any public CA's certificate for any name would pass: not a check worth the name.
        (Some(SslMode::VerifyCa), Roots::Unset) => {
            bail!("sslmode=verify-ca needs sslrootcert=FILE (the CA that signs the server's)")
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    let mode = format!("sslmode={}", tls.mode.for_client());
    kept.push(&mode);
    Ok((format!("{base}?{}", kept.join("&")), tls))
}

/// The connector for `tls`: verifies as its mode asks (see the module's notes).
pub fn connector(tls: &Tls) -> anyhow::Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (tls.mode, &tls.roots) {
        // Never used: the client does not ask for TLS.
        (SslMode::Disable, _) => Arc::new(EncryptOnly(provider.clone())),
        (SslMode::VerifyFull, roots) => web_pki(roots, &provider)?,
        (SslMode::VerifyCa, roots) | (_, roots @ (Roots::File(_) | Roots::System)) => {
            Arc::new(ChainOnly(web_pki(roots, &provider)?))
        }
        (_, Roots::Unset) => Arc::new(EncryptOnly(provider.clone())),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The standard verifier (chain and host name) over `roots`.
fn web_pki(
    roots: &Roots,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<WebPkiServerVerifier>> {
    let store = match roots {
        Roots::File(path) => roots_from_file(path)?,
        Roots::System | Roots::Unset => system_roots()?,
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .context("the TLS verifier")
}

fn roots_from_file(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read sslrootcert {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("sslrootcert {} is not PEM", path.display()))?;
        store
            .add(cert)
            .with_context(|| format!("a certificate in {} is not usable", path.display()))?;
    }
    anyhow::ensure!(
        !store.is_empty(),
        "sslrootcert {} holds no certificate",
        path.display()
    );
    Ok(store)
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    anyhow::ensure!(
        !store.is_empty(),
        "no system root certificates to verify PostgreSQL's: name a file with sslrootcert="
    );
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted root; the name in it is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verified {
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encrypted, the certificate taken as it
/// comes (libpq's behaviour; the handshake's own signatures are still checked).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_become_what_the_client_reads_and_the_rest_stays_byte_for_byte() {
        let url = "postgres://u:p%40ss@db:5432/d?options=-c%20a%3Db&sslmode=verify-full\
                   &sslrootcert=%2Fetc%2Fca.pem&application_name=x+y";
        let (kept, tls) = split_url(url).unwrap();
        assert_eq!(
            kept,
            "postgres://u:p%40ss@db:5432/d?options=-c%20a%3Db&application_name=x+y\
             &sslmode=require"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, Roots::File(PathBuf::from("/etc/ca.pem")));
        let (kept, tls) = split_url("postgres://u@h/d?sslmode=allow").unwrap();
        assert_eq!(kept, "postgres://u@h/d?sslmode=prefer");
        assert_eq!((tls.mode, tls.roots), (SslMode::Allow, Roots::Unset));
        let (kept, tls) = split_url("postgres://u@h/d?sslrootcert=system").unwrap();
        assert_eq!(kept, "postgres://u@h/d?sslmode=require");
        assert_eq!((tls.mode, tls.roots), (SslMode::VerifyFull, Roots::System));
        let err = split_url("postgres://u@h/d?sslrootcert=system&sslmode=require").unwrap_err();
        assert!(
            format!("{err}").contains("needs sslmode=verify-full"),
            "{err}"
        );
        let err = split_url("postgres://u@h/d?sslmode=verify-ca").unwrap_err();
        assert!(format!("{err}").contains("needs sslrootcert=FILE"), "{err}");
        // A `?` in the password is not the query's start.
        let (kept, tls) = split_url("postgres://u:pa?ss@h/d?sslmode=require").unwrap();
        assert_eq!(kept, "postgres://u:pa?ss@h/d?sslmode=require");
        assert_eq!(tls.mode, SslMode::Require);
        let (kept, _) = split_url("postgres://u:pa?ss@h/d").unwrap();
        assert_eq!(kept, "postgres://u:pa?ss@h/d");
        let (kept, tls) = split_url("postgres://u@h/d").unwrap();
        assert_eq!(kept, "postgres://u@h/d");
        assert_eq!((tls.mode, tls.roots), (SslMode::Prefer, Roots::Unset));
    }

    #[test]
    fn a_bad_mode_is_refused_without_repeating_the_url() {
        let err = split_url("postgres://u:secret@h/d?sslmode=verify").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("sslmode must be one of"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn a_missing_or_empty_root_file_is_a_clear_error() {
        let tls = |path: &Path| Tls {
            mode: SslMode::VerifyFull,
            roots: Roots::File(path.to_path_buf()),
        };
        let err = connector(&tls(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("cannot read sslrootcert"),
            "{err:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = connector(&tls(&empty)).err().unwrap();
        assert!(
            format!("{err:#}").contains("holds no certificate"),
            "{err:#}"
        );
    }
}
