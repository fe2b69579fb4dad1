//! `paddock keys`: API keys, managed on the server's store directly
//! (safe beside a running server: SQLite in WAL mode, or PostgreSQL).

use std::path::Path;

use anyhow::Context;
use paddock_core::accounts::Accounts;
use paddock_core::ids::{AccountId, ApiKeyId};

use crate::cli::KeysCommand;

/// Accounts and keys over the data dir's store: key management starts
/// no sandbox machinery.
async fn accounts(data_dir: &Path, store: Option<&str>) -> anyhow::Result<Accounts> {
    Ok(Accounts::new(std::sync::Arc::new(
        crate::serve::open_store(data_dir, store).await?,
    )))
}

/// `paddock rotate-master-key`: a new key, every secret re-sealed under
/// it, then the old key forgotten. Interrupted, the old key stays in
/// `master.key.previous` and the next server start finishes the job.
pub async fn rotate_master_key(data_dir: &Path, store: Option<&str>) -> anyhow::Result<usize> {
    let keyring = crate::master_key::rotate(data_dir)?;
    let store = crate::serve::open_store(data_dir, store).await?;
    let n = paddock_core::vaults::reseal_secrets(&store, &keyring).await?;
    crate::master_key::forget_previous(data_dir)?;
    Ok(n)
}

pub async fn run(
    data_dir: &Path,
    store: Option<&str>,
    command: KeysCommand,
    json: bool,
) -> anyhow::Result<()> {
    let accounts = accounts(data_dir, store).await?;
    match command {
        KeysCommand::Create {
            name,
            account,
            new_account,
            user,
            dev_token,
        } => {
            let account_id: AccountId = match (account, new_account) {
                (Some(a), _) => a.parse().map_err(|e| anyhow::anyhow!("--account: {e}"))?,
                (None, Some(n)) => accounts.create_account(&n).await?.id,
                (None, None) => {
                    if accounts.bootstrap().await?.is_some() {
                        eprintln!("created the default account (its admin key was discarded: use the one printed now)");
                    }
                    accounts
                        .list_accounts()
                        .await?
                        .into_iter()
                        .next()
                        .context("no account")?
                        .id
                }
            };
            let (key, secret) = accounts
                .create_key(
                    &account_id,
                    &name,
                    user.as_deref(),
                    if dev_token {
                        paddock_core::model::KeyKind::DevToken
                    } else {
                        paddock_core::model::KeyKind::Api
                    },
                )
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": key.id.to_string(), "account_id": account_id.to_string(), "name": key.name, "user": key.user_email, "key": secret.expose()})
                );
            } else {
                println!("{}", secret.expose());
                eprintln!("key {} for account {} (shown once)", key.id, account_id);
            }
        }
        KeysCommand::List => {
            let keys = accounts.list_api_keys().await?;
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id.to_string(), "account_id": k.account_id.to_string(), "name": k.name, "user": k.user_email, "prefix": k.prefix, "created_at": k.created_at.to_rfc3339(), "revoked": k.revoked_at.is_some()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut table =
                    crate::cli::table(&["ID", "ACCOUNT", "NAME", "PREFIX", "CREATED", "REVOKED"]);
                for k in keys {
                    table.add_row(vec![
                        k.id.to_string(),
                        k.account_id.to_string(),
                        k.name,
                        format!("{}…", k.prefix),
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    ]);
                }
                println!("{table}");
            }
        }
        KeysCommand::Revoke { id } => {
            let id: ApiKeyId = id.parse().map_err(|e| anyhow::anyhow!("key id: {e}"))?;
            accounts.revoke_api_key(&id).await?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
