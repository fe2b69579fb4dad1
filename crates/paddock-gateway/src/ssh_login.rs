//! SSH logins as an environment: the SSH gateway (`paddock-ssh`) asks
//! whom a key acts for and which connected sandbox it reaches.

use paddock_core::error::CoreError;
use paddock_core::ids::VmId;
use paddock_core::model::gateway::EnvironmentState;
use paddock_core::model::Principal;

use crate::Gateway;

impl Gateway {
    /// Records an SSH login in the audit log: `ssh.login` for the account
    /// it acted for, or `auth.failure` (no account's) for a key nobody
    /// registered. The key's fingerprint names the actor; nothing secret
    /// is known here.
    pub async fn audit_ssh_login(
        &self,
        fingerprint: &str,
        environment: &str,
        peer: Option<std::net::SocketAddr>,
        outcome: Result<&(Principal, VmId), &CoreError>,
    ) {
        use paddock_core::clock::Timestamp;
        use paddock_core::model::{AuditEvent, AuditStatus};
        let (account, user, vm, status, kind, error) = match outcome {
            Ok((who, vm)) => (
                Some(who.account_id.clone()),
                Some(who.user_email.clone()),
                Some(vm.to_string()),
                AuditStatus::Success,
                ("ssh", "ssh.login"),
                None,
            ),
            Err(e @ CoreError::Unauthenticated) => (
                None,
                None,
                None,
                AuditStatus::Denied,
                ("auth", "auth.failure"),
                Some(e.to_string()),
            ),
            // A registered key that reaches no connected environment:
            // its holder is told why; the refusal is not an auth failure.
            Err(_) => return,
        };
        let event = AuditEvent {
            id: paddock_core::ids::AuditEventId::generate(),
            account_id: account,
            created_at: Timestamp::now(),
            event_group: kind.0.into(),
            event_type: kind.1.into(),
            status,
            actor_key_id: Some(format!("ssh:{fingerprint}")),
            user_email: user,
            vm_id: vm,
            session_id: None,
            resource_type: Some("environment".into()),
            resource_id: Some(environment.to_owned()),
            request_id: uuid::Uuid::new_v4().to_string(),
            source_address: peer.map_or_else(|| "unknown".into(), |p| p.ip().to_string()),
            method: "SSH".into(),
            path: environment.to_owned(),
            http_status: if status == AuditStatus::Success {
                200
            } else {
                401
            },
            error_message: error,
        };
        if let Err(e) = self.core.audit().record(event).await {
            tracing::warn!(error = %e, "audit: an SSH login could not be recorded");
        }
    }

    /// Whom an SSH login with the key `fingerprint` as `environment` acts
    /// for, and the sandbox it reaches: the first user (of any account)
    /// who registered the key and may see the environment, which must be
    /// connected. A key nobody registered is `Unauthenticated`; a known
    /// key that reaches no connected environment gets the reason, which
    /// the gateway shows its holder.
    pub async fn ssh_login(
        &self,
        fingerprint: &str,
        environment: &str,
    ) -> Result<(Principal, VmId), CoreError> {
        let mut not_connected = None;
        let keys = self.core.ssh_keys().by_fingerprint(fingerprint).await?;
        if keys.is_empty() {
            return Err(CoreError::Unauthenticated);
        }
        for key in keys {
            let who = Principal {
                account_id: key.account_id,
                user_email: key.user_email,
            };
            let Ok(env) = self.get_environment(&who, environment).await else {
                continue;
            };
            match (&env.vm_id, env.state) {
                (Some(vm), EnvironmentState::Connected) => return Ok((who, vm.clone())),
                _ => not_connected = Some(env.state),
            }
        }
        Err(match not_connected {
            Some(state) => CoreError::FailedPrecondition(format!(
                "environment {environment:?} is {}; connect it first",
                state.as_str()
            )),
            None => CoreError::not_found("environment", environment),
        })
    }
}
