use super::*;
use edgerun_model::Tier;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    f
}

fn err(s: &Sources) -> String {
    match load(s) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_valid() {
    let c = load(&Sources::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c, NodeConfig::default());
    assert_eq!(c.raft.cache_capacity_mb, 64);
}

#[test]
fn layers_override_in_order_file_env_flags() {
    let f = file(
        r#"
[node]
id = 2
tier = "edge"
labels = { region = "eu-west" }
[executor]
slots = 2
[cluster]
peers = [ { id = 2, rpc = "n2:7202", api = "n2:7102" } ]
"#,
    );
    let s = Sources {
        file: Some(f.path().to_path_buf()),
        env: env(&[
            ("EDGERUN_EXECUTOR_SLOTS", "3"),
            ("EDGERUN_API_LISTEN", "0.0.0.0:9000"),
            ("PATH", "/bin"),
        ]),
        overrides: vec![("executor.slots".into(), "5".into())],
    };
    let c = load(&s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.node.id, 2);
    assert_eq!(c.node.tier, Tier::Edge);
    assert_eq!(
        c.node.labels.get("region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(c.executor.slots, 5);
    assert_eq!(c.api.listen.to_string(), "0.0.0.0:9000");
    let s2 = Sources {
        overrides: vec![],
        ..s
    };
    assert_eq!(load(&s2).map(|c| c.executor.slots).ok(), Some(3));
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let f = file("[node]\nidd = 3\n");
    let e = err(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    });
    assert!(e.contains("idd") && e.contains("node"), "{e}");
    let e = err(&Sources {
        env: env(&[("EDGERUN_EXECUTOR_SLOTZ", "3")]),
        ..Sources::default()
    });
    assert!(
        e.contains("slotz") && e.contains("EDGERUN_EXECUTOR_SLOTZ"),
        "{e}"
    );
}

#[test]
fn the_clients_variables_are_not_config_keys() {
    // A shell set up for the CLI (README) can start a node too.
    let c = load(&Sources {
        env: env(&[
            ("EDGERUN_API_KEY", "er_x"),
            ("EDGERUN_TOKEN", "t"),
            ("EDGERUN_URL", "http://127.0.0.1:7101"),
            ("EDGERUN_CA_CERT", "/tmp/ca.pem"),
            ("EDGERUN_OUTPUT", "json"),
            ("EDGERUN_LOG", "debug"),
        ]),
        ..Sources::default()
    });
    assert!(c.is_ok(), "{:?}", c.err());
}

#[test]
fn names_are_quoted_once_in_messages() {
    let e = err(&Sources {
        overrides: vec![("scheduler.placement".into(), "\"foo\"".into())],
        ..Sources::default()
    });
    assert!(
        e.contains(
            "unknown value `foo`, accepted: `binpack` or `spread` for key scheduler.placement"
        ),
        "{e}"
    );
    let f = file("[node]\nidd = 3\n");
    let e = err(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    });
    assert!(e.contains("unknown key `idd`, accepted: `id`, "), "{e}");
    assert!(!e.contains("``"), "{e}");
}

#[test]
fn bad_values_name_key_value_and_what_is_accepted() {
    let e = err(&Sources {
        env: env(&[("EDGERUN_NODE_ID", "abc")]),
        ..Sources::default()
    });
    assert!(
        e.contains("node.id") && e.contains("abc") && e.contains("EDGERUN_NODE_ID"),
        "{e}"
    );
    let e = err(&Sources {
        overrides: vec![("executor.isolation".into(), "vm".into())],
        ..Sources::default()
    });
    assert!(
        e.contains("vm") && e.contains("container") && e.contains("executor.isolation"),
        "{e}"
    );
    let e = err(&Sources {
        overrides: vec![("executor.slots".into(), "0".into())],
        ..Sources::default()
    });
    assert_eq!(
        e,
        "invalid value for executor.slots: \"0\"; accepted: 1 to 1024"
    );
    let e = err(&Sources {
        overrides: vec![("redis.url".into(), "http://x".into())],
        ..Sources::default()
    });
    assert!(e.contains("redis.url") && e.contains("redis://"), "{e}");
    let e = err(&Sources {
        overrides: vec![("api.listen".into(), "nowhere".into())],
        ..Sources::default()
    });
    assert!(e.contains("api.listen") && e.contains("nowhere"), "{e}");
}

#[test]
fn a_voter_must_be_among_its_peers_and_files_must_exist() {
    let f = file("[cluster]\npeers = [ { id = 2, rpc = \"a:1\", api = \"a:2\" } ]\n");
    let e = err(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    });
    assert!(
        e.contains("cluster.peers") && e.contains("node.id = 1"),
        "{e}"
    );
    let e = err(&Sources {
        file: Some("/nonexistent/edgerun.toml".into()),
        ..Sources::default()
    });
    assert!(e.contains("/nonexistent/edgerun.toml"), "{e}");
    let f = file("[node\nid = 1");
    let e = err(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    });
    assert!(!e.is_empty());
}

#[test]
fn flags_must_be_key_value() {
    assert!(parse_override("executor.slots").is_err());
    assert_eq!(
        parse_override("executor.slots=8").ok(),
        Some(("executor.slots".to_string(), "8".to_string()))
    );
}

#[test]
fn the_task_user_is_a_known_user_or_uid_gid_and_never_root() {
    let with = |v: &str| Sources {
        overrides: vec![("executor.task_user".into(), format!("{v:?}"))],
        ..Sources::default()
    };
    let c = load(&with("1234:5678")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.executor.task_ids().ok(), Some((1234, 5678)));
    let c = load(&with("nobody")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        c.executor.task_ids().is_ok_and(|(u, g)| u > 0 && g > 0),
        "nobody resolves to non-root ids"
    );
    for bad in [
        "no-such-user-xyz",
        "",
        "12:",
        "x:1",
        "1:2:3",
        "0:0",
        "root",
        "a b",
    ] {
        let e = err(&with(bad));
        assert!(
            e.contains("executor.task_user")
                && e.contains(&format!("{bad:?}"))
                && e.contains("uid:gid"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn disk_and_result_limits_are_checked() {
    let c = load(&Sources::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.executor.default_disk_mb, 256);
    assert_eq!(c.executor.max_result_mb, 16);
    assert!(!c.executor.allow_unsandboxed_exec);
    assert_eq!(c.executor.task_user, "nobody");
    for (key, v, accepted) in [
        ("executor.default_disk_mb", "0", "1 to 1048576"),
        ("executor.max_result_mb", "0", "1 to 4096"),
        ("executor.max_result_mb", "5000", "1 to 4096"),
    ] {
        let e = err(&Sources {
            overrides: vec![(key.into(), v.into())],
            ..Sources::default()
        });
        assert_eq!(
            e,
            format!("invalid value for {key}: {v:?}; accepted: {accepted}")
        );
    }
}
