//! Secret files shared by the nodes of a cluster (the JWT key, API keys, the cluster RPC
//! secret): read, or created once with random contents and mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    std::io::Read::read_exact(&mut f, &mut buf).map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(buf)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`read_or_create`] found.
pub struct Secret {
    pub bytes: Vec<u8>,
    /// This call created the file.
    pub created: bool,
}

/// Read a secret file, or create it (mode 0600) with `make()` when it does not exist.
///
/// The new contents are written whole to a temporary file of a name no other process uses
/// and then hard-linked into place, so nodes that share the file and start together either
/// create it or read the complete one (never half of it, never another's). `what` names the secret in errors ("the cluster secret").
pub fn read_or_create(
    path: &Path,
    what: &str,
    make: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Secret, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Secret {
            bytes,
            created: false,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("{what} {}: {e}", path.display()))?;
            }
            // Unique per attempt, not per process: nodes in containers all run as PID 1, and a
            // shared name let one node link another's bytes into place and keep its own.
            let tmp = path.with_extension(format!(
                "tmp{}-{}",
                std::process::id(),
                hex(&random_bytes(8)?)
            ));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("creating {what} {}: {e}", tmp.display()))?;
            f.write_all(&bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("writing {what} {}: {e}", tmp.display()))?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(Secret {
                    bytes,
                    created: true,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path)
                    .map(|bytes| Secret {
                        bytes,
                        created: false,
                    })
                    .map_err(|e| format!("reading {what} {}: {e}", path.display())),
                Err(e) => Err(format!("creating {what} {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("reading {what} {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("s.secret");
        let a = read_or_create(&p, "a secret", || Ok(b"first".to_vec())).unwrap();
        assert!(a.created);
        let b = read_or_create(&p, "a secret", || Ok(b"second".to_vec())).unwrap();
        assert!(!b.created);
        assert_eq!(b.bytes, b"first");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn creators_racing_in_one_process_all_end_with_the_bytes_on_disk() {
        // Same PID for every creator, as for nodes in containers (all PID 1).
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let path = dir.path().join("cluster.secret");
            let got: Vec<Vec<u8>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8u8)
                    .map(|i| {
                        let path = path.clone();
                        s.spawn(move || {
                            read_or_create(&path, "the test secret", || Ok(vec![i; 32]))
                                .map(|x| x.bytes)
                                .unwrap_or_else(|e| panic!("{e}"))
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| panic!("thread")))
                    .collect()
            });
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
            for g in got {
                assert_eq!(g, on_disk, "round {round}");
            }
        }
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes(32).unwrap(), random_bytes(32).unwrap());
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
