//! TLS termination: the certificates HAProxy serves on the HTTPS addresses
//! ([`crate::HaproxyOptions::https_binds`]), each checked before HAProxy ever loads it.
//!
//! # Where certificates come from
//!
//! A certificate is one PEM file holding the certificate chain (the server's certificate
//! first, then its intermediates) and the private key, the format Docker Flow 1.x and
//! HAProxy take. It comes from
//!
//! * the `--certs-dir` directory ([`crate::HaproxyOptions::certs_dir`]), read at start: each
//!   file is checked and copied into the state directory (`certs-dir/`), so what HAProxy
//!   loads on any later reload is exactly what was checked, whatever happens to the
//!   directory meanwhile;
//! * an upload (`PUT /v1/docker-flow-proxy/cert?certName=NAME`, the PEM as the body), stored
//!   in the state directory (`certs/NAME`) next to the route table and restored at every
//!   start.
//!
//! Files are written owner-only (0600) in owner-only directories, whatever the umask: they
//! hold private keys.
//!
//! # What is checked
//!
//! [`check`] refuses a file that is not PEM, lacks a certificate or the key, holds more than
//! one key, a key of a kind rustls cannot load, a key that is not the one of the first
//! certificate, or a certificate that is expired or not valid yet. Such a file is refused
//! ([`CertError`], answered 400) and never written nor loaded. A certificate that was taken
//! and expired since is still served after a restart, and the start warns about it:
//! refusing to start would stop the traffic of every other service.
//!
//! # How HAProxy serves them
//!
//! Every certificate is a `crt` of each HTTPS bind, so HAProxy picks the one whose names
//! match the client's SNI; the first by name is served to clients that send no name, or a
//! name no certificate covers. HAProxy cannot open a TLS listener without a certificate, so
//! the HTTPS addresses listen from the first certificate on. Changing certificates is a
//! reload, which drops no request (see [`crate::haproxy`]).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::table::{create_private_dir, write_atomically_blocking, StateDirError};

/// The largest certificate file taken (a chain of a few certificates and a key is a few KiB).
pub const MAX_PEM_BYTES: usize = 1024 * 1024;

/// The longest certificate name taken.
const MAX_NAME_LEN: usize = 128;

/// The state directory's subdirectory of uploaded certificates.
pub(crate) const UPLOADED_DIR: &str = "certs";

/// The state directory's subdirectory of the checked copies of `--certs-dir`.
pub(crate) const FROM_CERTS_DIR: &str = "certs-dir";

/// Where a served certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A file of `--certs-dir`.
    CertsDir,
    /// Uploaded through the API (`PUT cert`), stored in the state directory.
    Upload,
}

/// A checked certificate file, as HAProxy serves it. `Debug` leaves the private key out.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Its name (the file name, or `certName` of the upload).
    pub name: String,
    /// Where it came from.
    pub source: Source,
    /// The DNS names of the first certificate (its subject alternative names, else its
    /// common name): the SNI names it is served for.
    pub dns_names: Vec<String>,
    /// The end of the first certificate's validity, RFC 3339.
    pub not_after: String,
    /// Whether it expired (only a certificate taken before it expired, on a restart).
    pub expired: bool,
    /// The certificate chain as PEM, without the private key.
    pub chain_pem: String,
    /// SHA-256 of the chain's DER, hex: in the rendered configuration, so that a changed
    /// certificate makes the configuration differ from what HAProxy runs.
    pub fingerprint: String,
    /// The whole file (chain and key).
    pem: Vec<u8>,
}

/// Why a certificate is refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The name cannot be a file name of the state directory.
    #[error("invalid certName {name:?}: use 1 to {MAX_NAME_LEN} ASCII letters, digits, '-', '_' or '.', starting with a letter or digit and not ending in .tmp, e.g. certName=example.com.pem")]
    Name {
        /// The name given.
        name: String,
    },
    /// The upload has no `certName`.
    #[error("certName is missing: name the certificate, e.g. PUT /v1/docker-flow-proxy/cert?certName=example.com.pem with the PEM as the body")]
    NoName,
    /// The file is larger than [`MAX_PEM_BYTES`].
    #[error("certificate {name} is larger than {MAX_PEM_BYTES} bytes: send one PEM file holding the certificate chain and its key")]
    TooLarge {
        /// The certificate.
        name: String,
    },
    /// Not PEM, or a section of it does not decode.
    #[error("certificate {name} is not a valid PEM file ({reason}): send the certificate chain and the private key, PEM-encoded, in one file")]
    BadPem {
        /// The certificate.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No `CERTIFICATE` section.
    #[error("certificate {name} holds no certificate: put the certificate chain (server certificate first) and the private key in one PEM file")]
    NoCertificate {
        /// The certificate.
        name: String,
    },
    /// No private key section.
    #[error("certificate {name} holds no private key (an encrypted key is not taken: decrypt it first): append the unencrypted private key to the certificate chain")]
    NoKey {
        /// The certificate.
        name: String,
    },
    /// More than one private key.
    #[error(
        "certificate {name} holds {keys} private keys: keep only the key of its first certificate"
    )]
    SeveralKeys {
        /// The certificate.
        name: String,
        /// How many.
        keys: usize,
    },
    /// A certificate of the chain does not parse as X.509.
    #[error("certificate {name}: certificate {position} of its chain is not a valid X.509 certificate ({reason})")]
    BadCertificate {
        /// The certificate.
        name: String,
        /// Its position in the chain, from 1.
        position: usize,
        /// The parser's reason.
        reason: String,
    },
    /// The key is of a kind rustls cannot load (so it cannot be compared with the certificate).
    #[error(
        "certificate {name}: its private key is not a usable RSA, ECDSA or Ed25519 key ({reason})"
    )]
    BadKey {
        /// The certificate.
        name: String,
        /// rustls' reason.
        reason: String,
    },
    /// The key is not the first certificate's.
    #[error("certificate {name}: the private key does not match the first certificate of the chain ({reason}): put the server's certificate first and its own key with it")]
    KeyMismatch {
        /// The certificate.
        name: String,
        /// rustls' reason.
        reason: String,
    },
    /// A certificate of the chain expired.
    #[error("certificate {name}: certificate {position} of its chain ({subject}) expired on {not_after}: renew it")]
    Expired {
        /// The certificate.
        name: String,
        /// Its position in the chain, from 1.
        position: usize,
        /// The expired certificate's subject.
        subject: String,
        /// When it expired.
        not_after: String,
    },
    /// A certificate of the chain is not valid yet.
    #[error("certificate {name}: certificate {position} of its chain ({subject}) is not valid before {not_before}: check the clocks, or upload it once it is valid")]
    NotYetValid {
        /// The certificate.
        name: String,
        /// Its position in the chain, from 1.
        position: usize,
        /// The certificate's subject.
        subject: String,
        /// When it becomes valid.
        not_before: String,
    },
    /// Certificates are uploaded but the proxy has no HTTPS address to serve them on.
    #[error("certificate {name} would never be served: the proxy has no HTTPS address; start it with --bind-https ADDR")]
    NoHttps {
        /// The certificate.
        name: String,
    },
    /// `--certs-dir` without an HTTPS address: its certificates would never be served.
    #[error("the certificates of --certs-dir {} would never be served: the proxy has no HTTPS address; add --bind-https ADDR, or leave --certs-dir out", .dir.display())]
    CertsDirWithoutHttps {
        /// The directory.
        dir: PathBuf,
    },
    /// An upload under the name of a `--certs-dir` file.
    #[error("certificate {name} comes from --certs-dir ({}): replace the file there and restart, or upload under another certName", .path.display())]
    FromCertsDir {
        /// The certificate.
        name: String,
        /// The file in `--certs-dir`.
        path: PathBuf,
    },
    /// The same name in `--certs-dir` and among the uploaded certificates.
    #[error("certificate {name} is both in --certs-dir ({}) and uploaded ({}): remove one of them", .certs_dir.display(), .uploaded.display())]
    Twice {
        /// The certificate.
        name: String,
        /// The file in `--certs-dir`.
        certs_dir: PathBuf,
        /// The stored upload.
        uploaded: PathBuf,
    },
    /// A file of `--certs-dir` or of the state directory is refused.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        #[source]
        source: Box<CertError>,
    },
    /// A file or directory cannot be read or written.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The state directory's certificate directory cannot be made private.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
}

impl CertError {
    /// Whether the certificate itself (or its name) is at fault, rather than the file
    /// system: bad input, answered 400.
    pub fn is_bad_input(&self) -> bool {
        match self {
            CertError::Io { .. } | CertError::StateDir(_) => false,
            CertError::File { source, .. } => source.is_bad_input(),
            _ => true,
        }
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("dns_names", &self.dns_names)
            .field("not_after", &self.not_after)
            .field("expired", &self.expired)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// The whole file: the chain and the private key.
    pub(crate) fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// Checks `name`: a file name of the state directory (see [`CertError::Name`]).
pub fn check_name(name: &str) -> Result<(), CertError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.ends_with(".tmp");
    if valid {
        Ok(())
    } else {
        Err(CertError::Name {
            name: name.to_string(),
        })
    }
}

/// Checks the PEM file `pem` named `name` at time `now` (see the [module docs](self)).
pub fn check(
    name: &str,
    pem: &[u8],
    source: Source,
    now: SystemTime,
) -> Result<Certificate, CertError> {
    checked(name, pem, source, now, true)
}

/// [`check`], where `refuse_expired` false lets an expired certificate through, marked.
fn checked(
    name: &str,
    pem: &[u8],
    source: Source,
    now: SystemTime,
    refuse_expired: bool,
) -> Result<Certificate, CertError> {
    check_name(name)?;
    let name_owned = || name.to_string();
    if pem.len() > MAX_PEM_BYTES {
        return Err(CertError::TooLarge { name: name_owned() });
    }
    let bad_pem = |error: rustls_pki_types::pem::Error| CertError::BadPem {
        name: name_owned(),
        reason: error.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(bad_pem)?;
    let keys: Vec<PrivateKeyDer<'static>> = PrivateKeyDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(bad_pem)?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { name: name_owned() });
    }
    let key = match keys.len() {
        0 => return Err(CertError::NoKey { name: name_owned() }),
        1 => &keys[0],
        keys => {
            return Err(CertError::SeveralKeys {
                name: name_owned(),
                keys,
            })
        }
    };
    let unix_now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let now = ASN1Time::from_timestamp(unix_now).expect("the current time is a valid date");
    let mut dns_names = Vec::new();
    let mut leaf_not_after = String::new();
    let mut expired = false;
    for (index, der) in chain.iter().enumerate() {
        let position = index + 1;
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|error| {
            CertError::BadCertificate {
                name: name_owned(),
                position,
                reason: error.to_string(),
            }
        })?;
        let validity = parsed.validity();
        let subject = parsed.subject().to_string();
        if now < validity.not_before {
            return Err(CertError::NotYetValid {
                name: name_owned(),
                position,
                subject,
                not_before: rfc3339(validity.not_before),
            });
        }
        if now > validity.not_after {
            if refuse_expired {
                return Err(CertError::Expired {
                    name: name_owned(),
                    position,
                    subject,
                    not_after: rfc3339(validity.not_after),
                });
            }
            expired = true;
        }
        if index == 0 {
            leaf_not_after = rfc3339(validity.not_after);
            dns_names = served_names(&parsed);
        }
    }
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(key).map_err(|error| CertError::BadKey {
            name: name_owned(),
            reason: error.to_string(),
        })?;
    CertifiedKey::new(vec![chain[0].clone()], signing_key)
        .keys_match()
        .map_err(|error| CertError::KeyMismatch {
            name: name_owned(),
            reason: error.to_string(),
        })?;
    let chain_pem: String = chain.iter().map(|der| pem_block(der.as_ref())).collect();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for der in &chain {
        digest.update(der.as_ref());
    }
    let fingerprint = digest
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(Certificate {
        name: name_owned(),
        source,
        dns_names,
        not_after: leaf_not_after,
        expired,
        chain_pem,
        fingerprint,
        pem: pem.to_vec(),
    })
}

/// The DNS names a certificate is served for: its subject alternative names, else its
/// common name (what HAProxy indexes for SNI).
fn served_names(certificate: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let alternative: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !alternative.is_empty() {
        return alternative;
    }
    certificate
        .subject()
        .iter_common_name()
        .filter_map(|name| name.as_str().ok().map(str::to_string))
        .collect()
}

/// A certificate time as the rest of docker-flow writes times ([`flow_core::time::rfc3339`]);
/// X.509 times are whole seconds, so nothing is lost.
fn rfc3339(time: ASN1Time) -> String {
    let seconds = u64::try_from(time.timestamp()).unwrap_or(0);
    flow_core::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// One certificate as a PEM block (64 base64 characters a line).
fn pem_block(der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The certificates the proxy serves, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Certificates {
    by_name: BTreeMap<String, Certificate>,
}

impl Certificates {
    /// Every certificate, by name (the first is HAProxy's default).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Certificate> {
        self.by_name.values()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Certificate> {
        self.by_name.get(name)
    }

    /// Adds `certificate`, replacing the one of the same name.
    pub(crate) fn insert(&mut self, certificate: Certificate) {
        self.by_name.insert(certificate.name.clone(), certificate);
    }

    /// The file HAProxy loads `certificate` from, in `state_dir`.
    pub(crate) fn path(state_dir: &Path, certificate: &Certificate) -> PathBuf {
        let directory = match certificate.source {
            Source::Upload => UPLOADED_DIR,
            Source::CertsDir => FROM_CERTS_DIR,
        };
        state_dir.join(directory).join(&certificate.name)
    }

    /// Reads the certificates of a start (blocking): the uploads stored in `state_dir`, and
    /// the files of `certs_dir`, each checked and copied into `state_dir` (what was copied
    /// from an earlier `--certs-dir` and is no longer there is removed). Returns them with a
    /// warning for each stored one that expired since it was taken.
    pub(crate) fn load(
        state_dir: &Path,
        certs_dir: Option<&Path>,
        now: SystemTime,
    ) -> Result<(Certificates, Vec<String>), CertError> {
        let uploaded_dir = state_dir.join(UPLOADED_DIR);
        let copies_dir = state_dir.join(FROM_CERTS_DIR);
        create_private_dir(&uploaded_dir)?;
        create_private_dir(&copies_dir)?;
        let mut certificates = Certificates::default();
        let mut warnings = Vec::new();
        for (path, name) in pem_files(&uploaded_dir)? {
            let pem = read(&path)?;
            let certificate = checked(&name, &pem, Source::Upload, now, false)
                .map_err(|error| in_file(&path, error))?;
            if certificate.expired {
                warnings.push(format!(
                    "the uploaded certificate {name} ({}) expired on {}: it is still served; upload a renewed one",
                    path.display(),
                    certificate.not_after
                ));
            }
            certificates.insert(certificate);
        }
        let mut from_dir = Vec::new();
        if let Some(certs_dir) = certs_dir {
            for (path, name) in pem_files(certs_dir)? {
                if certificates.get(&name).is_some() {
                    return Err(CertError::Twice {
                        uploaded: uploaded_dir.join(&name),
                        certs_dir: path,
                        name,
                    });
                }
                let pem = read(&path)?;
                let certificate = check(&name, &pem, Source::CertsDir, now)
                    .map_err(|error| in_file(&path, error))?;
                from_dir.push(certificate);
            }
        }
        for (path, name) in pem_files(&copies_dir)? {
            if !from_dir.iter().any(|c| c.name == name) {
                fs::remove_file(&path).map_err(|source| CertError::Io {
                    what: "cannot remove the stale copy",
                    path: path.clone(),
                    source,
                })?;
            }
        }
        for certificate in from_dir {
            let path = Certificates::path(state_dir, &certificate);
            write_atomically_blocking(&path, certificate.pem()).map_err(|source| {
                CertError::Io {
                    what: "cannot write",
                    path,
                    source,
                }
            })?;
            certificates.insert(certificate);
        }
        Ok((certificates, warnings))
    }
}

fn in_file(path: &Path, error: CertError) -> CertError {
    CertError::File {
        path: path.to_path_buf(),
        source: Box::new(error),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    let metadata = fs::metadata(path).map_err(|source| CertError::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    })?;
    if metadata.len() > MAX_PEM_BYTES as u64 {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        return Err(in_file(
            path,
            CertError::TooLarge {
                name: name.into_owned(),
            },
        ));
    }
    fs::read(path).map_err(|source| CertError::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    })
}

/// The certificate files of `directory` with their names, sorted: every regular file (or
/// link to one) except hidden ones (`.…`, such as the `..data` links of a Kubernetes secret
/// volume) and the temporary files of an interrupted write (`….tmp`). A file whose name is
/// not a valid certificate name is refused, not skipped.
fn pem_files(directory: &Path) -> Result<Vec<(PathBuf, String)>, CertError> {
    let listing_error = |source| CertError::Io {
        what: "cannot list",
        path: directory.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(directory).map_err(listing_error)? {
        let entry = entry.map_err(listing_error)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".tmp") {
            continue;
        }
        let is_file = fs::metadata(&path)
            .map_err(|source| CertError::Io {
                what: "cannot read",
                path: path.clone(),
                source,
            })?
            .is_file();
        if !is_file {
            continue;
        }
        check_name(&name).map_err(|error| in_file(&path, error))?;
        files.push((path, name));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let certificate = params.self_signed(&key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    #[test]
    fn a_chain_with_its_key_is_taken_with_its_names_and_the_chain_without_the_key() {
        let (certificate, key) = leaf(&["a.example", "*.b.example"]);
        let pem = format!("{certificate}{key}");
        let checked = check("a.pem", pem.as_bytes(), Source::Upload, SystemTime::now()).unwrap();
        assert_eq!(checked.dns_names, ["a.example", "*.b.example"]);
        assert_eq!(
            checked.chain_pem.trim(),
            certificate.trim().replace("\r\n", "\n")
        );
        assert!(!checked.chain_pem.contains("PRIVATE KEY"));
        assert_eq!(checked.fingerprint.len(), 64);
        assert!(!format!("{checked:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn what_cannot_be_served_is_refused_by_name() {
        let now = SystemTime::now();
        let (certificate, key) = leaf(&["a.example"]);
        let (_, other_key) = leaf(&["a.example"]);
        let refused = |name: &str, pem: String| check(name, pem.as_bytes(), Source::Upload, now);
        assert!(matches!(
            refused("a.pem", "not a certificate".into()),
            Err(CertError::NoCertificate { .. })
        ));
        assert!(matches!(
            refused("a.pem", certificate.clone()),
            Err(CertError::NoKey { .. })
        ));
        assert!(matches!(
            refused("a.pem", format!("{certificate}{other_key}")),
            Err(CertError::KeyMismatch { .. })
        ));
        assert!(matches!(
            refused("a.pem", format!("{certificate}{key}{other_key}")),
            Err(CertError::SeveralKeys { keys: 2, .. })
        ));
        assert!(matches!(
            refused(
                "a.pem",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into()
            ),
            Err(CertError::BadPem { .. })
        ));
        for name in ["", "../x", ".hidden", "a b", "x.tmp"] {
            assert!(
                matches!(
                    refused(name, format!("{certificate}{key}")),
                    Err(CertError::Name { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn an_expired_certificate_is_refused_and_a_future_one_too() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["old.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let pem = format!(
            "{}{}",
            params.self_signed(&key).unwrap().pem(),
            key.serialize_pem()
        );
        let error =
            check("old.pem", pem.as_bytes(), Source::Upload, SystemTime::now()).unwrap_err();
        assert!(
            matches!(error, CertError::Expired { position: 1, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("2021-01-01"), "{error}");
        let early = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
        assert!(matches!(
            check("old.pem", pem.as_bytes(), Source::Upload, early),
            Err(CertError::NotYetValid { .. })
        ));
    }

    #[test]
    fn the_chain_is_encoded_back_as_pem() {
        assert_eq!(
            pem_block(b"hello"),
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"
        );
        assert!(pem_block(&[0u8; 100]).lines().all(|line| line.len() <= 64));
    }
}
