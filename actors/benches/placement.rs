//! Scheduler placement speed: `cargo bench -p edgerun-actors --bench placement`.
//!
//! 1,000 nodes (half cloud, half edge, three racks, 8 slots, some already busy) as the
//! replicated state holds them after their registrations; the numbers are scheduler time only
//! (the Raft write of the tick's assignments is measured by `edgerun bench`).

use std::collections::{HashMap, HashSet};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgerun_actors::scheduler::{plan, simulated_cluster, Policy};
use edgerun_model::{Admission, ClusterState, Command, Placement, RaftRequest, TaskSpec, Tier};

fn apply(s: &mut ClusterState, c: Command) {
    s.apply(&RaftRequest::new(c), &mut Vec::new());
}

fn cluster(nodes: u64, busy_per_node: u64) -> ClusterState {
    let mut s = simulated_cluster(nodes);
    // Fill some slots so the nodes differ.
    let mut fill = TaskSpec::kernel("stats", "{}");
    fill.resources.memory_mb = Some(512);
    let n = nodes * busy_per_node;
    apply(
        &mut s,
        Command::Submit {
            now_ms: 0,
            tasks: vec![fill; n as usize],
            admission: Admission::default(),
        },
    );
    let p = plan(
        &s,
        &HashMap::new(),
        &HashSet::new(),
        n as usize,
        0,
        &Policy::default(),
        |_| true,
    );
    apply(
        &mut s,
        Command::Assign {
            now_ms: 0,
            assignments: p.assignments,
        },
    );
    s
}

fn submit(s: &mut ClusterState, spec: TaskSpec, n: usize) {
    apply(
        s,
        Command::Submit {
            now_ms: 0,
            tasks: vec![spec; n],
            admission: Admission::default(),
        },
    );
}

fn constrained() -> TaskSpec {
    let mut t = TaskSpec::kernel("stats", "{}");
    t.constraints.tier = Some(Tier::Edge);
    t.constraints
        .labels
        .insert("rack".into(), vec!["a".into(), "b".into()]);
    t.resources.memory_mb = Some(256);
    t.resources.cpu_millis = Some(500);
    t
}

fn bench(c: &mut Criterion) {
    let none = HashMap::new();
    let evicting = HashSet::new();
    for placement in [Placement::Spread, Placement::Binpack] {
        let policy = Policy {
            placement,
            ..Policy::default()
        };
        let mut s = cluster(1000, 3);
        submit(&mut s, constrained(), 1);
        c.bench_function(
            &format!("place 1 task among 1000 nodes ({})", placement.as_str()),
            |b| {
                b.iter(|| {
                    let p = plan(black_box(&s), &none, &evicting, 4096, 0, &policy, |_| true);
                    assert_eq!(p.assignments.len(), 1);
                    p
                })
            },
        );
    }
    let policy = Policy::default();
    let mut s = cluster(1000, 3);
    submit(&mut s, constrained(), 1000);
    c.bench_function("one tick: 1000 pending tasks on 1000 nodes", |b| {
        b.iter(|| {
            let p = plan(black_box(&s), &none, &evicting, 4096, 0, &policy, |_| true);
            assert_eq!(p.assignments.len(), 1000);
            p
        })
    });
    // A backlog that fits nowhere (edge tasks needing more memory than any node has) must
    // not make each tick slow: the shape is tried once per tick.
    let mut s = cluster(1000, 3);
    let mut huge = constrained();
    huge.resources.memory_mb = Some(1_000_000);
    submit(&mut s, huge, 10_000);
    submit(&mut s, constrained(), 1);
    c.bench_function("one tick: 10000 unplaceable + 1 task on 1000 nodes", |b| {
        b.iter(|| {
            let p = plan(black_box(&s), &none, &evicting, 4096, 0, &policy, |_| true);
            assert_eq!(p.assignments.len(), 1);
            p
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
