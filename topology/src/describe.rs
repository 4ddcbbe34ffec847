//! A built topology as text (Kafka Streams' `describe()` layout) and as a
//! Mermaid flowchart for READMEs and docs.

use std::fmt::Write;

use crate::graph::NodeKind;
use crate::Topology;

/// A printable picture of a topology.
#[derive(Debug, Clone)]
pub struct TopologyDescription {
    topology: Topology,
    application_id: Option<String>,
}

impl Topology {
    /// Describes the graph; see [`TopologyDescription::text`] and
    /// [`TopologyDescription::mermaid`].
    pub fn describe(&self) -> TopologyDescription {
        TopologyDescription {
            topology: self.clone(),
            application_id: None,
        }
    }
}

impl TopologyDescription {
    /// Names changelog topics for this application id.
    pub fn with_application_id(mut self, id: &str) -> Self {
        self.application_id = Some(id.to_string());
        self
    }

    fn changelog(&self, store: &str) -> String {
        let app = self.application_id.as_deref().unwrap_or("<application-id>");
        Topology::changelog_topic(app, store)
    }

    /// Kafka Streams-style text.
    pub fn text(&self) -> String {
        let t = &self.topology.inner;
        let mut out = String::from("Topology\n  Sub-topology: 0\n");
        for n in &t.nodes {
            let names = |ids: &[usize]| {
                ids.iter()
                    .map(|i| t.nodes[*i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let head = match &n.kind {
                NodeKind::Source { topic } => format!("Source: {} (topics: [{topic}])", n.name),
                NodeKind::Processor => {
                    format!("Processor: {} (stores: [{}])", n.name, n.stores.join(", "))
                }
                NodeKind::Branch => format!("Branch: {}", n.name),
                NodeKind::Sink { topic } => format!("Sink: {} (topic: {topic})", n.name),
            };
            let _ = writeln!(out, "    {head}");
            if !n.children.is_empty() {
                let _ = writeln!(out, "      --> {}", names(&n.children));
            }
            if !n.parents.is_empty() {
                let _ = writeln!(out, "      <-- {}", names(&n.parents));
            }
        }
        if let Some(dl) = &t.dead_letter {
            let _ = writeln!(out, "  Dead letters: any failed record --> {}", dl.topic);
        }
        for s in &t.stores {
            let log = if s.changelog {
                format!("changelog: {}", self.changelog(&s.name))
            } else {
                "no changelog".to_string()
            };
            let _ = writeln!(out, "  Store: {} (RocksDB, {log})", s.name);
        }
        out
    }

    /// A Mermaid `flowchart` of topics, processors and stores.
    pub fn mermaid(&self) -> String {
        let t = &self.topology.inner;
        let mut out = String::from("flowchart LR\n");
        let id = |i: usize| format!("n{i}");
        let topic_id = |name: &str| {
            format!(
                "t_{}",
                name.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect::<String>()
            )
        };
        for (i, n) in t.nodes.iter().enumerate() {
            match &n.kind {
                NodeKind::Source { topic } => {
                    let _ = writeln!(
                        out,
                        "    {}[({topic})] --> {}[{}]",
                        topic_id(topic),
                        id(i),
                        n.name
                    );
                }
                NodeKind::Sink { topic } => {
                    let _ = writeln!(
                        out,
                        "    {}[{}] --> {}[({topic})]",
                        id(i),
                        n.name,
                        topic_id(topic)
                    );
                }
                NodeKind::Branch => {
                    let _ = writeln!(out, "    {}{{{}}}", id(i), n.name);
                }
                NodeKind::Processor => {
                    let _ = writeln!(out, "    {}[{}]", id(i), n.name);
                }
            }
            for c in &n.children {
                let _ = writeln!(out, "    {} --> {}", id(i), id(*c));
            }
            for s in &n.stores {
                let _ = writeln!(out, "    {} <-.-> s_{s}[({s} store)]", id(i));
            }
        }
        for s in &t.stores {
            if s.changelog {
                let cl = self.changelog(&s.name);
                let _ = writeln!(
                    out,
                    "    s_{} -. changelog .-> {}[({cl})]",
                    s.name,
                    topic_id(&cl)
                );
            }
        }
        if let Some(dl) = &t.dead_letter {
            let _ = writeln!(
                out,
                "    failures([any failure]) -.-> {}[({})]",
                topic_id(&dl.topic),
                dl.topic
            );
        }
        out
    }
}
