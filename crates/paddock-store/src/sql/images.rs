//! Images and the build cache in SQLite.

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::AccountId;
use paddock_core::model::{Image, VmStatusSet};
use paddock_core::store::ImageStore;
use paddock_core::StoreError;

use super::rows::{self, db_err, ImageRow};
use super::{status_list, SqlStore};

#[async_trait]
impl ImageStore for SqlStore {
    async fn upsert_image(&self, image: &Image) -> Result<(), StoreError> {
        let (config, layers) = rows::image_json(image)?;
        sqlx::query(
            &self.sql("INSERT INTO images (account_id, digest, reference, config_digest, config, layers, size, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (account_id, digest) DO UPDATE SET reference = excluded.reference",)
        )
        .bind(image.account_id.as_str())
        .bind(&image.digest)
        .bind(&image.reference)
        .bind(&image.config_digest)
        .bind(config)
        .bind(layers)
        .bind(i64::try_from(image.size).unwrap_or(i64::MAX))
        .bind(image.created_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn find_image(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Image>, StoreError> {
        let row: Option<ImageRow> = sqlx::query_as(
            &self.sql("SELECT account_id, digest, reference, config_digest, config, layers, size, created_at \
             FROM images WHERE account_id = ? AND (digest = ? OR reference = ?) \
             ORDER BY digest = ? DESC, created_at DESC LIMIT 1",)
        )
        .bind(account.as_str())
        .bind(key)
        .bind(key)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(ImageRow::into_image).transpose()
    }

    async fn list_images(&self, account: &AccountId) -> Result<Vec<Image>, StoreError> {
        let rows: Vec<ImageRow> = sqlx::query_as(
            &self.sql("SELECT account_id, digest, reference, config_digest, config, layers, size, created_at \
             FROM images WHERE account_id = ? ORDER BY created_at DESC, digest",)
        )
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(ImageRow::into_image).collect()
    }

    async fn delete_image(&self, account: &AccountId, digest: &str) -> Result<bool, StoreError> {
        self.delete_by_key(
            "DELETE FROM images WHERE account_id = ? AND digest = ?",
            account.as_str(),
            digest,
        )
        .await
    }

    async fn referenced_blobs(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let rows: Vec<ImageRow> = sqlx::query_as(
            &self.sql("SELECT account_id, digest, reference, config_digest, config, layers, size, created_at FROM images",)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let mut keep = std::collections::BTreeSet::new();
        let cached: Vec<(String,)> = sqlx::query_as(&self.sql("SELECT digest FROM build_cache"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        keep.extend(cached.into_iter().map(|(d,)| d));
        // Snapshots keep their whole stack (base layers included) alive.
        let snapshot_images: Vec<ImageRow> = sqlx::query_as(
            &self.sql("SELECT account_id, digest, id AS reference, config_digest, config, layers, size, created_at \
             FROM snapshots WHERE digest IS NOT NULL",)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        for row in rows.into_iter().chain(snapshot_images) {
            let image = row.into_image()?;
            keep.insert(image.digest.clone());
            keep.insert(image.config_digest);
            keep.extend(image.layers.into_iter().map(|l| l.digest));
        }
        Ok(keep)
    }

    async fn count_vms_using_image(
        &self,
        account: &AccountId,
        digest: &str,
    ) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(&self.sql(&format!(
            "SELECT COUNT(*) FROM vms WHERE account_id = ? AND image_digest = ? AND status IN ({})",
            status_list(&VmStatusSet::holding_resources())
        )))
        .bind(account.as_str())
        .bind(digest)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get_build_step(
        &self,
        key: &str,
    ) -> Result<Option<paddock_core::images::BuiltLayer>, StoreError> {
        let row: Option<(String, i64, String, String)> = sqlx::query_as(
            &self.sql("SELECT digest, size, media_type, diff_id FROM build_cache WHERE key = ?"),
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(
            |(digest, size, media_type, diff_id)| paddock_core::images::BuiltLayer {
                info: paddock_core::model::LayerInfo {
                    digest,
                    size: u64::try_from(size).unwrap_or(0),
                    media_type,
                },
                diff_id,
            },
        ))
    }

    async fn put_build_step(
        &self,
        key: &str,
        layer: &paddock_core::images::BuiltLayer,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO build_cache (key, digest, size, media_type, diff_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET digest = excluded.digest, \
             size = excluded.size, media_type = excluded.media_type, diff_id = excluded.diff_id, \
             created_at = excluded.created_at",
        ))
        .bind(key)
        .bind(&layer.info.digest)
        .bind(i64::try_from(layer.info.size).unwrap_or(i64::MAX))
        .bind(&layer.info.media_type)
        .bind(&layer.diff_id)
        .bind(Timestamp::now().unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
