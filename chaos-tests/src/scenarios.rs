//! The scenarios: a cluster shape, the faults, and when.
//!
//! Short form (CI): one fault cycle — inject at 3 s, recover after a hold, let the workload
//! run on. Long form (`--long`): cycles until the duration is used up, with holds and gaps
//! drawn from the seed, so a failing run is replayed with the same `--seed`.

use crate::faults::{Fault, Target};

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub voters: u64,
    /// A tmpfs of this many MB on this node's data directory.
    pub tmpfs: Option<(u64, u32)>,
    /// Faults injected at the start of a cycle, in order.
    pub inject: Vec<Fault>,
    /// Faults that end a cycle (usually Heal).
    pub recover: Vec<Fault>,
    /// Only once per run, even in long mode (e.g. membership changes consume ids).
    pub once: bool,
    /// Nodes run under libfaketime (clock jumps).
    pub faketime: bool,
    /// One of these is drawn per cycle, besides `inject`.
    pub pool: Vec<Fault>,
}

fn s(
    name: &'static str,
    about: &'static str,
    voters: u64,
    inject: Vec<Fault>,
    recover: Vec<Fault>,
) -> Scenario {
    Scenario {
        name,
        about,
        voters,
        tmpfs: None,
        inject,
        recover,
        once: false,
        faketime: false,
        pool: Vec::new(),
    }
}

pub fn all() -> Vec<Scenario> {
    use Fault::*;
    use Target::*;
    vec![
        s(
            "kill-leader",
            "kill -9 the leader, restart it later",
            3,
            vec![Kill { target: Leader }],
            vec![Restart { target: Random }],
        ),
        s(
            "kill-follower",
            "kill -9 a follower running tasks; they are rescheduled after the lease",
            3,
            vec![Kill { target: Follower }],
            vec![Heal],
        ),
        s(
            "kill-random",
            "kill -9 any node",
            3,
            vec![Kill { target: Random }],
            vec![Heal],
        ),
        s(
            "pause-leader",
            "SIGSTOP the leader (a frozen process), SIGCONT later",
            3,
            vec![Pause { target: Leader }],
            vec![Heal],
        ),
        s(
            "isolate-leader",
            "cut the leader off from the other nodes; clients still reach it",
            3,
            vec![Isolate { target: Leader }],
            vec![Heal],
        ),
        s(
            "isolate-stream-runner",
            "cut the node running the stream job off from the others: the job moves after the lease and goes on from its checkpoint; the cut-off runner is fenced",
            3,
            vec![Isolate { target: StreamRunner }],
            vec![Heal],
        ),
        s(
            "split-5",
            "five voters split 2 | 3: the minority cannot commit, the majority goes on",
            5,
            vec![Split { minority: 2 }],
            vec![Heal],
        ),
        s(
            "one-way",
            "the leader's packets to a follower are lost, the follower's still arrive",
            3,
            vec![OneWay {
                from: Leader,
                to: Follower,
            }],
            vec![Heal],
        ),
        s(
            "loss-and-latency",
            "20% packet loss between nodes and 30 ms on every cluster RPC",
            3,
            vec![Loss { percent: 20 }, Delay { ms: 30 }],
            vec![Heal],
        ),
        s(
            "actor-panics",
            "the leader's scheduler and state shard and a follower's worker fail",
            3,
            vec![
                PanicActor {
                    target: Leader,
                    actor: "scheduler".into(),
                },
                PanicActor {
                    target: Follower,
                    actor: "worker".into(),
                },
                PanicActor {
                    target: Leader,
                    actor: "state_shard".into(),
                },
            ],
            vec![Heal],
        ),
        s(
            "kill-task-processes",
            "task processes on a node killed -9 mid-run for 3 s; attempts are retried",
            3,
            vec![KillTaskProcesses {
                target: Random,
                for_ms: 3_000,
            }],
            vec![Heal],
        ),
        Scenario {
            tmpfs: Some((3, 256)),
            ..s(
                "full-disk",
                "node 3's data directory (a 256 MB tmpfs) is filled to the last byte; freed and restarted later",
                3,
                vec![FillDisk { target: Node(3) }],
                vec![Heal],
            )
        },
        Scenario {
            faketime: true,
            ..s(
                "clock-jump",
                "a follower's wall clock jumps an hour ahead and the leader's an hour back while the follower's task processes are killed (retries with backoff)",
                3,
                vec![
                    ClockJump {
                        target: Follower,
                        seconds: 3_600,
                    },
                    ClockJump {
                        target: Leader,
                        seconds: -3_600,
                    },
                    KillTaskProcesses {
                        target: Follower,
                        for_ms: 2_000,
                    },
                ],
                vec![Heal],
            )
        },
        s(
            "restart-all",
            "every node killed -9 and started again",
            3,
            vec![RestartAll],
            vec![Heal],
        ),
        Scenario {
            faketime: true,
            pool: vec![
                Kill { target: Random },
                Pause { target: Random },
                Isolate { target: Random },
                Split { minority: 1 },
                OneWay {
                    from: Follower,
                    to: Leader,
                },
                Loss { percent: 30 },
                Delay { ms: 50 },
                PanicActor {
                    target: Random,
                    actor: "worker".into(),
                },
                PanicActor {
                    target: Leader,
                    actor: "scheduler".into(),
                },
                KillTaskProcesses {
                    target: Random,
                    for_ms: 2_000,
                },
                ClockJump {
                    target: Random,
                    seconds: 7_200,
                },
                RestartAll,
            ],
            ..s(
                "mixed",
                "a fault drawn from the seed each cycle: kills, pauses, partitions, loss, latency, panics, killed tasks, clock jumps, restarts",
                3,
                vec![],
                vec![Heal],
            )
        },
        Scenario {
            once: true,
            ..s(
                "membership",
                "add node 4 as a learner, promote it, remove a follower, all under load",
                3,
                vec![Membership {
                    id: 4,
                    remove: Follower,
                }],
                vec![Heal],
            )
        },
    ]
}
