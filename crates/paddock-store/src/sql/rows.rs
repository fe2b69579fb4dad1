//! Row types and the conversions between rows and core records. A row that
//! does not convert is `StoreError::Corrupt`, never a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, ApiKeyId, ExecutionId, SessionId, SnapshotId, VaultId, VmId};
use paddock_core::model::{
    Account, ApiKey, EgressPolicy, Env, EnvStatus, Execution, ExecutionStatus, Image, ImageConfig,
    LayerInfo, Metadata, Resources, RuntimeHandle, Sealed, StoredVaultCa, Vm, VmOptions, VmStatus,
};
use paddock_core::network_backend::VmNetwork;
use paddock_core::StoreError;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, FromRow, Row};

pub(super) fn db_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Duplicate;
        }
    }
    StoreError::Database(Box::new(e))
}

pub(super) fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

pub(super) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

pub(super) fn account(
    (id, name, created_at): (String, String, i64),
) -> Result<Account, StoreError> {
    Ok(Account {
        id: parse("account id", &id)?,
        name,
        created_at: ts(created_at),
    })
}

pub(super) const API_KEY_COLUMNS: &str = "id, account_id, name, prefix, hash, user_email, \
    description, created_at, expires_at, revoked_at";

#[derive(FromRow)]
pub(super) struct ApiKeyRow {
    id: String,
    account_id: String,
    name: String,
    prefix: String,
    hash: String,
    user_email: String,
    description: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl ApiKeyRow {
    pub(super) fn into_key(self) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: parse::<ApiKeyId>("key id", &self.id)?,
            account_id: parse::<AccountId>("account id", &self.account_id)?,
            name: self.name,
            prefix: self.prefix,
            user_email: self.user_email,
            description: self.description,
            created_at: ts(self.created_at),
            expires_at: self.expires_at.map(ts),
            revoked_at: self.revoked_at.map(ts),
            fingerprint: paddock_core::model::key_fingerprint(&self.hash),
        })
    }
}

pub(super) struct VmRow(Vm);

impl<'r> FromRow<'r, AnyRow> for VmRow {
    fn from_row(row: &'r AnyRow) -> Result<Self, sqlx::Error> {
        let corrupt = |e: StoreError| sqlx::Error::Decode(Box::new(e));
        let text = |c: &str| row.try_get::<String, _>(c);
        let status: String = text("status")?;
        let metadata: Metadata = serde_json::from_str(&text("metadata")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let env: BTreeMap<String, String> =
            serde_json::from_str(&text("env")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let pid: Option<i64> = row.try_get("runtime_pid")?;
        let ticks: Option<i64> = row.try_get("runtime_start_ticks")?;
        let u32_col = |c: &str| -> Result<u32, sqlx::Error> {
            let v: i64 = row.try_get(c)?;
            u32::try_from(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        };
        let lifetime: Option<i64> = row.try_get("lifetime_seconds")?;
        // One parse of the options column serves the options and the network.
        let options: serde_json::Value = serde_json::from_str(&text("options")?)
            .map_err(|e| corrupt(StoreError::Corrupt(format!("vm options: {e}"))))?;
        Ok(Self(Vm {
            id: parse::<VmId>("vm id", &text("id")?).map_err(corrupt)?,
            account_id: parse::<AccountId>("account id", &text("account_id")?).map_err(corrupt)?,
            session_id: parse::<SessionId>("session id", &text("session_id")?).map_err(corrupt)?,
            status: VmStatus::parse(&status)
                .ok_or_else(|| corrupt(StoreError::Corrupt(format!("status {status:?}"))))?,
            status_reason: row.try_get("status_reason")?,
            provider: text("provider")?,
            image_variant: text("image_variant")?,
            image_digest: row.try_get("image_digest")?,
            resources: Resources::from_stored(
                u32_col("memory_mb")?,
                u32_col("vcpu_count")?,
                u32_col("pids_max")?,
            )
            .with_stored_disk(u32_col("disk_mb")?)
            .with_cpu_millis(Some(u32_col("cpu_millis")?).filter(|m| *m > 0))
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            metadata,
            env: Env::new(env).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            lifetime_seconds: lifetime.and_then(|l| u64::try_from(l).ok()),
            created_at: ts(row.try_get("created_at")?),
            updated_at: ts(row.try_get("updated_at")?),
            started_at: row.try_get::<Option<i64>, _>("started_at")?.map(ts),
            expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(ts),
            terminated_at: row.try_get::<Option<i64>, _>("terminated_at")?.map(ts),
            runtime: match (pid, ticks) {
                (Some(pid), Some(ticks)) => Some(RuntimeHandle {
                    pid: i32::try_from(pid).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    start_ticks: u64::try_from(ticks)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                }),
                _ => None,
            },
            options: options_from_json(&options).map_err(corrupt)?,
            network: network_from_json(&options).map_err(corrupt)?,
            node: match text("node_id")?.as_str() {
                "" => None,
                node => Some(parse("node id", node).map_err(corrupt)?),
            },
        }))
    }
}

/// A VM's options, and its network while it holds one, in one JSON
/// column.
fn options_to_json(o: &VmOptions, network: Option<&VmNetwork>) -> String {
    serde_json::json!({
        "egress_policy": o.egress_policy.as_ref().map(EgressPolicy::to_json),
        "network": network.map(|n| serde_json::json!({
            "address": n.address.to_string(),
            "gateway": n.gateway.to_string(),
            "netns": n.netns.to_string_lossy(),
        })),
        "snapshot_id": o.snapshot_id.as_ref().map(SnapshotId::as_str),
        "snapshot_on_terminate": o.snapshot_on_terminate,
        "snapshot_name": o.snapshot_name,
        "vault_ids": o.vault_ids.iter().map(VaultId::as_str).collect::<Vec<_>>(),
        "vault_vars": o.vault_vars,
        "auto_suspend": o.auto_suspend,
        "auto_resume": o.auto_resume,
        "published_ports": o.published_ports,
        "env_status": o.env_status.as_str(),
        "env_error": o.env_error,
        "gpus": o.gpus,
        "accelerator": o.accelerator,
        "launch": o.launch,
        "memory_key": o.memory_key.as_ref().map(sealed_to_json),
        "vault_ca": o.vault_ca.as_ref().map(|ca| serde_json::json!({
            "cert_pem": ca.cert_pem,
            "key": sealed_to_json(&ca.key),
        })),
    })
    .to_string()
}

fn network_from_json(v: &serde_json::Value) -> Result<Option<VmNetwork>, StoreError> {
    let Some(n) = v.get("network").filter(|n| !n.is_null()) else {
        return Ok(None);
    };
    let field = |k: &str| {
        n.get(k)
            .and_then(|x| x.as_str())
            .ok_or_else(|| StoreError::Corrupt(format!("vm network: no {k}")))
    };
    let ip = |k: &str| {
        field(k)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("vm network: bad {k}")))
    };
    Ok(Some(VmNetwork {
        address: ip("address")?,
        gateway: ip("gateway")?,
        netns: field("netns")?.into(),
    }))
}

fn options_from_json(v: &serde_json::Value) -> Result<VmOptions, StoreError> {
    let string = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let vault_ids = v
        .get("vault_ids")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .map(|s| parse::<VaultId>("vault id", s))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(VmOptions {
        snapshot_id: string("snapshot_id")
            .map(|s| parse::<SnapshotId>("snapshot id", &s))
            .transpose()?,
        snapshot_on_terminate: v
            .get("snapshot_on_terminate")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        snapshot_name: string("snapshot_name"),
        vault_ids,
        auto_suspend: v
            .get("auto_suspend")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        auto_resume: v
            .get("auto_resume")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        published_ports: v
            .get("published_ports")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
        vault_vars: v
            .get("vault_vars")
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        env_status: string("env_status")
            .and_then(|s| EnvStatus::parse(&s))
            .unwrap_or_default(),
        env_error: string("env_error"),
        egress_policy: v
            .get("egress_policy")
            .filter(|p| !p.is_null())
            .map(|p| EgressPolicy::from_json(p, "egress_policy"))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("vm egress policy: {e}")))?,
        gpus: v
            .get("gpus")
            .filter(|g| !g.is_null())
            .map(|g| serde_json::from_value(g.clone()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("vm gpus: {e}")))?
            .unwrap_or_default(),
        accelerator: string("accelerator"),
        launch: v
            .get("launch")
            .filter(|l| !l.is_null())
            .map(|l| serde_json::from_value(l.clone()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("vm launch: {e}")))?,
        memory_key: v
            .get("memory_key")
            .filter(|k| !k.is_null())
            .map(sealed_from_json)
            .transpose()?,
        vault_ca: v
            .get("vault_ca")
            .filter(|k| !k.is_null())
            .map(|ca| {
                Ok::<_, StoreError>(StoredVaultCa {
                    cert_pem: ca
                        .get("cert_pem")
                        .and_then(|c| c.as_str())
                        .ok_or_else(|| StoreError::Corrupt("vm vault CA: no cert_pem".into()))?
                        .to_owned(),
                    key: sealed_from_json(ca.get("key").unwrap_or(&serde_json::Value::Null))?,
                })
            })
            .transpose()?,
    })
}

fn sealed_to_json(k: &Sealed) -> serde_json::Value {
    serde_json::json!({
        "key_id": k.key_id,
        "nonce": hex::encode(&k.nonce),
        "ciphertext": hex::encode(&k.ciphertext),
    })
}

/// A sealed value kept in a JSON column: its key id, and hex for bytes.
fn sealed_from_json(v: &serde_json::Value) -> Result<Sealed, StoreError> {
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .ok_or_else(|| StoreError::Corrupt(format!("vm sealed key: no {k}")))
    };
    let bytes = |k: &str| {
        hex::decode(field(k)?).map_err(|_| StoreError::Corrupt(format!("vm memory key: bad {k}")))
    };
    Ok(Sealed {
        key_id: field("key_id")?.to_owned(),
        nonce: bytes("nonce")?,
        ciphertext: bytes("ciphertext")?,
    })
}

impl VmRow {
    pub(super) fn into_vm(self) -> Result<Vm, StoreError> {
        Ok(self.0)
    }
}

/// Binds every column of `VM_COLUMNS`, in its order.
pub(super) fn bind_vm<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    vm: &Vm,
) -> Result<Query<'q, Any, AnyArguments<'q>>, StoreError> {
    let metadata = serde_json::to_string(&vm.metadata)
        .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?;
    let env = serde_json::to_string(vm.env.as_map())
        .map_err(|e| StoreError::Corrupt(format!("env: {e}")))?;
    Ok(q.bind(vm.id.as_str().to_owned())
        .bind(vm.account_id.as_str().to_owned())
        .bind(vm.session_id.as_str().to_owned())
        .bind(vm.status.as_str())
        .bind(vm.status_reason.clone())
        .bind(vm.provider.clone())
        .bind(vm.image_variant.clone())
        .bind(i64::from(vm.resources.memory_mb()))
        .bind(i64::from(vm.resources.vcpu_count()))
        .bind(i64::from(vm.resources.pids_max()))
        .bind(metadata)
        .bind(env)
        .bind(vm.lifetime_seconds.and_then(|l| i64::try_from(l).ok()))
        .bind(vm.created_at.unix_millis())
        .bind(vm.updated_at.unix_millis())
        .bind(vm.started_at.map(Timestamp::unix_millis))
        .bind(vm.expires_at.map(Timestamp::unix_millis))
        .bind(vm.terminated_at.map(Timestamp::unix_millis))
        .bind(vm.runtime.map(|h| i64::from(h.pid)))
        .bind(vm.runtime.and_then(|h| i64::try_from(h.start_ticks).ok()))
        .bind(vm.image_digest.clone())
        .bind(options_to_json(&vm.options, vm.network.as_ref()))
        .bind(i64::from(vm.resources.disk_mb()))
        .bind(i64::from(vm.resources.cpu_quota_millis())))
}

/// Images keep their config and layer list as JSON columns.
pub(super) fn image_json(image: &Image) -> Result<(String, String), StoreError> {
    let enc = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    Ok((
        serde_json::to_string(&image.config).map_err(enc)?,
        serde_json::to_string(&image.layers).map_err(enc)?,
    ))
}

#[derive(FromRow)]
pub(super) struct ImageRow {
    pub(super) account_id: String,
    pub(super) digest: String,
    pub(super) reference: String,
    pub(super) config_digest: String,
    pub(super) config: String,
    pub(super) layers: String,
    pub(super) size: i64,
    pub(super) created_at: i64,
}

impl ImageRow {
    pub(super) fn into_image(self) -> Result<Image, StoreError> {
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt(format!("image {}: {e}", self.digest));
        let config: ImageConfig = serde_json::from_str(&self.config).map_err(corrupt)?;
        let layers: Vec<LayerInfo> = serde_json::from_str(&self.layers).map_err(corrupt)?;
        Ok(Image {
            account_id: parse("account id", &self.account_id)?,
            layers,
            digest: self.digest,
            reference: self.reference,
            config_digest: self.config_digest,
            config,
            size: u64::try_from(self.size).unwrap_or(0),
            created_at: ts(self.created_at),
        })
    }
}

#[derive(FromRow)]
pub(super) struct ExecutionRow {
    id: String,
    account_id: String,
    vm_id: String,
    session_id: String,
    status: String,
    stdout: String,
    stderr: String,
    exit_code: Option<i32>,
    execution_time: Option<f64>,
    cpu_time: Option<f64>,
    error: Option<String>,
    created_at: i64,
    completed_at: Option<i64>,
}

impl ExecutionRow {
    pub(super) fn into_execution(self) -> Result<Execution, StoreError> {
        Ok(Execution {
            id: parse::<ExecutionId>("execution id", &self.id)?,
            account_id: parse("account id", &self.account_id)?,
            vm_id: parse("vm id", &self.vm_id)?,
            session_id: parse("session id", &self.session_id)?,
            status: ExecutionStatus::parse(&self.status).ok_or_else(|| {
                StoreError::Corrupt(format!("execution status {:?}", self.status))
            })?,
            stdout: self.stdout,
            stderr: self.stderr,
            exit_code: self.exit_code,
            execution_time: self.execution_time,
            cpu_time: self.cpu_time,
            error: self.error,
            created_at: ts(self.created_at),
            completed_at: self.completed_at.map(ts),
        })
    }
}

/// A float that may be NULL, bound as text for the SQL to `CAST`: sqlx's
/// Any driver (0.8) types a NULL double as PostgreSQL's `float4`, and a
/// statement first prepared with one then refuses a real `float8`
/// ("incorrect binary data format"). Rust writes the shortest text that
/// reads back as the same float, so nothing is lost.
pub(super) fn nullable_float(v: Option<f64>) -> Option<String> {
    v.map(|f| f.to_string())
}

/// Binds the mutable columns of an execution, then its id: the order
/// `UPDATE … WHERE id = ?` and the head of the `INSERT` share.
pub(super) fn bind_execution<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    e: &Execution,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(e.status.as_str())
        .bind(e.stdout.clone())
        .bind(e.stderr.clone())
        .bind(e.exit_code)
        .bind(nullable_float(e.execution_time))
        .bind(nullable_float(e.cpu_time))
        .bind(e.error.clone())
        .bind(e.completed_at.map(Timestamp::unix_millis))
        .bind(e.id.as_str().to_owned())
}
