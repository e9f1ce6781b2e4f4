//! `pec-gestore dev`: a ready-to-use set of providers on loopback with nothing to prepare. It writes
//! a state folder with a test CA, each provider's signing and TLS keys, one provider directory that
//! lists them all (so they trust each other), a config per provider and a few mailboxes, and
//! `dev.json` with everything a script or the conformance runner needs to connect.

use crate::config::Config;
use anyhow::Context;
use openssl::x509::X509;
use pec_formats::directory::{Directory, ProviderEntry};
use pec_formats::pki::TestCa;
use serde::Serialize;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// The password of every dev mailbox (printed; dev only).
pub const DEV_PASSWORD: &str = "pec-dev-password";
/// The users created in each dev provider.
pub const DEV_USERS: &[&str] = &["alice", "bob", "carol"];

/// One provider of a dev topology, as `dev.json` describes it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DevInstance {
    /// The provider name.
    pub name: String,
    /// Its PEC domain.
    pub domain: String,
    /// Its config file.
    pub config: PathBuf,
    /// Submission with implicit TLS.
    pub submission_tls: SocketAddr,
    /// Submission with STARTTLS.
    pub submission_starttls: SocketAddr,
    /// Inbound SMTP from other providers.
    pub inbound: SocketAddr,
    /// IMAP with implicit TLS (absent in a dev.json written before IMAP existed).
    #[serde(default)]
    pub imap_tls: Option<SocketAddr>,
    /// IMAP with STARTTLS.
    #[serde(default)]
    pub imap_starttls: Option<SocketAddr>,
    /// POP3 with implicit TLS.
    #[serde(default)]
    pub pop3_tls: Option<SocketAddr>,
    /// POP3 with STLS.
    #[serde(default)]
    pub pop3_starttls: Option<SocketAddr>,
    /// The service address (From of notices) and receipt mailbox.
    pub service_address: String,
    /// The mailboxes and their password.
    pub users: Vec<DevUser>,
}

/// A dev mailbox.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DevUser {
    /// The address (also the login).
    pub address: String,
    /// The password.
    pub password: String,
}

/// `dev.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DevState {
    /// The test CA every TLS and signing certificate chains to: trust it in clients.
    pub ca: PathBuf,
    /// The provider directory.
    pub directory: PathBuf,
    /// The providers.
    pub instances: Vec<DevInstance>,
}

/// A free loopback port for a dev listener. It is picked below the kernel's ephemeral range
/// (32768 and up on Linux), where outgoing connections take their local ports, so that a port
/// written into `dev.json` is not taken by a client socket before the provider binds it; among
/// those, at random. The port is only probed: a process that binds it later (a `serve` child of a
/// test) races with anyone else probing at the same time; [`reserve_port`] does not.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(random_listener()?.local_addr()?)
}

fn random_listener() -> anyhow::Result<TcpListener> {
    let mut seed = [0u8; 2];
    for _ in 0..200 {
        openssl::rand::rand_bytes(&mut seed)?;
        let port = 20_000 + u16::from_le_bytes(seed) % 12_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l);
        }
    }
    anyhow::bail!("no free loopback port between 20000 and 32000")
}

/// Listeners bound by [`reserve_port`] and held until [`take_reserved`] hands them to the
/// provider that starts on them in this process, so that topologies prepared at the same time
/// (parallel tests, the `dev` command beside a test) never get the same port.
static RESERVED: std::sync::Mutex<Vec<TcpListener>> = std::sync::Mutex::new(Vec::new());

/// A free loopback port, bound now and held for this process (see [`free_port`] for the range).
pub fn reserve_port() -> anyhow::Result<SocketAddr> {
    let l = random_listener()?;
    let addr = l.local_addr()?;
    RESERVED.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    Ok(addr)
}

/// The listener reserved on `addr`, if this process holds one.
pub fn take_reserved(addr: SocketAddr) -> Option<TcpListener> {
    let mut held = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let i = held
        .iter()
        .position(|l| l.local_addr().ok() == Some(addr))?;
    Some(held.swap_remove(i))
}

/// Gives back the reservations of `inst`'s ports that no provider took (a caller that moved the
/// listeners elsewhere).
pub fn release(inst: &DevInstance) {
    let ports = [
        Some(inst.submission_tls),
        Some(inst.submission_starttls),
        Some(inst.inbound),
        inst.imap_tls,
        inst.imap_starttls,
        inst.pop3_tls,
        inst.pop3_starttls,
    ];
    for a in ports.into_iter().flatten() {
        drop(take_reserved(a));
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn letter(i: usize) -> String {
    ((b'a' + (i % 26) as u8) as char).to_string()
}

/// Writes a dev topology of `n` providers into `dir` (created; an existing `dev.json` is reused so
/// mailboxes survive restarts) and returns it.
pub fn prepare(dir: &Path, n: usize, test_addresses: bool) -> anyhow::Result<DevState> {
    anyhow::ensure!(
        (1..=26).contains(&n),
        "--instances must be between 1 and 26"
    );
    let json = dir.join("dev.json");
    if json.exists() {
        let state: DevState = serde_json::from_slice(&std::fs::read(&json)?)
            .with_context(|| format!("reading {}", json.display()))?;
        // Reused only when it has every listener this version writes (IMAP/POP3 came later).
        if state.instances.len() == n && state.instances.iter().all(|i| i.imap_tls.is_some()) {
            return Ok(state);
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = TestCa::generate("PEC Test CA (dev)")?;
    ca.write_to(dir)?;
    // The built-in TSA that seals the message log every day (digest §11; registro.rs).
    let (tsa_key, tsa_cert) = ca.issue_tsa("PEC Test TSA (dev)")?;
    write(&dir.join("tsa.key"), &tsa_key.private_key_to_pem_pkcs8()?)?;
    write(&dir.join("tsa.pem"), &tsa_cert.to_pem()?)?;
    let mut instances = Vec::new();
    let mut directory = Directory::default();
    for i in 0..n {
        let l = letter(i);
        let name = format!("Gestore di prova {}", l.to_uppercase());
        let domain = format!("pec.{l}.test");
        let service = format!("posta-certificata@{domain}");
        let sub = dir.join(format!("gestore-{l}"));
        std::fs::create_dir_all(&sub)?;
        let id = ca.issue_provider(&name, &service)?;
        write(&sub.join("signer.key"), &id.key.private_key_to_pem_pkcs8()?)?;
        write(&sub.join("signer.pem"), &id.cert.to_pem()?)?;
        let (tls_key, tls_cert) = ca.issue_tls_server(&["localhost", "127.0.0.1", &domain])?;
        write(&sub.join("tls.key"), &tls_key.private_key_to_pem_pkcs8()?)?;
        let mut chain = tls_cert.to_pem()?;
        chain.extend(ca.cert.to_pem()?);
        write(&sub.join("tls.pem"), &chain)?;
        directory
            .providers
            .push(entry(&name, &domain, &service, &id.cert)?);
        instances.push(DevInstance {
            name,
            domain: domain.clone(),
            config: sub.join("config.yaml"),
            submission_tls: reserve_port()?,
            submission_starttls: reserve_port()?,
            inbound: reserve_port()?,
            imap_tls: Some(reserve_port()?),
            imap_starttls: Some(reserve_port()?),
            pop3_tls: Some(reserve_port()?),
            pop3_starttls: Some(reserve_port()?),
            service_address: service,
            users: DEV_USERS
                .iter()
                .map(|u| DevUser {
                    address: format!("{u}@{domain}"),
                    password: DEV_PASSWORD.into(),
                })
                .collect(),
        });
    }
    let dir_path = dir.join("directory.ldif");
    write(&dir_path, directory.to_ldif().as_bytes())?;
    for inst in &instances {
        let routes: String = instances
            .iter()
            .filter(|o| o.domain != inst.domain)
            .map(|o| format!("  {}: {}\n", o.domain, o.inbound))
            .collect();
        let mailboxes: String = inst
            .users
            .iter()
            .map(|u| {
                format!(
                    "  - {{ address: {}, password: {} }}\n",
                    u.address, u.password
                )
            })
            .collect();
        let yaml = format!(
            "# Written by `pec-gestore dev`.\n\
             provider:\n  name: {name}\n  domains: [{domain}]\n  service_address: {svc}\n  mail_receipt: {svc}\n\
             listeners:\n  submission_tls: {stls}\n  submission_starttls: {sst}\n  inbound: {inb}\n\
             \x20 imap_tls: {itls}\n  imap_starttls: {ist}\n  pop3_tls: {ptls}\n  pop3_starttls: {pst}\n\
             tls: {{ cert: tls.pem, key: tls.key }}\n\
             signing: {{ cert: signer.pem, key: signer.key }}\n\
             directory: ../directory.ldif\n\
             trust: [../ca.pem]\n\
             store: {{ sqlite: gestore.db }}\n\
             routes:\n{routes}\
             profile: {{ test_addresses: {test_addresses} }}\n\
             log: {{ tsa_local: {{ cert: ../tsa.pem, key: ../tsa.key }} }}\n\
             mailboxes:\n{mailboxes}",
            name = inst.name,
            domain = inst.domain,
            svc = inst.service_address,
            stls = inst.submission_tls,
            sst = inst.submission_starttls,
            inb = inst.inbound,
            itls = opt(inst.imap_tls),
            ist = opt(inst.imap_starttls),
            ptls = opt(inst.pop3_tls),
            pst = opt(inst.pop3_starttls),
            routes = if routes.is_empty() {
                "  {}\n".to_string()
            } else {
                routes
            },
        );
        let yaml = yaml.replace("routes:\n  {}\n", "routes: {}\n");
        write(&inst.config, yaml.as_bytes())?;
        Config::load(&inst.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let state = DevState {
        ca: dir.join("ca.pem"),
        directory: dir_path,
        instances,
    };
    write(&json, &serde_json::to_vec_pretty(&state)?)?;
    Ok(state)
}

fn opt(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "null".into(), |a| a.to_string())
}

/// The directory entry of a provider (RFC 6109 §4.5).
pub fn entry(
    name: &str,
    domain: &str,
    service: &str,
    cert: &X509,
) -> anyhow::Result<ProviderEntry> {
    let der = cert.to_der()?;
    let hash = pec_formats::directory::certificate_hash(cert);
    Ok(ProviderEntry {
        name: name.into(),
        managed_domains: vec![domain.into()],
        mail_receipt: service.into(),
        certificate_hashes: vec![hash],
        certificates: vec![der],
        other: vec![],
    })
}

/// How to connect, for people.
pub fn describe(state: &DevState) -> String {
    let mut s = format!(
        "PEC dev providers are running. Trust this CA in your client: {}\n",
        state.ca.display()
    );
    for i in &state.instances {
        s += &format!(
            "\n{} ({})\n  submission (implicit TLS): {}\n  submission (STARTTLS):     {}\n  inbound SMTP:              {}\n  IMAP (implicit TLS):       {}\n  IMAP (STARTTLS):           {}\n  POP3 (implicit TLS):       {}\n  POP3 (STLS):               {}\n  users: {}  password: {}\n",
            i.name,
            i.domain,
            i.submission_tls,
            i.submission_starttls,
            i.inbound,
            opt(i.imap_tls),
            opt(i.imap_starttls),
            opt(i.pop3_tls),
            opt(i.pop3_starttls),
            i.users
                .iter()
                .map(|u| u.address.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            DEV_PASSWORD,
        );
    }
    s
}
