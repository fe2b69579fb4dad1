//! Custom domains' DNS records by RFC 2136 dynamic update, signed with a
//! TSIG key (RFC 8945): the protocol BIND, Knot, PowerDNS and most
//! self-hosted DNS servers accept. Each update replaces the name's A
//! record with this server's public address in one message.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::update_message::{self, UpdateMessage};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use paddock_core::domain_backend::DomainBackend;
use paddock_core::model::DnsCredentials;
use tokio::net::UdpSocket;

const TIMEOUT: Duration = Duration::from_secs(5);
const RECORD_TTL: u32 = 300;

/// Makes custom domains' records point at `address`.
pub struct Rfc2136 {
    pub address: Ipv4Addr,
}

/// The credentials of the `rfc2136` provider, checked.
struct Target {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
}

fn parse(creds: &DnsCredentials) -> Result<Target, (String, String)> {
    let get = |k: &str| {
        creds
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| (k.to_owned(), "required".to_owned()))
    };
    let server = get("server")?;
    let server: SocketAddr = server
        .parse()
        .or_else(|_| server.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| ("server".to_owned(), "must be ip or ip:port".to_owned()))?;
    let zone = Name::from_ascii(get("zone")?)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| ("zone".to_owned(), e.to_string()))?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(get("key_secret")?)
        .map_err(|_| ("key_secret".to_owned(), "must be base64".to_owned()))?;
    let algorithm = match creds.get("key_algorithm").map(String::as_str) {
        None | Some("hmac-sha256") => TsigAlgorithm::HmacSha256,
        Some("hmac-sha384") => TsigAlgorithm::HmacSha384,
        Some("hmac-sha512") => TsigAlgorithm::HmacSha512,
        Some(_) => {
            return Err((
                "key_algorithm".to_owned(),
                "hmac-sha256, hmac-sha384 or hmac-sha512".to_owned(),
            ))
        }
    };
    let key_name =
        Name::from_ascii(get("key_name")?).map_err(|e| ("key_name".to_owned(), e.to_string()))?;
    let signer = TSigner::new(secret, algorithm, key_name, 300)
        .map_err(|e| ("key_algorithm".to_owned(), e.to_string()))?;
    for k in creds.keys() {
        if !["server", "zone", "key_name", "key_secret", "key_algorithm"].contains(&k.as_str()) {
            return Err((k.clone(), "unknown rfc2136 credential".to_owned()));
        }
    }
    Ok(Target {
        server,
        zone,
        signer,
    })
}

fn record_name(domain: &str, zone: &Name) -> Result<Name, String> {
    let mut name = Name::from_ascii(domain).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    if !zone.zone_of(&name) {
        return Err(format!("{domain} is not in the zone {zone}"));
    }
    Ok(name)
}

/// The server to update, the record's name, and an update that deletes
/// the name's A records.
fn delete_a_records(
    credentials: &DnsCredentials,
    domain: &str,
) -> Result<(Target, Name, Message), String> {
    let target = parse(credentials).map_err(|(k, m)| format!("{k}: {m}"))?;
    let name = record_name(domain, &target.zone)?;
    let msg = update_message::delete_rrset(
        Record::update0(name.clone(), 0, RecordType::A).into_record_of_rdata(),
        target.zone.clone(),
        false,
    );
    Ok((target, name, msg))
}

async fn send(target: &Target, mut msg: Message) -> Result<(), String> {
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
    .unwrap_or(u32::MAX);
    msg.finalize(&target.signer, now)
        .map_err(|e| format!("sign the update: {e}"))?;
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("encode the update: {e}"))?;
    let socket = UdpSocket::bind(if target.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await
    .map_err(|e| e.to_string())?;
    socket
        .connect(target.server)
        .await
        .map_err(|e| e.to_string())?;
    socket.send(&bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf))
        .await
        .map_err(|_| format!("{} did not answer the update", target.server))?
        .map_err(|e| format!("{}: {e}", target.server))?;
    let reply = Message::from_vec(&buf[..n]).map_err(|e| format!("bad reply: {e}"))?;
    match reply.response_code() {
        ResponseCode::NoError => Ok(()),
        code => Err(format!("{} refused the update: {code}", target.server)),
    }
}

#[async_trait]
impl DomainBackend for Rfc2136 {
    fn check_credentials(
        &self,
        provider: &str,
        credentials: &DnsCredentials,
    ) -> Result<(), (String, String)> {
        if provider != "rfc2136" {
            return Err((
                "dns_provider".into(),
                format!("{provider} is not supported"),
            ));
        }
        parse(credentials).map(|_| ())
    }

    async fn publish(
        &self,
        _provider: &str,
        credentials: &DnsCredentials,
        domain: &str,
    ) -> Result<(), String> {
        // Delete the name's A records, then add ours: one atomic update.
        let (target, name, mut msg) = delete_a_records(credentials, domain)?;
        let mut add = Record::from_rdata(name, RECORD_TTL, RData::A(A(self.address)));
        add.set_dns_class(DNSClass::IN);
        msg.add_update(add);
        send(&target, msg).await
    }

    async fn unpublish(
        &self,
        _provider: &str,
        credentials: &DnsCredentials,
        domain: &str,
    ) -> Result<(), String> {
        let (target, _, msg) = delete_a_records(credentials, domain)?;
        send(&target, msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pairs: &[(&str, &str)]) -> DnsCredentials {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn credentials_are_checked_by_key() {
        let good = creds(&[
            ("server", "127.0.0.1:5353"),
            ("zone", "example.test"),
            ("key_name", "k"),
            ("key_secret", "c2VjcmV0"),
        ]);
        assert!(parse(&good).is_ok());
        let mut bad = good.clone();
        bad.insert("key_secret".into(), "***".into());
        assert_eq!(parse(&bad).err().map(|e| e.0), Some("key_secret".into()));
        let mut bad = good.clone();
        bad.remove("server");
        assert_eq!(parse(&bad).err().map(|e| e.0), Some("server".into()));
        let mut bad = good;
        bad.insert("extra".into(), "x".into());
        assert_eq!(parse(&bad).err().map(|e| e.0), Some("extra".into()));
    }

    #[test]
    fn names_must_be_in_the_zone() {
        let zone = Name::from_ascii("example.test.").expect("zone");
        assert!(record_name("app.example.test", &zone).is_ok());
        assert!(record_name("app.other.test", &zone).is_err());
    }
}
