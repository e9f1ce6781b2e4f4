//! Shared by the SMTP tests: a test PKI made with openssl and a recording handler.
#![allow(dead_code)]

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};
use reference_gestore::smtp::Reply;
use reference_gestore::smtp::server::{Handler, SessionInfo};
use std::sync::Mutex;

/// A CA and a server certificate for `localhost` and `127.0.0.1`, PEM.
pub struct TestPki {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn builder(cn: &str, serial: u32, public: &PKey<Private>) -> openssl::x509::X509Builder {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(public).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now - 3600).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + 86400).unwrap())
        .unwrap();
    b
}

pub fn test_pki() -> TestPki {
    let ca_key = key();
    let mut b = builder("SMTP Test CA", 1, &ca_key);
    let subject = {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "SMTP Test CA").unwrap();
        n.build()
    };
    b.set_issuer_name(&subject).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();

    let leaf_key = key();
    let mut b = builder("localhost", 2, &leaf_key);
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let leaf = b.build();
    TestPki {
        ca_pem: ca.to_pem().unwrap(),
        cert_pem: leaf.to_pem().unwrap(),
        key_pem: leaf_key.private_key_to_pem_pkcs8().unwrap(),
    }
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub message: Vec<u8>,
    pub user: Option<String>,
    pub tls: bool,
}

/// Accepts `alice`/`secret`; refuses senders containing `blocked` and recipients starting with
/// `nobody`; refuses the content for recipients starting with `refuse-data`; records messages.
#[derive(Default)]
pub struct TestHandler {
    pub received: Mutex<Vec<Received>>,
}

impl TestHandler {
    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Handler for TestHandler {
    async fn authenticate(&self, user: &str, password: &str) -> bool {
        user == "alice" && password == "secret"
    }

    async fn mail_from(&self, _info: &SessionInfo, from: &str) -> Reply {
        if from.contains("blocked") {
            Reply::new(550, [5, 7, 1], "Sender refused")
        } else {
            Reply::sender_ok("Sender OK")
        }
    }

    async fn rcpt_to(&self, _info: &SessionInfo, rcpt: &str) -> Reply {
        if rcpt.starts_with("nobody") {
            Reply::no_such_user("No such user")
        } else {
            Reply::recipient_ok("Recipient OK")
        }
    }

    async fn data(
        &self,
        info: &SessionInfo,
        from: &str,
        rcpts: &[String],
        message: Vec<u8>,
    ) -> Reply {
        if rcpts.iter().any(|r| r.starts_with("refuse-data")) {
            return Reply::new(554, [5, 6, 0], "Content refused");
        }
        self.received.lock().unwrap().push(Received {
            from: from.to_string(),
            rcpts: rcpts.to_vec(),
            message,
            user: info.authenticated.clone(),
            tls: info.tls,
        });
        Reply::ok("Queued")
    }
}
