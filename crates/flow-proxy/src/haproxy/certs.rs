//! The certificates HAProxy serves on the HTTPS addresses: listing them, and adding an
//! uploaded one, checked before it is written and loaded by a reload (see [`crate::tls`]).

use crate::table::write_atomically;
use crate::tls::Source;

use super::*;

impl Haproxy {
    /// The certificates served on the HTTPS addresses, by name (the first is the default);
    /// none without HTTPS addresses (stored uploads are then kept, not served).
    pub fn certificates(&self) -> Vec<Certificate> {
        if self.inner.options.https_binds.is_empty() {
            return Vec::new();
        }
        self.inner
            .certificates
            .lock()
            .expect("certificates mutex poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// What the start found about the certificates: one sentence for each stored one that
    /// expired since it was taken (it is still served).
    pub fn certificate_warnings(&self) -> &[String] {
        &self.inner.certificate_warnings
    }

    /// Checks the PEM file `pem` ([`tls::check`]), stores it as the uploaded certificate
    /// `name` (replacing one of that name) and reloads HAProxy with it, which drops no
    /// request. A refused certificate is neither stored nor loaded; when HAProxy refuses the
    /// configuration, the previous file is put back and the previous certificates keep
    /// serving.
    pub async fn add_certificate(
        &self,
        name: &str,
        pem: Vec<u8>,
    ) -> Result<Certificate, HaproxyError> {
        let inner = &self.inner;
        let certificate = tls::check(name, &pem, Source::Upload, SystemTime::now())?;
        if inner.options.https_binds.is_empty() {
            return Err(CertError::NoHttps {
                name: name.to_string(),
            }
            .into());
        }
        let mut state = inner.state.lock().await;
        let current = inner
            .certificates
            .lock()
            .expect("certificates mutex poisoned")
            .clone();
        let previous = match current.get(name) {
            Some(existing) if existing.source == Source::CertsDir => {
                let certs_dir = inner.options.certs_dir.clone().unwrap_or_default();
                return Err(CertError::FromCertsDir {
                    name: name.to_string(),
                    path: certs_dir.join(name),
                }
                .into());
            }
            Some(existing) => Some(existing.pem().to_vec()),
            None => None,
        };
        let path = Certificates::path(&inner.options.state_dir, &certificate);
        write_atomically(&path, pem)
            .await
            .map_err(|source| CertError::Io {
                what: "cannot write",
                path: path.clone(),
                source,
            })?;
        let mut candidate = current.clone();
        candidate.insert(certificate.clone());
        *inner
            .certificates
            .lock()
            .expect("certificates mutex poisoned") = candidate;
        let table = state.table.clone();
        if let Err(error) = inner.reload_with(&mut state, &table, None).await {
            *inner
                .certificates
                .lock()
                .expect("certificates mutex poisoned") = current;
            let restored = match previous {
                Some(previous) => write_atomically(&path, previous).await,
                None => {
                    let removed = path.clone();
                    off_runtime(move || std::fs::remove_file(removed))
                        .await
                        .and_then(|removed| removed)
                }
            };
            if let Err(restore) = restored {
                eprintln!(
                    "docker-flow proxy: warning: the refused certificate {} could not be taken back ({restore}); a restart would load it again",
                    path.display()
                );
            }
            let _ = inner.install_config(&state.table, None).await;
            return Err(error);
        }
        Ok(certificate)
    }
}
