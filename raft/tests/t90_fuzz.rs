//! Hostile bytes and strings against every decoder that reads what another process wrote:
//! cluster RPC frames, Raft commands, snapshots, and configuration. Each must answer an
//! error, never panic, hang or allocate without bound. Bounded case counts (CI time).

use edgerun_model::{decode, encode, ClusterState, Command, RaftRequest, TaskSpec};
use edgerun_raft::rpc::RpcRequest;
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid encoded command, to mutate (random bytes alone rarely get past the first tag).
fn valid_request() -> Vec<u8> {
    let mut spec = TaskSpec::kernel("stats", r#"{"values":[1,2,3]}"#);
    spec.after = vec![1, 2];
    spec.idempotency_key = Some("k".into());
    encode(&RaftRequest::new(Command::Submit {
        now_ms: 1,
        tasks: vec![spec],
        admission: Default::default(),
    }))
    .unwrap_or_default()
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn random_bytes_never_crash_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode::<RaftRequest>(&bytes);
        let _ = decode::<RpcRequest>(&bytes);
        let _ = decode::<ClusterState>(&bytes);
    }

    #[test]
    fn mutated_commands_decode_or_fail_cleanly(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = valid_request();
        for (i, v) in &flips {
            let at = i.index(b.len());
            b[at] = *v;
        }
        let keep = cut.index(b.len() + 1);
        b.truncate(keep);
        if let Ok(req) = decode::<RaftRequest>(&b) {
            // Whatever decodes is applied without a panic.
            let mut s = ClusterState::new();
            let _ = s.apply(&req, &mut Vec::new());
        }
    }

    #[test]
    fn random_config_overrides_are_refused_or_accepted_never_a_panic(
        key in "[a-z_.]{1,24}",
        value in "\\PC{0,40}",
    ) {
        let _ = edgerun_config::load(&edgerun_config::Sources {
            file: None,
            env: Vec::new(),
            overrides: vec![(key, value)],
        });
    }
}

#[test]
fn a_huge_length_prefix_is_an_error_not_an_allocation() {
    // A Submit whose task list claims 2^60 entries.
    let mut b = valid_request();
    // version (2 bytes) + Command tag (4) + now_ms (8), then the Vec length (8).
    let at = 2 + 4 + 8;
    b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(decode::<RaftRequest>(&b).is_err());
}

/// Whatever a client without the secret sends (random bytes, or a correct greeting followed
/// by random bytes), the server side of the handshake refuses it: never a panic, a hang or an
/// accepted channel.
#[test]
fn random_bytes_never_open_an_authenticated_channel() {
    use edgerun_raft::secure::{Channel, ClusterKey};
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let key =
        ClusterKey::from_secret(b"fuzzing-cluster-secret-0123").unwrap_or_else(|e| panic!("{e}"));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..256),
    );
    let result = runner.run(&strategy, |(greet, bytes)| {
        let accepted = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            let key = key.clone();
            let server = tokio::spawn(async move {
                let (s, _) = l.accept().await?;
                Channel::server_within(s, &key, std::time::Duration::from_secs(2))
                    .await
                    .map(|_| ())
            });
            let mut c = tokio::net::TcpStream::connect(addr).await?;
            if greet {
                c.write_all(b"EDGERUN-RPC1").await?;
            }
            c.write_all(&bytes).await?;
            c.shutdown().await?;
            server.await.map_err(std::io::Error::other)?
        });
        prop_assert!(
            accepted.is_err(),
            "{} random bytes opened a channel",
            bytes.len()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
