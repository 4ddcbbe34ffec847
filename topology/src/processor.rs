//! The Processor API: the one trait a user implements for custom logic.
//!
//! As in Kafka Streams, only `process` is required; `init` and `close`
//! default to nothing. Output goes through [`ProcessorContext::forward`],
//! state through [`ProcessorContext::store`].

use std::marker::PhantomData;

use weir_state::TypedStore;

use crate::graph::{ErasedRecord, NodeContext, Target};
use crate::record::{Record, SourceCoordinates};
use crate::ProcessError;

/// Custom per-record logic from `Record<KIn, VIn>` to any number of `Record<KOut, VOut>`.
///
/// One instance exists per task (input partition), so fields are
/// per-partition state that is *not* fault tolerant; keep anything that must
/// survive a crash in a store.
pub trait Processor<KIn, VIn, KOut, VOut>: Send {
    /// Called once before the first record of the task.
    fn init(&mut self) {}

    /// Handles one record. Returning `Err(ProcessError::Record{..})` routes the
    /// *input* record to the dead-letter topic; what this call forwarded is
    /// discarded.
    fn process(
        &mut self,
        record: Record<KIn, VIn>,
        ctx: &mut ProcessorContext<'_, '_, KOut, VOut>,
    ) -> Result<(), ProcessError>;

    /// Called once when the task closes (revocation or shutdown).
    fn close(&mut self) {}
}

/// What a processor can do while handling a record.
pub struct ProcessorContext<'c, 'a, KOut, VOut> {
    pub(crate) inner: &'c mut NodeContext<'a>,
    pub(crate) _out: PhantomData<fn(KOut, VOut)>,
}

impl<KOut, VOut> ProcessorContext<'_, '_, KOut, VOut>
where
    KOut: Send + Clone + 'static,
    VOut: Send + Clone + 'static,
{
    /// Sends a record to every child of this processor.
    pub fn forward(&mut self, record: Record<KOut, VOut>) {
        self.inner
            .forwards
            .push((Target::All, ErasedRecord::erase(record)));
    }

    /// A typed view of a store attached to this processor. Writes are
    /// attributed to the current input offset and become durable at the next
    /// commit, together with the outputs.
    pub fn store(&mut self, name: &str) -> Result<TypedStore<'_>, ProcessError> {
        if !self.inner.allowed_stores.iter().any(|s| s == name) {
            return Err(ProcessError::Misuse(format!(
                "processor {:?} used store {name:?} without declaring it",
                self.inner.node_name
            )));
        }
        let offset = self.inner.source.offset;
        let tx = self.inner.stores.get_mut(name).ok_or_else(|| {
            ProcessError::Misuse(format!("store {name:?} is not in the topology"))
        })?;
        Ok(TypedStore::new(tx, offset))
    }

    /// Topic, partition and offset of the input record being processed.
    pub fn source(&self) -> &SourceCoordinates {
        self.inner.source
    }

    /// The name of this processor node.
    pub fn name(&self) -> &str {
        self.inner.node_name
    }
}
