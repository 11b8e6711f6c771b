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
            admission: Admission::default(),
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
        cached: false,
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
        .map(std::borrow::Cow::into_owned)
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
        ..RetryPolicy::default()
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
            cached: false,
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
                .map(std::borrow::Cow::into_owned)
                .unwrap_or_else(|| panic!("task 1 missing"));
            assert_eq!(t.status, TaskStatus::Pending);
            assert_eq!(t.retry_delay_ms, Some(100));
        }
    }
    let t = s
        .task(1)
        .map(std::borrow::Cow::into_owned)
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
                admission: Admission::default(),
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
        cpu_millis: 4000,
        memory_mb: 4096,
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
        cached: false,
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

fn run(s: &mut ClusterState, c: Command) -> Response {
    s.apply(&req(c), &mut Vec::new())
}

fn assign(s: &mut ClusterState, task: TaskId, node: NodeId) {
    let attempt = s.task(task).map_or(0, |t| t.attempt) + 1;
    let r = run(
        s,
        Command::Assign {
            now_ms: 20,
            assignments: vec![Assignment {
                task,
                node,
                attempt,
            }],
        },
    );
    assert_eq!(accepted(r), vec![true], "assign {task}");
}

fn complete(s: &mut ClusterState, task: TaskId, outcome: Outcome) {
    let t = s
        .task(task)
        .map(std::borrow::Cow::into_owned)
        .expect("task");
    let r = run(
        s,
        Command::Complete {
            now_ms: 30,
            completions: vec![Completion {
                attempt: at(task, t.node.expect("node"), t.attempt),
                outcome,
                isolation: Isolation::Inproc,
                cached: false,
            }],
        },
    );
    assert_eq!(accepted(r), vec![true], "complete {task}");
}

fn crash() -> Outcome {
    Outcome::Failed {
        error: TaskError {
            code: "worker_crashed".into(),
            message: "boom".into(),
        },
        retryable: true,
        output: None,
    }
}

#[test]
fn over_the_admission_limit_nothing_is_stored() {
    let mut s = ClusterState::new();
    let adm = Admission {
        max_pending: 3,
        max_pending_per_submitter: 2,
        idempotency_window_ms: 0,
    };
    let spec = |who: &str| {
        let mut t = TaskSpec::kernel("stats", "{}");
        t.submitter = who.into();
        t
    };
    let submit_as = |s: &mut ClusterState, specs: Vec<TaskSpec>| {
        run(
            s,
            Command::Submit {
                now_ms: 1,
                tasks: specs,
                admission: adm,
            },
        )
    };
    assert!(matches!(
        submit_as(&mut s, vec![spec("a"), spec("a")]),
        Response::Submitted(_)
    ));
    // a third for "a" passes its own limit: the whole batch is refused
    match submit_as(&mut s, vec![spec("a")]) {
        Response::Rejected { code, .. } => assert_eq!(code, "too_many_pending"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.tasks.len(), 2);
    match submit_as(&mut s, vec![spec("b"), spec("b")]) {
        Response::Rejected { code, .. } => assert_eq!(code, "cluster_full"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.tasks.len(), 2, "nothing of a refused batch is stored");
    assert!(matches!(
        submit_as(&mut s, vec![spec("b")]),
        Response::Submitted(_)
    ));
    match submit_as(&mut s, vec![spec("c")]) {
        Response::Rejected { code, .. } => assert_eq!(code, "cluster_full"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.count(TaskStatus::Pending), 3);
    // once one is placed there is room again
    assign(&mut s, 1, 1);
    assert!(matches!(
        submit_as(&mut s, vec![spec("c")]),
        Response::Submitted(_)
    ));
}

#[test]
fn idempotency_keys_expire_after_the_window() {
    let mut s = ClusterState::new();
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.idempotency_key = Some("k".into());
    let at_time = |s: &mut ClusterState, now_ms| match run(
        s,
        Command::Submit {
            now_ms,
            tasks: vec![spec.clone()],
            admission: Admission {
                idempotency_window_ms: 1000,
                ..Admission::default()
            },
        },
    ) {
        Response::Submitted(v) => v[0],
        other => panic!("{other:?}"),
    };
    assert_eq!(
        at_time(&mut s, 100),
        Submitted {
            id: 1,
            created: true
        }
    );
    assert_eq!(
        at_time(&mut s, 1100),
        Submitted {
            id: 1,
            created: false
        }
    );
    assert_eq!(
        at_time(&mut s, 1101),
        Submitted {
            id: 2,
            created: true
        }
    );
    let mut copy: ClusterState = decode(&encode(&s).expect("encode")).expect("decode");
    copy.rebuild_indexes();
    assert_eq!(
        at_time(&mut copy, 2102),
        Submitted {
            id: 3,
            created: true
        }
    );
}

#[test]
fn after_waits_for_success_and_fails_with_a_failed_dependency() {
    let mut s = ClusterState::new();
    submit(&mut s, vec![TaskSpec::kernel("stats", "{}"); 2]);
    let mut a = TaskSpec::kernel("stats", "{}");
    a.after = vec![1, 2];
    let mut b = TaskSpec::kernel("stats", "{}");
    b.after = vec![2];
    let mut c = TaskSpec::kernel("stats", "{}");
    c.after = vec![99];
    submit(&mut s, vec![a, b, c]);
    assert_eq!(s.task(3).map(|t| t.waiting_on.clone()), Some(vec![1, 2]));
    assert_eq!(
        s.task(5).and_then(|t| t.error.clone()).map(|e| e.code),
        Some("dependency_unknown".into())
    );
    // a waiting task cannot be assigned
    let r = run(
        &mut s,
        Command::Assign {
            now_ms: 1,
            assignments: vec![Assignment {
                task: 3,
                node: 1,
                attempt: 1,
            }],
        },
    );
    assert_eq!(accepted(r), vec![false]);
    assign(&mut s, 1, 1);
    complete(
        &mut s,
        1,
        Outcome::Succeeded {
            result: "{}".into(),
        },
    );
    assert_eq!(s.task(3).map(|t| t.waiting_on.clone()), Some(vec![2]));
    run(
        &mut s,
        Command::Cancel {
            now_ms: 40,
            ids: vec![2],
        },
    );
    for id in [3, 4] {
        let t = s.task(id).expect("task");
        assert_eq!(t.status, TaskStatus::Failed, "task {id}");
        assert_eq!(
            t.error.as_ref().map(|e| e.code.as_str()),
            Some("dependency_failed")
        );
    }
}

#[test]
fn dead_letters_are_listed_and_requeued_with_fresh_attempts() {
    let mut s = ClusterState::new();
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.retry.max_attempts = 1;
    submit(&mut s, vec![spec.clone(), spec]);
    assign(&mut s, 1, 1);
    complete(&mut s, 1, crash());
    assign(&mut s, 2, 1);
    complete(
        &mut s,
        2,
        Outcome::Failed {
            error: TaskError {
                code: "invalid_input".into(),
                message: "bad".into(),
            },
            retryable: false,
            output: None,
        },
    );
    let dlq: Vec<TaskId> = s.dead_letters(None).map(|t| t.id).collect();
    assert_eq!(dlq, vec![1], "bad input is not a dead letter");
    assert_eq!(
        run(
            &mut s,
            Command::Requeue {
                now_ms: 50,
                ids: vec![1, 2, 7]
            }
        ),
        Response::Requeued(vec![Some(true), Some(false), None])
    );
    assert_eq!(s.dead_letters(None).count(), 0);
    let t = s.task(1).expect("task");
    assert_eq!(
        (t.status, t.attempt, t.counted_attempts()),
        (TaskStatus::Pending, 1, 0)
    );
    // the requeued task gets a whole attempt again, and fails into the queue again
    assign(&mut s, 1, 1);
    complete(&mut s, 1, crash());
    assert_eq!(s.task(1).map(|t| t.status), Some(TaskStatus::Failed));
    assert_eq!(s.dead_letters(None).count(), 1);
}

#[test]
fn a_preempted_attempt_does_not_count() {
    let mut s = ClusterState::new();
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.retry.max_attempts = 1;
    submit(&mut s, vec![spec]);
    assign(&mut s, 1, 1);
    let r = run(
        &mut s,
        Command::Preempt {
            now_ms: 30,
            victims: vec![at(1, 1, 1), at(1, 2, 1)],
        },
    );
    assert_eq!(accepted(r), vec![true, false]);
    let t = s.task(1).expect("task");
    assert_eq!(
        (t.status, t.preemptions, t.counted_attempts()),
        (TaskStatus::Pending, 1, 0)
    );
    assign(&mut s, 1, 2);
    complete(&mut s, 1, crash());
    assert_eq!(s.task(1).map(|t| t.status), Some(TaskStatus::Failed));
}

#[test]
fn retention_collects_only_finished_tasks() {
    let mut s = ClusterState::new();
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.idempotency_key = Some("x".into());
    submit(&mut s, vec![spec, TaskSpec::kernel("stats", "{}")]);
    assign(&mut s, 1, 1);
    complete(
        &mut s,
        1,
        Outcome::Succeeded {
            result: "{}".into(),
        },
    );
    assert_eq!(s.finished().map(|t| t.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        run(
            &mut s,
            Command::Collect {
                now_ms: 1,
                ids: vec![1, 2, 3]
            }
        ),
        Response::Collected(1)
    );
    assert!(s.task(1).is_none());
    assert!(s.task(2).is_some(), "a pending task is never collected");
    assert!(s.idempotency.is_empty());
    assert_eq!(s.finished_count(), 0);
}

#[test]
fn a_job_slot_fires_at_most_once() {
    use crate::job::*;
    let mut s = ClusterState::new();
    let spec = JobSpec {
        name: "j".into(),
        schedule: "* * * * * *".into(),
        timezone: "UTC".into(),
        task: TaskSpec::kernel("stats", "{}"),
        overlap: Overlap::Forbid,
        misfire: Misfire::Skip,
        misfire_deadline_ms: 60_000,
    };
    let Response::JobCreated(job) = run(
        &mut s,
        Command::CreateJob {
            now_ms: 0,
            spec: Box::new(spec),
        },
    ) else {
        panic!("no job")
    };
    let fire = |s: &mut ClusterState, slots: &[(u64, Option<&str>)]| {
        run(
            s,
            Command::Fire {
                now_ms: 5,
                job,
                slots: slots
                    .iter()
                    .map(|(slot_ms, skip)| SlotDecision {
                        slot_ms: *slot_ms,
                        skip: skip.map(str::to_string),
                    })
                    .collect(),
            },
        )
    };
    assert_eq!(
        fire(&mut s, &[(1000, None)]),
        Response::Fired {
            tasks: vec![1],
            refused: 0
        }
    );
    // the same slot again (a second leader) is refused; the next is skipped for overlap
    // while task 1 runs
    assert_eq!(
        fire(&mut s, &[(1000, None), (2000, None)]),
        Response::Fired {
            tasks: vec![],
            refused: 1
        }
    );
    assign(&mut s, 1, 1);
    complete(
        &mut s,
        1,
        Outcome::Succeeded {
            result: "{}".into(),
        },
    );
    assert_eq!(
        fire(&mut s, &[(3000, Some("misfire")), (4000, None)]),
        Response::Fired {
            tasks: vec![2],
            refused: 0
        }
    );
    let j = &s.jobs[&job];
    assert_eq!((j.fires, j.skipped, j.last_slot_ms), (2, 2, Some(4000)));
    assert_eq!(
        j.recent
            .iter()
            .map(|r| r.skipped.clone())
            .collect::<Vec<_>>(),
        vec![None, Some("overlap".into()), Some("misfire".into()), None]
    );
    assert_eq!(
        s.task(2).and_then(|t| t.job),
        Some(JobFire { job, slot_ms: 4000 })
    );
}

#[test]
fn retry_delay_grows_is_capped_and_jitter_is_deterministic_and_bounded() {
    let p = RetryPolicy {
        max_attempts: 10,
        backoff_ms: 100,
        max_backoff_ms: 1000,
        jitter_pct: 0,
    };
    assert_eq!(
        (1..=6).map(|a| p.delay_after(1, a)).collect::<Vec<_>>(),
        vec![100, 200, 400, 800, 1000, 1000]
    );
    let j = RetryPolicy {
        jitter_pct: 50,
        ..p
    };
    let d: Vec<u64> = (1..200).map(|task| j.delay_after(task, 3)).collect();
    assert!(d.iter().all(|x| (200..=400).contains(x)), "{d:?}");
    assert!(d.iter().any(|x| *x != d[0]), "jitter varies by task");
    assert_eq!(j.delay_after(7, 3), j.delay_after(7, 3));
}

#[test]
fn pending_counts_per_priority_follow_every_change_and_a_snapshot() {
    let mut s = ClusterState::new();
    let prio = |p: i32| {
        let mut t = TaskSpec::kernel("stats", "{}");
        t.priority = p;
        t
    };
    submit(&mut s, vec![prio(0), prio(5), prio(5), prio(-2)]);
    let walk = |s: &ClusterState| {
        let mut m: BTreeMap<i32, u64> = BTreeMap::new();
        for t in s.pending() {
            *m.entry(t.spec.priority).or_default() += 1;
        }
        m
    };
    assert_eq!(s.pending_counts(), &walk(&s));
    assert_eq!(s.pending_counts().get(&5), Some(&2));
    let mut ev = Vec::new();
    s.apply(
        &req(Command::Assign {
            now_ms: 11,
            assignments: vec![Assignment {
                task: 2,
                node: 1,
                attempt: 1,
            }],
        }),
        &mut ev,
    );
    s.apply(
        &req(Command::Cancel {
            now_ms: 12,
            ids: vec![3, 4],
        }),
        &mut ev,
    );
    assert_eq!(s.pending_counts(), &walk(&s));
    assert_eq!(
        s.pending_counts().iter().collect::<Vec<_>>(),
        vec![(&0, &1)],
        "priorities without pending tasks are gone"
    );
    let mut back: ClusterState = decode(&encode(&s).expect("encode")).expect("decode");
    back.rebuild_indexes();
    assert_eq!(back.pending_counts(), s.pending_counts());
}

#[test]
fn apply_owned_reaches_the_same_state_and_answers_as_apply() {
    let mut keyed = TaskSpec::kernel("stats", "{\"values\":[1]}");
    keyed.idempotency_key = Some("k1".into());
    let mut after = TaskSpec::kernel("stats", "{}");
    after.after = vec![1];
    let cmds = vec![
        Command::Submit {
            now_ms: 10,
            tasks: vec![keyed.clone(), TaskSpec::kernel("stats", "{}"), after],
            admission: Admission::default(),
        },
        Command::Batch(vec![
            Command::Submit {
                now_ms: 11,
                tasks: vec![keyed.clone()],
                admission: Admission::default(),
            },
            Command::Assign {
                now_ms: 12,
                assignments: vec![Assignment {
                    task: 1,
                    node: 1,
                    attempt: 1,
                }],
            },
        ]),
        Command::Cancel {
            now_ms: 13,
            ids: vec![1, 2],
        },
        Command::Submit {
            now_ms: 14,
            tasks: vec![TaskSpec::kernel("stats", "{}")],
            admission: Admission {
                max_pending: 1,
                ..Admission::default()
            },
        },
    ];
    let (mut a, mut b) = (ClusterState::new(), ClusterState::new());
    for c in cmds {
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        let ra = a.apply(&req(c.clone()), &mut ea);
        let rb = b.apply_owned(req(c), &mut eb);
        assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
        assert_eq!(ea, eb);
    }
    assert_eq!(encode(&a).expect("a"), encode(&b).expect("b"));
}

#[test]
fn format_6_and_7_states_and_entries_are_read_by_format_8() {
    let mut s = ClusterState::new();
    submit(&mut s, vec![TaskSpec::kernel("stats", "{}"); 3]);
    // Format 7 wrote the same fields without `modules` (two empty maps, 16 bytes at the end
    // in format 8); format 6 also without `streams` (an empty map and a next id, 16 more).
    let v8 = encode(&s).expect("encode");
    let v7 = &v8[..v8.len() - 16];
    let old: crate::migrate::ClusterStateV7 = decode(v7).expect("format 7 decodes");
    let m7: ClusterState = old.into();
    assert_eq!(m7.tasks.len(), 3);
    assert!(m7.modules.is_empty());
    let v6 = &v8[..v8.len() - 32];
    let old: crate::migrate::ClusterStateV6 = decode(v6).expect("format 6 decodes");
    let mut m: ClusterState = old.into();
    assert_eq!(m.tasks.len(), 3);
    assert_eq!(m.count(TaskStatus::Pending), 3);
    assert_eq!(m.next_id, 4);
    assert!(m.streams.jobs.is_empty());
    // A format 6 entry still applies; an unknown one does not.
    let r = m.apply(
        &RaftRequest {
            version: 6,
            command: Command::Cancel {
                now_ms: 20,
                ids: vec![1],
            },
        },
        &mut Vec::new(),
    );
    assert_eq!(r, Response::Cancelled(vec![Some(TaskStatus::Cancelled)]));
    // A stream job survives a snapshot round trip with its result index.
    let spec = crate::stream::StreamSpec {
        name: "s".into(),
        definition: "{}".into(),
        constraints: Constraints::default(),
        resources: Resources::default(),
        checkpoint_ms: 1000,
        max_results: 10,
        submitter: "anon".into(),
    };
    let id = match m.apply(
        &req(Command::CreateStream {
            now_ms: 21,
            spec: Box::new(spec),
        }),
        &mut Vec::new(),
    ) {
        Response::StreamCreated(id) => id,
        other => panic!("unexpected {other:?}"),
    };
    // A module survives a snapshot round trip too.
    let bytes = b"\0asm\x01\0\0\0".to_vec();
    let module = crate::module::WasmModule {
        id: crate::module::module_id(&bytes),
        name: "m".into(),
        bytes,
        created_ms: 22,
        uploader: "anon".into(),
    };
    let mid = module.id.clone();
    assert_eq!(
        m.apply(
            &req(Command::PutModule {
                module: Box::new(module)
            }),
            &mut Vec::new()
        ),
        Response::ModulePut { created: true }
    );
    let mut back: ClusterState = decode(&encode(&m).expect("encode")).expect("decode");
    back.rebuild_indexes();
    assert_eq!(
        back.streams.get(id).map(|j| j.status),
        Some(crate::stream::StreamStatus::Starting)
    );
    assert_eq!(back.modules.resolve("m").map(|x| x.id.clone()), Some(mid));
}

#[test]
fn a_module_in_use_by_a_live_task_or_a_job_is_not_deleted() {
    let mut s = ClusterState::new();
    let bytes = b"\0asm\x01\0\0\0".to_vec();
    let id = crate::module::module_id(&bytes);
    let put = Command::PutModule {
        module: Box::new(crate::module::WasmModule {
            id: id.clone(),
            name: "m".into(),
            bytes,
            created_ms: 1,
            uploader: "u".into(),
        }),
    };
    s.apply(&req(put), &mut Vec::new());
    let mut spec = TaskSpec::kernel("stats", "{}");
    spec.work = Work::Wasm {
        module: id.clone(),
        args: vec![],
        input: "{}".into(),
    };
    submit(&mut s, vec![spec]);
    let del = || Command::DeleteModule { id: id.clone() };
    match s.apply(&req(del()), &mut Vec::new()) {
        Response::ModuleDeleted(Err(why)) => assert!(why.contains("task 1"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    s.apply(
        &req(Command::Cancel {
            now_ms: 2,
            ids: vec![1],
        }),
        &mut Vec::new(),
    );
    assert_eq!(
        s.apply(&req(del()), &mut Vec::new()),
        Response::ModuleDeleted(Ok(true))
    );
    assert_eq!(
        s.apply(&req(del()), &mut Vec::new()),
        Response::ModuleDeleted(Ok(false))
    );
}
