//! The placement planner against hand-built cluster states.
use super::*;
use edgerun_model::{Admission, Affinity, Command, RaftRequest, TaskSpec, Tier};

pub(crate) fn node(id: NodeId, slots: u32, tier: Tier, labels: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        id,
        tier,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        api: String::new(),
        rpc: String::new(),
        slots,
        cpu_millis: 4000,
        memory_mb: 1024,
        registered_at_ms: 0,
        up: true,
        down_since_ms: None,
    }
}

fn apply(s: &mut ClusterState, c: Command) {
    s.apply(&RaftRequest::new(c), &mut Vec::new());
}

fn state(nodes: Vec<NodeInfo>, specs: Vec<TaskSpec>) -> ClusterState {
    let mut s = ClusterState::new();
    for n in nodes {
        apply(&mut s, Command::RegisterNode { now_ms: 0, node: n });
    }
    apply(
        &mut s,
        Command::Submit {
            now_ms: 0,
            tasks: specs,
            admission: Admission::default(),
        },
    );
    s
}

fn plan_now(s: &ClusterState, policy: &Policy) -> Plan {
    plan(s, &HashMap::new(), &HashSet::new(), 1000, 0, policy, |_| {
        true
    })
}

fn apply_plan(s: &mut ClusterState, p: &Plan) {
    apply(
        s,
        Command::Assign {
            now_ms: 0,
            assignments: p.assignments.clone(),
        },
    );
}

fn prio(p: i32) -> TaskSpec {
    let mut t = TaskSpec::kernel("stats", "{}");
    t.priority = p;
    t
}

#[test]
fn higher_priority_first_fifo_within_and_in_flight_tasks_hold_their_slots() {
    let s = state(
        vec![node(1, 3, Tier::Cloud, &[])],
        vec![prio(1), prio(5), prio(1), prio(9), prio(5)],
    );
    let p = plan_now(&s, &Policy::default());
    assert_eq!(
        p.assignments.iter().map(|a| a.task).collect::<Vec<_>>(),
        vec![4, 2, 5]
    );
    let inflight: HashMap<TaskId, NodeId> =
        p.assignments.iter().map(|a| (a.task, a.node)).collect();
    let again = plan(
        &s,
        &inflight,
        &HashSet::new(),
        100,
        0,
        &Policy::default(),
        |_| true,
    );
    assert!(
        again.assignments.is_empty(),
        "in-flight tasks hold their slots"
    );
    let skip4 = plan(
        &s,
        &HashMap::new(),
        &HashSet::new(),
        1,
        0,
        &Policy::default(),
        |t| t.id != 4,
    );
    assert_eq!(
        skip4.assignments[0].task, 2,
        "a task in its backoff is passed over"
    );
}

#[test]
fn a_backlog_no_node_takes_is_looked_at_once_per_plan() {
    // 5,000 high-priority tasks for the edge (no edge node), then cloud tasks of two
    // priorities behind them.
    let mut edge = prio(9);
    edge.constraints.tier = Some(Tier::Edge);
    let mut specs = vec![edge; 5000];
    specs.extend([prio(1), prio(5)]);
    let s = state(vec![node(1, 4, Tier::Cloud, &[])], specs);
    let mut looked = 0;
    let p = plan(
        &s,
        &HashMap::new(),
        &HashSet::new(),
        100,
        0,
        &Policy::default(),
        |_| {
            looked += 1;
            true
        },
    );
    assert_eq!(
        p.assignments.iter().map(|a| a.task).collect::<Vec<_>>(),
        vec![5002, 5001],
        "the cloud tasks are placed, by priority"
    );
    assert_eq!(looked, 3, "one edge task, then the two cloud tasks");
    // With preemption on, every task is still considered (each may evict).
    let mut looked = 0;
    let policy = Policy {
        preemption: true,
        ..Policy::default()
    };
    plan(
        &s,
        &HashMap::new(),
        &HashSet::new(),
        100,
        0,
        &policy,
        |_| {
            looked += 1;
            true
        },
    );
    assert_eq!(looked, 5002);
}

#[test]
fn aging_lifts_an_old_low_priority_task_over_newer_high_ones() {
    let mut s = state(vec![node(1, 1, Tier::Cloud, &[])], vec![prio(0)]);
    apply(
        &mut s,
        Command::Submit {
            now_ms: 50_000,
            tasks: vec![prio(3)],
            admission: Admission::default(),
        },
    );
    let policy = Policy {
        aging_ms: 10_000,
        ..Policy::default()
    };
    // at 50 s: task 1 is 0 + 5 = 5, task 2 is 3 + 0
    let p = plan(
        &s,
        &HashMap::new(),
        &HashSet::new(),
        1,
        50_000,
        &policy,
        |_| true,
    );
    assert_eq!(p.assignments[0].task, 1);
    let no_aging = Policy {
        aging_ms: 0,
        ..Policy::default()
    };
    let p = plan(
        &s,
        &HashMap::new(),
        &HashSet::new(),
        1,
        50_000,
        &no_aging,
        |_| true,
    );
    assert_eq!(p.assignments[0].task, 2);
}

#[test]
fn constraints_filter_by_tier_label_sets_and_resources() {
    let mut edge = TaskSpec::kernel("stats", "{}");
    edge.constraints.tier = Some(Tier::Edge);
    let mut eu = TaskSpec::kernel("stats", "{}");
    eu.constraints
        .labels
        .insert("region".into(), vec!["eu-west".into(), "eu-north".into()]);
    let mut big = TaskSpec::kernel("stats", "{}");
    big.resources.memory_mb = Some(900);
    let mut huge = TaskSpec::kernel("stats", "{}");
    huge.resources.memory_mb = Some(5000);
    huge.constraints.tier = Some(Tier::Edge);
    let mut s = state(
        vec![
            node(1, 4, Tier::Cloud, &[("region", "us-east")]),
            node(2, 4, Tier::Edge, &[("region", "eu-north")]),
        ],
        vec![edge.clone(), eu, big.clone(), big, huge],
    );
    let p = plan_now(&s, &Policy::default());
    let on = |t: TaskId| p.assignments.iter().find(|a| a.task == t).map(|a| a.node);
    assert_eq!(on(1), Some(2), "edge-only lands on the edge node");
    assert_eq!(on(2), Some(2), "region in [eu-west, eu-north]");
    // two 900 MB tasks: one per 1024 MB node
    assert_ne!(on(3), on(4));
    assert!(on(3).is_some() && on(4).is_some());
    assert_eq!(on(5), None);
    apply_plan(&mut s, &p);
    let t5 = s.task(5).expect("task").clone();
    let why = pending_reason(&s, &t5, 0, &Policy::default()).expect("reason");
    assert!(
        why.contains("no up node with tier=edge") && why.contains("5000 MB"),
        "{why}"
    );
    // a task that would fit but the room is taken
    let mut more = TaskSpec::kernel("stats", "{}");
    more.constraints.tier = Some(Tier::Edge);
    more.resources.memory_mb = Some(512);
    apply(
        &mut s,
        Command::Submit {
            now_ms: 0,
            tasks: vec![more],
            admission: Admission::default(),
        },
    );
    let t6 = s.task(6).expect("task").clone();
    let why = pending_reason(&s, &t6, 0, &Policy::default()).expect("reason");
    assert_eq!(
        why,
        "no node with tier=edge has a slot, 512 MB free; waiting for running tasks to end"
    );
}

#[test]
fn binpack_fills_one_node_and_spread_levels_them() {
    let nodes = || {
        vec![
            node(1, 4, Tier::Cloud, &[]),
            node(2, 4, Tier::Cloud, &[]),
            node(3, 4, Tier::Cloud, &[]),
        ]
    };
    let per_node = |p: &Plan| {
        let mut c = [0; 3];
        for a in &p.assignments {
            c[(a.node - 1) as usize] += 1;
        }
        c
    };
    let s = state(nodes(), vec![TaskSpec::kernel("stats", "{}"); 6]);
    let spread = plan_now(&s, &Policy::default());
    assert_eq!(per_node(&spread), [2, 2, 2]);
    let binpack = plan_now(
        &s,
        &Policy {
            placement: Placement::Binpack,
            ..Policy::default()
        },
    );
    assert_eq!(per_node(&binpack), [4, 2, 0]);
    // a per-task override beats the cluster default
    let mut t = TaskSpec::kernel("stats", "{}");
    t.placement = Some(Placement::Binpack);
    let s = state(nodes(), vec![t; 3]);
    assert_eq!(per_node(&plan_now(&s, &Policy::default())), [3, 0, 0]);
}

#[test]
fn affinities_prefer_without_requiring() {
    let mut t = TaskSpec::kernel("stats", "{}");
    t.affinities = vec![Affinity {
        label: "gpu".into(),
        values: vec!["yes".into()],
        weight: 50,
    }];
    let s = state(
        vec![
            node(1, 1, Tier::Cloud, &[]),
            node(2, 1, Tier::Cloud, &[("gpu", "yes")]),
        ],
        vec![t.clone(), t],
    );
    let p = plan_now(&s, &Policy::default());
    assert_eq!(
        p.assignments
            .iter()
            .map(|a| (a.task, a.node))
            .collect::<Vec<_>>(),
        vec![(1, 2), (2, 1)],
        "the second goes elsewhere when the preferred node is full"
    );
}

#[test]
fn preemption_evicts_the_lowest_priority_only_when_on() {
    let mut s = state(vec![node(1, 2, Tier::Cloud, &[])], vec![prio(1), prio(3)]);
    let p = plan_now(&s, &Policy::default());
    apply_plan(&mut s, &p);
    apply(
        &mut s,
        Command::Submit {
            now_ms: 0,
            tasks: vec![prio(9), prio(3)],
            admission: Admission::default(),
        },
    );
    let off = plan_now(&s, &Policy::default());
    assert_eq!(off, Plan::default(), "preemption is off by default");
    let on = Policy {
        preemption: true,
        ..Policy::default()
    };
    let p = plan_now(&s, &on);
    assert!(p.assignments.is_empty());
    assert_eq!(
        p.preempt.iter().map(|v| v.task).collect::<Vec<_>>(),
        vec![1],
        "one victim, the lowest priority; task 4 (priority 3) may not evict task 2 (3)"
    );
    apply(
        &mut s,
        Command::Preempt {
            now_ms: 0,
            victims: p.preempt.clone(),
        },
    );
    let p = plan_now(&s, &on);
    assert_eq!(
        p.assignments.iter().map(|a| a.task).collect::<Vec<_>>(),
        vec![3],
        "the freed slot goes to the preemptor"
    );
}

#[test]
fn one_task_among_a_thousand_nodes() {
    let nodes: Vec<NodeInfo> = (1..=1000)
        .map(|i| {
            let tier = if i % 2 == 0 { Tier::Edge } else { Tier::Cloud };
            node(i, 8, tier, &[("rack", if i % 3 == 0 { "a" } else { "b" })])
        })
        .collect();
    let mut t = TaskSpec::kernel("stats", "{}");
    t.constraints.tier = Some(Tier::Edge);
    t.constraints.labels.insert("rack".into(), vec!["a".into()]);
    let s = state(nodes, vec![t]);
    let p = plan_now(&s, &Policy::default());
    assert_eq!(p.assignments.len(), 1);
    let n = p.assignments[0].node;
    assert!(n.is_multiple_of(2) && n.is_multiple_of(3), "node {n}");
}
