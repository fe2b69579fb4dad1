use std::collections::BTreeMap;

use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, CredentialId, SessionId, SnapshotId, VaultId, VmId};
use paddock_core::model::{
    Account, Credential, Env, EnvStatus, Limits, NewApiKey, Resources, Sealed, Snapshot,
    SnapshotKind, SnapshotStatus, Vault, Vm, VmFilter, VmOptions, VmStatus, VmStatusSet,
};
use std::time::Duration;

use paddock_core::store::{AccountStore, RequestSpend, SnapshotStore, VaultStore, VmStore};
use paddock_core::StoreError;

use super::SqlStore;

/// A fresh database of each backend the tests can reach: SQLite in
/// memory always; PostgreSQL when `PADDOCK_TEST_POSTGRES` names a server
/// (an admin URL, as `scripts/postgres.sh` prints).
async fn stores() -> Vec<SqlStore> {
    let mut stores = vec![SqlStore::in_memory().await.expect("in-memory store opens")];
    if let Ok(admin) = std::env::var("PADDOCK_TEST_POSTGRES") {
        stores.push(
            SqlStore::open_postgres(&fresh_postgres_database(&admin).await)
                .await
                .expect("PostgreSQL store opens"),
        );
    }
    stores
}

/// Creates a database of its own for one test; its URL.
pub(crate) async fn fresh_postgres_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!(
        "paddock_test_{}",
        VmId::generate()
            .as_str()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("the test PostgreSQL answers");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a test database");
    let (server, _) = admin
        .rsplit_once('/')
        .expect("an admin URL with a database");
    format!("{server}/{name}")
}

/// Each store of [`stores`] with an account in it.
async fn stores_with_account() -> Vec<(SqlStore, Account)> {
    let mut out = Vec::new();
    for store in stores().await {
        out.push(with_account(store).await);
    }
    out
}

async fn with_account(store: SqlStore) -> (SqlStore, Account) {
    let account = Account {
        id: AccountId::generate(),
        name: "a".into(),
        created_at: Timestamp::now(),
    };
    store
        .insert_account(&account)
        .await
        .expect("insert account");
    (store, account)
}

fn vm(account: &AccountId, session: &SessionId) -> Vm {
    let now = Timestamp::now();
    let mut env = BTreeMap::new();
    env.insert("K".to_owned(), "v".to_owned());
    Vm {
        id: VmId::generate(),
        account_id: account.clone(),
        session_id: session.clone(),
        status: VmStatus::Creating,
        status_reason: None,
        provider: "container".into(),
        image_variant: "default".into(),
        image_digest: None,
        resources: Resources::new(Some(256), Some(2), &Limits::default()).expect("valid"),
        metadata: serde_json::json!({"team": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        env: Env::new(env).expect("valid env"),
        lifetime_seconds: Some(60),
        created_at: now,
        updated_at: now,
        started_at: None,
        expires_at: Some(now.plus_seconds(60)),
        terminated_at: None,
        runtime: None,
        options: VmOptions {
            snapshot_id: Some(SnapshotId::generate()),
            snapshot_on_terminate: true,
            snapshot_name: Some("final".into()),
            vault_ids: vec![VaultId::generate()],
            vault_vars: vec!["TOKEN".into()],
            auto_suspend: true,
            auto_resume: true,
            published_ports: true,
            env_status: EnvStatus::Error,
            env_error: Some("vault x not found".into()),
            egress_policy: Some(
                paddock_core::model::EgressPolicy::from_json(
                    &serde_json::json!({"allow_https": true, "allowed_domains": ["*.example.com"]}),
                    "",
                )
                .expect("valid policy"),
            ),
            gpus: vec![0, 2],
            accelerator: Some("tcg".into()),
            memory_key: Some(paddock_core::model::Sealed {
                key_id: "k1".into(),
                nonce: vec![1, 2, 3],
                ciphertext: vec![9, 8, 7, 6],
            }),
            vault_ca: Some(paddock_core::model::StoredVaultCa {
                cert_pem: "-----BEGIN CERTIFICATE-----".into(),
                key: paddock_core::model::Sealed {
                    key_id: "k1".into(),
                    nonce: vec![4],
                    ciphertext: vec![5, 6],
                },
            }),
            launch: Some(paddock_core::model::Launch {
                definition_id: "web".into(),
                revision: "ab".repeat(32),
                preserve: true,
                idle_stop_seconds: Some(1800),
                command: vec!["make".into()],
                labels: [("team".to_owned(), "infra".to_owned())].into(),
                ..Default::default()
            }),
        },
        network: Some(paddock_core::network_backend::VmNetwork {
            address: "10.88.0.7".parse().expect("ip"),
            gateway: "10.88.0.1".parse().expect("ip"),
            netns: "/data/net/netns/10.88.0.7".into(),
        }),
        node: None,
    }
}

#[tokio::test]
async fn vm_round_trips_and_is_scoped_by_account() {
    for (store, account) in stores_with_account().await {
        let session = SessionId::generate();
        let v = vm(&account.id, &session);
        store.insert_vm(&v).await.expect("insert");
        let got = store
            .get_vm(&account.id, &v.id)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(got.resources, v.resources);
        assert_eq!(got.env, v.env);
        assert_eq!(got.metadata, v.metadata);
        assert_eq!(got.expires_at, v.expires_at);
        assert_eq!(got.options, v.options);
        assert_eq!(got.network, v.network);

        let other = AccountId::generate();
        assert!(store.get_vm(&other, &v.id).await.expect("get").is_none());
    }
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    for (store, account) in stores_with_account().await {
        let session = SessionId::generate();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let v = vm(&account.id, &session);
            store.insert_vm(&v).await.expect("insert");
            ids.push(v.id);
        }
        let page1 = store
            .list_vms(
                &account.id,
                &VmFilter {
                    limit: 2,
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(
            page1.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
            vec![ids[4].clone(), ids[3].clone()]
        );
        let page2 = store
            .list_vms(
                &account.id,
                &VmFilter {
                    limit: 2,
                    after: Some(ids[3].clone()),
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(page2[0].id, ids[2]);
        let running = store
            .list_vms(
                &account.id,
                &VmFilter {
                    limit: 10,
                    statuses: VmStatusSet::of(&[VmStatus::Running]),
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        assert!(running.is_empty());
    }
}

#[tokio::test]
async fn expired_vms_are_found() {
    for (store, account) in stores_with_account().await {
        let mut v = vm(&account.id, &SessionId::generate());
        v.expires_at = Some(Timestamp::from_unix_millis(1));
        store.insert_vm(&v).await.expect("insert");
        let expired = store
            .list_expired_vms(Timestamp::now())
            .await
            .expect("list");
        assert_eq!(expired.len(), 1);
        v.status = VmStatus::Terminated;
        store.update_vm(&v).await.expect("update");
        assert!(store
            .list_expired_vms(Timestamp::now())
            .await
            .expect("list")
            .is_empty());
    }
}

/// PostgreSQL keeps one request bucket per account for every process
/// that shares it: a bucket of 3 grants two tokens to a take of two, one
/// to the next (all it has left), then tells how long until the next
/// token (at 1 a second, under a second); another account's bucket is its
/// own. SQLite leaves the bucket to its process.
#[tokio::test]
async fn shared_stores_keep_one_request_bucket_per_account() {
    for (store, account) in stores_with_account().await {
        let take = |a: AccountId| {
            let store = &store;
            async move { store.take_requests(&a, 1, 3.0, 2).await.expect("take") }
        };
        if store.backend != super::Backend::Postgres {
            assert_eq!(take(account.id.clone()).await, RequestSpend::Unshared);
            continue;
        }
        assert_eq!(take(account.id.clone()).await, RequestSpend::Granted(2));
        assert_eq!(take(account.id.clone()).await, RequestSpend::Granted(1));
        match take(account.id.clone()).await {
            RequestSpend::Wait(d) => {
                assert!(d > Duration::ZERO && d <= Duration::from_secs(1), "{d:?}")
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        assert_eq!(take(AccountId::generate()).await, RequestSpend::Granted(2));
    }
}

#[tokio::test]
async fn keys_are_found_by_hash_until_revoked() {
    for (store, account) in stores_with_account().await {
        let (key, secret) = NewApiKey::generate(account.id.clone(), "k", "u@x");
        store.insert_api_key(&key).await.expect("insert");
        assert!(store
            .find_api_key(&secret.hash())
            .await
            .expect("find")
            .is_some());
        assert!(store
            .revoke_api_key(&key.key.id, Timestamp::now())
            .await
            .expect("revoke"));
        assert!(store
            .find_api_key(&secret.hash())
            .await
            .expect("find")
            .is_none());
        assert!(!store
            .revoke_api_key(&key.key.id, Timestamp::now())
            .await
            .expect("revoke"));
    }
}

#[tokio::test]
async fn snapshot_names_are_unique_per_account_and_unfinished_ones_fail() {
    for (store, account) in stores_with_account().await {
        let vm = VmId::generate();
        let snapshot = Snapshot {
            id: SnapshotId::generate(),
            account_id: account.id.clone(),
            name: "s".into(),
            kind: SnapshotKind::User,
            status: SnapshotStatus::Creating,
            error: None,
            vm_id: Some(vm.clone()),
            source: "default".into(),
            base_variant: None,
            image: None,
            size: 0,
            created_at: Timestamp::now(),
        };
        store.insert_snapshot(&snapshot).await.expect("insert");
        let twin = Snapshot {
            id: SnapshotId::generate(),
            ..snapshot.clone()
        };
        assert!(matches!(
            store.insert_snapshot(&twin).await,
            Err(StoreError::Duplicate)
        ));
        // One of an image (no VM) is failed too; the VMs of those cut short
        // come back.
        let of_an_image = Snapshot {
            id: SnapshotId::generate(),
            name: "of-an-image".into(),
            vm_id: None,
            ..snapshot.clone()
        };
        store.insert_snapshot(&of_an_image).await.expect("insert");
        assert_eq!(
            store
                .fail_unfinished_snapshots("restart")
                .await
                .expect("fail"),
            vec![vm]
        );
        let got = store
            .get_snapshot(&account.id, &of_an_image.id)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(got.status, SnapshotStatus::Failed);
        let got = store
            .get_snapshot(&account.id, &snapshot.id)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(got.status, SnapshotStatus::Failed);
        assert!(store
            .get_snapshot(&AccountId::generate(), &snapshot.id)
            .await
            .expect("get")
            .is_none());
        assert_eq!(
            store
                .list_snapshots(&account.id, Some(SnapshotKind::System))
                .await
                .expect("list")
                .len(),
            0
        );
    }
}

#[tokio::test]
async fn credentials_keep_only_sealed_values_and_go_with_their_vault() {
    for (store, account) in stores_with_account().await {
        let now = Timestamp::now();
        let vault = Vault {
            id: VaultId::generate(),
            account_id: account.id.clone(),
            name: "v".into(),
            description: None,
            created_at: now,
            updated_at: now,
        };
        store.insert_vault(&vault).await.expect("vault");
        let credential = Credential {
            id: CredentialId::generate(),
            vault_id: vault.id.clone(),
            name: "TOKEN".into(),
            credential_type: "api_key".into(),
            description: None,
            created_at: now,
            rotated_at: None,
        };
        let sealed = Sealed {
            key_id: "k1".into(),
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
        };
        store
            .insert_credential(&credential, &sealed)
            .await
            .expect("credential");
        assert!(matches!(
            store.insert_credential(&credential, &sealed).await,
            Err(StoreError::Duplicate)
        ));
        assert_eq!(
            store
                .sealed_under_other_keys("k2")
                .await
                .expect("stale")
                .len(),
            1
        );
        assert!(store
            .sealed_under_other_keys("k1")
            .await
            .expect("stale")
            .is_empty());
        assert!(store
            .delete_vault(&account.id, &vault.id)
            .await
            .expect("delete"));
        assert!(store
            .sealed_credentials(&vault.id)
            .await
            .expect("list")
            .is_empty());
    }
}

#[tokio::test]
async fn account_usage_counts_live_vms_of_the_account_through_its_index() {
    for (store, account) in stores_with_account().await {
        let session = SessionId::generate();
        let mut running = vm(&account.id, &session);
        running.status = VmStatus::Running;
        store.insert_vm(&running).await.expect("insert");
        store
            .insert_vm(&vm(&account.id, &session))
            .await
            .expect("insert a creating one");
        let mut gone = vm(&account.id, &session);
        gone.status = VmStatus::Terminated;
        store
            .insert_vm(&gone)
            .await
            .expect("insert a terminated one");

        let usage = store.account_usage(&account.id).await.expect("usage");
        assert_eq!(
            usage,
            paddock_core::quotas::Usage {
                vms: 2,
                memory_mb: 512,
                vcpus: 4,
                ..Default::default()
            }
        );
        let none = store
            .account_usage(&AccountId::generate())
            .await
            .expect("usage");
        assert_eq!(none, paddock_core::quotas::Usage::default());

        if store.backend() != super::Backend::Sqlite {
            continue;
        }
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", super::ACCOUNT_USAGE))
                .bind(account.id.as_str())
                .fetch_all(&store.pool)
                .await
                .expect("plan");
        assert!(
            plan.iter()
                .any(|(_, _, _, d)| d.contains("vms_live_by_account")),
            "{plan:?}"
        );
    }
}

/// Each table's columns: name, type as the other backend spells it, and
/// whether it may be null (primary keys aside: SQLite lets a TEXT key be
/// null unless told otherwise, PostgreSQL never does).
type Columns = std::collections::BTreeSet<(String, String, String, bool)>;

async fn sqlite_columns(store: &SqlStore) -> Columns {
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk FROM sqlite_master m \
         JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT IN ('sqlite_sequence', '_sqlx_migrations')",
    )
    .fetch_all(&store.pool)
    .await
    .expect("SQLite's columns");
    rows.into_iter()
        .map(|(table, column, ty, not_null, pk)| {
            let ty = match ty.as_str() {
                "INTEGER" => "bigint",
                "TEXT" => "text",
                "REAL" => "double precision",
                "BLOB" => "bytea",
                other => panic!("{table}.{column}: a type PostgreSQL has no twin for: {other}"),
            };
            (table, column, ty.to_owned(), not_null == 0 && pk == 0)
        })
        .collect()
}

async fn postgres_columns(store: &SqlStore) -> Columns {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, \
         c.is_nullable::text, \
         (SELECT COUNT(*) FROM information_schema.key_column_usage k \
          JOIN information_schema.table_constraints t \
            ON t.constraint_name = k.constraint_name AND t.constraint_type = 'PRIMARY KEY' \
          WHERE k.table_name = c.table_name AND k.column_name = c.column_name) \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&store.pool)
    .await
    .expect("PostgreSQL's columns");
    rows.into_iter()
        .map(|(table, column, ty, nullable, pk)| (table, column, ty, nullable == "YES" && pk == 0))
        .collect()
}

#[tokio::test]
async fn the_backends_share_one_schema() {
    let all = stores().await;
    let [sqlite, postgres] = all.as_slice() else {
        eprintln!("PADDOCK_TEST_POSTGRES is not set: nothing to compare SQLite with");
        return;
    };
    let (sqlite, postgres) = (
        sqlite_columns(sqlite).await,
        postgres_columns(postgres).await,
    );
    assert!(!sqlite.is_empty());
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migrations differ:\n  SQLite only: {only_sqlite:#?}\n  PostgreSQL only: {only_postgres:#?}"
    );
}

fn node(id: &paddock_core::ids::NodeId, beat_ms: i64) -> paddock_core::model::Node {
    paddock_core::model::Node {
        id: id.clone(),
        address: "http://127.0.0.1:7420".into(),
        providers: vec!["container".into()],
        memory_mb: 4096,
        vcpus: 2,
        gpus: vec![0],
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        started_at: Timestamp::from_unix_millis(beat_ms),
        heartbeat_at: Timestamp::from_unix_millis(beat_ms),
        lease: std::time::Duration::from_millis(3_000),
    }
}

#[tokio::test]
async fn a_silent_nodes_live_vms_are_lost_and_no_others() {
    use paddock_core::ids::NodeId;
    use paddock_core::store::NodeStore;
    for (store, account) in stores_with_account().await {
        let (quiet, beating) = (NodeId::generate(), NodeId::generate());
        store.upsert_node(&node(&quiet, 1_000)).await.expect("node");
        store
            .upsert_node(&node(&beating, 1_000))
            .await
            .expect("node");
        assert!(store
            .beat_node(&beating, Timestamp::from_unix_millis(9_000))
            .await
            .expect("beat"));
        assert!(!store
            .beat_node(&NodeId::generate(), Timestamp::from_unix_millis(9_000))
            .await
            .expect("beat"));
        let listed = store.list_nodes().await.expect("nodes");
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed.iter().find(|n| n.id == quiet),
            Some(&node(&quiet, 1_000))
        );

        let session = SessionId::generate();
        let mut on_quiet = vm(&account.id, &session);
        on_quiet.node = Some(quiet.clone());
        on_quiet.status = VmStatus::Running;
        let mut stopped_on_quiet = vm(&account.id, &session);
        stopped_on_quiet.node = Some(quiet.clone());
        stopped_on_quiet.status = VmStatus::Stopped;
        let mut on_beating = vm(&account.id, &session);
        on_beating.node = Some(beating.clone());
        on_beating.status = VmStatus::Running;
        for v in [&on_quiet, &stopped_on_quiet, &on_beating] {
            store.insert_vm(v).await.expect("insert");
        }
        // At 10 s the quiet node's lease (1 s + 3 s) is long over; the
        // beating one's (9 s + 3 s) is not.
        let lost = store
            .mark_vms_of_silent_nodes_lost(Timestamp::from_unix_millis(10_000), "gone")
            .await
            .expect("mark");
        assert_eq!(lost, vec![(on_quiet.id.clone(), quiet.clone())]);
        let status = |id: &VmId| {
            let store = store.clone();
            let id = id.clone();
            async move { store.find_vm(&id).await.expect("find").expect("vm").status }
        };
        assert_eq!(status(&on_quiet.id).await, VmStatus::Lost);
        assert_eq!(status(&stopped_on_quiet.id).await, VmStatus::Stopped);
        assert_eq!(status(&on_beating.id).await, VmStatus::Running);
        assert_eq!(
            store
                .find_vm(&on_quiet.id)
                .await
                .expect("find")
                .expect("vm")
                .node,
            Some(quiet.clone())
        );
    }
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_runs_out() {
    use paddock_core::store::NodeStore;
    for store in stores().await {
        let at = Timestamp::from_unix_millis;
        assert!(store
            .take_lease("work", "a", at(0), at(10))
            .await
            .expect("take"));
        assert!(!store
            .take_lease("work", "b", at(5), at(15))
            .await
            .expect("take"));
        // The holder renews its own.
        assert!(store
            .take_lease("work", "a", at(9), at(20))
            .await
            .expect("renew"));
        assert!(!store
            .take_lease("work", "b", at(19), at(30))
            .await
            .expect("take"));
        // Run out, it is anyone's.
        assert!(store
            .take_lease("work", "b", at(20), at(30))
            .await
            .expect("take"));
        assert!(!store
            .take_lease("work", "a", at(21), at(31))
            .await
            .expect("take"));
        // Leases are by name.
        assert!(store
            .take_lease("other", "a", at(21), at(31))
            .await
            .expect("take"));
    }
}

#[tokio::test]
async fn a_sqlite_file_opens_with_its_journal_checks_and_patience() {
    use sqlx::Row;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::open_sqlite(&dir.path().join("p.db"))
        .await
        .expect("open");
    // Each connection of the pool: the settings are per connection.
    for _ in 0..3 {
        let mut conn = store.pool.acquire().await.expect("a connection");
        let text = |row: sqlx::any::AnyRow| -> String {
            row.try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .expect("a value")
        };
        for (name, want) in [
            ("journal_mode", "wal"),
            ("foreign_keys", "1"),
            ("busy_timeout", "10000"),
            // NORMAL
            ("synchronous", "1"),
        ] {
            let row = sqlx::query(&format!("PRAGMA {name}"))
                .fetch_one(&mut *conn)
                .await
                .expect("pragma");
            assert_eq!(text(row), want, "{name}");
        }
    }
}

/// An execution's times are NULL while it runs, then set: the same
/// statement must take both (on PostgreSQL, a statement first prepared
/// with a NULL double was typed float4 and refused the float8 after it).
#[tokio::test]
async fn an_executions_times_are_saved_after_it_ran_without_them() {
    use paddock_core::ids::ExecutionId;
    use paddock_core::model::{Execution, ExecutionStatus};
    use paddock_core::store::ExecutionStore;
    for (store, account) in stores_with_account().await {
        let mut e = Execution {
            id: ExecutionId::generate(),
            account_id: account.id.clone(),
            vm_id: VmId::generate(),
            session_id: SessionId::generate(),
            status: ExecutionStatus::Running,
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            execution_time: None,
            cpu_time: None,
            error: None,
            created_at: Timestamp::now(),
            completed_at: None,
        };
        store.insert_execution(&e).await.expect("insert");
        for round in 0..4 {
            e.stdout.push_str("out ");
            store.update_execution(&e).await.expect("save output");
            e.execution_time = Some(1.5 + f64::from(round));
            e.cpu_time = Some(0.1);
            e.exit_code = Some(round);
            store.update_execution(&e).await.expect("save the end");
            let got = store
                .get_execution(&account.id, &e.id)
                .await
                .expect("get")
                .expect("the execution");
            assert_eq!(got.execution_time, Some(1.5 + f64::from(round)));
            assert_eq!(got.cpu_time, Some(0.1));
            e.execution_time = None;
            e.cpu_time = None;
            e.exit_code = None;
        }
    }
}
