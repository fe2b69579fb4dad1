//! `paddock image …`: pull (with a progress line per layer on a
//! terminal), list, inspect and remove images on a server.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use super::vm::{Client, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image (`registry/repo:tag` or `…@sha256:…`).
    Pull { reference: String },
    /// List images.
    List,
    /// Show an image's digest, size, layers and config.
    Inspect { image: String },
    /// Delete an image (refused while a VM runs it).
    Rm { image: String },
}

fn mib(n: u64) -> f64 {
    n as f64 / 1048576.0
}

fn encode(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

pub async fn run(args: ClientArgs, command: ImageCommand) -> anyhow::Result<i32> {
    let c = Client::new(&args)?;
    match command {
        ImageCommand::Pull { reference } => {
            let started = c
                .json(
                    c.req(reqwest::Method::POST, "/v1/images?wait=false")
                        .json(&json!({"reference": reference})),
                )
                .await?;
            let id = started["pull_id"].as_str().unwrap_or_default().to_owned();
            let tty = std::io::stderr().is_terminal() && !args.json();
            let mut drawn = 0;
            let last = loop {
                let p = c
                    .json(c.req(reqwest::Method::GET, &format!("/v1/images/pulls/{id}")))
                    .await?;
                if tty {
                    let mut err = std::io::stderr();
                    // Redraw the block of progress lines in place.
                    if drawn > 0 {
                        write!(err, "\x1b[{drawn}A")?;
                    }
                    let layers = p["layers"].as_array().cloned().unwrap_or_default();
                    for l in &layers {
                        let (done, total) = (
                            l["done"].as_u64().unwrap_or(0),
                            l["total"].as_u64().unwrap_or(0),
                        );
                        let width = 30usize;
                        let filled = if total == 0 {
                            width
                        } else {
                            (done as usize * width) / total as usize
                        };
                        let digest = l["digest"]
                            .as_str()
                            .unwrap_or("")
                            .trim_start_matches("sha256:");
                        writeln!(
                            err,
                            "\x1b[2K{} [{}{}] {:>8.1}/{:.1} MiB",
                            &digest[..digest.len().min(12)],
                            "#".repeat(filled.min(width)),
                            " ".repeat(width - filled.min(width)),
                            mib(done),
                            mib(total)
                        )?;
                    }
                    drawn = layers.len();
                }
                match p["status"].as_str() {
                    Some("done") | Some("failed") => break p,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            if last["status"] == "failed" {
                bail!(
                    "pull failed: {}",
                    last["error"].as_str().unwrap_or("unknown error")
                );
            }
            if args.json() {
                println!("{}", serde_json::to_string_pretty(&last)?);
            } else {
                println!("{}", last["image_digest"].as_str().unwrap_or_default());
            }
        }
        ImageCommand::List => {
            let images = c.json(c.req(reqwest::Method::GET, "/v1/images")).await?;
            if args.json() {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else {
                let mut t = super::table(&["REFERENCE", "DIGEST", "SIZE", "LAYERS", "CREATED"]);
                for i in images.as_array().map(Vec::as_slice).unwrap_or_default() {
                    t.add_row(vec![
                        i["reference"].as_str().unwrap_or_default().to_owned(),
                        i["digest"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(19)
                            .collect(),
                        format!("{:.1} MiB", mib(i["size"].as_u64().unwrap_or(0))),
                        i["layers"].as_array().map_or(0, Vec::len).to_string(),
                        i["created_at"].as_str().unwrap_or_default().to_owned(),
                    ]);
                }
                println!("{t}");
            }
        }
        ImageCommand::Inspect { image } => {
            let i: Value = c
                .json(c.req(
                    reqwest::Method::GET,
                    &format!("/v1/images/{}", encode(&image)),
                ))
                .await?;
            println!("{}", serde_json::to_string_pretty(&i)?);
        }
        ImageCommand::Rm { image } => {
            let r = c
                .json(c.req(
                    reqwest::Method::DELETE,
                    &format!("/v1/images/{}", encode(&image)),
                ))
                .await?;
            if args.json() {
                println!("{r}");
            } else {
                eprintln!(
                    "deleted {} ({:.1} MiB freed)",
                    r["digest"].as_str().unwrap_or_default(),
                    mib(r["freed_bytes"].as_u64().unwrap_or(0))
                );
            }
        }
    }
    Ok(0)
}
