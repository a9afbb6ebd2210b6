//! The fleet commands: `nodes` (the appliances and their state), `enroll` (a join token
//! for a new appliance) and `repair` (how far the controller is from three copies of
//! everything). `--json` prints the controller's JSON as it came.

use trove_common::api::{EnrollRequest, Enrollment, NodeView, RepairView};

use crate::api::Api;
use crate::human_bytes;
use crate::table::print_table;

pub async fn nodes(api: &Api, json: bool) -> anyhow::Result<()> {
    let answer = api.get::<Vec<NodeView>>("/nodes").await?;
    if json {
        println!("{}", answer.text.trim());
        return Ok(());
    }
    let mut nodes = answer.value;
    nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            [
                n.id.clone(),
                n.name.clone().unwrap_or_else(|| "-".into()),
                n.state.clone(),
                n.data_addr.clone().unwrap_or_else(|| "-".into()),
                n.chunks.to_string(),
                format!(
                    "{} / {}",
                    human_bytes(n.used_bytes.max(0) as u64),
                    human_bytes(n.capacity_bytes.max(0) as u64)
                ),
                human_bytes(n.disk_free_bytes.max(0) as u64),
            ]
        })
        .collect();
    print_table(
        [
            "ID",
            "NAME",
            "STATE",
            "ADDRESS",
            "CHUNKS",
            "USED / CAPACITY",
            "DISK FREE",
        ],
        &rows,
    );
    let online = nodes.iter().filter(|n| n.state == "online").count();
    eprintln!("{online} of {} appliances online", nodes.len());
    Ok(())
}

pub async fn enroll(api: &Api, name: Option<String>, json: bool) -> anyhow::Result<()> {
    let answer = api
        .post::<_, Enrollment>("/enrollments", &EnrollRequest { name })
        .await?;
    if json {
        println!("{}", answer.text.trim());
    } else {
        println!("{}", answer.value.token);
        eprintln!(
            "node {}: start the appliance with `troved --join <token> --data DIR`",
            answer.value.node_id
        );
    }
    Ok(())
}

pub async fn repair(api: &Api, json: bool) -> anyhow::Result<()> {
    let answer = api.get::<RepairView>("/repair").await?;
    if json {
        println!("{}", answer.text.trim());
        return Ok(());
    }
    let r = answer.value;
    println!("under-replicated  {}", r.under_replicated);
    println!("over-replicated   {}", r.over_replicated);
    println!("unavailable       {}", r.unavailable);
    println!(
        "orders            {} in flight, {} done, {} failed",
        r.orders_in_flight, r.orders_done, r.orders_failed
    );
    Ok(())
}
