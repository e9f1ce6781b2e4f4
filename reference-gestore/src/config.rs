//! The configuration of one provider, read from YAML (serde-saphyr). Paths are relative to the
//! config file's folder. Every limit that real providers set differently is a profile setting
//! (anchors §D: size, size × recipients, recipients, ordinary mail policy, receipt text form).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: String,
    /// What is wrong (for YAML errors: line, column and a snippet).
    pub message: String,
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who the provider is.
    pub provider: ProviderConfig,
    /// Where it listens.
    pub listeners: Listeners,
    /// TLS certificate and key for every listener (PEM).
    pub tls: TlsConfig,
    /// The signing key and certificate (RFC 6109 §5.5 profile).
    pub signing: SigningConfig,
    /// The provider directory, Indice dei gestori (RFC 6109 §4.5): an LDIF file, or its distributed
    /// form, a signed PKCS#7 whose name ends in `.p7m` (then `directory_trust` is needed).
    pub directory: PathBuf,
    /// Who may sign the directory (PEM files): the signer of a `.p7m` directory must be one of these
    /// certificates or chain to one of them, else the provider refuses to start (RFC 6109 §4.5, §7).
    #[serde(default)]
    pub directory_trust: Vec<PathBuf>,
    /// Trust anchors for provider certificates (PEM files): the AgID CA1 role.
    pub trust: Vec<PathBuf>,
    /// Certificate revocation lists (PEM or DER) of those CAs: a signature by a certificate revoked
    /// before the message's time is refused (digest §7.2: "check the CRL").
    #[serde(default)]
    pub trust_crls: Vec<PathBuf>,
    /// The store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Outbound routes: domain → `host:port`; `"*"` for every other domain (no DNS on loopback).
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Limits and policies.
    #[serde(default)]
    pub profile: Profile,
    /// The 12h/24h rules (RFC 6109 §3.1.6).
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Antivirus.
    #[serde(default)]
    pub antivirus: Antivirus,
    /// Mailboxes created at start if missing (dev and tests; `pec-gestore admin` manages the rest).
    #[serde(default)]
    pub mailboxes: Vec<MailboxConfig>,
    /// The message log: daily seals and retention (digest §11; registro.rs).
    #[serde(default)]
    pub log: crate::registro::LogConfig,
}

/// Who the provider is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider name: `gestore-emittente` in daticert and `providerName` in the directory.
    pub name: String,
    /// The PEC domains it manages.
    pub domains: Vec<String>,
    /// The From of envelopes and notices (RFC 6109 §2.2.6), e.g. `posta-certificata@pec.a.test`.
    pub service_address: String,
    /// The service mailbox for presa in carico and rilevazione virus (`mailReceipt`, RFC 6109 §2.2.5).
    pub mail_receipt: String,
}

/// Listening addresses; `127.0.0.1:0` picks a free port.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Submission with implicit TLS (RFC 8314).
    pub submission_tls: Option<SocketAddr>,
    /// Submission with STARTTLS (RFC 6409, RFC 3207).
    pub submission_starttls: Option<SocketAddr>,
    /// Inbound SMTP from other providers and the Internet; STARTTLS offered, plaintext accepted
    /// (RFC 6109 §5.3).
    pub inbound: Option<SocketAddr>,
    /// IMAP with implicit TLS (RFC 8314, "imaps").
    #[serde(default)]
    pub imap_tls: Option<SocketAddr>,
    /// IMAP with STARTTLS (RFC 3501 §6.2.1).
    #[serde(default)]
    pub imap_starttls: Option<SocketAddr>,
    /// POP3 with implicit TLS (RFC 8314, "pop3s").
    #[serde(default)]
    pub pop3_tls: Option<SocketAddr>,
    /// POP3 with STLS (RFC 2595 §4).
    #[serde(default)]
    pub pop3_starttls: Option<SocketAddr>,
}

/// TLS material.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// The signing identity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Provider certificate, PEM.
    pub cert: PathBuf,
    /// Provider key, PEM.
    pub key: PathBuf,
    /// Intermediate certificates to embed, PEM.
    #[serde(default)]
    pub chain: Vec<PathBuf>,
    /// `sha256` (default) or `sha1` (as some real providers still sign).
    #[serde(default = "default_digest")]
    pub digest: String,
}

fn default_digest() -> String {
    "sha256".into()
}

/// Where the store lives: `store: { sqlite: PATH }` (the default, `gestore.db`) or
/// `store: { postgres: "postgres://user@host:port/db" }`, exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawStoreConfig")]
pub struct StoreConfig {
    /// The SQLite database file; empty when the store is on PostgreSQL.
    #[serde(skip_serializing_if = "path_is_empty")]
    pub sqlite: PathBuf,
    /// The PostgreSQL database URL, when the store is there (the database must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
}

fn path_is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// The `store:` section as written, before the exactly-one check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreConfig {
    #[serde(default)]
    sqlite: Option<PathBuf>,
    #[serde(default)]
    postgres: Option<String>,
}

impl TryFrom<RawStoreConfig> for StoreConfig {
    type Error = String;
    fn try_from(r: RawStoreConfig) -> Result<StoreConfig, String> {
        match (r.sqlite, r.postgres) {
            (Some(p), None) if !path_is_empty(&p) => Ok(StoreConfig::sqlite(p)),
            (None, Some(u)) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(StoreConfig {
                    sqlite: PathBuf::new(),
                    postgres: Some(u),
                })
            }
            (None, Some(u)) => Err(format!(
                "store.postgres: `{u}` is not a postgres:// URL (postgres://user@host:port/db)"
            )),
            (Some(_), Some(_)) => {
                Err("store: give either sqlite or postgres, not both".to_string())
            }
            _ => Err("store: give sqlite: PATH or postgres: URL".to_string()),
        }
    }
}

impl StoreConfig {
    /// A store in the SQLite file `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            sqlite: path.into(),
            postgres: None,
        }
    }

    /// A store in the PostgreSQL database at `url`.
    pub fn postgres(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            sqlite: PathBuf::new(),
            postgres: Some(url.into()),
        }
    }

    /// The store for messages: the SQLite path or the PostgreSQL URL.
    pub fn describe(&self) -> String {
        match &self.postgres {
            Some(u) => u.clone(),
            None => self.sqlite.display().to_string(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::sqlite("gestore.db")
    }
}

/// What the provider does with ordinary (non-PEC) mail arriving for a PEC mailbox
/// (RFC 6109 §2.2.2, §3.2.2; Aruba refuses by default and lets the holder enable it: anchors §D).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrdinaryMail {
    /// Wrap it in a busta di anomalia and deliver it.
    Anomaly,
    /// Refuse it at SMTP (550).
    Refuse,
    /// Forward it to a conventional address.
    Forward(String),
}

/// Limits and policies. The defaults follow the rules where they set a value and Aruba's public
/// limits where they do not (anchors §D).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// The largest message accepted (bytes), `100MiB`-style strings allowed.
    pub max_message_size: ByteSize,
    /// Count the size as size × recipients against the limit (RFC 6109 §5.2 says the law counts so).
    pub size_times_recipients: bool,
    /// Above this SMTP refuses at DATA (552) instead of sending a non-accettazione (RFC 6109 §3.1.2).
    pub hard_message_size: ByteSize,
    /// At most this many recipients (Aruba: 500).
    pub max_recipients: usize,
    /// Default mailbox quota (the provider manual's 100 MB).
    pub mailbox_quota: ByteSize,
    /// Ordinary mail arriving for PEC mailboxes.
    pub ordinary_mail: OrdinaryMail,
    /// The human-readable part of receipts: `plain` or `alternative` (text + HTML).
    pub text_form: String,
    /// The S/MIME spelling: `rfc5751` (`application/pkcs7-signature`, `micalg="sha-256"`) or
    /// `legacy` (`application/x-pkcs7-signature`, as Aruba and Namirial send): digest §4.1.
    pub signature_style: String,
    /// Enable the reserved local parts that trigger the hard paths on demand (README).
    pub test_addresses: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            // RFC 6109 §3.1.1: "Italian laws have specified this limit as being 30 MB", counted as
            // size × recipients. Read as MiB [ANALYSIS: the RFC does not say which megabyte].
            max_message_size: ByteSize(30 * 1024 * 1024),
            size_times_recipients: true,
            hard_message_size: ByteSize(100 * 1024 * 1024),
            max_recipients: 500,
            mailbox_quota: ByteSize(100 * 1024 * 1024),
            ordinary_mail: OrdinaryMail::Anomaly,
            text_form: "plain".into(),
            signature_style: "rfc5751".into(),
            test_addresses: false,
        }
    }
}

/// The time limits of RFC 6109 §3.1.6, configurable so tests can shorten them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// The preavviso deadline (12h).
    pub preavviso: Duration,
    /// The final deadline (24h); the notice goes out between 22h and 24h.
    pub finale: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            preavviso: Duration(12 * 3600),
            finale: Duration(24 * 3600),
        }
    }
}

/// Antivirus engine.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Antivirus {
    /// clamd's socket (`/path/clamd.sock` or `127.0.0.1:3310`); absent: the built-in scanner.
    pub clamd: Option<String>,
}

/// A mailbox to create at start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    /// The address.
    pub address: String,
    /// The password (hashed when stored).
    pub password: String,
}

/// A byte count written as a number or with a unit (`30MB`, `100MiB`, `512KiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration written as seconds or with a unit (`12h`, `90m`, `30s`, `2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64);

impl Duration {
    /// As a chrono duration.
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.0 as i64)
    }
}

fn number_with_unit(s: &str, units: &[(&str, u64)]) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let unit = unit.trim();
    if unit.is_empty() {
        return Ok(n);
    }
    units
        .iter()
        .find(|(u, _)| u.eq_ignore_ascii_case(unit))
        .map(|(_, m)| n.saturating_mul(*m))
        .ok_or_else(|| {
            let known: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
            format!("`{s}`: unknown unit `{unit}` (known: {})", known.join(", "))
        })
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    /// `30MB`, `100MiB`, `512KiB` or a plain number of bytes.
    fn from_str(s: &str) -> Result<Self, String> {
        const UNITS: &[(&str, u64)] = &[
            ("B", 1),
            ("KB", 1000),
            ("MB", 1000 * 1000),
            ("GB", 1000 * 1000 * 1000),
            ("KiB", 1024),
            ("MiB", 1024 * 1024),
            ("GiB", 1024 * 1024 * 1024),
        ];
        number_with_unit(s, UNITS).map(ByteSize)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl Serialize for Duration {
    /// As seconds.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StringOrNumber::deserialize(d)?.0;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StringOrNumber::deserialize(d)?.0;
        const UNITS: &[(&str, u64)] = &[("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];
        number_with_unit(&s, UNITS)
            .map(Duration)
            .map_err(serde::de::Error::custom)
    }
}

/// Accepts `30` as well as `"30MB"`.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or a number with a unit")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Config {
    /// Reads a config file; relative paths in it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut c = Config::from_yaml(&text).map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.resolve_paths(base);
        Ok(c)
    }

    /// Parses config text; the error has the line, the column and what is wrong.
    pub fn from_yaml(text: &str) -> Result<Config, String> {
        let c: Config = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    /// The config as YAML that [`Config::from_yaml`] reads back, with every path made absolute
    /// (against the current folder), so that the file may be written anywhere.
    pub fn to_yaml(&self) -> Result<String, String> {
        let mut c = self.clone();
        let cwd = std::env::current_dir().map_err(|e| format!("the current folder: {e}"))?;
        c.resolve_paths(&cwd);
        serde_saphyr::to_string(&c).map_err(|e| e.to_string())
    }

    fn check(&self) -> Result<(), String> {
        if self.provider.domains.is_empty() {
            return Err("provider.domains: at least one PEC domain is needed".into());
        }
        for a in [&self.provider.service_address, &self.provider.mail_receipt] {
            if !a.contains('@') {
                return Err(format!("provider: `{a}` is not an e-mail address"));
            }
        }
        if !matches!(self.profile.text_form.as_str(), "plain" | "alternative") {
            return Err(format!(
                "profile.text_form: `{}` (expected plain or alternative)",
                self.profile.text_form
            ));
        }
        if !matches!(self.profile.signature_style.as_str(), "rfc5751" | "legacy") {
            return Err(format!(
                "profile.signature_style: `{}` (expected rfc5751 or legacy)",
                self.profile.signature_style
            ));
        }
        // RFC 6109 §4.5: the distributed directory is signed; its signature is checked before use.
        match (self.directory_is_signed(), self.directory_trust.is_empty()) {
            (true, true) => {
                return Err(format!(
                    "directory: `{}` is a signed directory (.p7m): directory_trust must name who \
                     may sign it (PEM files)",
                    self.directory.display()
                ));
            }
            (false, false) => {
                return Err(format!(
                    "directory_trust is set but directory `{}` is not a signed .p7m",
                    self.directory.display()
                ));
            }
            _ => {}
        }
        if self.timeouts.finale < self.timeouts.preavviso {
            return Err("timeouts: finale must not come before preavviso".into());
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.signing.cert);
        fix(&mut self.signing.key);
        self.signing.chain.iter_mut().for_each(fix);
        fix(&mut self.directory);
        self.directory_trust.iter_mut().for_each(fix);
        self.trust.iter_mut().for_each(fix);
        self.trust_crls.iter_mut().for_each(fix);
        if !path_is_empty(&self.store.sqlite) {
            fix(&mut self.store.sqlite);
        }
        if let Some(t) = &mut self.log.tsa_local {
            fix(&mut t.cert);
            fix(&mut t.key);
        }
    }

    /// Whether the directory is the signed distributed form (a `.p7m` file, RFC 6109 §4.5).
    pub fn directory_is_signed(&self) -> bool {
        self.directory
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("p7m"))
    }

    /// Whether `domain` is one of ours (case-insensitive).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.provider
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The outbound route for `domain`: its own entry, else `"*"`.
    pub fn route_for(&self, domain: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            .or_else(|| self.routes.get_key_value("*"))
            .map(|(_, r)| r.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
provider:
  name: Reference PEC A
  domains: [pec.a.test]
  service_address: posta-certificata@pec.a.test
  mail_receipt: posta-certificata@pec.a.test
listeners:
  submission_tls: 127.0.0.1:0
  inbound: 127.0.0.1:0
tls: { cert: tls.pem, key: tls.key }
signing: { cert: signer.pem, key: signer.key }
directory: directory.ldif
trust: [ca.pem]
routes:
  pec.b.test: 127.0.0.1:2526
  '*': 127.0.0.1:2600
profile:
  max_message_size: 30MB
  ordinary_mail: { forward: archive@example.test }
timeouts: { preavviso: 90m, finale: 3h }
";

    #[test]
    fn a_minimal_config_reads_with_units_and_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.profile.max_message_size, ByteSize(30_000_000));
        assert_eq!(c.profile.max_recipients, 500);
        assert_eq!(
            c.profile.ordinary_mail,
            OrdinaryMail::Forward("archive@example.test".into())
        );
        assert_eq!(c.timeouts.preavviso, Duration(5400));
        assert_eq!(c.signing.digest, "sha256");
        assert_eq!(c.route_for("PEC.B.test"), Some("127.0.0.1:2526"));
        assert_eq!(c.route_for("elsewhere.test"), Some("127.0.0.1:2600"));
        assert!(c.is_local_domain("Pec.A.Test"));
    }

    #[test]
    fn a_config_written_as_yaml_reads_back_the_same() {
        let mut c = Config::from_yaml(MINIMAL).unwrap();
        c.log.tsa_local = Some(crate::registro::LocalTsa {
            cert: "tsa.pem".into(),
            key: "/abs/tsa.key".into(),
        });
        let yaml = c.to_yaml().unwrap();
        let back = Config::from_yaml(&yaml).unwrap();
        let cwd = std::env::current_dir().unwrap();
        // Relative paths became absolute; the rest is unchanged.
        assert_eq!(back.tls.cert, cwd.join("tls.pem"));
        assert_eq!(back.trust, vec![cwd.join("ca.pem")]);
        assert_eq!(
            back.log.tsa_local.unwrap().key,
            PathBuf::from("/abs/tsa.key")
        );
        assert_eq!(back.profile.max_message_size, ByteSize(30_000_000));
        assert_eq!(back.profile.ordinary_mail, c.profile.ordinary_mail);
        assert_eq!(back.timeouts.preavviso, Duration(5400));
        assert_eq!(back.listeners.submission_tls, c.listeners.submission_tls);
        assert_eq!(back.listeners.imap_tls, None);
        assert_eq!(back.routes, c.routes);
        assert_eq!(back.log.retention, c.log.retention);
    }

    #[test]
    fn the_store_is_sqlite_or_postgres_exactly_one() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.store.postgres, None);
        assert!(c.store.sqlite.ends_with("gestore.db"));
        let url = "postgres://gestore@127.0.0.1:5433/pec_a";
        let pg =
            Config::from_yaml(&format!("{MINIMAL}store: {{ postgres: \"{url}\" }}\n")).unwrap();
        assert_eq!(pg.store.postgres.as_deref(), Some(url));
        assert_eq!(pg.store.describe(), url);
        // Written and read back, it is still a PostgreSQL store with no SQLite path.
        let back = Config::from_yaml(&pg.to_yaml().unwrap()).unwrap();
        assert_eq!(back.store.postgres.as_deref(), Some(url));
        assert!(back.store.sqlite.as_os_str().is_empty());
        for (store, wanted) in [
            (
                "{ sqlite: a.db, postgres: \"postgres://x@h/d\" }",
                "not both",
            ),
            ("{}", "give sqlite: PATH or postgres: URL"),
            ("{ postgres: \"mysql://x@h/d\" }", "not a postgres:// URL"),
            ("{ mysql: x }", "mysql"),
        ] {
            let e = Config::from_yaml(&format!("{MINIMAL}store: {store}\n")).unwrap_err();
            assert!(e.contains(wanted), "{store}: {e}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = Config::from_yaml(&MINIMAL.replace("30MB", "30 parsecs")).unwrap_err();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        let e = Config::from_yaml(&MINIMAL.replace("trust:", "trusts:")).unwrap_err();
        assert!(e.contains("trusts"), "{e}");
        let e = Config::from_yaml(&MINIMAL.replace("finale: 3h", "finale: 1h")).unwrap_err();
        assert!(e.contains("finale must not come before preavviso"), "{e}");
        let signed = MINIMAL.replace("directory.ldif", "indice.p7m");
        let e = Config::from_yaml(&signed).unwrap_err();
        assert!(
            e.contains("`indice.p7m` is a signed directory") && e.contains("directory_trust"),
            "{e}"
        );
        let c = Config::from_yaml(&signed.replace("trust:", "directory_trust: [agid.pem]\ntrust:"))
            .unwrap();
        assert!(c.directory_is_signed());
        let e =
            Config::from_yaml(&MINIMAL.replace("trust:", "directory_trust: [agid.pem]\ntrust:"))
                .unwrap_err();
        assert!(e.contains("is not a signed .p7m"), "{e}");
    }
}
