//! How the supervisor starts its children, and typed slots that always hold a child's
//! current `ActorRef` (it changes when the child is restarted).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use ractor::{ActorCell, ActorRef, SpawnErr};

/// The current `ActorRef` of a restartable actor. Holders look it up on each use instead
/// of keeping a ref that dies with the actor.
pub struct Slot<M>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<M> Default for Slot<M> {
    fn default() -> Self {
        Slot(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> Slot<M> {
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, r: Option<ActorRef<M>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = r;
    }
}

pub type SpawnFuture<'a> = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send + 'a>>;

/// One child of the node supervisor.
pub trait ChildSpec: Send + Sync + 'static {
    /// Stable name: used in logs, metrics and the fault-injection route.
    fn name(&self) -> &'static str;
    /// Start the child linked to `supervisor`.
    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture<'_>;
    /// Make the running child fail (fault injection). False if it is not running.
    fn inject_failure(&self) -> bool;
}
