//! `edgerun cert`: a private CA and a server certificate for the REST API's TLS, made with
//! rcgen (no openssl needed). The CA's key is thrown away once it has signed: nobody can
//! mint another certificate it vouches for. Clients trust `ca.pem` (`--ca-cert`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// The files `make` writes.
pub struct Made {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn write(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // A file that was there keeps its mode through `open`: set it (before writing).
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Make `ca.pem`, `server.pem` and `server.key` in `dir` for `hosts` (names or IP
/// addresses), all 0600 like every file edgerun writes (the two certificates are not secret:
/// `chmod 644` them to share). Existing files are replaced.
pub fn make(dir: &Path, hosts: &[String], days: u32) -> anyhow::Result<Made> {
    anyhow::ensure!(!hosts.is_empty(), "name at least one host (--host)");
    anyhow::ensure!((1..=3650).contains(&days), "--days must be 1 to 3650");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time_now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);

    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.distinguished_name
        .push(DnType::CommonName, "edgerun private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now.into();
    ca.not_after = until.into();
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;

    let mut leaf = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("server certificate for {hosts:?}"))?;
    leaf.distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    leaf.not_before = now.into();
    leaf.not_after = until.into();
    let leaf_key = KeyPair::generate().context("generating the server key")?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    let made = Made {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    write(&made.ca, &ca_cert.pem(), 0o600)?;
    write(&made.cert, &leaf_cert.pem(), 0o600)?;
    write(&made.key, &leaf_key.serialize_pem(), 0o600)?;
    Ok(made)
}

fn time_now() -> std::time::SystemTime {
    // A little in the past: a client whose clock is slightly behind still accepts it.
    std::time::SystemTime::now() - std::time::Duration::from_secs(3600)
}

/// The CLI command.
pub fn run(dir: &Path, hosts: &[String], days: u32) -> anyhow::Result<()> {
    let m = make(dir, hosts, days)?;
    println!(
        "CA (give to clients: --ca-cert / EDGERUN_CA_CERT): {}",
        m.ca.display()
    );
    println!("certificate for {}: {}", hosts.join(", "), m.cert.display());
    println!(
        "private key (mode 0600):                {}",
        m.key.display()
    );
    println!(
        "use them with:\n  --set 'api.tls_cert_file=\"{}\"' --set 'api.tls_key_file=\"{}\"'",
        m.cert.display(),
        m.key.display()
    );
    Ok(())
}
