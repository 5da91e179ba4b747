//! `squeeze items …`: news items, the raw material of digests.

use super::table::{Align, Table};
use clap::Subcommand;

use crate::domain::NewItem;
use crate::domain::clock::now_ms;
use crate::service::Item;
use crate::service::{Editor, ServiceResult};

#[derive(Subcommand)]
pub enum ItemsCommand {
    /// Add an item (http(s) URL; HTML in fields is shown as text).
    Add {
        #[arg(long)]
        title: String,
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        summary: String,
        #[arg(long)]
        source: Option<String>,
    },
    /// List items (default: all).
    List {
        #[arg(long, value_parser = ["pending", "used"])]
        status: Option<String>,
    },
    /// Delete a pending item.
    Delete { id: String },
}

pub(super) async fn run(editor: &Editor, c: ItemsCommand) -> ServiceResult<()> {
    match c {
        ItemsCommand::Add {
            title,
            url,
            summary,
            source,
        } => {
            let item = NewItem::parse(&title, &url, &summary, source.as_deref())?;
            let row = editor.add_item(&item, now_ms()).await?;
            println!("{}", row.id);
        }
        ItemsCommand::List { status } => print_items(&editor.list_items(status.as_deref()).await?),
        ItemsCommand::Delete { id } => {
            editor.delete_item(&id).await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

fn print_items(items: &[Item]) {
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("STATUS", Align::Left),
        ("TITLE", Align::Left),
    ]);
    for i in items {
        t.row(vec![i.id.clone(), i.status.clone(), i.title.clone()]);
    }
    t.print();
}
