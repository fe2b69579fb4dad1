//! Snapshots, volumes and vaults in SQLite: the state that outlives a VM.

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{
    AccountId, CheckpointId, CredentialId, SnapshotId, VaultId, VmId, VolumeId,
};
use paddock_core::model::{
    Attachment, Checkpoint, Credential, MountMode, Sealed, Snapshot, SnapshotKind, SnapshotStatus,
    Vault, Volume,
};
use paddock_core::store::{SnapshotStore, VaultStore, VolumeStore};
use paddock_core::StoreError;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::rows::{db_err, image_json, parse, ts, ImageRow};
use super::SqlStore;

fn size_col(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(e: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

const SNAPSHOT_COLUMNS: &str = "id, account_id, name, kind, status, error, vm_id, source, \
    base_variant, digest, config_digest, config, layers, size, created_at";

pub(super) struct SnapshotRow(Snapshot);

super::owned!(Snapshot: "snapshots", SNAPSHOT_COLUMNS, SnapshotRow => |row: SnapshotRow| Ok(row.0));

impl<'r> FromRow<'r, AnyRow> for SnapshotRow {
    fn from_row(row: &'r AnyRow) -> Result<Self, sqlx::Error> {
        let text = |c: &str| row.try_get::<String, _>(c);
        let account: String = text("account_id")?;
        let kind: String = text("kind")?;
        let status: String = text("status")?;
        let digest: Option<String> = row.try_get("digest")?;
        let image = match digest {
            Some(digest) => Some(
                ImageRow {
                    account_id: account.clone(),
                    digest,
                    reference: text("id")?,
                    config_digest: row
                        .try_get::<Option<String>, _>("config_digest")?
                        .unwrap_or_default(),
                    config: row
                        .try_get::<Option<String>, _>("config")?
                        .unwrap_or_else(|| "{}".into()),
                    layers: row
                        .try_get::<Option<String>, _>("layers")?
                        .unwrap_or_else(|| "[]".into()),
                    size: row.try_get("size")?,
                    created_at: row.try_get("created_at")?,
                }
                .into_image()
                .map_err(decode)?,
            ),
            None => None,
        };
        let vm_id: Option<String> = row.try_get("vm_id")?;
        Ok(Self(Snapshot {
            id: parse("snapshot id", &text("id")?).map_err(decode)?,
            account_id: parse("account id", &account).map_err(decode)?,
            name: text("name")?,
            kind: SnapshotKind::parse(&kind)
                .ok_or_else(|| decode(StoreError::Corrupt(format!("snapshot kind {kind:?}"))))?,
            status: SnapshotStatus::parse(&status).ok_or_else(|| {
                decode(StoreError::Corrupt(format!("snapshot status {status:?}")))
            })?,
            error: row.try_get("error")?,
            vm_id: vm_id
                .map(|v| parse::<VmId>("vm id", &v))
                .transpose()
                .map_err(decode)?,
            source: text("source")?,
            base_variant: row.try_get("base_variant")?,
            image,
            size: u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
            created_at: ts(row.try_get("created_at")?),
        }))
    }
}

impl SqlStore {
    async fn write_snapshot(&self, sql: &str, s: &Snapshot) -> Result<(), StoreError> {
        let (config, layers) = match &s.image {
            Some(image) => {
                let (c, l) = image_json(image)?;
                (Some(c), Some(l))
            }
            None => (None, None),
        };
        sqlx::query(&self.sql(sql))
            .bind(s.account_id.as_str())
            .bind(&s.name)
            .bind(s.kind.as_str())
            .bind(s.status.as_str())
            .bind(&s.error)
            .bind(s.vm_id.as_ref().map(VmId::as_str))
            .bind(&s.source)
            .bind(&s.base_variant)
            .bind(s.image.as_ref().map(|i| i.digest.as_str()))
            .bind(s.image.as_ref().map(|i| i.config_digest.as_str()))
            .bind(config)
            .bind(layers)
            .bind(size_col(s.size))
            .bind(s.created_at.unix_millis())
            .bind(s.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait]
impl SnapshotStore for SqlStore {
    async fn insert_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        self.write_snapshot(
            "INSERT INTO snapshots (account_id, name, kind, status, error, vm_id, source, \
             base_variant, digest, config_digest, config, layers, size, created_at, id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            s,
        )
        .await
    }

    async fn update_snapshot(&self, s: &Snapshot) -> Result<(), StoreError> {
        self.write_snapshot(
            "UPDATE snapshots SET account_id = ?, name = ?, kind = ?, status = ?, error = ?, \
             vm_id = ?, source = ?, base_variant = ?, digest = ?, config_digest = ?, config = ?, \
             layers = ?, size = ?, created_at = ? WHERE id = ?",
            s,
        )
        .await
    }

    async fn get_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn list_snapshots(
        &self,
        account: &AccountId,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let rows: Vec<SnapshotRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE account_id = ? \
             AND (? IS NULL OR kind = ?) ORDER BY created_at DESC, id"
        )))
        .bind(account.as_str())
        .bind(kind.map(SnapshotKind::as_str))
        .bind(kind.map(SnapshotKind::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn delete_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<bool, StoreError> {
        self.delete_owned::<Snapshot>(account, id.as_str()).await
    }

    async fn fail_unfinished_snapshots(&self, reason: &str) -> Result<Vec<VmId>, StoreError> {
        let vms: Vec<(Option<String>,)> = sqlx::query_as(&self.sql(
            "UPDATE snapshots SET status = 'failed', error = ? WHERE status = 'creating' \
             RETURNING vm_id",
        ))
        .bind(reason)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        vms.into_iter()
            .filter_map(|(vm,)| vm)
            .map(|vm| parse("snapshot's vm_id", &vm))
            .collect()
    }
}

#[derive(FromRow)]
pub(super) struct VolumeRow {
    id: String,
    account_id: String,
    name: String,
    size_bytes: i64,
    created_at: i64,
    updated_at: i64,
    node_id: String,
}

super::owned!(Volume: "volumes", VOLUME_COLUMNS, VolumeRow => |row: VolumeRow| {
    Ok(Volume {
        id: parse("volume id", &row.id)?,
        account_id: parse("account id", &row.account_id)?,
        name: row.name,
        size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
        created_at: ts(row.created_at),
        updated_at: ts(row.updated_at),
        node: (!row.node_id.is_empty())
            .then(|| parse("node id", &row.node_id))
            .transpose()?,
    })
});

#[derive(FromRow)]
struct CheckpointRow {
    id: String,
    volume_id: String,
    name: String,
    created_at: i64,
}

impl CheckpointRow {
    fn into_checkpoint(self) -> Result<Checkpoint, StoreError> {
        Ok(Checkpoint {
            id: parse("checkpoint id", &self.id)?,
            volume_id: parse("volume id", &self.volume_id)?,
            name: self.name,
            created_at: ts(self.created_at),
        })
    }
}

#[derive(FromRow)]
struct AttachmentRow {
    vm_id: String,
    volume_id: String,
    mount_path: String,
    mode: String,
    checkpoint_id: Option<String>,
    created_at: i64,
    subpath: Option<String>,
}

impl AttachmentRow {
    fn into_attachment(self) -> Result<Attachment, StoreError> {
        Ok(Attachment {
            vm_id: parse("vm id", &self.vm_id)?,
            volume_id: parse("volume id", &self.volume_id)?,
            mode: MountMode::parse(&self.mode)
                .ok_or_else(|| StoreError::Corrupt(format!("mount mode {:?}", self.mode)))?,
            mount_path: self.mount_path,
            checkpoint_id: self
                .checkpoint_id
                .map(|c| parse("checkpoint id", &c))
                .transpose()?,
            created_at: ts(self.created_at),
            subpath: self.subpath,
        })
    }
}

const VOLUME_COLUMNS: &str = "id, account_id, name, size_bytes, created_at, updated_at, node_id";
const ATTACHMENT_COLUMNS: &str =
    "vm_id, volume_id, mount_path, mode, checkpoint_id, created_at, subpath";

#[async_trait]
impl VolumeStore for SqlStore {
    async fn insert_volume(&self, v: &Volume) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO volumes ({VOLUME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(v.id.as_str())
        .bind(v.account_id.as_str())
        .bind(&v.name)
        .bind(size_col(v.size_bytes))
        .bind(v.created_at.unix_millis())
        .bind(v.updated_at.unix_millis())
        .bind(v.node.as_ref().map_or("", |n| n.as_str()))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_volume(&self, v: &Volume) -> Result<(), StoreError> {
        sqlx::query(
            &self.sql("UPDATE volumes SET name = ?, size_bytes = ?, updated_at = ? WHERE id = ?"),
        )
        .bind(&v.name)
        .bind(size_col(v.size_bytes))
        .bind(v.updated_at.unix_millis())
        .bind(v.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_volume(
        &self,
        account: &AccountId,
        id: &VolumeId,
    ) -> Result<Option<Volume>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn list_volumes(&self, account: &AccountId) -> Result<Vec<Volume>, StoreError> {
        self.list_owned(account).await
    }

    async fn delete_volume(&self, account: &AccountId, id: &VolumeId) -> Result<bool, StoreError> {
        self.delete_owned::<Volume>(account, id.as_str()).await
    }

    async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        sqlx::query(
            &self.sql(
                "INSERT INTO checkpoints (id, volume_id, name, created_at) VALUES (?, ?, ?, ?)",
            ),
        )
        .bind(c.id.as_str())
        .bind(c.volume_id.as_str())
        .bind(&c.name)
        .bind(c.created_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_checkpoint(
        &self,
        volume: &VolumeId,
        id: &CheckpointId,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<CheckpointRow> = sqlx::query_as(
            &self.sql("SELECT id, volume_id, name, created_at FROM checkpoints WHERE volume_id = ? AND id = ?",)
        )
        .bind(volume.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(CheckpointRow::into_checkpoint).transpose()
    }

    async fn list_checkpoints(&self, volume: &VolumeId) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<CheckpointRow> = sqlx::query_as(&self.sql(
            "SELECT id, volume_id, name, created_at FROM checkpoints WHERE volume_id = ? \
             ORDER BY created_at DESC, id",
        ))
        .bind(volume.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(CheckpointRow::into_checkpoint)
            .collect()
    }

    async fn delete_checkpoint(
        &self,
        volume: &VolumeId,
        id: &CheckpointId,
    ) -> Result<bool, StoreError> {
        self.delete_by_key(
            "DELETE FROM checkpoints WHERE volume_id = ? AND id = ?",
            volume.as_str(),
            id.as_str(),
        )
        .await
    }

    async fn insert_attachment(&self, a: &Attachment) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO attachments ({ATTACHMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(a.vm_id.as_str())
        .bind(a.volume_id.as_str())
        .bind(&a.mount_path)
        .bind(a.mode.as_str())
        .bind(a.checkpoint_id.as_ref().map(|c| c.as_str()))
        .bind(a.created_at.unix_millis())
        .bind(a.subpath.as_deref())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn delete_attachment(&self, vm: &VmId, mount_path: &str) -> Result<bool, StoreError> {
        self.delete_by_key(
            "DELETE FROM attachments WHERE vm_id = ? AND mount_path = ?",
            vm.as_str(),
            mount_path,
        )
        .await
    }

    async fn delete_attachments_of_vm(&self, vm: &VmId) -> Result<(), StoreError> {
        sqlx::query(&self.sql("DELETE FROM attachments WHERE vm_id = ?"))
            .bind(vm.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn attachments_of_vm(&self, vm: &VmId) -> Result<Vec<Attachment>, StoreError> {
        let rows: Vec<AttachmentRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE vm_id = ? ORDER BY mount_path"
        )))
        .bind(vm.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(AttachmentRow::into_attachment)
            .collect()
    }

    async fn attachments_of_volume(
        &self,
        volume: &VolumeId,
    ) -> Result<Vec<Attachment>, StoreError> {
        let rows: Vec<AttachmentRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE volume_id = ? ORDER BY vm_id"
        )))
        .bind(volume.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(AttachmentRow::into_attachment)
            .collect()
    }
}

#[derive(FromRow)]
pub(super) struct VaultRow {
    id: String,
    account_id: String,
    name: String,
    description: Option<String>,
    created_at: i64,
    updated_at: i64,
}

super::owned!(Vault: "vaults", VAULT_COLUMNS, VaultRow => |row: VaultRow| {
    Ok(Vault {
        id: parse("vault id", &row.id)?,
        account_id: parse("account id", &row.account_id)?,
        name: row.name,
        description: row.description,
        created_at: ts(row.created_at),
        updated_at: ts(row.updated_at),
    })
});

#[derive(FromRow)]
struct CredentialRow {
    id: String,
    vault_id: String,
    name: String,
    credential_type: String,
    description: Option<String>,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: i64,
    rotated_at: Option<i64>,
}

impl CredentialRow {
    fn into_parts(self) -> Result<(Credential, Sealed), StoreError> {
        Ok((
            Credential {
                id: parse("credential id", &self.id)?,
                vault_id: parse("vault id", &self.vault_id)?,
                name: self.name,
                credential_type: self.credential_type,
                description: self.description,
                created_at: ts(self.created_at),
                rotated_at: self.rotated_at.map(ts),
            },
            Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.ciphertext,
            },
        ))
    }
}

const VAULT_COLUMNS: &str = "id, account_id, name, description, created_at, updated_at";
const CREDENTIAL_COLUMNS: &str = "id, vault_id, name, credential_type, description, key_id, \
    nonce, ciphertext, created_at, rotated_at";

impl SqlStore {
    async fn credential_rows(&self, vault: &VaultId) -> Result<Vec<CredentialRow>, StoreError> {
        sqlx::query_as(&self.sql(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE vault_id = ? ORDER BY name"
        )))
        .bind(vault.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)
    }
}

#[async_trait]
impl VaultStore for SqlStore {
    async fn insert_vault(&self, v: &Vault) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO vaults ({VAULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        )))
        .bind(v.id.as_str())
        .bind(v.account_id.as_str())
        .bind(&v.name)
        .bind(&v.description)
        .bind(v.created_at.unix_millis())
        .bind(v.updated_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_vault(&self, v: &Vault) -> Result<(), StoreError> {
        sqlx::query(
            &self.sql("UPDATE vaults SET name = ?, description = ?, updated_at = ? WHERE id = ?"),
        )
        .bind(&v.name)
        .bind(&v.description)
        .bind(v.updated_at.unix_millis())
        .bind(v.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_vault(
        &self,
        account: &AccountId,
        id: &VaultId,
    ) -> Result<Option<Vault>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn list_vaults(&self, account: &AccountId) -> Result<Vec<Vault>, StoreError> {
        self.list_owned(account).await
    }

    async fn delete_vault(&self, account: &AccountId, id: &VaultId) -> Result<bool, StoreError> {
        self.delete_owned::<Vault>(account, id.as_str()).await
    }

    async fn insert_credential(&self, c: &Credential, sealed: &Sealed) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(c.id.as_str())
        .bind(c.vault_id.as_str())
        .bind(&c.name)
        .bind(&c.credential_type)
        .bind(&c.description)
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(c.created_at.unix_millis())
        .bind(c.rotated_at.map(Timestamp::unix_millis))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list_credentials(&self, vault: &VaultId) -> Result<Vec<Credential>, StoreError> {
        self.credential_rows(vault)
            .await?
            .into_iter()
            .map(|r| r.into_parts().map(|(c, _)| c))
            .collect()
    }

    async fn sealed_credentials(
        &self,
        vault: &VaultId,
    ) -> Result<Vec<(Credential, Sealed)>, StoreError> {
        self.credential_rows(vault)
            .await?
            .into_iter()
            .map(CredentialRow::into_parts)
            .collect()
    }

    async fn reseal_credential(
        &self,
        id: &CredentialId,
        sealed: &Sealed,
        rotated_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql(
            "UPDATE credentials SET key_id = ?, nonce = ?, ciphertext = ?, \
             rotated_at = COALESCE(?, rotated_at) WHERE id = ?",
        ))
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(rotated_at.map(Timestamp::unix_millis))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_credential(
        &self,
        vault: &VaultId,
        id: &CredentialId,
    ) -> Result<bool, StoreError> {
        self.delete_by_key(
            "DELETE FROM credentials WHERE vault_id = ? AND id = ?",
            vault.as_str(),
            id.as_str(),
        )
        .await
    }

    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(CredentialId, Sealed)>, StoreError> {
        let rows: Vec<CredentialRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE key_id != ?"
        )))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|r| r.into_parts().map(|(c, s)| (c.id, s)))
            .collect()
    }
}
