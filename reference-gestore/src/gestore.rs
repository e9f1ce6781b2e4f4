//! One provider's shared context: its config, clock, store, provider directory, trust anchors,
//! signing identity and antivirus. The points (access, reception, delivery) and the workers take it
//! by reference; nothing in it changes while the provider runs.

use crate::antivirus::Antivirus;
use crate::clock::Clock;
use crate::config::Config;
use crate::password;
use crate::store::{Account, SqlStore, Store};
use anyhow::Context;
use openssl::pkey::PKey;
use openssl::x509::X509;
use pec_formats::build::{BuildOptions, Provider, TextForm};
use pec_formats::directory::Directory;
use pec_formats::smime::{CrlSet, DigestAlg, SignatureStyle, Signer, TrustStore};
use std::sync::Arc;
use tokio::sync::Notify;

/// A running provider's context.
pub struct Gestore {
    /// The config it was started with.
    pub config: Config,
    /// The one clock (RFC 6109 §4.1: one time value per transaction).
    pub clock: Arc<dyn Clock>,
    /// The durable store.
    pub store: SqlStore,
    /// The provider directory (Indice dei gestori, RFC 6109 §4.5).
    pub directory: Directory,
    /// Trust anchors for other providers' signatures: the configured CA files plus the directory's
    /// certificates (RFC 6109 §5.6).
    pub trust: TrustStore,
    /// The configured CRLs of the trusted CAs (`trust_crls`).
    pub crls: CrlSet,
    /// The signing identity (RFC 6109 §5.5).
    pub signer: Signer,
    /// The antivirus (RFC 6109 §5.4).
    pub antivirus: Antivirus,
    /// Roots for the TLS certificates of other providers' servers: the configured trust files.
    pub tls_roots: rustls::RootCertStore,
    /// Woken when new outbound work or timers were committed.
    pub work: Notify,
}

/// Reads a PEM file, naming it on error.
pub fn read_pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The signing identity the config names: key, certificate, chain and digest (RFC 6109 §5.5).
/// Also for a harness that signs as this provider without running it (the conformance runner).
pub fn load_signer(config: &Config) -> anyhow::Result<Signer> {
    let key = PKey::private_key_from_pem(&read_pem(&config.signing.key)?)
        .with_context(|| format!("signing key {}", config.signing.key.display()))?;
    let cert = X509::from_pem(&read_pem(&config.signing.cert)?)
        .with_context(|| format!("signing certificate {}", config.signing.cert.display()))?;
    let mut chain = Vec::new();
    for p in &config.signing.chain {
        chain.extend(X509::stack_from_pem(&read_pem(p)?).with_context(|| p.display().to_string())?);
    }
    Ok(Signer {
        key,
        cert,
        chain,
        digest: digest_from_name(&config.signing.digest)?,
    })
}

/// The provider as the builders see it, from its config and signing identity: name, first
/// domain, receipt text form and S/MIME spelling (profile settings, digest §4.1).
pub fn provider_of<'a>(config: &'a Config, signer: &'a Signer) -> Provider<'a> {
    // Config::check makes sure there is a domain.
    let domain = config.provider.domains.first().map_or("", String::as_str);
    let mut p = Provider::new(&config.provider.name, domain, signer);
    p.options = BuildOptions {
        text_form: if config.profile.text_form == "alternative" {
            TextForm::Alternative
        } else {
            TextForm::Plain
        },
        signature_style: if config.profile.signature_style == "legacy" {
            SignatureStyle::Legacy
        } else {
            SignatureStyle::Rfc5751
        },
    };
    p
}

/// The digest named in the config (`sha256`, `sha1`, `sha384`, `sha512`).
pub fn digest_from_name(name: &str) -> anyhow::Result<DigestAlg> {
    Ok(match name.to_ascii_lowercase().replace('-', "").as_str() {
        "sha1" => DigestAlg::Sha1,
        "sha256" => DigestAlg::Sha256,
        "sha384" => DigestAlg::Sha384,
        "sha512" => DigestAlg::Sha512,
        other => anyhow::bail!("signing.digest: unknown digest `{other}`"),
    })
}

/// The provider directory the config names. A signed `.p7m` is verified before use: its signer
/// must be one of `directory_trust` or chain to one of them, and the content must be unaltered
/// (RFC 6109 §4.5, §7: a swapped certificate or domain list subverts verification).
pub fn load_directory(config: &Config) -> anyhow::Result<Directory> {
    let path = &config.directory;
    if !config.directory_is_signed() {
        return Directory::load(path).with_context(|| format!("directory {}", path.display()));
    }
    let mut anchors = Vec::new();
    for p in &config.directory_trust {
        anchors.extend(
            X509::stack_from_pem(&read_pem(p)?)
                .with_context(|| format!("directory_trust {}", p.display()))?,
        );
    }
    if anchors.is_empty() {
        anyhow::bail!(
            "directory {}: directory_trust holds no certificate to check its signature",
            path.display()
        );
    }
    Directory::load_signed(path, &anchors).map_err(|e| {
        anyhow::anyhow!(
            "directory {}: the signed directory is refused (RFC 6109 §4.5): {e}",
            path.display()
        )
    })
}

impl Gestore {
    /// Loads every file the config names, opens the store and creates the configured mailboxes
    /// that do not exist yet.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Gestore>> {
        let signer = load_signer(&config)?;
        let directory = load_directory(&config)?;
        let mut anchors = directory.trusted_certificates();
        for p in &config.trust {
            anchors.extend(
                X509::stack_from_pem(&read_pem(p)?).with_context(|| p.display().to_string())?,
            );
        }
        let store = SqlStore::open_config(&config.store)
            .await
            .with_context(|| format!("opening the store {}", config.store.describe()))?;
        for m in &config.mailboxes {
            if store.account(&m.address).await?.is_none() {
                store
                    .put_account(&Account {
                        address: m.address.clone(),
                        password_hash: password::hash(&m.password)?,
                        quota: config.profile.mailbox_quota.0 as i64,
                        disabled: false,
                    })
                    .await?;
            }
        }
        let mut crls = CrlSet::default();
        for p in &config.trust_crls {
            crls.extend(
                CrlSet::from_path(p).with_context(|| format!("trust_crls {}", p.display()))?,
            );
        }
        let antivirus = Antivirus::from_config(config.antivirus.clamd.as_deref());
        let tls_roots = crate::tls::root_store_from_files(&config.trust)
            .map_err(|e| anyhow::anyhow!("trust: {e}"))?;
        Ok(Arc::new(Gestore {
            config,
            clock,
            store,
            directory,
            trust: TrustStore { certs: anchors },
            crls,
            signer,
            antivirus,
            tls_roots,
            work: Notify::new(),
        }))
    }

    /// The provider as the builders see it.
    pub fn provider(&self) -> Provider<'_> {
        provider_of(&self.config, &self.signer)
    }

    /// The provider's main PEC domain (the first configured).
    pub fn domain(&self) -> &str {
        &self.config.provider.domains[0]
    }

    /// Whether `address` belongs to one of our domains.
    pub fn is_local(&self, address: &str) -> bool {
        domain_of(address).is_some_and(|d| self.config.is_local_domain(d))
    }
}

/// The domain of an address (after the last `@`).
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

/// The local part of an address.
pub fn local_part(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(l, _)| l)
}
