//! The DSL: a typed `KStream<K, V>` over one erased graph.
//!
//! ```text
//! source(topic, key serde, value serde) → map / filter / try_map / process / dedup
//!                                       → split().branch(..).default_branch(..)
//!                                       → to(topic, key serde, value serde)
//! ```
//! `build()` validates the graph (unique names, declared stores, exactly one
//! source, every path ending somewhere) and returns an immutable [`Topology`]
//! that every task instantiates afresh.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::dead_letter::DeadLetterHandler;
use crate::graph::{
    ErasedRecord, Node, NodeContext, NodeFactory, NodeKind, NodeSpec, PassThrough, SourceDecoder,
    Target,
};
use crate::processor::{Processor, ProcessorContext};
use crate::record::{OutputRecord, Record};
use crate::serde::Serde;
use crate::{ProcessError, TopologyError};

/// Types that can flow through a stream: owned, sendable, clonable (fan-out).
pub trait Data: Send + Clone + 'static {}
impl<T: Send + Clone + 'static> Data for T {}

/// A state store declared in a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Unique store name; also part of the changelog topic name.
    pub name: String,
    /// Whether writes are logged to `<application-id>-<name>-changelog`.
    /// Without a changelog a store cannot be rebuilt on another machine.
    pub changelog: bool,
}

impl StoreSpec {
    /// A RocksDB key-value store with a changelog (the default, and the only
    /// fault-tolerant choice).
    pub fn key_value(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            changelog: true,
        }
    }

    /// Turns the changelog off: the store is then local-only.
    pub fn without_changelog(mut self) -> Self {
        self.changelog = false;
        self
    }
}

/// How restore brings back entries an operator keeps locally and never
/// logs (see [`weir_state::StoreTransaction::put_local`]), e.g. the dedup
/// operator's time index.
#[derive(Clone, Copy)]
pub(crate) struct LocalDerivation {
    /// Derives the local entries of one restored put `(key, value)` into
    /// the batch that applies it: how a replayed tail (what a store had not
    /// flushed) gets them.
    pub derive: fn(&[u8], &[u8], &mut weir_state::WriteBatch),
    /// A local entry `(key, value)` that a full restore writes with its
    /// first batch instead: per record, deriving was ~16% of a restore, so
    /// the operator derives them from the store afterwards.
    pub mark: (&'static [u8], &'static [u8]),
}

/// Reads, from a value an operator wrote to its store, the input offset of
/// the record that caused the write, where the operator keeps it there (the
/// dedup operator's [`crate::dedup::SeenEntry::first_offset`]). With it a
/// changelog record need not carry that offset as a `weir.source.offset`
/// header (see `runtime::commit::KafkaChangelog`): a header is ~30 bytes on
/// every record, and a row of its own on a broker that keeps headers apart.
pub(crate) type SourceOffsetOf = fn(&[u8]) -> Option<i64>;

/// Where failed records go.
#[derive(Clone)]
pub(crate) struct DeadLetterRoute {
    pub topic: Arc<str>,
    pub handler: Arc<dyn DeadLetterHandler>,
}

#[derive(Default)]
pub(crate) struct Graph {
    nodes: Vec<NodeSpec>,
    source: Option<(usize, String, SourceDecoder)>,
    stores: Vec<StoreSpec>,
    local_derivations: HashMap<String, Vec<LocalDerivation>>,
    value_source_offsets: HashMap<String, SourceOffsetOf>,
    dead_letter: Option<DeadLetterRoute>,
    errors: Vec<String>,
}

impl Graph {
    fn add(
        &mut self,
        name: &str,
        kind: NodeKind,
        parent: Option<usize>,
        stores: &[&str],
        factory: NodeFactory,
    ) -> usize {
        if self.nodes.iter().any(|n| n.name == name) {
            self.errors
                .push(format!("node name {name:?} is used twice"));
        }
        let id = self.nodes.len();
        self.nodes.push(NodeSpec {
            name: name.to_string(),
            kind,
            parents: parent.into_iter().collect(),
            children: Vec::new(),
            stores: stores.iter().map(|s| s.to_string()).collect(),
            factory,
        });
        if let Some(p) = parent {
            self.nodes[p].children.push(id);
        }
        id
    }
}

/// Builds a [`Topology`].
pub struct TopologyBuilder {
    graph: Rc<RefCell<Graph>>,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TopologyBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            graph: Rc::new(RefCell::new(Graph::default())),
        }
    }

    /// Declares a state store; processors get access by naming it.
    pub fn add_store(&self, spec: StoreSpec) -> &Self {
        let mut g = self.graph.borrow_mut();
        if g.stores.iter().any(|s| s.name == spec.name) {
            g.errors
                .push(format!("store {:?} is declared twice", spec.name));
        }
        g.stores.push(spec);
        self
    }

    /// Routes every failed record (bad bytes, invalid, unprocessable) to
    /// `topic`, shaped by `handler`. Without one, a failed record stops the job.
    pub fn dead_letter_topic(
        &self,
        topic: impl Into<String>,
        handler: impl DeadLetterHandler,
    ) -> &Self {
        self.graph.borrow_mut().dead_letter = Some(DeadLetterRoute {
            topic: Arc::from(topic.into()),
            handler: Arc::new(handler),
        });
        self
    }

    /// The input stream of `topic`. A key or value that does not decode is a
    /// deserialization failure (routed like any other); a null value stays `None`.
    pub fn source<K: Data, V: Data>(
        &self,
        topic: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> KStream<K, V> {
        let mut g = self.graph.borrow_mut();
        let name = format!("source-{topic}");
        let id = g.add(
            &name,
            NodeKind::Source {
                topic: topic.to_string(),
            },
            None,
            &[],
            Arc::new(|| Box::new(PassThrough)),
        );
        let decoder: SourceDecoder = Arc::new(move |raw| {
            let key = match raw.key {
                None => None,
                Some(k) => Some(
                    key_serde
                        .deserialize(k)
                        .map_err(|e| ProcessError::deserialization(format!("key: {e}")))?,
                ),
            };
            let value = match raw.value {
                None => None,
                Some(v) => Some(
                    value_serde
                        .deserialize(v)
                        .map_err(|e| ProcessError::deserialization(format!("value: {e}")))?,
                ),
            };
            Ok(ErasedRecord::erase(Record {
                key,
                value,
                headers: raw.headers.clone(),
                timestamp: raw.timestamp,
            }))
        });
        if g.source.is_some() {
            g.errors
                .push("a topology has exactly one source topic".to_string());
        }
        g.source = Some((id, topic.to_string(), decoder));
        drop(g);
        KStream::at(&self.graph, id)
    }

    /// Validates the graph and freezes it.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let g = self.graph.take();
        let mut errors = g.errors.clone();
        let Some((source_node, source_topic, decoder)) = g.source.clone() else {
            return Err(TopologyError::Invalid(
                "no source: call builder.source(topic, ..) once".into(),
            ));
        };
        for n in &g.nodes {
            for s in &n.stores {
                if !g.stores.iter().any(|d| &d.name == s) {
                    errors.push(format!(
                        "node {:?} uses store {s:?}, which is not declared (add_store)",
                        n.name
                    ));
                }
            }
            if n.children.is_empty() && !matches!(n.kind, NodeKind::Sink { .. }) {
                errors.push(format!(
                    "node {:?} has no children: its records go nowhere (end it with .to(topic))",
                    n.name
                ));
            }
        }
        if let Some(dl) = &g.dead_letter {
            if &*dl.topic == source_topic.as_str() {
                errors.push("the dead-letter topic cannot be the source topic".into());
            }
        }
        if !errors.is_empty() {
            return Err(TopologyError::Invalid(errors.join("; ")));
        }
        let mut sink_topics: Vec<String> = g
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Sink { topic } => Some(topic.clone()),
                _ => None,
            })
            .collect();
        sink_topics.dedup();
        Ok(Topology {
            inner: Arc::new(TopologyInner {
                nodes: g.nodes,
                source_node,
                source_topic,
                decoder,
                stores: g.stores,
                local_derivations: g.local_derivations,
                value_source_offsets: g.value_source_offsets,
                dead_letter: g.dead_letter,
                sink_topics,
            }),
        })
    }
}

/// A built, immutable topology. Cheap to clone; every task instantiates its
/// own processors from it.
#[derive(Clone)]
pub struct Topology {
    pub(crate) inner: Arc<TopologyInner>,
}

pub(crate) struct TopologyInner {
    pub nodes: Vec<NodeSpec>,
    pub source_node: usize,
    pub source_topic: String,
    pub decoder: SourceDecoder,
    pub stores: Vec<StoreSpec>,
    pub local_derivations: HashMap<String, Vec<LocalDerivation>>,
    pub value_source_offsets: HashMap<String, SourceOffsetOf>,
    pub dead_letter: Option<DeadLetterRoute>,
    pub sink_topics: Vec<String>,
}

impl Topology {
    /// The input topic.
    pub fn source_topic(&self) -> &str {
        &self.inner.source_topic
    }

    /// Topics written by sinks.
    pub fn sink_topics(&self) -> &[String] {
        &self.inner.sink_topics
    }

    /// The dead-letter topic, when one is configured.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.inner.dead_letter.as_ref().map(|d| &*d.topic)
    }

    /// Declared stores.
    pub fn stores(&self) -> &[StoreSpec] {
        &self.inner.stores
    }

    /// How restore brings back `store`'s local entries.
    pub(crate) fn local_derivations(&self, store: &str) -> Vec<LocalDerivation> {
        self.inner
            .local_derivations
            .get(store)
            .cloned()
            .unwrap_or_default()
    }

    /// How to read a write's source offset from the values of `store`, when
    /// its operator keeps it there.
    pub(crate) fn value_source_offset(&self, store: &str) -> Option<SourceOffsetOf> {
        self.inner.value_source_offsets.get(store).copied()
    }

    /// The changelog topic of a store: `<application-id>-<store>-changelog`.
    pub fn changelog_topic(application_id: &str, store: &str) -> String {
        format!("{application_id}-{store}-changelog")
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe().text())
    }
}

/// A typed stream of records: a handle on one node of the graph.
pub struct KStream<K, V> {
    graph: Rc<RefCell<Graph>>,
    node: usize,
    _types: PhantomData<fn() -> (K, V)>,
}

/// A node defined by a closure over erased records.
struct FnNode<F>(F);

impl<F> Node for FnNode<F>
where
    F: FnMut(ErasedRecord, &mut NodeContext<'_>) -> Result<(), ProcessError> + Send,
{
    fn process(
        &mut self,
        record: ErasedRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        (self.0)(record, ctx)
    }
}

struct ProcessorNode<P, KIn, VIn, KOut, VOut> {
    processor: P,
    _types: PhantomData<fn(KIn, VIn, KOut, VOut)>,
}

impl<P, KIn, VIn, KOut, VOut> Node for ProcessorNode<P, KIn, VIn, KOut, VOut>
where
    P: Processor<KIn, VIn, KOut, VOut>,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    fn process(
        &mut self,
        record: ErasedRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        let mut pctx = ProcessorContext::<KOut, VOut> {
            inner: ctx,
            _out: PhantomData,
        };
        self.processor.process(record.typed(), &mut pctx)
    }

    fn init(&mut self) {
        self.processor.init();
    }

    fn close(&mut self) {
        self.processor.close();
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    fn at(graph: &Rc<RefCell<Graph>>, node: usize) -> Self {
        Self {
            graph: graph.clone(),
            node,
            _types: PhantomData,
        }
    }

    fn add_fn<K2: Data, V2: Data, F>(&self, name: &str, make: F) -> KStream<K2, V2>
    where
        F: Fn() -> Box<dyn Node> + Send + Sync + 'static,
    {
        let id = self.graph.borrow_mut().add(
            name,
            NodeKind::Processor,
            Some(self.node),
            &[],
            Arc::new(make),
        );
        KStream::at(&self.graph, id)
    }

    /// Keeps records for which `predicate` is true.
    pub fn filter<F>(&self, name: &str, predicate: F) -> KStream<K, V>
    where
        F: Fn(&Record<K, V>) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(predicate);
        self.add_fn(name, move || {
            let f = f.clone();
            Box::new(FnNode(
                move |rec: ErasedRecord, ctx: &mut NodeContext<'_>| {
                    if f(rec.typed_ref::<K, V>()) {
                        ctx.forwards.push((Target::All, rec));
                    }
                    Ok(())
                },
            ))
        })
    }

    /// Transforms whole records.
    pub fn map<K2: Data, V2: Data, F>(&self, name: &str, f: F) -> KStream<K2, V2>
    where
        F: Fn(Record<K, V>) -> Record<K2, V2> + Send + Sync + 'static,
    {
        self.try_map(name, move |r| Ok(f(r)))
    }

    /// Transforms whole records; an `Err` routes the input record to the
    /// dead-letter topic.
    pub fn try_map<K2: Data, V2: Data, F>(&self, name: &str, f: F) -> KStream<K2, V2>
    where
        F: Fn(Record<K, V>) -> Result<Record<K2, V2>, ProcessError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_fn(name, move || {
            let f = f.clone();
            Box::new(FnNode(
                move |rec: ErasedRecord, ctx: &mut NodeContext<'_>| {
                    let out = f(rec.typed::<K, V>())?;
                    ctx.forwards.push((Target::All, ErasedRecord::erase(out)));
                    Ok(())
                },
            ))
        })
    }

    /// Transforms values; null values stay null and are not passed to `f`.
    pub fn map_values<V2: Data, F>(&self, name: &str, f: F) -> KStream<K, V2>
    where
        F: Fn(V) -> V2 + Send + Sync + 'static,
    {
        self.map(name, move |r: Record<K, V>| {
            let value = r.value.clone().map(&f);
            r.with_value(value)
        })
    }

    /// Runs a custom [`Processor`] with access to the named stores. `supplier`
    /// is called once per task.
    pub fn process<K2: Data, V2: Data, P, F>(
        &self,
        name: &str,
        supplier: F,
        stores: &[&str],
    ) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2> + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let id = self.graph.borrow_mut().add(
            name,
            NodeKind::Processor,
            Some(self.node),
            stores,
            Arc::new(move || {
                Box::new(ProcessorNode::<P, K, V, K2, V2> {
                    processor: supplier(),
                    _types: PhantomData,
                })
            }),
        );
        KStream::at(&self.graph, id)
    }

    /// Starts routing records to named branches by predicate (first match
    /// wins), as Kafka Streams' `split()`.
    pub fn split(&self, name: &str) -> BranchedStream<K, V> {
        let id = self.graph.borrow_mut().add(
            name,
            NodeKind::Branch,
            Some(self.node),
            &[],
            Arc::new(|| Box::new(PassThrough)),
        );
        BranchedStream {
            stream: KStream::at(&self.graph, id),
            name: name.to_string(),
            branches: Vec::new(),
            outlets: HashMap::new(),
        }
    }

    /// Writes the stream to `topic`. A record that fails to serialize is a
    /// processing failure (routed like any other).
    pub fn to(&self, topic: &str, key_serde: impl Serde<K>, value_serde: impl Serde<V>) {
        let serdes = Arc::new((key_serde, value_serde));
        let topic_arc: Arc<str> = Arc::from(topic);
        let mut g = self.graph.borrow_mut();
        let mut name = format!("sink-{topic}");
        if g.nodes.iter().any(|n| n.name == name) {
            name = format!("sink-{topic}-{}", g.nodes.len());
        }
        g.add(
            &name,
            NodeKind::Sink {
                topic: topic.to_string(),
            },
            Some(self.node),
            &[],
            Arc::new(move || {
                let serdes = serdes.clone();
                let topic = topic_arc.clone();
                Box::new(FnNode(
                    move |rec: ErasedRecord, ctx: &mut NodeContext<'_>| {
                        let r: Record<K, V> = rec.typed();
                        let key = match &r.key {
                            Some(k) => Some(serdes.0.serialize(k).map_err(|e| {
                                ProcessError::processing(format!(
                                    "cannot serialize key for {topic}: {e}"
                                ))
                            })?),
                            None => None,
                        };
                        let value = match &r.value {
                            Some(v) => Some(serdes.1.serialize(v).map_err(|e| {
                                ProcessError::processing(format!(
                                    "cannot serialize value for {topic}: {e}"
                                ))
                            })?),
                            None => None,
                        };
                        ctx.outputs.push(OutputRecord {
                            topic: topic.clone(),
                            key,
                            value,
                            headers: r.headers,
                            timestamp: r.timestamp,
                        });
                        Ok(())
                    },
                ))
            }),
        );
    }

    pub(crate) fn graph_node(&self) -> (Rc<RefCell<Graph>>, usize) {
        (self.graph.clone(), self.node)
    }

    /// Registers how restore brings back an operator's local entries in `store`.
    pub(crate) fn add_local_derivation(&self, store: &str, derivation: LocalDerivation) {
        self.graph
            .borrow_mut()
            .local_derivations
            .entry(store.to_string())
            .or_default()
            .push(derivation);
    }

    /// Registers how the values an operator writes to `store` tell the
    /// input offset that caused each write.
    pub(crate) fn set_value_source_offset(&self, store: &str, read: SourceOffsetOf) {
        self.graph
            .borrow_mut()
            .value_source_offsets
            .insert(store.to_string(), read);
    }

    pub(crate) fn add_node<K2: Data, V2: Data>(
        &self,
        name: &str,
        stores: &[&str],
        factory: NodeFactory,
    ) -> KStream<K2, V2> {
        let id = self.graph.borrow_mut().add(
            name,
            NodeKind::Processor,
            Some(self.node),
            stores,
            factory,
        );
        KStream::at(&self.graph, id)
    }
}

type Predicate<K, V> = Arc<dyn Fn(&Record<K, V>) -> bool + Send + Sync>;

/// A `split()` in progress: add branches, then finish with a default or none.
pub struct BranchedStream<K, V> {
    stream: KStream<K, V>,
    name: String,
    branches: Vec<(usize, Predicate<K, V>)>,
    outlets: HashMap<String, KStream<K, V>>,
}

impl<K: Data, V: Data> BranchedStream<K, V> {
    fn outlet(&mut self, branch: &str) -> usize {
        let name = format!("{}-{branch}", self.name);
        let out: KStream<K, V> =
            self.stream
                .add_node(&name, &[], Arc::new(|| Box::new(PassThrough)));
        let id = out.node;
        self.outlets.insert(branch.to_string(), out);
        id
    }

    /// Records matching `predicate` (and no earlier branch) go to `branch`.
    pub fn branch<F>(mut self, branch: &str, predicate: F) -> Self
    where
        F: Fn(&Record<K, V>) -> bool + Send + Sync + 'static,
    {
        let id = self.outlet(branch);
        self.branches.push((id, Arc::new(predicate)));
        self
    }

    /// Records matching no branch go to `branch`.
    pub fn default_branch(mut self, branch: &str) -> Branches<K, V> {
        let id = self.outlet(branch);
        self.finish(Some(id))
    }

    /// Records matching no branch are dropped.
    pub fn no_default_branch(self) -> Branches<K, V> {
        self.finish(None)
    }

    fn finish(self, default: Option<usize>) -> Branches<K, V> {
        let branches = Arc::new(self.branches);
        let (graph, node) = self.stream.graph_node();
        graph.borrow_mut().nodes[node].factory = Arc::new(move || {
            let branches = branches.clone();
            Box::new(FnNode(
                move |rec: ErasedRecord, ctx: &mut NodeContext<'_>| {
                    let typed = rec.typed_ref::<K, V>();
                    let target = branches
                        .iter()
                        .find(|(_, p)| p(typed))
                        .map(|(id, _)| *id)
                        .or(default);
                    if let Some(id) = target {
                        ctx.forwards.push((Target::Node(id), rec));
                    }
                    Ok(())
                },
            ))
        });
        Branches {
            streams: self.outlets,
        }
    }
}

/// The named outputs of a `split()`.
pub struct Branches<K, V> {
    streams: HashMap<String, KStream<K, V>>,
}

impl<K: Data, V: Data> Branches<K, V> {
    /// The stream of one branch; `None` when no branch has that name.
    pub fn get(&self, branch: &str) -> Option<KStream<K, V>> {
        self.streams
            .get(branch)
            .map(|s| KStream::at(&s.graph, s.node))
    }
}
