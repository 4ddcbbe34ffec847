//! One task: the topology instantiated for one input partition, with its
//! own processors and store partitions. No Kafka here — the runtime and the
//! test driver both drive this same core, so what the driver tests is what
//! runs in production.

use std::collections::HashMap;
use std::sync::Arc;

use weir_state::StoreTransaction;

use crate::builder::TopologyInner;
use crate::dead_letter::{dead_letter_headers, Failure};
use crate::graph::{ErasedRecord, Node, NodeContext, Target};
use crate::record::{OutputRecord, SourceCoordinates, SourceRecord};
use crate::{metrics, FailureKind, ProcessError, Topology, TopologyError};

/// What happened to one input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ran through the topology (outputs, if any, are in `outputs`).
    Processed,
    /// Failed and was written to the dead-letter topic.
    DeadLettered(FailureKind),
}

pub(crate) struct TaskCore {
    /// `<topic>-<partition>`, for logs and errors.
    pub id: String,
    topology: Arc<TopologyInner>,
    nodes: Vec<Box<dyn Node>>,
    /// Store transactions by store name.
    pub stores: HashMap<String, StoreTransaction>,
    /// Records produced since the runtime last drained them.
    pub outputs: Vec<OutputRecord>,
    /// The walk's stack and a node's forwards, kept between records: made
    /// anew they were an allocation per record and one per node.
    stack: Vec<(usize, ErasedRecord)>,
    forwards: Vec<(Target, ErasedRecord)>,
}

impl TaskCore {
    pub fn new(
        topology: &Topology,
        partition: i32,
        stores: HashMap<String, StoreTransaction>,
    ) -> Self {
        let inner = topology.inner.clone();
        let mut nodes: Vec<Box<dyn Node>> = inner.nodes.iter().map(|n| (n.factory)()).collect();
        for n in &mut nodes {
            n.init();
        }
        Self {
            id: format!("{}-{partition}", inner.source_topic),
            topology: inner,
            nodes,
            stores,
            outputs: Vec::new(),
            stack: Vec::new(),
            forwards: Vec::new(),
        }
    }

    /// Runs one input record through the topology.
    pub fn process(&mut self, raw: &SourceRecord<'_>) -> Result<Outcome, TopologyError> {
        let mark = self.outputs.len();
        let mut failed_node = self.topology.source_node;
        let result = self.run(raw, &mut failed_node);
        match result {
            Ok(()) => Ok(Outcome::Processed),
            Err(ProcessError::Record { kind, message }) => {
                self.outputs.truncate(mark);
                self.dead_letter(raw, kind, &message, failed_node)?;
                Ok(Outcome::DeadLettered(kind))
            }
            Err(ProcessError::State(source)) => Err(TopologyError::State {
                task: self.id.clone(),
                source,
            }),
            Err(ProcessError::Misuse(m)) => Err(TopologyError::Invalid(m)),
        }
    }

    fn run(&mut self, raw: &SourceRecord<'_>, failed_node: &mut usize) -> Result<(), ProcessError> {
        let topo = self.topology.clone();
        let first = (topo.decoder)(raw)?;
        // Taken, and given back only on success: after a failure they may
        // hold records of the failed input, which must go.
        let mut stack = std::mem::take(&mut self.stack);
        let mut forwards = std::mem::take(&mut self.forwards);
        stack.clear();
        forwards.clear();
        stack.push((topo.source_node, first));
        while let Some((id, record)) = stack.pop() {
            let spec = &topo.nodes[id];
            *failed_node = id;
            let mut ctx = NodeContext {
                stores: &mut self.stores,
                allowed_stores: &spec.stores,
                source: &raw.coordinates,
                forwards,
                outputs: &mut self.outputs,
                node_name: &spec.name,
            };
            self.nodes[id].process(record, &mut ctx)?;
            forwards = ctx.forwards;
            // Depth-first, in forward order: push in reverse.
            for (target, rec) in forwards.drain(..).rev() {
                match target {
                    Target::Node(child) => stack.push((child, rec)),
                    Target::All => {
                        if let Some((last, rest)) = spec.children.split_last() {
                            // Copies only for extra children; the last one
                            // takes the record itself (a deep copy of every
                            // record at every node cost ~10% of the job).
                            let copies: Vec<_> =
                                rest.iter().map(|child| (*child, rec.clone())).collect();
                            stack.push((*last, rec));
                            stack.extend(copies.into_iter().rev());
                        }
                    }
                }
            }
        }
        self.stack = stack;
        self.forwards = forwards;
        Ok(())
    }

    fn dead_letter(
        &mut self,
        raw: &SourceRecord<'_>,
        kind: FailureKind,
        message: &str,
        node: usize,
    ) -> Result<(), TopologyError> {
        let c = &raw.coordinates;
        let Some(route) = &self.topology.dead_letter else {
            return Err(TopologyError::Unrouted {
                topic: c.topic.to_string(),
                partition: c.partition,
                offset: c.offset,
                error: format!("{kind}: {message}"),
            });
        };
        let failure = Failure {
            kind,
            message,
            processor: &self.topology.nodes[node].name,
            source: raw,
            failed_at_ms: now_ms(),
        };
        let letter = route.handler.dead_letter(&failure);
        let headers = dead_letter_headers(&failure, &letter.headers);
        tracing::warn!(
            task = %self.id,
            offset = c.offset,
            kind = kind.as_str(),
            processor = failure.processor,
            error = message,
            "record sent to the dead-letter topic"
        );
        ::metrics::counter!(metrics::DLQ_RECORDS, metrics::LABEL_KIND => kind.as_str())
            .increment(1);
        self.outputs.push(OutputRecord {
            topic: route.topic.clone(),
            key: letter.key,
            value: letter.value,
            headers,
            timestamp: failure.failed_at_ms,
        });
        Ok(())
    }

    /// Runs every node's periodic work (after a commit). Writes are
    /// attributed to `offset`, the last input offset the task committed.
    pub fn punctuate(
        &mut self,
        now_ms: i64,
        partition: i32,
        offset: i64,
    ) -> Result<(), TopologyError> {
        let topo = self.topology.clone();
        let coords = SourceCoordinates {
            topic: Arc::from(topo.source_topic.as_str()),
            partition,
            offset,
        };
        for (id, spec) in topo.nodes.iter().enumerate() {
            if spec.stores.is_empty() {
                continue;
            }
            let mut ctx = NodeContext {
                stores: &mut self.stores,
                allowed_stores: &spec.stores,
                source: &coords,
                forwards: Vec::new(),
                outputs: &mut self.outputs,
                node_name: &spec.name,
            };
            self.nodes[id]
                .punctuate(now_ms, &mut ctx)
                .map_err(|e| match e {
                    ProcessError::State(source) => TopologyError::State {
                        task: self.id.clone(),
                        source,
                    },
                    other => TopologyError::Invalid(other.to_string()),
                })?;
        }
        Ok(())
    }

    /// Drops the interval's uncommitted work: store writes and outputs.
    pub fn abort(&mut self) {
        for tx in self.stores.values_mut() {
            tx.abort();
        }
        self.outputs.clear();
        for n in &mut self.nodes {
            n.abort();
        }
    }

    /// Closes the processors (stores are closed by dropping the task).
    pub fn close(&mut self) {
        for n in &mut self.nodes {
            n.close();
        }
    }
}

/// Wall-clock milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
