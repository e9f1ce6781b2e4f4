//! Mailbox passwords, stored only as salted slow hashes: scrypt (RFC 7914) through OpenSSL, in the
//! self-describing form `scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;

const LOG_N: u8 = 15;
const R: u64 = 8;
const P: u64 = 1;

fn derive(password: &str, salt: &[u8], log_n: u8, r: u64, p: u64) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let n = 1u64.checked_shl(u32::from(log_n))?;
    let maxmem = 256 * 1024 * 1024;
    openssl::pkcs5::scrypt(password.as_bytes(), salt, n, r, p, maxmem, &mut out).ok()?;
    Some(out)
}

/// Hashes a password with a fresh random salt.
pub fn hash(password: &str) -> Result<String, openssl::error::ErrorStack> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt)?;
    let key = derive(password, &salt, LOG_N, R, P).ok_or_else(openssl::error::ErrorStack::get)?;
    Ok(format!(
        "scrypt${LOG_N}${R}${P}${}${}",
        B64.encode(salt),
        B64.encode(key)
    ))
}

/// Whether `password` matches `stored` (constant-time comparison). A malformed `stored` never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    let f: Vec<&str> = stored.split('$').collect();
    let [alg, log_n, r, p, salt, key] = f.as_slice() else {
        return false;
    };
    let (Ok(log_n), Ok(r), Ok(p)) = (log_n.parse::<u8>(), r.parse::<u64>(), p.parse::<u64>())
    else {
        return false;
    };
    let (Ok(salt), Ok(key)) = (B64.decode(salt), B64.decode(key)) else {
        return false;
    };
    if *alg != "scrypt" || log_n > 20 || r > 16 || p > 4 {
        return false;
    }
    derive(password, &salt, log_n, r, p)
        .is_some_and(|k| key.len() == k.len() && openssl::memcmp::eq(&k, &key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_the_right_password_and_are_salted() {
        let h1 = hash("segreto").unwrap();
        let h2 = hash("segreto").unwrap();
        assert_ne!(h1, h2, "two hashes of one password differ by their salt");
        assert!(h1.starts_with("scrypt$15$8$1$"));
        assert!(verify("segreto", &h1));
        assert!(!verify("Segreto", &h1));
        assert!(!verify("segreto", "plain:segreto"));
        assert!(!verify("segreto", "scrypt$40$8$1$AAAA$AAAA"));
    }
}
