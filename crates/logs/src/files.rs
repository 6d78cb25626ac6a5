//! Where a replica's log records live: `{log_dir}/{replica}/{seq:010}.log`, numbered by a
//! sequence that only grows, so that a file name is never reused and a reader's cursor
//! `(seq, offset)` stays valid across rotation. The driver deletes the oldest files beyond
//! the policy's count; readers whose file went resume at the oldest file left.

use std::io;
use std::path::{Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// kubelet's `containerLogMaxSize` default.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// kubelet's `containerLogMaxFiles` default.
pub const DEFAULT_MAX_FILES: u32 = 5;

/// How big one log file may grow and how many files of a replica are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file is closed and a new one started once the next record would pass this size
    /// (a file always takes at least one record).
    pub max_size: u64,
    /// Files kept, the one being written included (at least 1).
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// The file of sequence number `seq` in a replica's log directory.
pub(crate) fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:010}.log"))
}

/// The sequence numbers of the log files in `dir`, ascending; empty for a missing directory.
/// Other files (a driver's `.tmp`, a stray editor backup) are ignored.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut seqs = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(seq) = stem.parse() {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The driver's settings, passed as the one value of the `binary://` log URI (containerd
/// hands a URI's query pairs to the driver as arguments in random order, so there is exactly
/// one): `MAX_SIZE:MAX_FILES:DIR`, the directory last so that it may contain colons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    pub dir: PathBuf,
    pub rotation: Rotation,
}

impl DriverConfig {
    pub fn to_arg(&self) -> String {
        format!(
            "{}:{}:{}",
            self.rotation.max_size,
            self.rotation.max_files,
            self.dir.display()
        )
    }

    /// Parses [`DriverConfig::to_arg`]'s form. Sizes that do not parse fall back to the
    /// defaults (the driver must run whatever it is given); only a missing directory fails.
    pub fn parse(arg: &str) -> Result<DriverConfig, String> {
        let mut parts = arg.splitn(3, ':');
        let (size, files, dir) = match (parts.next(), parts.next(), parts.next()) {
            (Some(size), Some(files), Some(dir)) if !dir.is_empty() => (size, files, dir),
            _ => return Err(format!("{arg:?} is not MAX_SIZE:MAX_FILES:DIR")),
        };
        let defaults = Rotation::default();
        Ok(DriverConfig {
            dir: PathBuf::from(dir),
            rotation: Rotation {
                max_size: size
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .unwrap_or(defaults.max_size),
                max_files: files
                    .parse()
                    .ok()
                    .filter(|f| *f > 0)
                    .unwrap_or(defaults.max_files),
            },
        })
    }
}

/// What `uri_escape` encodes: everything but unreserved characters and `/`.
const URI_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes `s` for a URI path or query value: everything but unreserved characters
/// and `/` (Go's `url.Parse`, which the shim uses, decodes it back).
pub fn uri_escape(s: &str) -> String {
    utf8_percent_encode(s, URI_ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_by_sequence_and_strays_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("none")).unwrap().is_empty());
        for seq in [12, 3, 100] {
            std::fs::write(file_path(dir.path(), seq), "").unwrap();
        }
        for stray in ["x.log", "0000000004.log.tmp", "12.log", "000000000a.log"] {
            std::fs::write(dir.path().join(stray), "").unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), [3, 12, 100]);
        assert_eq!(
            file_path(Path::new("/l/web-1"), 7),
            Path::new("/l/web-1/0000000007.log")
        );
    }

    #[test]
    fn driver_config_round_trips_and_tolerates_bad_sizes() {
        let config = DriverConfig {
            dir: PathBuf::from("/var/lib/hive:mind/logs/web-1"),
            rotation: Rotation {
                max_size: 20_480,
                max_files: 3,
            },
        };
        assert_eq!(DriverConfig::parse(&config.to_arg()).unwrap(), config);
        let lenient = DriverConfig::parse("big:0:/x").unwrap();
        assert_eq!(lenient.rotation, Rotation::default());
        assert_eq!(lenient.dir, Path::new("/x"));
        assert!(DriverConfig::parse("/x").is_err());
        assert!(DriverConfig::parse("1:2:").is_err());
    }

    #[test]
    fn uri_values_are_escaped() {
        assert_eq!(
            uri_escape("10485760:5:/var/lib/a b+c&d=e%"),
            "10485760%3A5%3A/var/lib/a%20b%2Bc%26d%3De%25"
        );
    }
}
