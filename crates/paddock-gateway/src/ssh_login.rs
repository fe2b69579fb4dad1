//! SSH logins as an environment: the SSH gateway (`paddock-ssh`) asks
//! whom a key acts for and which connected sandbox it reaches.

use paddock_core::error::CoreError;
use paddock_core::ids::VmId;
use paddock_core::model::gateway::EnvironmentState;
use paddock_core::model::Principal;

use crate::Gateway;

impl Gateway {
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
