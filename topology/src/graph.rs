//! The erased graph behind the typed builder.
//!
//! Users write `KStream<K, V>`; inside, every record is a boxed `AnyValue`
//! (an [`ErasedRecord`]), and each node downcasts it to the types its typed
//! wrapper was built for. The builder only ever connects nodes whose types
//! match, so a failed downcast is a bug in this crate, not a user error.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use weir_state::StoreTransaction;

use crate::record::{OutputRecord, Record, SourceCoordinates, SourceRecord};
use crate::ProcessError;

/// A value that can cross the erased graph: `Send`, and clonable so one
/// record can fan out to several children.
pub(crate) trait AnyValue: Send {
    fn clone_box(&self) -> Box<dyn AnyValue>;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + Send + Clone> AnyValue for T {
    fn clone_box(&self) -> Box<dyn AnyValue> {
        Box::new(self.clone())
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A typed [`Record`] behind one erased box.
///
/// The whole record shares one allocation, so a node that only looks at a
/// record (dedup, filter, branch) forwards the very same box, and one that
/// transforms it frees one box and allocates one. (With key and value
/// boxed apart, every node freed two boxes and allocated two, copying the
/// fields out and in: 16 allocator calls per confirmed order of the
/// Inventory job, 6 now; the allocator was ~10% of the job's CPU.)
pub(crate) struct ErasedRecord(Box<dyn AnyValue>);

impl Clone for ErasedRecord {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

const MISMATCH: &str = "the typed builder connects only nodes of matching types";

impl ErasedRecord {
    pub fn erase<K: Any + Send + Clone, V: Any + Send + Clone>(r: Record<K, V>) -> Self {
        Self(Box::new(r))
    }

    /// The record, moved out of its box.
    pub fn typed<K: 'static, V: 'static>(self) -> Record<K, V> {
        *self
            .0
            .into_any()
            .downcast::<Record<K, V>>()
            .expect(MISMATCH)
    }

    /// The record, in place (to forward this same box afterwards).
    pub fn typed_ref<K: 'static, V: 'static>(&self) -> &Record<K, V> {
        self.0
            .as_any()
            .downcast_ref::<Record<K, V>>()
            .expect(MISMATCH)
    }
}

/// Where a node sends a forwarded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Every child.
    All,
    /// One child (a branch), by node id.
    Node(usize),
}

/// What one node invocation may touch.
pub(crate) struct NodeContext<'a> {
    /// The task's store transactions, by store name.
    pub stores: &'a mut HashMap<String, StoreTransaction>,
    /// Stores the current node was given access to.
    pub allowed_stores: &'a [String],
    /// The input record being processed.
    pub source: &'a SourceCoordinates,
    /// Records forwarded by the current node.
    pub forwards: Vec<(Target, ErasedRecord)>,
    /// Records bound for topics.
    pub outputs: &'a mut Vec<OutputRecord>,
    /// The current node's name.
    pub node_name: &'a str,
}

/// One instantiated node of one task.
pub(crate) trait Node: Send {
    fn process(
        &mut self,
        record: ErasedRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError>;
    /// Called after each commit with the wall-clock time, for periodic work
    /// such as expiring state. Store writes made here are committed with
    /// the next interval.
    fn punctuate(&mut self, _now_ms: i64, _ctx: &mut NodeContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }
    /// Called when the task starts.
    fn init(&mut self) {}
    /// Called when the task closes.
    fn close(&mut self) {}
    /// Called when the interval's uncommitted store writes were dropped
    /// (a failed commit): forget anything derived from them.
    fn abort(&mut self) {}
}

/// Creates a node instance for a task (each task gets its own processors).
pub(crate) type NodeFactory = Arc<dyn Fn() -> Box<dyn Node> + Send + Sync>;

/// Decodes a raw input record for the source node.
pub(crate) type SourceDecoder =
    Arc<dyn Fn(&SourceRecord<'_>) -> Result<ErasedRecord, ProcessError> + Send + Sync>;

/// What a node is, for validation and `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Source { topic: String },
    Processor,
    Branch,
    Sink { topic: String },
}

/// A node as declared in the builder.
#[derive(Clone)]
pub(crate) struct NodeSpec {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<usize>,
    pub children: Vec<usize>,
    pub stores: Vec<String>,
    pub factory: NodeFactory,
}

/// A node that forwards what it gets (sources and branch outlets).
pub(crate) struct PassThrough;

impl Node for PassThrough {
    fn process(
        &mut self,
        record: ErasedRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        ctx.forwards.push((Target::All, record));
        Ok(())
    }
}
