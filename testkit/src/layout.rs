//! A local cluster's shape: each member's id and addresses, and the `cluster.peers` value
//! (TOML) that every member is started with.

/// One member: its id and its REST and cluster RPC addresses (host:port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub api: String,
    pub rpc: String,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }
}

/// The members of a cluster, ids 1..=n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub members: Vec<Member>,
}

impl Layout {
    /// `n` members on `host`, each with two ports from `port(id)` (`(api, rpc)`).
    pub fn new(n: u64, host: &str, mut port: impl FnMut(u64) -> (u16, u16)) -> Layout {
        Layout {
            members: (1..=n)
                .map(|id| {
                    let (api, rpc) = port(id);
                    Member {
                        id,
                        api: format!("{host}:{api}"),
                        rpc: format!("{host}:{rpc}"),
                    }
                })
                .collect(),
        }
    }

    /// `n` members on 127.0.0.1 with free ports ([`crate::free_port`]).
    pub fn local(n: u64) -> Layout {
        Layout::new(n, "127.0.0.1", |_| (crate::free_port(), crate::free_port()))
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The TOML value of `cluster.peers`: `[{ id = 1, rpc = "...", api = "..." }, ...]`.
    pub fn peers_toml(&self) -> String {
        let items: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{{ id = {}, rpc = \"{}\", api = \"{}\" }}",
                    m.id, m.rpc, m.api
                )
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// `cluster.peers=[...]`, for `edgerun node --set`.
    pub fn peers_set(&self) -> String {
        format!("cluster.peers={}", self.peers_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_name_every_member_in_toml() {
        let l = Layout::new(2, "10.0.0.1", |id| (7100 + id as u16, 7200 + id as u16));
        assert_eq!(
            l.peers_set(),
            "cluster.peers=[{ id = 1, rpc = \"10.0.0.1:7201\", api = \"10.0.0.1:7101\" }, \
             { id = 2, rpc = \"10.0.0.1:7202\", api = \"10.0.0.1:7102\" }]"
        );
        assert_eq!(
            l.member(2).map(Member::url).as_deref(),
            Some("http://10.0.0.1:7102")
        );
        let local = Layout::local(3);
        let mut ports: Vec<&str> = local
            .members
            .iter()
            .flat_map(|m| [m.api.as_str(), m.rpc.as_str()])
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 6, "{local:?}");
    }
}
