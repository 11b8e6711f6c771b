//! TLS for REST: `edgerun cert` makes a CA and a server pair, a node serves HTTPS only with
//! it, clients that trust the CA get through (auth still applies), others and plain HTTP do
//! not, and bad TLS files stop the start with a clear error and nothing written.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn edgerun(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn trusting(ca: &std::path::Path) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("{e}")) {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth();
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .tls_config(Arc::new(cfg))
        .build()
}

#[test]
fn https_only_with_a_certificate_from_edgerun_cert() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tls = dir.path().join("tls");
    let out = edgerun(&["cert", "--out", &tls.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ca, cert, key) = (
        tls.join("ca.pem"),
        tls.join("server.pem"),
        tls.join("server.key"),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600), "the private key must be 0600");
    }
    let (port, rpc) = (free_port(), free_port());
    let sets = [
        format!("api.tls_cert_file=\"{}\"", cert.display()),
        format!("api.tls_key_file=\"{}\"", key.display()),
        "auth.enabled=true".to_string(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let mut node = Node::spawn(&dir.path().join("n1"), 1, port, rpc, &sets);
    let https = format!("https://127.0.0.1:{port}");
    let agent = trusting(&ca);
    wait_until(
        "the node to answer over HTTPS",
        Duration::from_secs(30),
        || {
            agent
                .get(&format!("{https}/readyz"))
                .call()
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );

    // Auth works over TLS: the admin key → a token → a protected route.
    let admin = std::fs::read_to_string(dir.path().join("n1/data/admin.key"))
        .unwrap_or_else(|e| panic!("{e}"));
    let t: serde_json::Value = agent
        .post(&format!("{https}/v1/auth/token"))
        .send_json(serde_json::json!({"api_key": admin.trim()}))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_json()
        .unwrap_or_else(|e| panic!("{e}"));
    let token = t["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {t}"));
    let r = agent
        .get(&format!("{https}/v1/tasks"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    match agent.get(&format!("{https}/v1/tasks")).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("no token over TLS must be 401, got {other:?}"),
    }

    // A client that does not trust the CA is refused by its own TLS check.
    let plain_roots = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let e = plain_roots
        .get(&format!("{https}/healthz"))
        .call()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
    // Plain HTTP gets no HTTP answer at all.
    let r = plain_roots
        .get(&format!("http://127.0.0.1:{port}/healthz"))
        .call();
    assert!(r.is_err(), "plain HTTP was answered: {r:?}");

    // The CLI: with --ca-cert it works, without it says what to do.
    let url = https.as_str();
    let ca_s = ca.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["kernels", "--url", url, "--ca-cert", &ca_s])
        .env("EDGERUN_API_KEY", admin.trim())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("matmul"));
    let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
        .args(["kernels", "--url", url])
        .env("EDGERUN_API_KEY", admin.trim())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.kill9();
}

#[test]
fn bad_tls_files_stop_the_start_with_a_clear_error_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tls = dir.path().join("tls");
    let out = edgerun(&[
        "cert",
        "--out",
        &tls.display().to_string(),
        "--host",
        "node1.test",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let garbage = dir.path().join("garbage.key");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cert = format!("api.tls_cert_file=\"{}\"", tls.join("server.pem").display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![cert.clone()], "api.tls_key_file"),
        (
            vec![
                cert.clone(),
                format!(
                    "api.tls_key_file=\"{}\"",
                    dir.path().join("missing.key").display()
                ),
            ],
            "missing.key",
        ),
        (
            vec![
                cert.clone(),
                format!("api.tls_key_file=\"{}\"", garbage.display()),
            ],
            "garbage.key",
        ),
        (
            vec![
                format!("api.tls_cert_file=\"{}\"", tls.join("server.key").display()),
                format!("api.tls_key_file=\"{}\"", tls.join("server.key").display()),
            ],
            "no PEM certificate",
        ),
    ];
    for (sets, expect) in cases {
        let data = dir.path().join("data");
        let mut args = vec![
            "node".to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--api-listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        for s in &sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let out = Command::new(env!("CARGO_BIN_EXE_edgerun"))
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sets:?} started");
        assert!(err.contains(expect), "{sets:?}: {err}");
        assert!(
            !err.contains("c2VjcmV0"),
            "key material in the error: {err}"
        );
        assert!(!data.join("db").exists(), "{sets:?} wrote the database");
    }
}
