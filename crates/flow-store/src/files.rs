//! File primitives of the store: atomic writes, reads that tell "absent" from "corrupt",
//! OS locks, and the mapping of failures onto [`RegistryError`].

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flow_core::RegistryError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How much of an unreadable file a `Corrupt` error quotes.
const QUOTED_BYTES: usize = 200;

/// A failed file operation, kept as the source of [`RegistryError::Unavailable`] so the
/// message names the file and what was being done to it.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub(crate) struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// `Ok(None)` for "not found", so absent files can be told from failing ones.
pub(crate) fn not_found_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`RegistryError::Corrupt`] for the file at `path`.
pub(crate) fn corrupt(path: &Path, value: &str, reason: &str) -> RegistryError {
    let mut quoted: String = value.chars().take(QUOTED_BYTES).collect();
    if quoted.len() < value.len() {
        quoted.push('…');
    }
    RegistryError::Corrupt {
        key: path.display().to_string(),
        value: quoted,
        reason: reason.to_string(),
    }
}

/// An id as a file-name stem: ASCII letters, digits, `-` and `_` stay, every other byte is
/// `%XX`. The result never contains `/`, never starts with `.` and is never empty for a
/// non-empty id.
pub(crate) fn encode_id(id: &str) -> String {
    let mut encoded = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    if encoded.is_empty() {
        // The empty id still needs a file of its own.
        encoded.push('%');
    }
    encoded
}

/// How far a write must have reached the disk when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// The new content survives a power loss: file and directory are fsynced. For the state
    /// and registrations, which nothing else can rebuild.
    Durable,
    /// The file is whole (fsynced before the rename) but the rename itself may be lost in a
    /// power loss, leaving the old file. Enough for the plain copies (state.json rules) and
    /// the lock record (after a reboot no OS lock is held, so either record frees the lock);
    /// it saves a directory fsync per write.
    Whole,
}

/// The store's directory and the file operations on it.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The address errors name: the store's directory.
    pub(crate) fn address(&self) -> String {
        self.dir.display().to_string()
    }

    pub(crate) fn io_error(
        &self,
        action: &'static str,
        path: &Path,
        e: io::Error,
    ) -> RegistryError {
        RegistryError::Unavailable {
            address: self.address(),
            source: Box::new(FileError {
                action,
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// The text of `path`, `None` when it does not exist; text that is not UTF-8 is corrupt.
    fn read_text(&self, path: &Path) -> Result<Option<String>, RegistryError> {
        let Some(bytes) =
            not_found_is_none(fs::read(path)).map_err(|e| self.io_error("read", path, e))?
        else {
            return Ok(None);
        };
        String::from_utf8(bytes).map(Some).map_err(|e| {
            corrupt(
                path,
                &String::from_utf8_lossy(e.as_bytes()),
                "not UTF-8 text",
            )
        })
    }

    /// The JSON value in `path`, `None` when it does not exist.
    pub(crate) fn read_json<T: DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, RegistryError> {
        let Some(text) = self.read_text(path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| corrupt(path, &text, &e.to_string()))
    }

    /// The value of a one-line plain file, `None` when it does not exist.
    pub(crate) fn read_plain<T>(
        &self,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, RegistryError> {
        let Some(text) = self.read_text(path)? else {
            return Ok(None);
        };
        parse(&text)
            .map(Some)
            .map_err(|reason| corrupt(path, &text, &reason))
    }

    /// Writes `value` as JSON to `path`, atomically.
    pub(crate) fn write_json<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        durability: Durability,
    ) -> Result<(), RegistryError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| {
            self.io_error(
                "serialize",
                path,
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        bytes.push(b'\n');
        self.write_atomic(path, &bytes, durability)
    }

    /// Writes `text` and a newline to `path` atomically, or removes `path` for `None`.
    pub(crate) fn write_plain(
        &self,
        path: &Path,
        text: Option<String>,
    ) -> Result<(), RegistryError> {
        match text {
            Some(text) => {
                self.write_atomic(path, format!("{text}\n").as_bytes(), Durability::Whole)
            }
            None => self.remove(path),
        }
    }

    /// Removes `path`; an absent file is not an error.
    pub(crate) fn remove(&self, path: &Path) -> Result<(), RegistryError> {
        not_found_is_none(fs::remove_file(path))
            .map(drop)
            .map_err(|e| self.io_error("remove", path, e))
    }

    /// Temp file in the same directory, fsync, rename over `path` (and, when `Durable`,
    /// fsync the directory): a crash leaves the old content or the new one, never a mix.
    fn write_atomic(
        &self,
        path: &Path,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<(), RegistryError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| self.io_error("create directory", dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temporary, path)?;
            match durability {
                Durability::Durable => File::open(dir)?.sync_all(),
                Durability::Whole => Ok(()),
            }
        })();
        written.map_err(|e| {
            // Best effort: the temporary file is hidden and harmless if it stays.
            let _ = fs::remove_file(&temporary);
            self.io_error("write", path, e)
        })
    }

    fn open_lock_file(&self, path: &Path) -> Result<File, RegistryError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| self.io_error("create directory", dir, e))?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| self.io_error("open", path, e))
    }

    /// Waits for the exclusive OS lock on `<dir>/guard` and returns it; dropping the file
    /// releases it. Held only for one read-compare-write, so the wait is short.
    pub(crate) fn guard(&self, dir: &Path) -> Result<File, RegistryError> {
        let path = dir.join("guard");
        let file = self.open_lock_file(&path)?;
        file.lock().map_err(|e| self.io_error("lock", &path, e))?;
        Ok(file)
    }

    /// The exclusive OS lock on `path` if nobody holds it, `None` if somebody does.
    pub(crate) fn try_os_lock(&self, path: &Path) -> Result<Option<File>, RegistryError> {
        let file = self.open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(self.io_error("lock", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_safe_file_names() {
        assert_eq!(encode_id("host-a:c1_x:8080"), "host-a%3Ac1_x%3A8080");
        assert_eq!(
            encode_id("../../etc/passwd"),
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"
        );
        assert_eq!(encode_id(".hidden"), "%2Ehidden");
        assert_eq!(encode_id("é"), "%C3%A9");
        assert_eq!(encode_id(""), "%");
        // Distinct ids stay distinct: '%' itself is encoded.
        assert_ne!(encode_id("%3A"), encode_id(":"));
    }

    #[test]
    fn corrupt_quotes_a_bounded_value() {
        let long = "x".repeat(1000);
        match corrupt(Path::new("/s/state.json"), &long, "bad") {
            RegistryError::Corrupt { key, value, .. } => {
                assert_eq!(key, "/s/state.json");
                assert!(value.chars().count() <= QUOTED_BYTES + 1);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
