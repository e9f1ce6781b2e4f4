//! DIR-02: the distributed provider directory is a signed PKCS#7 whose signature is checked before
//! use (RFC 6109 §4.5, §7). A `pec-gestore dev` state's config is pointed at a `.p7m` with
//! `directory_trust`; a good one loads, and `pec-gestore serve` refuses to start, naming the file
//! and what is wrong, when the p7m was altered or signed by someone the config does not trust.

use pec_formats::directory::Directory;
use pec_formats::pki::TestCa;
use reference_gestore::clock::ManualClock;
use reference_gestore::config::Config;
use reference_gestore::gestore::Gestore;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A dev state with one provider whose config reads `directory.ldif.p7m`, trusting `indice.pem`
/// for it. Returns the config path; the p7m is for the caller to write.
fn state(dir: &Path) -> PathBuf {
    let st = reference_gestore::dev::prepare(dir, 1, false).unwrap();
    for inst in &st.instances {
        reference_gestore::dev::release(inst);
    }
    let config = st.instances[0].config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("directory: ../directory.ldif\n"), "{text}");
    let text = text.replace(
        "directory: ../directory.ldif\n",
        "directory: ../directory.ldif.p7m\ndirectory_trust: [../indice.pem]\n",
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Signs the state's LDIF with a new "directory signer" of `ca`; writes its certificate as
/// `indice.pem` when `trusted`. Returns the DER.
fn sign(dir: &Path, ca: &TestCa, trusted: bool) -> Vec<u8> {
    let signer = ca
        .issue_provider("Indice dei gestori di prova", "indice@igpec.test")
        .unwrap();
    if trusted {
        std::fs::write(dir.join("indice.pem"), signer.cert.to_pem().unwrap()).unwrap();
    }
    let d = Directory::load(&dir.join("directory.ldif")).unwrap();
    d.sign_p7m(&signer.key, &signer.cert).unwrap()
}

/// `pec-gestore serve --config` on a config that must be refused: its stderr.
fn refused(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pec-gestore"))
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "serve started: {stderr}");
    stderr
}

#[tokio::test]
async fn a_good_signed_directory_is_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let config = state(tmp.path());
    let ca = TestCa::load_from(tmp.path()).unwrap();
    let der = sign(tmp.path(), &ca, true);
    std::fs::write(tmp.path().join("directory.ldif.p7m"), der).unwrap();
    let c = Config::load(&config).unwrap();
    assert!(c.directory_is_signed());
    let g = Gestore::open(c, ManualClock::new()).await.unwrap();
    assert!(
        g.directory.provider_for_domain("pec.a.test").is_some(),
        "{:?}",
        g.directory
    );
}

#[test]
fn a_tampered_signed_directory_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = state(tmp.path());
    let ca = TestCa::load_from(tmp.path()).unwrap();
    let mut der = sign(tmp.path(), &ca, true);
    // One byte of the signed LDIF: a managed domain changes (RFC 6109 §7's attack).
    let at = der
        .windows(b"pec.a.test".len())
        .position(|w| w == b"pec.a.test")
        .expect("the LDIF is inside the p7m");
    der[at + 4] = b'x';
    let p7m = tmp.path().join("directory.ldif.p7m");
    std::fs::write(&p7m, der).unwrap();
    let e = refused(&config);
    assert!(e.contains("directory.ldif.p7m"), "{e}");
    assert!(e.contains("signed directory is refused"), "{e}");
    assert!(e.contains("signature is not valid"), "{e}");
}

#[test]
fn a_directory_signed_by_an_untrusted_key_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = state(tmp.path());
    // The trusted signer's certificate is written, but another CA's signer signs.
    let ca = TestCa::load_from(tmp.path()).unwrap();
    let _ = sign(tmp.path(), &ca, true);
    let stranger = TestCa::generate("Someone else").unwrap();
    let der = sign(tmp.path(), &stranger, false);
    std::fs::write(tmp.path().join("directory.ldif.p7m"), der).unwrap();
    let e = refused(&config);
    assert!(e.contains("directory.ldif.p7m"), "{e}");
    assert!(e.contains("signature is not valid"), "{e}");
    assert!(e.contains("certificate"), "{e}");
    // A provider of the same CA is not the directory's signer either: only `directory_trust` is.
    let provider = ca
        .issue_provider("Gestore qualunque", "x@pec.q.test")
        .unwrap();
    let d = Directory::load(&tmp.path().join("directory.ldif")).unwrap();
    let der = d.sign_p7m(&provider.key, &provider.cert).unwrap();
    std::fs::write(tmp.path().join("directory.ldif.p7m"), der).unwrap();
    let e = refused(&config);
    assert!(e.contains("signature is not valid"), "{e}");
}

#[test]
fn a_missing_signed_directory_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = state(tmp.path());
    let ca = TestCa::load_from(tmp.path()).unwrap();
    let _ = sign(tmp.path(), &ca, true);
    let e = refused(&config);
    assert!(e.contains("directory.ldif.p7m"), "{e}");
}
