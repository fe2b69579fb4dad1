//! One SSH connection: who it logged in as, and its channels, each a
//! shell or command in the environment's sandbox.

use std::collections::HashMap;
use std::sync::Arc;

use paddock_core::exec::{ExecEvent, ExecRequest, PtyCommand, PtyInput, PtyOutput, PtySpec};
use paddock_core::ids::VmId;
use paddock_core::model::Principal;
use paddock_core::service::{error_chain, Service};
use russh::keys::{HashAlg, PublicKey};
use russh::server::{Auth, Handle, Msg, Session};
use russh::{Channel, ChannelId, CryptoVec};
use tokio::sync::mpsc;

/// Accepts connections; one [`Connection`] each.
pub struct Gateway {
    pub service: Arc<Service>,
    /// The account gateway, which says whom a key logs in as.
    pub environments: Arc<paddock_gateway::Gateway>,
}

impl russh::server::Server for Gateway {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<std::net::SocketAddr>) -> Connection {
        Connection {
            service: Arc::clone(&self.service),
            environments: Arc::clone(&self.environments),
            peer,
            login: None,
            refusal: None,
            channels: HashMap::new(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(error = %error, "SSH session ended with an error");
    }
}

#[derive(Default)]
struct ChannelState {
    /// The terminal the client asked for: (cols, rows).
    pty: Option<(u16, u16)>,
    /// Input of the channel's PTY session, once it runs.
    input: Option<mpsc::Sender<PtyInput>>,
    /// The PTY session's id, to end it with the channel.
    pty_id: Option<String>,
    /// Stdin of the channel's command (no terminal); dropped at EOF.
    stdin: Option<mpsc::Sender<bytes::Bytes>>,
}

pub struct Connection {
    service: Arc<Service>,
    environments: Arc<paddock_gateway::Gateway>,
    peer: Option<std::net::SocketAddr>,
    login: Option<(Principal, VmId)>,
    /// Why a holder of a registered key reaches no environment (unknown,
    /// not theirs, not connected): said on the session's channel, since
    /// SSH has no way to say it with a refused login.
    refusal: Option<String>,
    channels: HashMap<ChannelId, ChannelState>,
}

fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX).max(1)
}

impl Connection {
    fn login(&self) -> Result<&(Principal, VmId), russh::Error> {
        self.login.as_ref().ok_or(russh::Error::NotAuthenticated)
    }

    /// Tells a refused user why on `channel` (stderr, exit status 1) and
    /// closes it; false when the login was not refused.
    async fn say_refusal(&self, channel: ChannelId, session: &mut Session) -> bool {
        let Some(reason) = &self.refusal else {
            return false;
        };
        let _ = session.channel_success(channel);
        let handle = session.handle();
        let message = format!("paddock: {reason}\r\n");
        let _ = handle
            .extended_data(channel, 1, message.into_bytes().into())
            .await;
        finish(&handle, channel, 1).await;
        true
    }

    /// Runs `command` (or the login shell) in a PTY and pumps it to the
    /// channel until it exits.
    async fn start_pty(
        &mut self,
        channel: ChannelId,
        command: PtyCommand,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let (who, vm) = self.login()?.clone();
        let state = self.channels.entry(channel).or_default();
        let (cols, rows) = state.pty.unwrap_or((80, 24));
        let spec = PtySpec {
            id: None,
            cols,
            rows,
            command,
        };
        let started = async {
            let info = self
                .service
                .vms()
                .pty_create(&who.account_id, &vm, spec)
                .await?;
            let conn = self
                .service
                .vms()
                .pty_attach(&who.account_id, &vm, &info.id)
                .await?;
            Ok::<_, paddock_core::CoreError>((info.id, conn))
        }
        .await;
        let (pty_id, conn) = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "SSH: could not start a PTY");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        let state = self.channels.entry(channel).or_default();
        state.input = Some(conn.input);
        state.pty_id = Some(pty_id);
        session.channel_success(channel)?;
        let handle = session.handle();
        let mut output = conn.output;
        tokio::spawn(async move {
            let mut code = 255;
            while let Some(out) = output.recv().await {
                match out {
                    PtyOutput::Data(b) => {
                        if handle
                            .data(channel, CryptoVec::from_slice(&b))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    PtyOutput::Exit(c) => {
                        code = c;
                        break;
                    }
                }
            }
            finish(&handle, channel, code).await;
        });
        Ok(())
    }

    /// Runs a command without a terminal: stdout and stderr apart.
    async fn start_exec(
        &mut self,
        channel: ChannelId,
        command: String,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let (who, vm) = self.login()?.clone();
        let (stdin, stdin_stream) = mpsc::channel(64);
        let request = ExecRequest {
            started: None,
            user: None,
            argv: vec!["/bin/sh".into(), "-c".into(), command],
            env: Vec::new(),
            cwd: None,
            stdin: None,
            stdin_stream: Some(stdin_stream),
            timeout: None,
        };
        let mut stream = match self.service.vms().exec(&who.account_id, &vm, request).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "SSH: could not run a command");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        self.channels.entry(channel).or_default().stdin = Some(stdin);
        session.channel_success(channel)?;
        let handle = session.handle();
        tokio::spawn(async move {
            let mut code = 255;
            while let Some(event) = stream.recv().await {
                let sent = match event {
                    Ok(ExecEvent::Stdout(b)) => handle
                        .data(channel, CryptoVec::from_slice(&b))
                        .await
                        .is_ok(),
                    Ok(ExecEvent::Stderr(b)) => handle
                        .extended_data(channel, 1, CryptoVec::from_slice(&b))
                        .await
                        .is_ok(),
                    Ok(ExecEvent::Exit(status)) => {
                        code = status.exit_code();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SSH: a command's stream failed");
                        break;
                    }
                };
                if !sent {
                    return;
                }
            }
            finish(&handle, channel, code).await;
        });
        Ok(())
    }
}

/// Exit status, EOF and close: what a client waits for to end.
async fn finish(handle: &Handle, channel: ChannelId, code: i32) {
    let status = u32::try_from(code).unwrap_or(255);
    let _ = handle.exit_status_request(channel, status).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let outcome = self.environments.ssh_login(&fingerprint, user).await;
        self.environments
            .audit_ssh_login(&fingerprint, user, self.peer, outcome.as_ref())
            .await;
        match outcome {
            Ok(login) => {
                tracing::info!(environment = user, user = %login.0.user_email, peer = ?self.peer, "SSH login");
                self.login = Some(login);
                Ok(Auth::Accept)
            }
            Err(e @ paddock_core::CoreError::Unauthenticated) => {
                tracing::info!(environment = user, peer = ?self.peer, reason = %e, "SSH login refused");
                Ok(Auth::reject())
            }
            Err(e) => {
                // The key is registered: its holder may learn why it
                // reaches nothing, on the session it opens.
                tracing::info!(environment = user, peer = ?self.peer, reason = %e, "SSH login refused; reason sent");
                self.refusal = Some(match e {
                    paddock_core::CoreError::NotFound { kind, id } => {
                        format!("{kind} {id:?} not found (or not shared with this key's user)")
                    }
                    other => other.to_string(),
                });
                Ok(Auth::Accept)
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if self.refusal.is_none() {
            self.login()?;
        }
        self.channels.insert(channel.id(), ChannelState::default());
        Ok(true)
    }

    /// `ssh -L`: a connection to a port as the sandbox sees it (its own
    /// loopback for `localhost`), made from inside its network namespace,
    /// so the VM's egress rules apply to anything else.
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some((who, vm)) = self.login.clone() else {
            return Ok(false);
        };
        let ip: std::net::IpAddr = match host {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            other => match other.trim_matches(['[', ']']).parse() {
                Ok(ip) => ip,
                Err(_) => {
                    tracing::info!(host, "SSH forward refused: only addresses and localhost");
                    return Ok(false);
                }
            },
        };
        let Ok(port) = u16::try_from(port) else {
            return Ok(false);
        };
        let mut upstream = match self
            .service
            .vms()
            .connect_in_vm(&who.account_id, &vm, ip, port)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%ip, port, error = %error_chain(&e), "SSH forward failed");
                return Ok(false);
            }
        };
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        });
        Ok(true)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.entry(channel).or_default().pty = Some((clamp(cols), clamp(rows)));
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.say_refusal(channel, session).await {
            return Ok(());
        }
        self.start_pty(channel, PtyCommand::DefaultShell, session)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.say_refusal(channel, session).await {
            return Ok(());
        }
        let command = String::from_utf8_lossy(data).into_owned();
        let with_pty = self.channels.get(&channel).is_some_and(|c| c.pty.is_some());
        if with_pty {
            self.start_pty(channel, PtyCommand::CommandLine(command), session)
                .await
        } else {
            self.start_exec(channel, command, session).await
        }
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(state) = self.channels.get(&channel) else {
            return Ok(());
        };
        let data = bytes::Bytes::copy_from_slice(data);
        if let Some(input) = state.input.clone() {
            let _ = input.send(PtyInput::Data(data)).await;
        } else if let Some(stdin) = state.stdin.clone() {
            let _ = stdin.send(data).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // End of the client's input is end of the command's stdin.
        if let Some(state) = self.channels.get_mut(&channel) {
            state.stdin = None;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.pty = Some((clamp(cols), clamp(rows)));
            if let Some(input) = c.input.clone() {
                let _ = input
                    .send(PtyInput::Resize {
                        cols: clamp(cols),
                        rows: clamp(rows),
                    })
                    .await;
            }
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A closed channel ends its PTY session: a dropped connection
        // leaves nothing running in the sandbox.
        if let (Some(state), Some((who, vm))) = (self.channels.remove(&channel), &self.login) {
            if let Some(pty) = state.pty_id {
                let _ = self.service.vms().pty_kill(&who.account_id, vm, &pty).await;
            }
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some((who, vm)) = self.login.take() else {
            return;
        };
        let ptys: Vec<String> = self
            .channels
            .drain()
            .filter_map(|(_, c)| c.pty_id)
            .collect();
        if ptys.is_empty() {
            return;
        }
        let service = Arc::clone(&self.service);
        tokio::spawn(async move {
            for pty in ptys {
                let _ = service.vms().pty_kill(&who.account_id, &vm, &pty).await;
            }
        });
    }
}
