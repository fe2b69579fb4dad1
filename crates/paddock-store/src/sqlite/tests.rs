use std::collections::BTreeMap;

use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, SessionId, VmId};
use paddock_core::model::{
    Account, Env, Limits, NewApiKey, Resources, Vm, VmFilter, VmStatus, VmStatusSet,
};
use paddock_core::store::Store;

use super::SqliteStore;

async fn store_with_account() -> (SqliteStore, Account) {
    let store = SqliteStore::in_memory()
        .await
        .expect("in-memory store opens");
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
    }
}

#[tokio::test]
async fn vm_round_trips_and_is_scoped_by_account() {
    let (store, account) = store_with_account().await;
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

    let other = AccountId::generate();
    assert!(store.get_vm(&other, &v.id).await.expect("get").is_none());
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let (store, account) = store_with_account().await;
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

#[tokio::test]
async fn expired_vms_are_found() {
    let (store, account) = store_with_account().await;
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

#[tokio::test]
async fn keys_are_found_by_hash_until_revoked() {
    let (store, account) = store_with_account().await;
    let (key, secret) = NewApiKey::generate(account.id.clone(), "k");
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
