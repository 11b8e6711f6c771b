//! Authenticated cluster RPC: a handshake over the shared cluster secret, then a MAC on every
//! frame.
//!
//! The secret (`cluster.secret_file`, the same file on every member) never crosses the wire.
//! A connection starts with a mutual challenge-response:
//!
//! ```text
//! client → server   MAGIC | client nonce (32 random bytes)
//! server → client   MAGIC | server nonce | HMAC(K, "server" | cn | sn)
//! client → server   HMAC(K, "client" | cn | sn)
//! ```
//!
//! where K = SHA-256 of the secret. Each side checks the other's proof (in constant time) and
//! closes the connection on a mismatch, so a process without the secret can neither send a
//! vote, an append or a membership change, nor pose as a member to receive them. After the
//! handshake every frame is `len (4 bytes, big-endian) | body | HMAC(k_dir, seq | body)` with
//! a key per direction derived from both nonces and a counter per direction: a frame that was
//! altered, replayed, reordered or spliced from another connection is refused and the
//! connection closed. Frames are not encrypted (see SECURITY.md: run the cluster network on a
//! private network or a VPN).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rpc::MAX_FRAME;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 12] = b"EDGERUN-RPC1";
const NONCE: usize = 32;
const TAG: usize = 32;

/// The key derived from the cluster secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key for a secret (surrounding whitespace ignored, at least 16 bytes).
    pub fn from_secret(secret: &[u8]) -> Result<ClusterKey, String> {
        let trimmed = String::from_utf8_lossy(secret);
        let trimmed = trimmed.trim();
        if trimmed.len() < 16 {
            return Err(format!(
                "the cluster secret is {} bytes; at least 16 are needed",
                trimmed.len()
            ));
        }
        Ok(ClusterKey(Sha256::digest(trimmed.as_bytes()).into()))
    }

    /// Read the secret file, creating it (random, mode 0600) if it does not exist.
    pub fn load(path: &std::path::Path) -> Result<ClusterKey, String> {
        let s = edgerun_config::secret::read_or_create(path, "the cluster secret", || {
            edgerun_config::secret::random_bytes(32)
                .map(|b| edgerun_config::secret::hex(&b).into_bytes())
        })?;
        if s.created {
            tracing::warn!(
                path = %path.display(),
                "created the cluster secret (mode 0600): every member needs this same file"
            );
        }
        ClusterKey::from_secret(&s.bytes)
            .map_err(|e| format!("cluster.secret_file {}: {e}", path.display()))
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        mac(&self.0, parts)
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn denied(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg.into())
}

/// An authenticated connection.
pub struct Channel {
    stream: TcpStream,
    send_key: [u8; 32],
    recv_key: [u8; 32],
    send_seq: u64,
    recv_seq: u64,
}

async fn read_exact_n(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

fn nonce() -> std::io::Result<[u8; NONCE]> {
    let b = edgerun_config::secret::random_bytes(NONCE).map_err(std::io::Error::other)?;
    let mut n = [0u8; NONCE];
    n.copy_from_slice(&b);
    Ok(n)
}

fn session_keys(key: &ClusterKey, cn: &[u8], sn: &[u8]) -> ([u8; 32], [u8; 32]) {
    (
        key.mac(&[b"client-to-server", cn, sn]),
        key.mac(&[b"server-to-client", cn, sn]),
    )
}

impl Channel {
    /// Open the client side on a connected stream. An error of kind `PermissionDenied` means
    /// the peer does not share our secret.
    pub async fn client(mut stream: TcpStream, key: &ClusterKey) -> std::io::Result<Channel> {
        let cn = nonce()?;
        let mut hello = Vec::with_capacity(MAGIC.len() + NONCE);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&cn);
        stream.write_all(&hello).await?;
        stream.flush().await?;
        let answer = read_exact_n(&mut stream, MAGIC.len() + NONCE + TAG).await?;
        if &answer[..MAGIC.len()] != MAGIC {
            return Err(invalid("the peer does not speak edgerun cluster RPC"));
        }
        let sn = &answer[MAGIC.len()..MAGIC.len() + NONCE];
        let proof = &answer[MAGIC.len() + NONCE..];
        if !same(proof, &key.mac(&[b"server", &cn, sn])) {
            return Err(denied(
                "the peer does not prove our cluster secret (cluster.secret_file differs)",
            ));
        }
        stream.write_all(&key.mac(&[b"client", &cn, sn])).await?;
        stream.flush().await?;
        let (c2s, s2c) = session_keys(key, &cn, sn);
        Ok(Channel {
            stream,
            send_key: c2s,
            recv_key: s2c,
            send_seq: 0,
            recv_seq: 0,
        })
    }

    /// Open the server side of an accepted stream.
    pub async fn server(mut stream: TcpStream, key: &ClusterKey) -> std::io::Result<Channel> {
        let hello = read_exact_n(&mut stream, MAGIC.len() + NONCE).await?;
        if &hello[..MAGIC.len()] != MAGIC {
            return Err(invalid(
                "not an edgerun cluster RPC handshake (an old version, or not edgerun)",
            ));
        }
        let cn = &hello[MAGIC.len()..];
        let sn = nonce()?;
        let mut answer = Vec::with_capacity(MAGIC.len() + NONCE + TAG);
        answer.extend_from_slice(MAGIC);
        answer.extend_from_slice(&sn);
        answer.extend_from_slice(&key.mac(&[b"server", cn, &sn]));
        stream.write_all(&answer).await?;
        stream.flush().await?;
        let proof = read_exact_n(&mut stream, TAG).await?;
        if !same(&proof, &key.mac(&[b"client", cn, &sn])) {
            return Err(denied(
                "the peer does not prove the cluster secret (cluster.secret_file differs)",
            ));
        }
        let (c2s, s2c) = session_keys(key, cn, &sn);
        Ok(Channel {
            stream,
            send_key: s2c,
            recv_key: c2s,
            send_seq: 0,
            recv_seq: 0,
        })
    }

    /// Like [`Channel::server`], bounded in time (a silent client cannot hold a slot).
    pub async fn server_within(
        stream: TcpStream,
        key: &ClusterKey,
        limit: Duration,
    ) -> std::io::Result<Channel> {
        tokio::time::timeout(limit, Channel::server(stream, key))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
    }

    /// Send one frame.
    pub async fn send(&mut self, body: &[u8]) -> std::io::Result<()> {
        if body.len() > MAX_FRAME {
            return Err(std::io::Error::other(format!(
                "frame of {} bytes is over the limit",
                body.len()
            )));
        }
        let tag = mac(&self.send_key, &[&self.send_seq.to_be_bytes(), body]);
        self.send_seq += 1;
        self.stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .await?;
        self.stream.write_all(body).await?;
        self.stream.write_all(&tag).await?;
        self.stream.flush().await
    }

    /// Receive one frame; `Ok(None)` at a clean end of stream. A frame whose MAC does not
    /// check is an `InvalidData` error (the caller closes the connection).
    pub async fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            return Err(invalid(format!("frame of {n} bytes is over the limit")));
        }
        let mut buf = vec![0u8; n + TAG];
        self.stream.read_exact(&mut buf).await?;
        let tag = buf.split_off(n);
        if !same(
            &tag,
            &mac(&self.recv_key, &[&self.recv_seq.to_be_bytes(), &buf]),
        ) {
            return Err(invalid(
                "a frame failed its integrity check (altered, replayed or not from the peer)",
            ));
        }
        self.recv_seq += 1;
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(
        client_secret: &str,
        server_secret: &str,
    ) -> (std::io::Result<Channel>, std::io::Result<Channel>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ck = ClusterKey::from_secret(client_secret.as_bytes()).unwrap();
        let sk = ClusterKey::from_secret(server_secret.as_bytes()).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            Channel::server_within(s, &sk, Duration::from_secs(5)).await
        });
        let c = Channel::client(TcpStream::connect(addr).await.unwrap(), &ck).await;
        (c, server.await.unwrap())
    }

    #[tokio::test]
    async fn same_secret_talks_both_ways() {
        let (c, s) = pair("0123456789abcdef-same", "0123456789abcdef-same").await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        for i in 0..3u8 {
            c.send(&[i; 10]).await.unwrap();
            assert_eq!(s.recv().await.unwrap().unwrap(), vec![i; 10]);
            s.send(&[i + 100; 5]).await.unwrap();
            assert_eq!(c.recv().await.unwrap().unwrap(), vec![i + 100; 5]);
        }
        drop(c);
        assert!(s.recv().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_different_secret_is_refused_on_both_sides() {
        let (c, s) = pair("0123456789abcdef-mine", "0123456789abcdef-theirs").await;
        let Err(ce) = c else {
            panic!("client must refuse a server without our secret")
        };
        assert_eq!(ce.kind(), std::io::ErrorKind::PermissionDenied, "{ce}");
        // The client closed instead of proving: the server never accepts it.
        assert!(s.is_err());
    }

    #[tokio::test]
    async fn a_client_that_only_knows_the_protocol_cannot_pass() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sk = ClusterKey::from_secret(b"0123456789abcdef-server").unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            Channel::server_within(s, &sk, Duration::from_secs(5)).await
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&[7u8; NONCE]);
        raw.write_all(&hello).await.unwrap();
        let _ = read_exact_n(&mut raw, MAGIC.len() + NONCE + TAG)
            .await
            .unwrap();
        raw.write_all(&[0u8; TAG]).await.unwrap();
        let Err(e) = server.await.unwrap() else {
            panic!("a guessed proof must be refused")
        };
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);

        // The old, unauthenticated framing (a length then a body) is refused too.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sk = ClusterKey::from_secret(b"0123456789abcdef-server").unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            Channel::server_within(s, &sk, Duration::from_secs(5)).await
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let mut frame = 40u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[1u8; 40]);
        raw.write_all(&frame).await.unwrap();
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn an_altered_frame_is_refused() {
        let (c, s) = pair("0123456789abcdef-same", "0123456789abcdef-same").await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        // Write a frame by hand with a wrong tag, as a man in the middle would.
        let body = b"hello";
        c.stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        c.stream.write_all(body).await.unwrap();
        c.stream.write_all(&[9u8; TAG]).await.unwrap();
        let Err(e) = s.recv().await else {
            panic!("a forged frame must be refused")
        };
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_replayed_frame_is_refused() {
        let (c, s) = pair("0123456789abcdef-same", "0123456789abcdef-same").await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let body = b"vote for me";
        // Frame 0 sent twice with the same tag: the second one has the wrong sequence number.
        let tag = mac(&c.send_key, &[&0u64.to_be_bytes(), body]);
        for _ in 0..2 {
            c.stream
                .write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            c.stream.write_all(body).await.unwrap();
            c.stream.write_all(&tag).await.unwrap();
        }
        assert_eq!(s.recv().await.unwrap().unwrap(), body.to_vec());
        assert!(s.recv().await.is_err());
    }

    #[test]
    fn short_secrets_are_refused_and_the_key_never_prints() {
        assert!(ClusterKey::from_secret(b"  short  ").is_err());
        let k = ClusterKey::from_secret(b"a-long-enough-secret").unwrap();
        assert_eq!(format!("{k:?}"), "ClusterKey(..)");
    }
}
