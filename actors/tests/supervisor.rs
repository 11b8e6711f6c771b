//! The NodeSupervisor's restart policy under paused time: backoff that doubles, a budget per
//! actor within a window, and failures older than the window forgotten. A toy child stands
//! in for the node's actors (their own failures are tested against real nodes in
//! node/tests/t30_supervision.rs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgerun_actors::child::SpawnFuture;
use edgerun_actors::{ChildSpec, NodeExit, NodeSupervisor, Slot, SupervisorArgs, SupervisorMsg};
use edgerun_config::SupervisorConfig;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::time::Instant;

/// An actor that fails when told to.
struct Flaky;

enum FlakyMsg {
    Fail,
}

impl Actor for Flaky {
    type Msg = FlakyMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<FlakyMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<FlakyMsg>,
        msg: FlakyMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FlakyMsg::Fail => Err("told to fail".into()),
        }
    }
}

/// Starts [`Flaky`] and records when each start happened.
#[derive(Default)]
struct FlakySpec {
    slot: Slot<FlakyMsg>,
    starts: Mutex<Vec<Instant>>,
}

impl ChildSpec for FlakySpec {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(None, Flaky, (), supervisor).await?;
            self.slot.set(Some(r.clone()));
            self.starts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Instant::now());
            Ok(r.get_cell())
        })
    }

    fn inject_failure(&self) -> bool {
        self.slot
            .get()
            .is_some_and(|r| r.cast(FlakyMsg::Fail).is_ok())
    }
}

impl FlakySpec {
    fn starts(&self) -> Vec<Instant> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Make the running child fail, then wait (in paused time) for its next start.
    async fn fail_and_wait_restart(&self) -> Instant {
        let before = self.starts().len();
        assert!(self.inject_failure(), "the child was not running");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(t) = self.starts().get(before) {
                return *t;
            }
            assert!(Instant::now() < deadline, "no restart after a failure");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn start(
    policy: SupervisorConfig,
) -> (
    Arc<FlakySpec>,
    ActorRef<SupervisorMsg>,
    watch::Receiver<Option<NodeExit>>,
) {
    let spec = Arc::new(FlakySpec::default());
    let (tx, rx) = watch::channel(None);
    let (sup, _) = Actor::spawn(
        None,
        NodeSupervisor,
        SupervisorArgs {
            children: vec![spec.clone() as Arc<dyn ChildSpec>],
            policy,
            exit: tx,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("starting the supervisor: {e}"));
    (spec, sup, rx)
}

fn policy(max_restarts: u32, window_secs: u64) -> SupervisorConfig {
    SupervisorConfig {
        max_restarts,
        window_secs,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_actor_is_restarted_after_a_backoff_that_doubles_up_to_its_cap() {
    let (spec, sup, exit) = start(policy(10, 3600)).await;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let failed = Instant::now();
        let restarted = spec.fail_and_wait_restart().await;
        delays.push(restarted.duration_since(failed).as_millis() as u64);
    }
    // 100, 200, 400, 800 ms, then the 1 s cap (paused time: exact up to a tick).
    let want = [100, 200, 400, 800, 1000, 1000];
    for (got, want) in delays.iter().zip(want) {
        assert!(
            (want..want + 5).contains(got),
            "restart delays {delays:?}, expected about {want:?}"
        );
    }
    assert!(exit.borrow().is_none(), "{:?}", exit.borrow());
    sup.stop(None);
}

#[tokio::test(start_paused = true)]
async fn one_failure_past_the_budget_in_the_window_stops_the_node_and_says_which_actor() {
    let (spec, _sup, mut exit) = start(policy(3, 60)).await;
    for _ in 0..3 {
        spec.fail_and_wait_restart().await;
    }
    assert!(exit.borrow().is_none(), "stopped within the budget");
    assert!(spec.inject_failure());
    let ended = tokio::time::timeout(Duration::from_secs(60), exit.wait_for(Option::is_some))
        .await
        .unwrap_or_else(|_| panic!("the node did not stop past its budget"))
        .map(|e| e.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    match ended {
        Some(NodeExit::BudgetExceeded {
            actor,
            failures,
            window_secs,
            last_error,
        }) => {
            assert_eq!((actor, failures, window_secs), ("flaky", 4, 60));
            assert!(last_error.contains("told to fail"), "{last_error}");
        }
        other => panic!("the node ended with {other:?}"),
    }
    assert_eq!(spec.starts().len(), 4, "restarted past the budget");
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_do_not_count() {
    let (spec, sup, exit) = start(policy(2, 10)).await;
    for _ in 0..6 {
        spec.fail_and_wait_restart().await;
        // Each failure is more than the window after the one two before it.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert!(
        exit.borrow().is_none(),
        "stopped although at most 2 failures fell in any 10 s: {:?}",
        exit.borrow()
    );
    assert_eq!(spec.starts().len(), 7);
    sup.stop(None);
}
