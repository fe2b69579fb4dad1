//! `paddock vm …`: a client of the VM API, with human tables by default
//! and `--json` for scripts.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "PADDOCK_SERVER",
        default_value = "http://127.0.0.1:7420",
        global = true
    )]
    server: String,
    /// The API key (default: DATA_DIR/admin.key).
    #[arg(long, env = "PADDOCK_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Where a local server keeps admin.key.
    #[arg(
        long,
        env = "PADDOCK_DATA_DIR",
        default_value = ".paddock",
        global = true
    )]
    data_dir: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

impl ClientArgs {
    pub fn json(&self) -> bool {
        self.json
    }
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM.
    Create {
        #[arg(long)]
        memory_mb: Option<u32>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Seconds until the VM is terminated.
        #[arg(long)]
        lifetime: Option<u64>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long)]
        variant: Option<String>,
        /// Return at once, while the VM is still being created.
        #[arg(long)]
        no_wait: bool,
    },
    /// List VMs.
    List {
        /// Include ended VMs.
        #[arg(long, short)]
        all: bool,
    },
    /// Show one VM.
    Get { vm_id: String },
    /// Terminate a VM.
    Delete { vm_id: String },
    /// Run a command, streaming its output; exits with its exit code.
    Exec {
        vm_id: String,
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Copy a file: `paddock vm cp local vm_x:/path` or `vm_x:/path local`.
    Cp { from: String, to: String },
    /// An interactive shell in the VM.
    Shell { vm_id: String },
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let key = match &args.api_key {
            Some(k) => k.clone(),
            None => {
                let path = args.data_dir.join("admin.key");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no --api-key and no readable {}", path.display()))?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: args.server.trim_end_matches('/').to_owned(),
            key,
        })
    }

    pub(crate) fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .header("X-API-Key", &self.key)
    }

    pub(crate) async fn json(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = rb.send().await.context("could not reach the server")?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                body.get("detail")
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
        }
        Ok(body)
    }
}

fn print_vms(vms: &[Value], json_out: bool) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(vms).unwrap_or_default());
        return;
    }
    let mut t = super::table(&["VM", "SESSION", "STATUS", "MEMORY", "VCPUS", "CREATED"]);
    for v in vms {
        let s = |k: &str| {
            v.get(k)
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
                .unwrap_or_default()
        };
        t.add_row(vec![
            s("vm_id"),
            s("session_id"),
            s("status"),
            format!("{} MiB", s("memory_mb")),
            s("vcpu_count"),
            s("created_at"),
        ]);
    }
    println!("{t}");
}

pub async fn run(args: ClientArgs, command: VmCommand) -> anyhow::Result<i32> {
    let c = Client::new(&args)?;
    match command {
        VmCommand::Create {
            memory_mb,
            vcpus,
            lifetime,
            env,
            variant,
            no_wait,
        } => {
            let env: serde_json::Map<String, Value> = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), json!(v)))
                        .context("--env takes KEY=VALUE")
                })
                .collect::<anyhow::Result<_>>()?;
            let body = json!({"memory_mb": memory_mb, "vcpu_count": vcpus, "vm_lifetime_seconds": lifetime, "env": env, "image_variant": variant});
            let vm = c
                .json(
                    c.req(reqwest::Method::POST, &format!("/v1/vms?wait={}", !no_wait))
                        .json(&body),
                )
                .await?;
            print_vms(&[vm], args.json);
        }
        VmCommand::List { all } => {
            let path = if all { "/v1/vms/" } else { "/v1/vms" };
            let vms = c.json(c.req(reqwest::Method::GET, path)).await?;
            print_vms(
                vms.as_array().map(Vec::as_slice).unwrap_or_default(),
                args.json,
            );
        }
        VmCommand::Get { vm_id } => {
            let vm = c
                .json(c.req(reqwest::Method::GET, &format!("/v1/vms/{vm_id}")))
                .await?;
            print_vms(&[vm], args.json);
        }
        VmCommand::Delete { vm_id } => {
            let vm = c
                .json(c.req(reqwest::Method::DELETE, &format!("/v1/vms/{vm_id}")))
                .await?;
            print_vms(&[vm], args.json);
        }
        VmCommand::Exec {
            vm_id,
            timeout,
            command,
        } => return exec(&c, &vm_id, timeout, command, args.json).await,
        VmCommand::Cp { from, to } => cp(&c, &from, &to).await?,
        VmCommand::Shell { vm_id } => return shell(&c, &vm_id).await,
    }
    Ok(0)
}

async fn exec(
    c: &Client,
    vm_id: &str,
    timeout: Option<u64>,
    command: Vec<String>,
    json_out: bool,
) -> anyhow::Result<i32> {
    let body = json!({"command": command, "timeout_seconds": timeout});
    let resp = c
        .req(reqwest::Method::POST, &format!("/v1/vms/{vm_id}/exec"))
        .json(&body)
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            body.get("detail")
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
    }
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut code = 1;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if json_out {
                std::io::stdout().write_all(&line)?;
                continue;
            }
            let event: Value = serde_json::from_slice(&line)?;
            let data = event.get("data").and_then(Value::as_str).unwrap_or("");
            match event.get("type").and_then(Value::as_str) {
                Some("stdout") => {
                    print!("{data}");
                    std::io::stdout().flush()?;
                }
                Some("stderr") => eprint!("{data}"),
                Some("exit") => {
                    code = event.get("exit_code").and_then(Value::as_i64).unwrap_or(1) as i32
                }
                Some("error") => bail!(
                    "{}",
                    event
                        .get("detail")
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                ),
                _ => {}
            }
        }
    }
    Ok(code)
}

async fn cp(c: &Client, from: &str, to: &str) -> anyhow::Result<()> {
    let remote = |s: &str| {
        s.split_once(':')
            .filter(|(vm, _)| vm.starts_with("vm_"))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    };
    match (remote(from), remote(to)) {
        (None, Some((vm, path))) => {
            let file = tokio::fs::File::open(from)
                .await
                .with_context(|| format!("open {from}"))?;
            let body = reqwest::Body::wrap_stream(tokio_util_stream(file));
            let path_q = url_encode(&path);
            c.json(
                c.req(
                    reqwest::Method::PUT,
                    &format!("/v1/vms/{vm}/files?path={path_q}"),
                )
                .body(body),
            )
            .await?;
        }
        (Some((vm, path)), None) => {
            let resp = c
                .req(
                    reqwest::Method::GET,
                    &format!("/v1/vms/{vm}/files?path={}", url_encode(&path)),
                )
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!(
                    "{}: {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                );
            }
            let mut out = tokio::fs::File::create(to)
                .await
                .with_context(|| format!("create {to}"))?;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                tokio::io::AsyncWriteExt::write_all(&mut out, &chunk?).await?;
            }
        }
        _ => bail!("exactly one side must be VM_ID:/path"),
    }
    Ok(())
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn shell(c: &Client, vm_id: &str) -> anyhow::Result<i32> {
    use tokio_tungstenite::tungstenite::Message;
    let (cols, rows) = crate::term::size().unwrap_or((80, 24));
    let pty = c
        .json(
            c.req(
                reqwest::Method::POST,
                &format!("/v1/vms/{vm_id}/pty/sessions"),
            )
            .json(&json!({"cols": cols, "rows": rows})),
        )
        .await?;
    let pty_id = pty
        .get("id")
        .and_then(Value::as_str)
        .context("no PTY id")?
        .to_owned();
    let ws_url = format!(
        "{}/v1/vms/{vm_id}/pty/{pty_id}/connect?api_key={}",
        c.base.replacen("http", "ws", 1),
        url_encode(&c.key)
    );
    let (ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .context("connect to the PTY")?;
    let (mut tx, mut rx) = ws.split();
    let _raw = crate::term::RawMode::enter();
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    let mut code = 0;
    loop {
        tokio::select! {
            n = tokio::io::AsyncReadExt::read(&mut stdin, &mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    futures::SinkExt::send(&mut tx, Message::Binary(buf[..n].to_vec().into())).await?;
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let mut out = std::io::stdout();
                    out.write_all(&b)?;
                    out.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v.get("type").and_then(Value::as_str) == Some("exit") {
                        code = v.get("exit_code").and_then(Value::as_i64).unwrap_or(0) as i32;
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = c
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/vms/{vm_id}/pty/sessions/{pty_id}"),
        )
        .send()
        .await;
    Ok(code)
}
