use super::*;
use crate::{decode, encode, Isolation, FORMAT_VERSION};

fn req(c: Command) -> RaftRequest {
    RaftRequest::new(c)
}

fn submit(s: &mut ClusterState, specs: Vec<TaskSpec>) -> Vec<Submitted> {
    let mut ev = Vec::new();
    match s.apply(
        &req(Command::Submit {
            now_ms: 10,
            tasks: specs,
        }),
        &mut ev,
    ) {
        Response::Submitted(v) => v,
        other => panic!("unexpected {other:?}"),
    }
}

fn accepted(r: Response) -> Vec<bool> {
    match r {
        Response::Accepted(v) => v,
        other => panic!("unexpected {other:?}"),
    }
}

fn at(task: TaskId, node: NodeId, attempt: u32) -> AttemptRef {
    AttemptRef {
        task,
        node,
        attempt,
    }
}

#[test]
fn a_task_goes_through_its_life_and_stale_attempts_are_fenced() {
    let mut s = ClusterState::new();
    let ids = submit(&mut s, vec![TaskSpec::kernel("stats", "{}"); 2]);
    assert_eq!(ids.iter().map(|x| x.id).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s.count(TaskStatus::Pending), 2);
    let mut ev = Vec::new();
    // attempt must be exactly attempt + 1
    let r = s.apply(
        &req(Command::Assign {
            now_ms: 11,
            assignments: vec![
                Assignment {
                    task: 1,
                    node: 7,
                    attempt: 1,
                },
                Assignment {
                    task: 2,
                    node: 7,
                    attempt: 2,
                },
                Assignment {
                    task: 99,
                    node: 7,
                    attempt: 1,
                },
            ],
        }),
        &mut ev,
    );
    assert_eq!(accepted(r), vec![true, false, false]);
    assert_eq!(s.active_count(7), 1);
    assert_eq!(s.pending().map(|t| t.id).collect::<Vec<_>>(), vec![2]);
    // a start from the wrong node is refused
    let r = s.apply(
        &req(Command::Start {
            now_ms: 12,
            starts: vec![at(1, 8, 1), at(1, 7, 1)],
        }),
        &mut ev,
    );
    assert_eq!(accepted(r), vec![false, true]);
    assert_eq!(s.task(1).map(|t| t.status), Some(TaskStatus::Running));
    let done = |attempt| Completion {
        attempt: at(1, 7, attempt),
        outcome: Outcome::Succeeded {
            result: "{\"x\":1}".into(),
        },
        isolation: Isolation::Inproc,
    };
    let r = s.apply(
        &req(Command::Complete {
            now_ms: 13,
            completions: vec![done(0), done(1), done(1)],
        }),
        &mut ev,
    );
    // the old attempt and the duplicate are refused: the result is recorded exactly once
    assert_eq!(accepted(r), vec![false, true, false]);
    let t = s
        .task(1)
        .cloned()
        .unwrap_or_else(|| panic!("task 1 missing"));
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(t.finished_at_ms, Some(13));
    assert_eq!(t.isolation, Some(Isolation::Inproc));
    assert_eq!(s.active_count(7), 0);
    assert_eq!(s.count(TaskStatus::Succeeded), 1);
}

#[test]
fn idempotency_key_returns_the_first_task() {
    let mut s = ClusterState::new();
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.idempotency_key = Some("order-42".into());
    let a = submit(&mut s, vec![spec.clone()]);
    let b = submit(&mut s, vec![spec.clone(), spec]);
    assert_eq!(
        a,
        vec![Submitted {
            id: 1,
            created: true
        }]
    );
    assert_eq!(
        b,
        vec![
            Submitted {
                id: 1,
                created: false
            };
            2
        ]
    );
    assert_eq!(s.tasks.len(), 1);
}

#[test]
fn retryable_failure_requeues_until_attempts_run_out() {
    let mut s = ClusterState::new();
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.retry = RetryPolicy {
        max_attempts: 2,
        backoff_ms: 100,
    };
    submit(&mut s, vec![spec]);
    let mut ev = Vec::new();
    for attempt in 1..=2u32 {
        let r = s.apply(
            &req(Command::Assign {
                now_ms: 20,
                assignments: vec![Assignment {
                    task: 1,
                    node: 1,
                    attempt,
                }],
            }),
            &mut ev,
        );
        assert_eq!(accepted(r), vec![true]);
        let fail = Completion {
            attempt: at(1, 1, attempt),
            outcome: Outcome::Failed {
                error: TaskError {
                    code: "worker_crashed".into(),
                    message: "boom".into(),
                },
                retryable: true,
                output: None,
            },
            isolation: Isolation::Process,
        };
        s.apply(
            &req(Command::Complete {
                now_ms: 30,
                completions: vec![fail],
            }),
            &mut ev,
        );
        if attempt == 1 {
            // The wait is a duration, not a wall-clock time: no node's clock can stretch it.
            let t = s
                .task(1)
                .cloned()
                .unwrap_or_else(|| panic!("task 1 missing"));
            assert_eq!(t.status, TaskStatus::Pending);
            assert_eq!(t.retry_delay_ms, Some(100));
        }
    }
    let t = s
        .task(1)
        .cloned()
        .unwrap_or_else(|| panic!("task 1 missing"));
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.attempt, 2);
    assert_eq!(s.count(TaskStatus::Pending), 0);
}

#[test]
fn cancel_reports_unknown_and_terminal_tasks() {
    let mut s = ClusterState::new();
    submit(&mut s, vec![TaskSpec::kernel("stats", "{}")]);
    let mut ev = Vec::new();
    let r = s.apply(
        &req(Command::Cancel {
            now_ms: 5,
            ids: vec![1, 1, 42],
        }),
        &mut ev,
    );
    assert_eq!(
        r,
        Response::Cancelled(vec![
            Some(TaskStatus::Cancelled),
            Some(TaskStatus::Cancelled),
            None
        ])
    );
    assert_eq!(s.count(TaskStatus::Pending), 0);
}

#[test]
fn unknown_version_is_refused_without_change() {
    let mut s = ClusterState::new();
    let r = s.apply(
        &RaftRequest {
            version: FORMAT_VERSION + 1,
            command: Command::Submit {
                now_ms: 1,
                tasks: vec![TaskSpec::kernel("stats", "{}")],
            },
        },
        &mut Vec::new(),
    );
    assert_eq!(r, Response::UnsupportedVersion(FORMAT_VERSION + 1));
    assert!(s.tasks.is_empty());
}

#[test]
fn snapshot_round_trip_rebuilds_indexes() {
    let mut s = ClusterState::new();
    submit(&mut s, vec![TaskSpec::kernel("stats", "{}"); 3]);
    s.apply(
        &req(Command::Assign {
            now_ms: 1,
            assignments: vec![Assignment {
                task: 2,
                node: 3,
                attempt: 1,
            }],
        }),
        &mut Vec::new(),
    );
    let bytes = encode(&s).unwrap_or_else(|e| panic!("{e}"));
    let mut back: ClusterState = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    back.rebuild_indexes();
    assert_eq!(back.pending().map(|t| t.id).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(back.active_count(3), 1);
    assert_eq!(back.next_id, 4);
    assert!(decode::<ClusterState>(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn list_is_newest_first_with_cursor() {
    let mut s = ClusterState::new();
    submit(&mut s, vec![TaskSpec::kernel("stats", "{}"); 5]);
    let page: Vec<_> = s.list(None, None, 2).iter().map(|t| t.id).collect();
    assert_eq!(page, vec![5, 4]);
    let page: Vec<_> = s.list(None, Some(4), 10).iter().map(|t| t.id).collect();
    assert_eq!(page, vec![3, 2, 1]);
}

#[test]
fn node_down_requeues_its_tasks_and_fences_its_late_results() {
    let mut s = ClusterState::new();
    let mut ev = Vec::new();
    let node = |id| NodeInfo {
        id,
        tier: crate::Tier::Cloud,
        labels: Default::default(),
        api: String::new(),
        rpc: String::new(),
        slots: 4,
        registered_at_ms: 0,
        up: true,
        down_since_ms: None,
    };
    s.apply(
        &req(Command::RegisterNode {
            now_ms: 1,
            node: node(2),
        }),
        &mut ev,
    );
    submit(&mut s, vec![TaskSpec::kernel("stats", "{}"); 2]);
    s.apply(
        &req(Command::Assign {
            now_ms: 2,
            assignments: vec![
                Assignment {
                    task: 1,
                    node: 2,
                    attempt: 1,
                },
                Assignment {
                    task: 2,
                    node: 2,
                    attempt: 1,
                },
            ],
        }),
        &mut ev,
    );
    let r = s.apply(&req(Command::NodeDown { now_ms: 3, node: 2 }), &mut ev);
    assert_eq!(
        r,
        Response::NodeMarked {
            changed: true,
            requeued: vec![1, 2]
        }
    );
    assert_eq!(s.count(TaskStatus::Pending), 2);
    assert_eq!(s.active_count(2), 0);
    assert!(!s.nodes[&2].up);
    // marking it down again changes nothing
    let r = s.apply(&req(Command::NodeDown { now_ms: 4, node: 2 }), &mut ev);
    assert_eq!(
        r,
        Response::NodeMarked {
            changed: false,
            requeued: vec![]
        }
    );
    // the task is placed again as attempt 2; the old attempt's result is refused
    s.apply(
        &req(Command::Assign {
            now_ms: 5,
            assignments: vec![Assignment {
                task: 1,
                node: 3,
                attempt: 2,
            }],
        }),
        &mut ev,
    );
    let late = Completion {
        attempt: at(1, 2, 1),
        outcome: Outcome::Succeeded {
            result: "{}".into(),
        },
        isolation: Isolation::Inproc,
    };
    let r = s.apply(
        &req(Command::Complete {
            now_ms: 6,
            completions: vec![late],
        }),
        &mut ev,
    );
    assert_eq!(accepted(r), vec![false]);
    assert_eq!(s.task(1).map(|t| t.status), Some(TaskStatus::Scheduled));
    let r = s.apply(&req(Command::NodeUp { now_ms: 7, node: 2 }), &mut ev);
    assert_eq!(
        r,
        Response::NodeMarked {
            changed: true,
            requeued: vec![]
        }
    );
    assert!(s.nodes[&2].up);
}
