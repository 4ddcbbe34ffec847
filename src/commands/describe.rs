//! `weir describe`: the Inventory topology as text and Mermaid.

use anyhow::Context;
use weir::inventory::inventory_topology;

use crate::cli::DescribeArgs;

pub fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let topology = inventory_topology(&args.topics.to_topics(), &args.application_id)
        .context("building the inventory topology")?;
    let d = topology
        .describe()
        .with_application_id(&args.application_id);
    if !args.mermaid {
        print!("{}", d.text());
    }
    if !args.text {
        if !args.mermaid {
            println!();
        }
        println!("```mermaid\n{}```", d.mermaid());
    }
    Ok(())
}
